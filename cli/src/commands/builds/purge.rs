//! `autogentoo builds purge`

use anyhow::Result;
use clap::Args;

use crate::context::Context;
use crate::output;

/// Remove old builds by the retention policy
///
/// Remove the recorded builds the site config's `[retention]` lets go, with their results in
/// WORKDIR/out/SYSTEM/N: every build of the last day stays, then the newest of each day for a
/// week, of each week for a month, of each month for a year (by default). Kept and published
/// builds, running ones and each system's newest successful build never go.
#[derive(Args, Debug)]
pub struct PurgeArgs {
    /// Only the builds of this system
    pub system: Option<String>,

    /// Say which builds would go, and remove nothing
    #[arg(long)]
    pub pretend: bool,
}

pub fn run(ctx: &Context, args: PurgeArgs) -> Result<()> {
    let purged =
        ctx.database()?
            .purge(args.system.as_deref(), &ctx.config.retention, args.pretend)?;
    if ctx.json {
        output::json(&purged);
        return Ok(());
    }
    let verb = if args.pretend {
        "would remove"
    } else {
        "removed"
    };
    for build in &purged {
        println!(
            "{verb} {} {}\t{}\t{}",
            build.system,
            build.number,
            build.outcome,
            output::timestamp(build.started_at / 1000)
        );
    }
    Ok(())
}
