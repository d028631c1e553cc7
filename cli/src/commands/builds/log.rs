//! `autogentoo builds log`

use anyhow::{bail, Result};
use clap::Args;

use crate::context::Context;

/// Print what a recorded build's commands printed
///
/// Print the logs the database keeps for a build: what the commands of each step printed
/// inside the root (the system's commands, the image's emerge), in step order.
#[derive(Args, Debug)]
pub struct LogArgs {
    /// The system
    pub system: String,

    /// The build's number
    pub number: i64,

    /// Only this step's log (`commands`, `image`)
    #[arg(long)]
    pub step: Option<String>,
}

pub fn run(ctx: &Context, args: LogArgs) -> Result<()> {
    let logs = ctx
        .database()?
        .logs(&args.system, args.number, args.step.as_deref())?;
    if let (Some(step), true) = (&args.step, logs.is_empty()) {
        bail!(
            "build {} of '{}' has no log for step '{step}'; `autogentoo builds show {} {}` \
             lists its steps",
            args.number,
            args.system,
            args.system,
            args.number
        );
    }
    let several = logs.len() > 1;
    for (step, text) in logs {
        if several {
            println!("==> {step} <==");
        }
        print!("{text}");
    }
    Ok(())
}
