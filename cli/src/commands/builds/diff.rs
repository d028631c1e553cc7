//! `autogentoo builds diff`

use anyhow::Result;
use clap::Args;

use crate::context::Context;
use crate::output;

/// Compare two recorded builds
///
/// Show what changed from build A to build B of a system: the image's packages added,
/// removed, or at another version or with other USE flags, and the inputs that differ (site
/// config, stage, repository snapshot, packages asked for).
#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The system
    pub system: String,

    /// The earlier build
    pub a: i64,

    /// The later build
    pub b: i64,
}

pub fn run(ctx: &Context, args: DiffArgs) -> Result<()> {
    let diff = ctx.database()?.diff(&args.system, args.a, args.b)?;
    if ctx.json {
        output::json(&diff);
        return Ok(());
    }
    for package in &diff.added {
        println!("+ {package}");
    }
    for package in &diff.removed {
        println!("- {package}");
    }
    for change in &diff.changed {
        println!("~ {}: {} -> {}", change.package, change.from, change.to);
    }
    for input in &diff.inputs {
        println!("input {}: {} -> {}", input.input, input.from, input.to);
    }
    Ok(())
}
