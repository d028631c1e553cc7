//! `autogentoo root remove`

use anyhow::Result;
use autogentoo_core::storage::{VolumeId, VolumeKind};
use clap::Args;

use crate::context::Context;

/// Remove a root and its snapshots. Refused while other roots are cloned from its snapshots,
/// naming them; `--recursive` removes those first.
#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// The root
    pub name: String,

    /// Also remove the roots cloned from its snapshots (and theirs)
    #[arg(long)]
    pub recursive: bool,
}

pub fn run(ctx: &Context, args: RemoveArgs) -> Result<()> {
    let id = VolumeId::new(VolumeKind::Root, &args.name)?;
    let storage = ctx.storage()?;
    if args.recursive {
        storage.destroy_recursive(&id)?;
    } else {
        storage.destroy(&id)?;
    }
    Ok(())
}
