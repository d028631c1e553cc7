//! `autogentoo root mount`

use anyhow::{Context as _, Result};
use autogentoo_core::chroot::root_lock::{LockKind, RootLock};
use autogentoo_core::chroot::root_mounts::{self, mount_all};
use autogentoo_core::storage::{VolumeId, VolumeKind};
use clap::Args;

use crate::context::Context;
use crate::output;

/// Mount proc, sys, dev, run, the caches and the repository into a root
///
/// Mount what a root needs to be chrooted into: proc, sys and dev (recursive, as slaves), a tmpfs
/// on run, the shared distfiles and binpkgs, the ebuild repository snapshot (read-only), and a
/// copy of the host's resolv.conf. Mounting a mounted root changes nothing and says so; a
/// half-mounted root is completed.
#[derive(Args, Debug)]
pub struct MountArgs {
    /// The root
    pub name: String,
}

pub fn run(ctx: &Context, args: MountArgs) -> Result<()> {
    let storage = ctx.storage()?;
    let id = VolumeId::new(VolumeKind::Root, &args.name)?;
    let root = storage.path(&id)?;
    let layout = ctx.layout();
    let _use = RootLock::wait(&layout, &args.name, LockKind::Use, true)?;
    let _mounts = RootLock::wait(&layout, &args.name, LockKind::Mounts, false)?;
    let arch = autogentoo_core::arch::of_tree(&root)?.map(|(arch, _)| arch);
    let plan = root_mounts::plan_for(&*storage, &layout, &ctx.config.mounts, arch)?;
    let report =
        mount_all(&root, &plan).with_context(|| format!("cannot mount root '{}'", args.name))?;
    if ctx.json {
        output::json(&report);
    } else if report.mounted.is_empty() && !ctx.quiet {
        eprintln!("root '{}' is already mounted", args.name);
    }
    if !plan
        .mounts
        .iter()
        .any(|m| matches!(m.source, root_mounts::MountSource::SquashFs { .. }))
    {
        tracing::warn!(
            "no repository image in {}; {} is left as it is",
            layout.repos().display(),
            ctx.config.mounts.repo.display()
        );
    }
    Ok(())
}
