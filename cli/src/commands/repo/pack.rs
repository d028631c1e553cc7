//! `autogentoo repo pack`

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use autogentoo_core::pack::squashfs_pack::{self, Compression, PackRequest, PackSource};
use autogentoo_core::storage::{VolumeId, VolumeKind};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Args;

use crate::context::Context;
use crate::output;

/// Pack a root's ebuild repository, or a directory, into a SquashFS image
///
/// Pack a root's ebuild repository (its `mounts.repo`, var/db/repos/gentoo by default, resolved
/// inside the root) or any directory into a SquashFS image in WORKDIR/repos, which `root mount`
/// mounts read-only into roots (the newest image, or `mounts.repo_image`). Keeps owners, modes,
/// mtimes and symlinks; hardlinks become copies and xattrs are dropped (a repository has
/// neither); devices and fifos are refused. The same tree gives the same bytes: the image time
/// is SOURCE_DATE_EPOCH if set (newer mtimes are clamped to it), else the newest mtime in the
/// tree. Nothing appears until the image is complete. Prints the image's path.
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("source").required(true))]
pub struct PackArgs {
    /// The root whose repository is packed
    #[arg(long, value_name = "NAME", group = "source")]
    pub root: Option<String>,

    /// A directory to pack
    #[arg(long, value_name = "DIR", group = "source")]
    pub dir: Option<PathBuf>,

    /// Name of the image, saved as NAME.sqfs [default: gentoo-YYYYMMDD, the image time's UTC
    /// date]
    #[arg(long)]
    pub name: Option<String>,

    /// Replace an image of the same name
    #[arg(long)]
    pub force: bool,

    /// Compressor, at mksquashfs's default level (zstd 15, xz 6, gzip 9)
    #[arg(long, default_value = "zstd", value_parser = compression_parser())]
    pub compression: Compression,

    /// Data block size: a power of two from 4K to 1M, in bytes or with a K or M suffix
    #[arg(long, value_name = "SIZE", default_value = "128K")]
    pub block_size: String,
}

pub fn run(ctx: &Context, args: PackArgs) -> Result<()> {
    // Parsed here rather than by clap, so that a bad size is an error (exit 1) that names it.
    let block_size = squashfs_pack::parse_block_size(&args.block_size)?;
    // Set but empty counts as unset, as for other tools that read it.
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) if !value.is_empty() => Some(squashfs_pack::parse_source_date_epoch(&value)?),
        _ => None,
    };
    let root_path;
    let (source, what) = match (&args.root, &args.dir) {
        (Some(name), _) => {
            let storage = ctx.storage()?;
            root_path = storage.path(&VolumeId::new(VolumeKind::Root, name)?)?;
            let repo = ctx.config.mounts.repo.as_path();
            let what = format!("the repository of root '{name}' ({})", repo.display());
            (
                PackSource::InRoot {
                    root: &root_path,
                    repo,
                },
                what,
            )
        }
        (None, Some(dir)) => (PackSource::Dir(dir), dir.display().to_string()),
        (None, None) => unreachable!("clap requires --root or --dir"),
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&cancel);
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("cannot install the interrupt handler")?;
    let repos = ctx.layout().repos();
    let request = PackRequest {
        source,
        repos: &repos,
        name: args.name.as_deref(),
        force: args.force,
        compression: args.compression,
        block_size,
        source_date_epoch,
        cancel: &cancel,
    };
    let report = squashfs_pack::pack(&request).with_context(|| format!("cannot pack {what}"))?;
    let mut lost = Vec::new();
    if report.hardlinked > 0 {
        let files = if report.hardlinked == 1 {
            "file"
        } else {
            "files"
        };
        lost.push(format!(
            "{} hardlinked {files} became copies",
            report.hardlinked
        ));
    }
    if report.with_xattrs > 0 {
        let entries = if report.with_xattrs == 1 {
            "entry"
        } else {
            "entries"
        };
        lost.push(format!(
            "the xattrs of {} {entries} were dropped",
            report.with_xattrs
        ));
    }
    if !lost.is_empty() {
        tracing::warn!(
            "{what}: {} (the SquashFS writer keeps neither hardlinks nor xattrs)",
            lost.join(" and ")
        );
    }
    if ctx.json {
        output::json(&report);
    } else {
        println!("{}", report.path.display());
    }
    tracing::info!(
        "{} entries, {} ({}, {} blocks), dated {}",
        report.entries,
        output::bytes(report.size),
        report.compression,
        output::bytes(u64::from(report.block_size)),
        output::timestamp(i64::from(report.time))
    );
    Ok(())
}

/// The compressors by name, listed in `--help`.
fn compression_parser() -> impl TypedValueParser<Value = Compression> {
    PossibleValuesParser::new(Compression::ALL.map(Compression::name))
        .map(|name| name.parse().expect("one of the possible values"))
}
