//! `autogentoo kernel build`: the pipeline's kernel step on its own.

use std::path::PathBuf;

use anyhow::{bail, Result};
use autogentoo_core::kernel::kernel_build::Kbuild;
use autogentoo_core::site_config::SystemConfig;
use autogentoo_pipeline::kernel::{self, KernelStep};
use clap::Args;

use crate::context::Context;
use crate::output;

/// Build a system's EFI-stub kernel with its initramfs embedded
///
/// Build a system's EFI image with its packed initramfs, with the system's kernel builder: the
/// built-in ones run `make olddefconfig` and `make bzImage` out of tree, inside the root (`root`,
/// its toolchain) or on the host (`host`), with the initramfs linked into an EFI-stub kernel. The
/// config is allnoconfig plus the system's kernel config, its hardware overlays' fragments and
/// what the pipeline needs. Results go to WORKDIR/out/SYSTEM/: SYSTEM.efi, SYSTEM.config,
/// SYSTEM.System.map and a manifest; the build log is WORKDIR/kbuild/SYSTEM/build.log.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The root whose initramfs is embedded
    pub root: String,

    /// The system of the site config [default: the one whose root this is]
    #[arg(long)]
    pub system: Option<String>,

    /// The kernel volume [default: the system's `kernel`, or the only one]
    #[arg(long)]
    pub kernel: Option<String>,

    /// Build with the host's toolchain instead of the root's: the same as --builder host
    #[arg(long, conflicts_with = "builder")]
    pub host: bool,

    /// The kernel builder: `root`, `host` or one a plugin provides [default: the system's
    /// `kernel_build`]
    #[arg(long, value_name = "NAME")]
    pub builder: Option<String>,

    /// The initramfs [default: WORKDIR/out/ROOT/initramfs.cpio.gz (or .zst, or plain)]
    #[arg(long, value_name = "FILE")]
    pub initramfs: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: BuildArgs) -> Result<()> {
    let (name, system) = system_of_root(ctx, args.system.as_deref(), &args.root)?;
    let compression = ctx.config.pack.compression;
    let layout = ctx.layout();
    let initramfs = args
        .initramfs
        .unwrap_or_else(|| layout.initramfs(&args.root, compression));
    let builder = ctx.kernel_builder(match (&args.builder, args.host) {
        (Some(name), _) => name.as_str(),
        (None, true) => Kbuild::HOST,
        (None, false) => system.kernel_build.as_str(),
    })?;
    let storage = ctx.storage()?;
    let report = kernel::build(&KernelStep {
        config: &ctx.config,
        storage: &*storage,
        layout: &layout,
        system_name: &name,
        system: &system,
        root: &args.root,
        kernel: args.kernel.as_deref(),
        builder: &*builder,
        initramfs: &initramfs,
        compression,
        unmount_after: false,
    })?;
    if ctx.json {
        output::json(&report);
    } else {
        println!("{}", report.image.display());
    }
    Ok(())
}

/// The system a root belongs to: named, or the only system of the site config using that root.
fn system_of_root(
    ctx: &Context,
    named: Option<&str>,
    root: &str,
) -> Result<(String, SystemConfig)> {
    if let Some(name) = named {
        return Ok((name.to_owned(), ctx.config.system(name)?.clone()));
    }
    let matching: Vec<(&String, &SystemConfig)> = ctx
        .config
        .systems
        .iter()
        .filter(|(name, s)| s.root_name(name) == root)
        .collect();
    match matching.as_slice() {
        [(name, system)] => Ok(((*name).clone(), (*system).clone())),
        [] => bail!("no system of the site config uses root '{root}'; pass --system or --config"),
        _ => bail!("several systems use root '{root}'; pass --system"),
    }
}
