//! `autogentoo kernel import`

use std::path::PathBuf;

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::commands::volume;
use crate::context::Context;

/// Import kernel sources (a tarball or directory) as a read-only kernel volume
///
/// Import kernel sources (a tarball such as Debian's linux-source or kernel.org's, or a
/// directory) as a read-only kernel volume. Builds never write to it: they build out of tree.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The tarball or directory
    pub source: PathBuf,

    /// Name of the kernel volume
    #[arg(long)]
    pub name: String,
}

pub fn run(ctx: &Context, args: ImportArgs) -> Result<()> {
    volume::import(ctx, VolumeKind::Kernel, &args.source, &args.name, None)
}
