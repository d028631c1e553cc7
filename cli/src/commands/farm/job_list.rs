//! `autogentoo farm job list`

use anyhow::Result;
use autogentoo_farm::api_types::Job;
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// List the farm's jobs
///
/// The jobs, newest first: id, system, arch, state, host, submitted when and by whom. Needs the
/// viewer role.
#[derive(Args, Debug)]
pub struct JobListArgs {
    /// At most this many
    #[arg(long, default_value_t = 50)]
    pub limit: u32,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: JobListArgs) -> Result<()> {
    let client = args.remote.require("farm job list")?;
    let jobs: Vec<Job> = client.get(&format!("/jobs?limit={}", args.limit))?;
    if ctx.json {
        output::json(&jobs);
        return Ok(());
    }
    for job in jobs {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            job.id,
            job.system,
            job.arch,
            job.state,
            job.host.as_deref().unwrap_or("-"),
            output::timestamp(job.submitted_at / 1000),
            job.submitted_by
        );
    }
    Ok(())
}
