//! `autogentoo kernel remove`

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::commands::volume;
use crate::context::Context;

/// Remove imported kernel sources
///
/// Remove a kernel source volume. Builds keep their own output trees, which stay; a system
/// that names the kernel cannot build until sources of that name are imported again.
#[derive(Args, Debug)]
pub struct RemoveArgs {
    /// The kernel volume
    pub name: String,
}

pub fn run(ctx: &Context, args: RemoveArgs) -> Result<()> {
    volume::remove(ctx, VolumeKind::Kernel, &args.name, false)
}
