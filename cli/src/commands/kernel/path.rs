//! `autogentoo kernel path`

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::commands::volume;
use crate::context::Context;

/// Print a kernel volume's directory
///
/// Print a kernel volume's directory, for scripts.
#[derive(Args, Debug)]
pub struct PathArgs {
    /// The kernel volume
    pub name: String,
}

pub fn run(ctx: &Context, args: PathArgs) -> Result<()> {
    volume::print_path(ctx, VolumeKind::Kernel, &args.name)
}
