//! What the btrfs backend's tests share beyond the end-to-end suite's helpers (a scratch btrfs
//! on a loop device, running tools): the backend itself on a workdir in that scratch btrfs.

use anyhow::Result;
use autogentoo_core::registry::StorageSettings;
use autogentoo_core::storage::Storage;
use autogentoo_tests::ScratchBtrfs;

/// The btrfs backend on a workdir inside `scratch`, initialised and reopened (as the CLI does,
/// so that capabilities are probed on the initialised workdir).
#[allow(dead_code)] // Not every test file opens the backend directly.
pub fn store_in(scratch: &ScratchBtrfs) -> Result<Box<dyn Storage>> {
    let settings = StorageSettings {
        workdir: scratch.path().join("work"),
        dataset: None,
    };
    autogentoo_backend_btrfs::open(&settings)?.init()?;
    Ok(autogentoo_backend_btrfs::open(&settings)?)
}
