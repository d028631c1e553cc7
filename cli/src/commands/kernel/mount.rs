//! `autogentoo kernel mount`

use anyhow::{Context as _, Result};
use autogentoo_core::chroot::root_lock::{LockKind, RootLock};
use autogentoo_core::chroot::root_mounts::{self, mount_all};
use autogentoo_core::kernel::kernel_build;
use autogentoo_core::storage::{VolumeId, VolumeKind};
use autogentoo_pipeline::kernel::kernel_volume;
use clap::Args;

use crate::context::Context;
use crate::output;

/// Bind a kernel's sources, build directory and initramfs into a root
///
/// Bind a kernel into a root for building there: the sources read-only at /usr/src/linux, the
/// system's build directory (`make O=`, where `.config` lives) at /usr/src/linux-build, and the
/// directory holding the root's initramfs at /usr/src/initramfs, where the config's
/// INITRAMFS_SOURCE points. All resolved inside the root; `root umount` takes them away.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// The root
    pub root: String,

    /// The kernel volume [default: the only one]
    #[arg(long)]
    pub kernel: Option<String>,

    /// The system whose build directory to bind [default: the root's name]
    #[arg(long)]
    pub system: Option<String>,
}

pub fn run(ctx: &Context, args: MountArgs) -> Result<()> {
    let storage = ctx.storage()?;
    let root = storage.path(&VolumeId::new(VolumeKind::Root, &args.root)?)?;
    let kernel = kernel_volume(&*storage, args.kernel.as_deref())?;
    let source = kernel_build::find_source(&storage.path(&kernel)?)?;
    let layout = ctx.layout();
    let system = args.system.as_deref().unwrap_or(&args.root);
    let build_dir = layout.kernel_builds().join(system);
    let initramfs = layout.initramfs(&args.root, ctx.config.pack.compression);
    let initramfs_dir = initramfs
        .parent()
        .expect("a file has a directory")
        .to_owned();
    for dir in [&build_dir, &initramfs_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let _mounts = RootLock::wait(&layout, &args.root, LockKind::Mounts, false)?;
    let plan = root_mounts::kernel_plan(&source, &build_dir, &initramfs_dir);
    let report = mount_all(&root, &plan)
        .with_context(|| format!("cannot mount the kernel into root '{}'", args.root))?;
    if ctx.json {
        output::json(&report);
    } else if report.mounted.is_empty() && !ctx.quiet {
        eprintln!("the kernel is already mounted in root '{}'", args.root);
    }
    Ok(())
}
