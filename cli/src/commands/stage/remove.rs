//! `autogentoo stage remove`

use anyhow::Result;
use autogentoo_core::storage::{VolumeId, VolumeKind};
use clap::Args;

use crate::context::Context;

/// Remove a stage. Refused while roots are cloned from it, naming them; `--recursive` removes
/// those roots first.
#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// The stage
    pub name: String,

    /// Also remove the roots cloned from it (and theirs)
    #[arg(long)]
    pub recursive: bool,
}

pub fn run(ctx: &Context, args: RemoveArgs) -> Result<()> {
    let id = VolumeId::new(VolumeKind::Stage, &args.name)?;
    let storage = ctx.storage()?;
    if args.recursive {
        storage.destroy_recursive(&id)?;
    } else {
        storage.destroy(&id)?;
    }
    Ok(())
}
