//! `autogentoo stage import`

use std::path::PathBuf;

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::commands::volume;
use crate::context::Context;

/// Import a stage3 tarball or directory as a read-only stage
///
/// Import a stage3 tarball (.tar, .tar.gz, .tar.xz, .tar.bz2, .tar.zst) or a directory as a
/// read-only stage, keeping numeric owners, modes, mtimes, xattrs, device nodes and hardlinks.
/// Nothing appears until the import is complete; an interrupted import leaves nothing behind.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The tarball or directory
    pub source: PathBuf,

    /// Name of the new stage
    #[arg(long)]
    pub name: String,

    /// A Gentoo DIGESTS file; the tarball's SHA512 must match its line
    #[arg(long, value_name = "FILE")]
    pub digests: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: ImportArgs) -> Result<()> {
    volume::import(
        ctx,
        VolumeKind::Stage,
        &args.source,
        &args.name,
        args.digests.as_deref(),
    )
}
