//! `autogentoo stage list`

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::context::Context;
use crate::output;

/// List the imported stages: name, import time, source.
#[derive(Args, Debug)]
pub struct ListArgs {}

pub fn run(ctx: &Context, _args: ListArgs) -> Result<()> {
    let stages = ctx.storage()?.list(VolumeKind::Stage)?;
    if ctx.json {
        output::json(&stages);
        return Ok(());
    }
    for stage in stages {
        let source = stage
            .properties
            .get("source")
            .map(String::as_str)
            .unwrap_or("-");
        println!(
            "{}\t{}\t{}",
            stage.id.name(),
            output::timestamp(stage.created),
            source
        );
    }
    Ok(())
}
