//! `autogentoo root pack`

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use autogentoo_core::chroot::root_lock::{LockKind, RootLock};
use autogentoo_core::pack::{self, PackRequest};
use autogentoo_core::site_config::Compression;
use autogentoo_core::storage::{VolumeId, VolumeKind};
use clap::Args;

use crate::args::CompressionArg;
use crate::context::Context;
use crate::output;
use crate::progress::Bar;

/// Pack a root and the site files into an initramfs
///
/// Pack a root, then the site's `common/`, then overlays in order (a later layer wins) into one
/// newc cpio for the kernel's initramfs, without changing the root. Caches, the repository,
/// sources and pseudo-filesystems are left out (`pack.exclude`); `/dev/console` is always
/// there. The archive appears atomically. The built-in packer (`newc`) is reproducible and
/// writes a manifest beside the archive; `pack.packer` or --packer picks one a plugin provides.
#[derive(Args, Debug)]
pub struct PackArgs {
    /// The root
    pub name: String,

    /// Take the overlays from this system of the site config
    #[arg(long, conflicts_with = "overlay")]
    pub system: Option<String>,

    /// An overlay (`KIND/NAME` under the site's overlays/), in order; repeatable
    #[arg(long, value_name = "KIND/NAME")]
    pub overlay: Vec<String>,

    /// The archive [default: WORKDIR/out/ROOT/initramfs.cpio.gz, .zst or plain]
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Compression [default: pack.compression]
    #[arg(long, value_enum)]
    pub compression: Option<CompressionArg>,

    /// The packer: `newc` or one a plugin provides [default: pack.packer]
    #[arg(long, value_name = "NAME")]
    pub packer: Option<String>,

    /// Compression level: 1-9 for gzip, 1-19 for zstd [default: pack.level, or the compressor's]
    #[arg(long)]
    pub level: Option<u32>,
}

pub fn run(ctx: &Context, args: PackArgs) -> Result<()> {
    let storage = ctx.storage()?;
    let config = &ctx.config;
    let compression = args
        .compression
        .map(Compression::from)
        .unwrap_or(config.pack.compression);
    let level = args.level.or(if args.compression.is_some() {
        None
    } else {
        config.pack.level
    });
    if let Some(level) = level {
        match compression.levels() {
            Some(range) if range.contains(&level) => {}
            Some(range) => bail!(
                "--level {level} is out of range for {compression} ({}-{})",
                range.start(),
                range.end()
            ),
            None => bail!("--level makes no sense without compression"),
        }
    }
    let packer = ctx.packer(args.packer.as_deref().unwrap_or(&config.pack.packer))?;
    packer.check(compression)?;
    let overlays = match &args.system {
        Some(system) => config.system(system)?.overlays.clone(),
        None => args.overlay.clone(),
    };
    let root_path = storage.path(&VolumeId::new(VolumeKind::Root, &args.name)?)?;
    let layers = pack::site_layers(config, &args.name, &root_path, &overlays)?;
    let output = args
        .output
        .unwrap_or_else(|| ctx.layout().initramfs(&args.name, compression));
    let source_date_epoch =
        match std::env::var("SOURCE_DATE_EPOCH") {
            Ok(value) => Some(value.trim().parse::<u64>().with_context(|| {
                format!("SOURCE_DATE_EPOCH={value} is not a number of seconds")
            })?),
            Err(_) => None,
        };
    let _use = RootLock::wait(&ctx.layout(), &args.name, LockKind::Use, true)?;
    let cancel = crate::interrupt::cancel_flag()?;
    let bar = Bar::new(&format!("packing {}", args.name), ctx.quiet);
    let request = PackRequest {
        layers,
        exclude: config.pack.exclude.iter().map(PathBuf::from).collect(),
        rdinit: config.pack.rdinit.clone(),
        keep_site_owners: config.pack.keep_site_owners,
        compression,
        level,
        source_date_epoch,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        output,
        progress: &bar,
        cancel: &cancel,
    };
    let report = packer.pack(&request);
    bar.finish();
    let report = report.with_context(|| format!("cannot pack root '{}'", args.name))?;
    if report.dropped_xattrs > 0 {
        tracing::warn!(
            "{} entries have extended attributes (file capabilities, …) that a newc cpio cannot carry; \
             they are packed without them",
            report.dropped_xattrs
        );
    }
    if ctx.json {
        output::json(&report);
    } else {
        println!("{}", report.archive.display());
    }
    Ok(())
}
