//! `autogentoo farm job cancel`

use anyhow::Result;
use autogentoo_farm::api_types::Job;
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// Cancel a job
///
/// A waiting job leaves the queue; a running one's host is told that its lease is gone the
/// next time it reports, and stops the build, whose record ends as interrupted. Submitting the
/// same build again queues it anew. Refused for a job that has ended. Needs the operator role.
#[derive(Args, Debug)]
pub struct JobCancelArgs {
    /// The job's id (`farm job list`, or what `submit` printed)
    pub id: String,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: JobCancelArgs) -> Result<()> {
    let client = args.remote.require("farm job cancel")?;
    let job: Option<Job> = client.post(&format!("/jobs/{}/cancel", args.id), &())?;
    if ctx.json {
        output::json(&job);
    } else if let Some(job) = job {
        println!("{}\t{}\t{}", job.id, job.system, job.state);
    }
    Ok(())
}
