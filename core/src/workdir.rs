//! The workdir: the storage backend's volumes plus plain directories beside them — `repos/` for
//! SquashFS snapshots of the ebuild repository and `out/` for finished images — and the two
//! shared caches, `distfiles` and `binpkgs`, as cache volumes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::storage::{io_err, Capabilities, Storage, StorageError, Usage, VolumeId, VolumeKind};

/// The cache volumes every workdir has, mounted into roots.
pub const CACHES: [&str; 2] = ["distfiles", "binpkgs"];

/// Where the plain directories of a workdir are.
#[derive(Clone, Debug)]
pub struct Layout {
    pub workdir: PathBuf,
}

impl Layout {
    pub fn new(workdir: &Path) -> Self {
        Self {
            workdir: workdir.to_owned(),
        }
    }

    /// SquashFS images of the ebuild repository.
    pub fn repos(&self) -> PathBuf {
        self.workdir.join("repos")
    }

    /// Finished artifacts, one directory per system.
    pub fn out(&self) -> PathBuf {
        self.workdir.join("out")
    }

    /// Kernel build directories (`make O=`), one per system, kept for relinks.
    pub fn kernel_builds(&self) -> PathBuf {
        self.workdir.join("kbuild")
    }

    /// Lock files, one set per root.
    pub fn locks(&self) -> PathBuf {
        self.workdir.join(".locks")
    }
}

/// Creates whatever is missing of the layout; running it again changes nothing.
pub fn init(storage: &dyn Storage, layout: &Layout) -> Result<(), StorageError> {
    storage.init()?;
    for cache in CACHES {
        match storage.create(&VolumeId::new(VolumeKind::Cache, cache)?) {
            Ok(_) | Err(StorageError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
    }
    for dir in [layout.repos(), layout.out(), layout.locks()] {
        std::fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    }
    Ok(())
}

/// What `workdir status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    pub backend: String,
    pub workdir: PathBuf,
    pub capabilities: Capabilities,
    pub usage: Usage,
    /// Volume names by kind (`stage`, `root`, …).
    pub volumes: BTreeMap<VolumeKind, Vec<String>>,
}

pub fn status(storage: &dyn Storage, layout: &Layout) -> Result<Status, StorageError> {
    let mut volumes = BTreeMap::new();
    for kind in VolumeKind::ALL {
        let names = storage
            .list(kind)?
            .into_iter()
            .map(|v| v.id.name().to_owned())
            .collect();
        volumes.insert(kind, names);
    }
    Ok(Status {
        backend: storage.backend_name().to_owned(),
        workdir: layout.workdir.clone(),
        capabilities: storage.capabilities(),
        usage: storage.usage()?,
        volumes,
    })
}
