//! What the per-kind commands (`stage path`, `root path`, `… remove`) share: they differ only in
//! the kind of volume they act on.

use anyhow::Result;
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

/// Removes a volume; with `recursive`, the volumes cloned from it first.
pub fn remove(ctx: &Context, kind: VolumeKind, name: &str, recursive: bool) -> Result<()> {
    let id = VolumeId::new(kind, name)?;
    let storage = ctx.storage()?;
    if recursive {
        storage.destroy_recursive(&id)?;
    } else {
        storage.destroy(&id)?;
    }
    Ok(())
}
