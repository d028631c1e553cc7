//! `autogentoo submit`: a build for a farm.

use std::time::Duration;

use anyhow::{bail, Result};
use autogentoo_farm::api_types::{Job, SubmitRequest, Submitted};
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// Submit a build to a farm
///
/// Queue a build of a system of the farm server's site config; a host that can build its
/// arch takes it. The same build (system, site config, the stages and snapshot the farm
/// hands out, backend) submitted again is the same job, and nothing is queued twice; a build
/// that failed is built again, as a new job. Prints the job; with --wait, waits for it to end
/// (exit code 0 if it succeeded, 1 if not) and prints the build's record. With --host-backend,
/// only a host of that storage backend builds it. Needs the operator role.
#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// The system, as `[systems.NAME]` in the server's site config
    pub system: String,

    /// Wait until the build ends
    #[arg(long)]
    pub wait: bool,

    /// Only a build host with this storage backend builds it (`zfs`, `btrfs`, `dir`, or a
    /// plugin's)
    #[arg(long, value_name = "BACKEND")]
    pub host_backend: Option<String>,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: SubmitArgs) -> Result<()> {
    let client = args.remote.require("submit")?;
    let submitted: Submitted = client
        .post(
            "/jobs",
            &SubmitRequest {
                system: args.system.clone(),
                backend: args.host_backend.clone(),
            },
        )?
        .expect("POST /jobs answers with the job");
    let mut job = submitted.job;
    if !ctx.quiet && !ctx.json {
        let how = if submitted.existing {
            "was submitted before as"
        } else {
            "queued as"
        };
        eprintln!("{} {how} job {} ({})", args.system, job.id, job.state);
    }
    if args.wait {
        while !matches!(job.state.as_str(), "succeeded" | "failed" | "cancelled") {
            std::thread::sleep(Duration::from_millis(500));
            job = client.get(&format!("/jobs/{}", job.id))?;
        }
    }
    show(ctx, &job);
    if args.wait && job.state != "succeeded" {
        bail!(
            "job {} ({}) failed{}",
            job.id,
            args.system,
            job.error.map(|e| format!(": {e}")).unwrap_or_default()
        );
    }
    Ok(())
}

fn show(ctx: &Context, job: &Job) {
    if ctx.json {
        output::json(job);
        return;
    }
    println!(
        "{}\t{}\t{}\t{}\t{}",
        job.id,
        job.system,
        job.state,
        job.host.as_deref().unwrap_or("-"),
        job.build_number
            .map_or_else(|| "-".to_owned(), |n| n.to_string())
    );
}
