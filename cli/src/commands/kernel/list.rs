//! `autogentoo kernel list`

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::context::Context;
use crate::output;

/// List the imported kernel sources: name, import time, source.
#[derive(Args, Debug)]
pub struct ListArgs {}

pub fn run(ctx: &Context, _args: ListArgs) -> Result<()> {
    let kernels = ctx.storage()?.list(VolumeKind::Kernel)?;
    if ctx.json {
        output::json(&kernels);
        return Ok(());
    }
    for kernel in kernels {
        let source = kernel
            .properties
            .get("source")
            .map(String::as_str)
            .unwrap_or("-");
        println!(
            "{}\t{}\t{}",
            kernel.id.name(),
            output::timestamp(kernel.created),
            source
        );
    }
    Ok(())
}
