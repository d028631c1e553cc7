//! `autogentoo builds show`

use anyhow::Result;
use clap::Args;

use super::duration;
use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// Show one recorded build
///
/// Show a recorded build: its outcome, inputs (site config, stage, repository snapshot,
/// packages), each step (ran, skipped or failed, and why), and its artifacts with their
/// sizes and SHA-256, kept in WORKDIR/out/SYSTEM/N (with --server, on the farm server).
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The system
    pub system: String,

    /// The build's number
    pub number: i64,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: ShowArgs) -> Result<()> {
    let detail: autogentoo_db::BuildDetail = match args.remote.client()? {
        Some(client) => client.get(&format!("/builds/{}/{}", args.system, args.number))?,
        None => ctx.database()?.get(&args.system, args.number)?,
    };
    if ctx.json {
        output::json(&detail);
        return Ok(());
    }
    let build = &detail.build;
    println!(
        "build {} of {}: {}",
        build.number, build.system, build.outcome
    );
    if let Some(error) = &build.error {
        println!("error:      {error}");
    }
    println!(
        "started:    {} on {} by {} (PID {})",
        output::timestamp(build.started_at / 1000),
        build.host,
        build.started_by,
        build.pid
    );
    if let Some(end) = build.ended_at {
        println!("took:       {}", duration(end - build.started_at));
    }
    println!("stage:      {}", build.stage);
    if !build.repo.is_empty() {
        println!("repository: {}", build.repo);
    }
    if !build.packages.is_empty() {
        println!("packages:   {}", build.packages.join(" "));
    }
    println!("config:     sha256 {}", build.config_hash);
    println!("inputs:     {}", build.inputs);
    println!("results:    {}", build.out_dir.display());
    println!("steps:");
    for step in &detail.steps {
        let took = step.duration_ms.map(duration).unwrap_or_default();
        println!(
            "  {:<8} {:<8} {:>10}  {}",
            step.step, step.outcome, took, step.why
        );
        if let Some(error) = &step.error {
            println!("           {error}");
        }
    }
    println!("artifacts:");
    for artifact in &detail.artifacts {
        let made = if artifact.made { "made" } else { "kept" };
        println!(
            "  {:<28} {:<18} {made} {:>12}  {}",
            artifact.name, artifact.kind, artifact.size, artifact.sha256
        );
    }
    Ok(())
}
