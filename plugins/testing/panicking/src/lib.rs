//! A test plugin whose calls panic: the storage backend `panicking` opens, then panics in every
//! method, and its pipeline hook panics before every step. The host must turn each panic into
//! an error naming the plugin and the call, and keep running.

use autogentoo_core::registry::StorageSettings;
use autogentoo_core::storage::{
    Capabilities, PendingVolume, Snapshot, SnapshotId, Storage, StorageError, Usage, Volume,
    VolumeId, VolumeKind,
};
use autogentoo_plugin_api::{HookError, HookOutcome, PipelineHooks, Plugin, Step};

/// What every panic of this plugin says.
const MESSAGE: &str = "the panicking test plugin panics here";

fn define() -> Plugin {
    Plugin::new()
        .storage_backend("panicking", open)
        .pipeline_hooks(Panicking)
}

autogentoo_plugin_api::export_plugin!("panicking", define);

fn open(_: &StorageSettings) -> Result<Box<dyn Storage>, StorageError> {
    Ok(Box::new(Panicking))
}

struct Panicking;

impl PipelineHooks for Panicking {
    fn before(&self, _: &Step) -> Result<HookOutcome, HookError> {
        panic!("{MESSAGE}")
    }
}

impl Storage for Panicking {
    fn backend_name(&self) -> &str {
        "panicking"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    fn init(&self) -> Result<(), StorageError> {
        panic!("{MESSAGE}")
    }

    fn usage(&self) -> Result<Usage, StorageError> {
        panic!("{MESSAGE}")
    }

    fn create(&self, _: &VolumeId) -> Result<Volume, StorageError> {
        panic!("{MESSAGE}")
    }

    fn create_pending(&self, _: &VolumeId) -> Result<PendingVolume, StorageError> {
        panic!("{MESSAGE}")
    }

    fn commit(&self, _: PendingVolume) -> Result<Volume, StorageError> {
        panic!("{MESSAGE}")
    }

    fn discard(&self, _: PendingVolume) -> Result<(), StorageError> {
        panic!("{MESSAGE}")
    }

    fn sweep_abandoned(&self) -> Result<usize, StorageError> {
        panic!("{MESSAGE}")
    }

    fn snapshot(&self, _: &SnapshotId) -> Result<Snapshot, StorageError> {
        panic!("{MESSAGE}")
    }

    fn seal(&self, _: &VolumeId, _: &str) -> Result<Snapshot, StorageError> {
        panic!("{MESSAGE}")
    }

    fn snapshots(&self, _: &VolumeId) -> Result<Vec<Snapshot>, StorageError> {
        panic!("{MESSAGE}")
    }

    fn clone_snapshot(&self, _: &SnapshotId, _: &VolumeId) -> Result<Volume, StorageError> {
        panic!("{MESSAGE}")
    }

    fn rollback(&self, _: &SnapshotId) -> Result<(), StorageError> {
        panic!("{MESSAGE}")
    }

    fn destroy(&self, _: &VolumeId) -> Result<(), StorageError> {
        panic!("{MESSAGE}")
    }

    fn destroy_snapshot(&self, _: &SnapshotId) -> Result<(), StorageError> {
        panic!("{MESSAGE}")
    }

    fn list(&self, _: VolumeKind) -> Result<Vec<Volume>, StorageError> {
        panic!("{MESSAGE}")
    }

    fn get(&self, _: &VolumeId) -> Result<Volume, StorageError> {
        panic!("{MESSAGE}")
    }

    fn set_property(&self, _: &VolumeId, _: &str, _: &str) -> Result<(), StorageError> {
        panic!("{MESSAGE}")
    }
}
