//! `autogentoo stage path`

use anyhow::Result;
use autogentoo_core::storage::{VolumeId, VolumeKind};
use clap::Args;

use crate::context::Context;

/// Print a stage's directory, for scripts.
#[derive(Args, Debug)]
pub struct PathArgs {
    /// The stage
    pub name: String,
}

pub fn run(ctx: &Context, args: PathArgs) -> Result<()> {
    let id = VolumeId::new(VolumeKind::Stage, &args.name)?;
    let path = ctx.storage()?.path(&id)?;
    if ctx.json {
        crate::output::json(&serde_json::json!({ "path": path }));
    } else {
        println!("{}", path.display());
    }
    Ok(())
}
