//! `autogentoo kernel build`, and the kernel step of `build SYSTEM`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use autogentoo_core::chroot::root_mounts::umount_all;
use autogentoo_core::kernel::kernel_build::{self, Kbuild, KernelReport};
use autogentoo_core::kernel::{KernelBuilder, KernelJob};
use autogentoo_core::site_config::{Compression, SystemConfig};
use autogentoo_core::storage::{Storage, StorageError, VolumeId, VolumeKind};
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
    let initramfs = args
        .initramfs
        .unwrap_or_else(|| default_initramfs(ctx, &args.root, compression));
    let builder = ctx.kernel_builder(match (&args.builder, args.host) {
        (Some(name), _) => name.as_str(),
        (None, true) => Kbuild::HOST,
        (None, false) => system.kernel_build.as_str(),
    })?;
    let job = KernelStep {
        system_name: &name,
        system: &system,
        root: &args.root,
        kernel: args.kernel.as_deref(),
        builder: &*builder,
        initramfs: &initramfs,
        compression,
        unmount_after: false,
    };
    let report = build_kernel(ctx, &job)?;
    if ctx.json {
        output::json(&report);
    } else {
        println!("{}", report.image.display());
    }
    Ok(())
}

/// Where `root pack` puts a root's initramfs by default.
pub fn default_initramfs(ctx: &Context, root: &str, compression: Compression) -> PathBuf {
    let file = match compression {
        Compression::Gzip => "initramfs.cpio.gz",
        Compression::Zstd => "initramfs.cpio.zst",
        Compression::Xz => "initramfs.cpio.xz",
        Compression::None => "initramfs.cpio",
    };
    ctx.layout().out().join(root).join(file)
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

/// One kernel build: for `kernel build` and for the pipeline.
pub struct KernelStep<'a> {
    pub system_name: &'a str,
    pub system: &'a SystemConfig,
    pub root: &'a str,
    pub kernel: Option<&'a str>,
    pub builder: &'a dyn KernelBuilder,
    pub initramfs: &'a Path,
    pub compression: Compression,
    /// Unmount the root after a builder that used it (the pipeline does; `kernel build` leaves
    /// the root as `kernel mount` would).
    pub unmount_after: bool,
}

/// The kernel volume: named, the system's, or the only one there is; it must exist.
pub fn kernel_volume(storage: &dyn Storage, named: Option<&str>) -> Result<VolumeId> {
    if let Some(name) = named {
        let id = VolumeId::new(VolumeKind::Kernel, name)?;
        return match storage.get(&id) {
            Ok(_) => Ok(id),
            Err(StorageError::NotFound(_)) => bail!(
                "kernel sources '{name}' are not imported; run `autogentoo kernel import SOURCE --name {name}` \
                 (`autogentoo kernel list` shows those that are)"
            ),
            Err(other) => Err(other.into()),
        };
    }
    let kernels = storage.list(VolumeKind::Kernel)?;
    match kernels.as_slice() {
        [only] => Ok(only.id.clone()),
        [] => {
            bail!("no kernel sources imported; run `autogentoo kernel import SOURCE --name NAME`")
        }
        _ => bail!("several kernel volumes; name one with --kernel or the system's `kernel`"),
    }
}

/// The config fragments of a system, in order: its kernel config, then a `NAME.kconfig` beside
/// each overlay directory that has one (`overlays/hardware/qemu-x86_64.kconfig`).
pub fn fragments(ctx: &Context, system: &SystemConfig) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if let Some(path) = &system.kernel_config {
        out.push(path.clone());
    }
    for overlay in &system.overlays {
        let dir = ctx.config.overlay_dir(overlay)?;
        let mut fragment = dir.clone().into_os_string();
        fragment.push(".kconfig");
        let fragment = PathBuf::from(fragment);
        if fragment.is_file() {
            out.push(fragment);
        }
    }
    Ok(out)
}

/// Builds a system's kernel with the job's builder.
pub fn build_kernel(ctx: &Context, job: &KernelStep) -> Result<KernelReport> {
    let storage = ctx.storage()?;
    let layout = ctx.layout();
    let builder = job.builder;
    let kernel = kernel_volume(&*storage, job.kernel.or(job.system.kernel.as_deref()))?;
    let volume = storage.get(&kernel)?;
    let source = kernel_build::find_source(&volume.path)?;
    let root_path = storage.path(&VolumeId::new(VolumeKind::Root, job.root)?)?;
    if !job.initramfs.is_file() {
        bail!(
            "{} does not exist; pack the root first (`autogentoo root pack {}`)",
            job.initramfs.display(),
            job.root
        );
    }
    let inputs = vec![
        (
            "initramfs_sha256".to_owned(),
            kernel_build::sha256_file(job.initramfs)?,
        ),
        (
            "kernel".to_owned(),
            format!("{} (created {})", kernel.name(), volume.created),
        ),
        ("builder".to_owned(), builder.name().to_owned()),
    ];
    let fragments = fragments(ctx, job.system)?;
    let build_dir = layout.kernel_builds().join(job.system_name);
    let out_dir = layout.out().join(job.system_name);
    let request = KernelJob {
        system: job.system_name,
        root: job.root,
        root_path: &root_path,
        source: &source,
        build_dir: &build_dir,
        fragments: &fragments,
        initramfs: job.initramfs,
        compression: job.compression,
        cmdline: job.system.cmdline.as_deref(),
        arch: "x86",
        jobs: ctx.config.build.jobs,
        out_dir: &out_dir,
        inputs: &inputs,
    };
    let built = builder.build(&request);
    // A builder that used the root leaves its kernel mounts there; so does a failed one.
    if builder.capabilities().uses_root && job.unmount_after {
        umount_all(&root_path, false)
            .with_context(|| format!("cannot unmount root '{}'", job.root))?;
    }
    built.with_context(|| {
        format!(
            "cannot build the kernel of system '{}' ({} builder)",
            job.system_name,
            builder.name()
        )
    })
}
