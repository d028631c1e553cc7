//! `autogentoo root list`

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::context::Context;
use crate::output;

/// List the roots
///
/// List the roots: name, creation time, the stage (or snapshot) each was cloned from.
#[derive(Args, Debug)]
pub struct ListArgs {}

pub fn run(ctx: &Context, _args: ListArgs) -> Result<()> {
    let roots = ctx.storage()?.list(VolumeKind::Root)?;
    if ctx.json {
        output::json(&roots);
        return Ok(());
    }
    for root in roots {
        let origin = match &root.origin {
            Some(o) => format!("{} {}@{}", o.volume().kind(), o.volume().name(), o.name()),
            None => "-".into(),
        };
        println!(
            "{}\t{}\t{}",
            root.id.name(),
            output::timestamp(root.created),
            origin
        );
    }
    Ok(())
}
