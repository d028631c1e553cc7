//! `autogentoo root snapshot`

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use autogentoo_core::storage::{SnapshotId, VolumeId, VolumeKind};
use clap::Args;

use crate::context::Context;
use crate::output;

/// Take a read-only snapshot of a root
///
/// Take a read-only snapshot of a root, to roll back to or clone from.
#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// The root
    pub name: String,

    /// Name of the snapshot [default: the UTC time, e.g. 20261127-183045]
    pub snapshot: Option<String>,
}

pub fn run(ctx: &Context, args: SnapshotArgs) -> Result<()> {
    let root = VolumeId::new(VolumeKind::Root, &args.name)?;
    let name = args.snapshot.unwrap_or_else(default_name);
    let id = SnapshotId::new(root, &name)?;
    let snapshot = ctx.storage()?.snapshot(&id)?;
    if ctx.json {
        output::json(&snapshot);
    } else {
        println!("{}", snapshot.id.name());
    }
    Ok(())
}

fn default_name() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, mo, d, h, mi, s) = autogentoo_core::civil_time::utc(secs);
    format!("{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}")
}
