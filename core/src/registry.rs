//! Storage backends, packers and kernel builders by name. The binary registers the built-in
//! ones and those that plugins provide; `--backend NAME`, `pack.packer` and a system's
//! `kernel_build` look them up here, and an unknown name lists the known ones.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::kernel::{KernelBuilder, KernelError};
use crate::pack::{PackError, Packer};
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

/// Makes a packer.
pub type PackerFactory = Arc<dyn Fn() -> Result<Box<dyn Packer>, PackError> + Send + Sync>;

/// Makes a kernel builder.
pub type KernelBuilderFactory =
    Arc<dyn Fn() -> Result<Box<dyn KernelBuilder>, KernelError> + Send + Sync>;

/// The storage backends, packers and kernel builders known to this process.
#[derive(Default)]
pub struct Registry {
    storage: BTreeMap<String, StorageFactory>,
    packers: BTreeMap<String, PackerFactory>,
    kernel_builders: BTreeMap<String, KernelBuilderFactory>,
}

/// A name nobody registered.
#[derive(Debug, thiserror::Error)]
#[error("unknown {what} '{name}'; known {what}s: {}", known.join(", "))]
pub struct UnknownName {
    /// `storage backend`, `packer` or `kernel builder`.
    pub what: &'static str,
    pub name: String,
    pub known: Vec<String>,
}

fn find<T: Clone>(
    map: &BTreeMap<String, T>,
    what: &'static str,
    name: &str,
) -> Result<T, UnknownName> {
    map.get(name).cloned().ok_or_else(|| UnknownName {
        what,
        name: name.to_owned(),
        known: map.keys().cloned().collect(),
    })
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
    pub fn storage(&self, name: &str) -> Result<StorageFactory, UnknownName> {
        find(&self.storage, "storage backend", name)
    }

    /// Registers a packer; a later registration under the same name replaces the earlier one.
    pub fn register_packer(
        &mut self,
        name: &str,
        factory: impl Fn() -> Result<Box<dyn Packer>, PackError> + Send + Sync + 'static,
    ) {
        self.packers.insert(name.to_owned(), Arc::new(factory));
    }

    /// The names of the registered packers, sorted.
    pub fn packer_names(&self) -> Vec<String> {
        self.packers.keys().cloned().collect()
    }

    /// The packer registered under `name`.
    pub fn packer(&self, name: &str) -> Result<PackerFactory, UnknownName> {
        find(&self.packers, "packer", name)
    }

    /// Registers a kernel builder; a later registration under the same name replaces the
    /// earlier one.
    pub fn register_kernel_builder(
        &mut self,
        name: &str,
        factory: impl Fn() -> Result<Box<dyn KernelBuilder>, KernelError> + Send + Sync + 'static,
    ) {
        self.kernel_builders
            .insert(name.to_owned(), Arc::new(factory));
    }

    /// The names of the registered kernel builders, sorted.
    pub fn kernel_builder_names(&self) -> Vec<String> {
        self.kernel_builders.keys().cloned().collect()
    }

    /// The kernel builder registered under `name`.
    pub fn kernel_builder(&self, name: &str) -> Result<KernelBuilderFactory, UnknownName> {
        find(&self.kernel_builders, "kernel builder", name)
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
            "unknown storage backend 'btrfs'; known storage backends: dir, zfs"
        );
        assert!(registry.storage("dir").is_ok());
        registry.register_packer("newc", || Ok(Box::new(crate::pack::initramfs::Newc)));
        let Err(err) = registry.packer("erofs") else {
            panic!("erofs is not registered");
        };
        assert_eq!(
            err.to_string(),
            "unknown packer 'erofs'; known packers: newc"
        );
    }
}
