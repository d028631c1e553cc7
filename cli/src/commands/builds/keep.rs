//! `autogentoo builds keep`

use anyhow::Result;
use clap::Args;

use crate::context::Context;

/// Keep a recorded build from purges
///
/// Mark a build as kept: `builds purge` never removes it, whatever the retention policy.
/// With --release it goes back under the policy.
#[derive(Args, Debug)]
pub struct KeepArgs {
    /// The system
    pub system: String,

    /// The build's number
    pub number: i64,

    /// Let it go again
    #[arg(long)]
    pub release: bool,
}

pub fn run(ctx: &Context, args: KeepArgs) -> Result<()> {
    ctx.database()?
        .keep(&args.system, args.number, !args.release)?;
    if !ctx.quiet {
        let verb = if args.release { "released" } else { "kept" };
        eprintln!("build {} of '{}' {verb}", args.number, args.system);
    }
    Ok(())
}
