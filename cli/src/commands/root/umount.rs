//! `autogentoo root umount`

use anyhow::{Context as _, Result};
use autogentoo_core::chroot::root_lock::{LockKind, RootLock};
use autogentoo_core::chroot::root_mounts::umount_all;
use autogentoo_core::storage::{VolumeId, VolumeKind};
use clap::Args;

use crate::context::Context;
use crate::output;

/// Unmount everything below a root, in one call
///
/// Unmount everything below a root, deepest first, in one call, and detach its loop devices.
/// A busy mount is reported with the processes that hold it. Unmounting an unmounted root
/// succeeds quietly.
#[derive(Args, Debug)]
pub struct UmountArgs {
    /// The root
    pub name: String,

    /// Detach busy mounts anyway; they go when their last user does
    #[arg(long)]
    pub lazy: bool,
}

pub fn run(ctx: &Context, args: UmountArgs) -> Result<()> {
    let storage = ctx.storage()?;
    let id = VolumeId::new(VolumeKind::Root, &args.name)?;
    let root = storage.path(&id)?;
    let _mounts = RootLock::wait(&ctx.layout(), &args.name, LockKind::Mounts, false)?;
    let report = umount_all(&root, args.lazy)
        .with_context(|| format!("cannot unmount root '{}'", args.name))?;
    if ctx.json {
        output::json(&report);
    }
    Ok(())
}
