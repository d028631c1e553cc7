//! `autogentoo root rollback`

use anyhow::Result;
use autogentoo_core::storage::{SnapshotId, VolumeId, VolumeKind};
use clap::Args;

use crate::commands::volume;
use crate::context::Context;

/// Return a root to one of its snapshots
///
/// Return a root to one of its snapshots. Changes since then are lost, and newer snapshots are
/// removed; refused if any of those has clones.
#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The root
    pub name: String,

    /// The snapshot to return to
    pub snapshot: String,
}

pub fn run(ctx: &Context, args: RollbackArgs) -> Result<()> {
    let root = VolumeId::new(VolumeKind::Root, &args.name)?;
    let storage = ctx.storage()?;
    let _lock = volume::root_to_itself(ctx, &storage.path(&root)?, &args.name)?;
    let id = SnapshotId::new(root, &args.snapshot)?;
    storage.rollback(&id)?;
    if ctx.json {
        crate::output::json(&serde_json::json!({ "root": args.name, "snapshot": args.snapshot }));
    }
    Ok(())
}
