//! `autogentoo builds list`

use anyhow::Result;
use clap::Args;

use super::duration;
use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// List the recorded builds
///
/// List the builds the database recorded, newest first: system, number, outcome, start,
/// duration, host and who started it. A build whose process died shows as interrupted. With
/// --server, those of a farm's database.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only the builds of this system
    pub system: Option<String>,

    /// At most this many
    #[arg(long, default_value_t = 50)]
    pub limit: u32,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: ListArgs) -> Result<()> {
    let builds: Vec<autogentoo_db::Build> = match args.remote.client()? {
        Some(client) => {
            let only = args
                .system
                .as_ref()
                .map(|s| format!("system={s}&"))
                .unwrap_or_default();
            client.get(&format!("/builds?{only}limit={}", args.limit))?
        }
        None => ctx
            .database()?
            .list(args.system.as_deref(), i64::from(args.limit))?,
    };
    if ctx.json {
        output::json(&builds);
        return Ok(());
    }
    for build in builds {
        let took = build
            .ended_at
            .map_or_else(|| "-".to_owned(), |end| duration(end - build.started_at));
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            build.system,
            build.number,
            build.outcome,
            output::timestamp(build.started_at / 1000),
            took,
            build.host,
            build.started_by
        );
    }
    Ok(())
}
