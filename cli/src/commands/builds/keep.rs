//! `autogentoo builds keep`

use anyhow::Result;
use clap::Args;

use crate::context::Context;
use crate::remote::RemoteArgs;

/// Keep a recorded build from purges
///
/// Mark a build as kept: `builds purge` never removes it, whatever the retention policy.
/// With --release it goes back under the policy. With --server, a farm's build (operator
/// role).
#[derive(Args, Debug)]
pub struct KeepArgs {
    /// The system
    pub system: String,

    /// The build's number
    pub number: i64,

    /// Let it go again
    #[arg(long)]
    pub release: bool,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: KeepArgs) -> Result<()> {
    match args.remote.client()? {
        Some(client) => {
            let path = format!("/builds/{}/{}/keep", args.system, args.number);
            let keep = autogentoo_farm::api_types::KeepRequest {
                keep: !args.release,
            };
            client.post::<_, serde_json::Value>(&path, &keep)?;
        }
        None => ctx
            .database()?
            .keep(&args.system, args.number, !args.release)?,
    }
    if !ctx.quiet {
        let verb = if args.release { "released" } else { "kept" };
        eprintln!("build {} of '{}' {verb}", args.number, args.system);
    }
    Ok(())
}
