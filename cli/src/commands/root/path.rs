//! `autogentoo root path`

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::commands::volume;
use crate::context::Context;

/// Print a root's directory
///
/// Print a root's directory, for scripts.
#[derive(Args, Debug)]
pub struct PathArgs {
    /// The root
    pub name: String,
}

pub fn run(ctx: &Context, args: PathArgs) -> Result<()> {
    volume::print_path(ctx, VolumeKind::Root, &args.name)
}
