//! `autogentoo stage path`

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::commands::volume;
use crate::context::Context;

/// Print a stage's directory
///
/// Print a stage's directory, for scripts.
#[derive(Args, Debug)]
pub struct PathArgs {
    /// The stage
    pub name: String,
}

pub fn run(ctx: &Context, args: PathArgs) -> Result<()> {
    volume::print_path(ctx, VolumeKind::Stage, &args.name)
}
