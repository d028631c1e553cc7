//! Backends by name. The binary registers the built-in backends and those that plugins provide;
//! `--backend NAME` looks them up here, and an unknown name lists the known ones.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::storage::{Storage, StorageError};

/// What a backend needs to open a store: the settings of the `[storage]` section after the
/// command line has overridden them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageSettings {
    /// The directory under which the volumes live (or the dataset's mountpoint).
    pub workdir: PathBuf,
    /// For dataset-based backends: the dataset that holds the workdir.
    pub dataset: Option<String>,
}

/// Opens a store. Opening never creates anything; [`Storage::init`] does. A plain function for a
/// built-in backend; a closure holding the library for a backend a plugin provides.
pub type StorageFactory =
    Arc<dyn Fn(&StorageSettings) -> Result<Box<dyn Storage>, StorageError> + Send + Sync>;

/// The storage backends known to this process.
#[derive(Default)]
pub struct Registry {
    storage: BTreeMap<String, StorageFactory>,
}

/// A name nobody registered.
#[derive(Debug, thiserror::Error)]
#[error("unknown storage backend '{name}'; known backends: {}", known.join(", "))]
pub struct UnknownBackend {
    pub name: String,
    pub known: Vec<String>,
}

impl Registry {
    /// Registers a backend; a later registration under the same name replaces the earlier one.
    pub fn register_storage(
        &mut self,
        name: &str,
        factory: impl Fn(&StorageSettings) -> Result<Box<dyn Storage>, StorageError>
            + Send
            + Sync
            + 'static,
    ) {
        self.storage.insert(name.to_owned(), Arc::new(factory));
    }

    /// The names of the registered backends, sorted.
    pub fn storage_names(&self) -> Vec<String> {
        self.storage.keys().cloned().collect()
    }

    /// The factory registered under `name`.
    pub fn storage(&self, name: &str) -> Result<StorageFactory, UnknownBackend> {
        self.storage
            .get(name)
            .cloned()
            .ok_or_else(|| UnknownBackend {
                name: name.to_owned(),
                known: self.storage_names(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse(_: &StorageSettings) -> Result<Box<dyn Storage>, StorageError> {
        Err(StorageError::Unsupported {
            message: "test factory".into(),
        })
    }

    #[test]
    fn unknown_name_lists_the_known_ones() {
        let mut registry = Registry::default();
        registry.register_storage("zfs", refuse);
        registry.register_storage("dir", refuse);
        let Err(err) = registry.storage("btrfs") else {
            panic!("btrfs is not registered");
        };
        assert_eq!(
            err.to_string(),
            "unknown storage backend 'btrfs'; known backends: dir, zfs"
        );
        assert!(registry.storage("dir").is_ok());
    }
}
