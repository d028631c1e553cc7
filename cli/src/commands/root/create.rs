//! `autogentoo root create`

use anyhow::{Context as _, Result};
use autogentoo_core::stage_import::SEAL_SNAPSHOT;
use autogentoo_core::storage::{SnapshotId, StorageError, VolumeId, VolumeKind};
use clap::Args;

use crate::context::Context;
use crate::output;

/// Create a read-write root cloned from a stage
///
/// Create a read-write root cloned from an imported stage. The stage is not changed by anything
/// done in the root.
#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Name of the new root
    pub name: String,

    /// The stage to clone
    #[arg(long)]
    pub stage: String,
}

pub fn run(ctx: &Context, args: CreateArgs) -> Result<()> {
    let storage = ctx.storage()?;
    let stage = VolumeId::new(VolumeKind::Stage, &args.stage)?;
    let root = VolumeId::new(VolumeKind::Root, &args.name)?;
    let from = SnapshotId::new(stage.clone(), SEAL_SNAPSHOT)?;
    let volume = storage
        .clone_snapshot(&from, &root)
        .map_err(|err| match err {
            StorageError::NotFound(_) if storage.get(&stage).is_err() => {
                anyhow::anyhow!(
                    "{stage} does not exist; `autogentoo stage list` shows the imported stages"
                )
            }
            other => anyhow::Error::new(other),
        });
    let volume = volume.with_context(|| format!("cannot create root '{}'", args.name))?;
    if ctx.json {
        output::json(&volume);
    } else {
        println!("{}", volume.path.display());
    }
    Ok(())
}
