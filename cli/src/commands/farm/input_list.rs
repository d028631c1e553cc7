//! `autogentoo farm input list`

use anyhow::Result;
use autogentoo_farm::api_types::InputRecord;
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// List the stages, kernel sources and repository snapshots the farm hands out
///
/// List the farm's inputs, newest first: kind, name, SHA-256, size in bytes, when and by whom
/// added. Needs the viewer role.
#[derive(Args, Debug)]
pub struct InputListArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: InputListArgs) -> Result<()> {
    let inputs: Vec<InputRecord> = args.remote.require("farm input list")?.get("/inputs")?;
    if ctx.json {
        output::json(&inputs);
        return Ok(());
    }
    for record in inputs {
        let input = &record.input;
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}",
            input.kind,
            input.name,
            input.sha256,
            input.size,
            output::timestamp(record.added_at / 1000),
            record.added_by
        );
    }
    Ok(())
}
