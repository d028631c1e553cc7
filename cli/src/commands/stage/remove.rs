//! `autogentoo stage remove`

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::commands::volume;
use crate::context::Context;

/// Remove a stage (refused while roots are cloned from it)
///
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
    volume::remove(ctx, VolumeKind::Stage, &args.name, args.recursive)
}
