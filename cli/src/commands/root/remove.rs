//! `autogentoo root remove`

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::commands::volume;
use crate::context::Context;

/// Remove a root and its snapshots
///
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
    volume::remove(ctx, VolumeKind::Root, &args.name, args.recursive)
}
