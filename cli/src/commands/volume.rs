//! What the per-kind commands (`stage path`, `root path`, `… remove`) share: they differ only in
//! the kind of volume they act on.

use std::path::Path;

use anyhow::{bail, Context as _, Result};
use autogentoo_core::chroot::mountinfo;
use autogentoo_core::chroot::root_lock::{LockKind, RootLock};
use autogentoo_core::stage_import::{import_sealed, ImportRequest, ARCH_PROPERTY};
use autogentoo_core::storage::{VolumeId, VolumeKind};

use crate::context::Context;

/// Prints a volume's directory (or `{"path": …}` with `--json`).
pub fn print_path(ctx: &Context, kind: VolumeKind, name: &str) -> Result<()> {
    let id = VolumeId::new(kind, name)?;
    let path = ctx.storage()?.path(&id)?;
    if ctx.json {
        crate::output::json(&serde_json::json!({ "path": path }));
    } else {
        println!("{}", path.display());
    }
    Ok(())
}

/// Lists the volumes of a kind: name, creation time, the source they were imported from.
pub fn print_list(ctx: &Context, kind: VolumeKind) -> Result<()> {
    let volumes = ctx.storage()?.list(kind)?;
    if ctx.json {
        crate::output::json(&volumes);
        return Ok(());
    }
    for volume in volumes {
        let source = volume
            .properties
            .get("source")
            .map(String::as_str)
            .unwrap_or("-");
        let time = crate::output::timestamp(volume.created);
        if kind == VolumeKind::Stage {
            let arch = volume
                .properties
                .get(ARCH_PROPERTY)
                .map(String::as_str)
                .unwrap_or("-");
            println!("{}\t{time}\t{arch}\t{source}", volume.id.name());
        } else {
            println!("{}\t{time}\t{source}", volume.id.name());
        }
    }
    Ok(())
}

/// Imports a tarball or directory as a sealed volume of `kind` (a stage, kernel sources),
/// with a progress bar on a terminal, and prints its directory.
pub fn import(
    ctx: &Context,
    kind: VolumeKind,
    source: &Path,
    name: &str,
    digests: Option<&Path>,
) -> Result<()> {
    let storage = ctx.storage()?;
    let cancel = crate::interrupt::cancel_flag()?;
    let bar = crate::progress::Bar::new(&format!("importing {name}"), ctx.quiet);
    let request = ImportRequest {
        source,
        name,
        digests,
        progress: &bar,
        cancel: &cancel,
    };
    let report = import_sealed(&*storage, kind, &request);
    bar.finish();
    let report = report
        .with_context(|| format!("cannot import {kind} '{name}' from {}", source.display()))?;
    if ctx.json {
        crate::output::json(&report);
    } else {
        println!("{}", report.volume.path.display());
    }
    tracing::info!(
        "imported {} entries, {} of file data",
        report.entries,
        crate::output::bytes(report.bytes)
    );
    Ok(())
}

/// Removes a volume; with `recursive`, the volumes cloned from it first. With `--json`, prints
/// `{"removed": [{"kind": …, "name": …}, …]}` in the order they went.
pub fn remove(ctx: &Context, kind: VolumeKind, name: &str, recursive: bool) -> Result<()> {
    let id = VolumeId::new(kind, name)?;
    let storage = ctx.storage()?;
    let _lock = match kind {
        VolumeKind::Root => Some(root_to_itself(ctx, &storage.path(&id)?, name)?),
        _ => None,
    };
    let removed = if recursive {
        storage.destroy_recursive(&id)?
    } else {
        storage.destroy(&id)?;
        vec![id]
    };
    if ctx.json {
        crate::output::json(&serde_json::json!({ "removed": removed }));
    }
    Ok(())
}

/// Takes a root for a wholesale change (remove, rollback): refused while a command runs in it or
/// anything is mounted below it, naming who or what.
pub fn root_to_itself(ctx: &Context, path: &Path, name: &str) -> Result<RootLock> {
    let lock = RootLock::exclusive_now(&ctx.layout(), name, LockKind::Use)?;
    let mounts = mountinfo::mounts_under(path)?;
    if !mounts.is_empty() {
        bail!(
            "root '{name}' is mounted ({} mounts below {}); run `autogentoo root umount {name}` first",
            mounts.len(),
            path.display()
        );
    }
    Ok(lock)
}
