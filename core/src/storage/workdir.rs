//! The workdir: the storage backend's volumes plus plain directories beside them — `repos/` for
//! SquashFS snapshots of the ebuild repository and `out/` for finished images — and the two
//! shared caches, `distfiles` and `binpkgs`, as cache volumes.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::site_config::Compression;
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

    /// Links to published builds' results (`autogentoo publish`).
    pub fn published(&self) -> PathBuf {
        self.workdir.join("published")
    }

    /// Lock files, one set per root.
    pub fn locks(&self) -> PathBuf {
        self.workdir.join(".locks")
    }

    /// Where `root pack` and the pipeline put a root's initramfs: `out/ROOT/initramfs.cpio`
    /// with the compression's suffix.
    pub fn initramfs(&self, root: &str, compression: Compression) -> PathBuf {
        let file = match compression {
            Compression::Gzip => "initramfs.cpio.gz",
            Compression::Zstd => "initramfs.cpio.zst",
            Compression::Xz => "initramfs.cpio.xz",
            Compression::None => "initramfs.cpio",
        };
        self.out().join(root).join(file)
    }
}

/// The mode of the workdir's top: root alone may pass it. Stages and roots hold whatever their
/// tarballs held — world-writable device nodes, setuid-root programs — and any user who can
/// reach them can use them (Docker's CVE-2021-41091 was this hole in its image roots).
pub const TOP_MODE: u32 = 0o700;

/// Creates whatever is missing of the layout, and restricts its top to root ([`TOP_MODE`]) —
/// also on an existing workdir; running it again changes nothing.
pub fn init(storage: &dyn Storage, layout: &Layout) -> Result<(), StorageError> {
    // Made private from the start where we make it; a backend's mount point is tightened below.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(TOP_MODE)
        .create(&layout.workdir)
        .map_err(io_err("create", &layout.workdir))?;
    storage.init()?;
    restrict_top(&layout.workdir)?;
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

/// Gives the workdir's top [`TOP_MODE`], if it has another.
fn restrict_top(workdir: &Path) -> Result<(), StorageError> {
    let meta = std::fs::metadata(workdir).map_err(io_err("inspect", workdir))?;
    if meta.permissions().mode() & 0o7777 != TOP_MODE {
        std::fs::set_permissions(workdir, std::fs::Permissions::from_mode(TOP_MODE))
            .map_err(io_err("restrict to root", workdir))?;
    }
    Ok(())
}

/// The binary package cache of the roots of `arch` (`None`: of an unknown one, taken as the
/// host's): `binpkgs` for the host's own architecture, `binpkgs-ARCH` for any other, made when
/// first wanted. Packages built for one architecture (or for i686 on an amd64 host) are never
/// offered to another's roots; distfiles, which are sources, stay shared.
pub fn binpkgs_cache(
    storage: &dyn Storage,
    arch: Option<crate::arch::Arch>,
) -> Result<PathBuf, StorageError> {
    let name = match arch {
        Some(arch) if arch != crate::arch::Arch::host() => format!("{}-{}", CACHES[1], arch.gentoo),
        _ => CACHES[1].to_owned(),
    };
    let id = VolumeId::new(VolumeKind::Cache, &name)?;
    match storage.create(&id) {
        Ok(volume) => Ok(volume.path),
        Err(StorageError::AlreadyExists(_)) => storage.path(&id),
        Err(e) => Err(e),
    }
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
    /// Where each shared cache is on the host (`distfiles`, `binpkgs`, `binpkgs-ARCH` for
    /// another architecture's roots): where a site drops the distfiles no mirror has, or reads
    /// the binary packages.
    pub caches: BTreeMap<String, PathBuf>,
    /// The permission bits of the workdir's top; anything but [`TOP_MODE`] lets other users
    /// reach the device nodes and setuid programs of stages and roots.
    pub top_mode: u32,
}

impl Status {
    /// Whether users other than root can pass the workdir's top.
    pub fn open_to_others(&self) -> bool {
        self.top_mode & 0o077 != 0
    }
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
    let caches = storage
        .list(VolumeKind::Cache)?
        .into_iter()
        .map(|cache| (cache.id.name().to_owned(), cache.path))
        .collect();
    let top = std::fs::metadata(&layout.workdir).map_err(io_err("inspect", &layout.workdir))?;
    Ok(Status {
        caches,
        top_mode: top.permissions().mode() & 0o7777,
        backend: storage.backend_name().to_owned(),
        workdir: layout.workdir.clone(),
        capabilities: storage.capabilities(),
        usage: storage.usage()?,
        volumes,
    })
}
