//! An example third-party plugin: the `overlay` storage backend, whose clones are overlayfs
//! mounts, so a root cloned from a stage costs nothing on any filesystem that can hold an
//! overlay's upper directory (ext4, xfs, tmpfs, …).
//!
//! A volume is either a plain directory (one created empty or imported: its whole tree is its
//! own) or an overlay (a clone): a stack of read-only layers under an upper directory of its
//! own, mounted at the volume's path. A snapshot is a stack of layers too: the snapshot of a
//! plain volume is a copy of its tree; the snapshot of an overlay volume is a copy of its upper
//! directory (only what changed since the clone) on top of the volume's own layers. The seal
//! snapshot of a plain stage is the stage itself, so cloning roots from a stage copies nothing.
//! Rolling back puts a copy of the snapshot's top layer back as the tree (plain) or as the upper
//! directory (overlay, remounted). Layers are never written after they are made, and the
//! contract's refusals (no destroying a snapshot or volume that has clones) keep every layer a
//! clone stands on alive as long as the clone.
//!
//! Layout under the workdir:
//! ```text
//! stages/NAME  roots/NAME  kernels/NAME  cache/NAME   plain directories, or overlay mount points
//! .autogentoo-overlay/volumes/KIND/NAME.json          metadata: origin, layers, snapshots, properties
//! .autogentoo-overlay/layers/KIND/NAME/SNAP/          snapshot layers
//! .autogentoo-overlay/upper/KIND/NAME/{upper,work}/   an overlay volume's upper and work directories
//! .autogentoo-overlay/pending/                        volumes being filled, trees being removed
//! .autogentoo-overlay/lock                            serialises metadata changes between processes
//! ```
//! Mounts do not survive a reboot: describing a volume (`get`, `list`) mounts it again if needed.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use autogentoo_core::chroot::mountinfo;
use autogentoo_core::files::tree_copy::copy_tree;
use autogentoo_core::registry::StorageSettings;
use autogentoo_core::storage::state_dir::{self, RecordedOrigin, StateDir};
use autogentoo_core::storage::{
    check_property, io_err, Capabilities, PendingVolume, Snapshot, SnapshotId, Storage,
    StorageError, Usage, Volume, VolumeId, VolumeKind,
};
use autogentoo_plugin_api::Plugin;
use rustix::fs::RenameFlags;
use rustix::io::Errno;
use serde::{Deserialize, Serialize};

/// The name this backend registers under.
pub const NAME: &str = "overlay";

fn define() -> Plugin {
    Plugin::new().storage_backend(NAME, open)
}

autogentoo_plugin_api::export_plugin!("overlay", define);

/// Opens the backend over the workdir of the settings.
fn open(settings: &StorageSettings) -> Result<Box<dyn Storage>, StorageError> {
    Ok(Box::new(OverlayStorage::open(&settings.workdir)?))
}

/// Mount options that keep every upper directory self-contained (whole files copied up, no
/// redirects, no index), so that a copy of one is a valid layer for other overlays.
const MOUNT_OPTIONS: &str = "index=off,redirect_dir=off,metacopy=off";

struct OverlayStorage {
    state: StateDir,
    capabilities: Capabilities,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    created: i64,
    origin: Option<RecordedOrigin>,
    sealed: Option<String>,
    snapshots: Vec<SnapMeta>,
    properties: BTreeMap<String, String>,
    /// The read-only layers under this volume's upper directory, top first, relative to the
    /// workdir; empty for a plain directory.
    lower: Vec<PathBuf>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapMeta {
    name: String,
    created: i64,
    /// The snapshot's tree: its layers, top first, relative to the workdir.
    layers: Vec<PathBuf>,
}

impl Meta {
    fn is_overlay(&self) -> bool {
        !self.lower.is_empty()
    }

    fn snapshot(&self, name: &str) -> Option<&SnapMeta> {
        self.snapshots.iter().find(|s| s.name == name)
    }
}

impl OverlayStorage {
    fn open(workdir: &Path) -> Result<Self, StorageError> {
        let workdir = std::path::absolute(workdir).map_err(io_err("resolve", workdir))?;
        // The mount options separate paths with ',' and ':'.
        if workdir.to_string_lossy().contains([',', ':', '\\']) {
            return Err(StorageError::Unsupported {
                message: format!(
                    "the overlay backend needs a workdir path without ',', ':' or '\\': {}",
                    workdir.display()
                ),
            });
        }
        let mut storage = Self {
            state: StateDir::new(&workdir, ".autogentoo-overlay"),
            capabilities: Capabilities {
                cheap_clone: true,
                cheap_snapshot: false,
                enforced_read_only: false,
                xattrs: false,
                special_files: true,
                shared_blocks: true,
            },
        };
        if storage.state.is_initialised() {
            storage.capabilities.xattrs = storage.probe_xattrs()?;
        }
        Ok(storage)
    }

    fn volume_dir(&self, id: &VolumeId) -> PathBuf {
        self.state.volume_dir(id)
    }

    fn layers_dir(&self, id: &VolumeId) -> PathBuf {
        self.state.volume_area("layers", id)
    }

    /// Holds `upper/` and `work/` of an overlay volume.
    fn upper_dir(&self, id: &VolumeId) -> PathBuf {
        self.state.volume_area("upper", id)
    }

    fn pending_dir(&self) -> PathBuf {
        self.state.pending_dir()
    }

    fn pending_name(&self, label: &str) -> PathBuf {
        self.state.pending_name(label)
    }

    /// `path` relative to the workdir, as the metadata keeps layers.
    fn relative(&self, path: &Path) -> PathBuf {
        path.strip_prefix(self.state.workdir())
            .unwrap_or(path)
            .to_owned()
    }

    fn probe_xattrs(&self) -> Result<bool, StorageError> {
        let probe = self.pending_name("probe");
        fs::write(&probe, b"probe").map_err(io_err("write", &probe))?;
        let kept = rustix::fs::setxattr(
            &probe,
            "user.autogentoo.probe",
            b"1",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        let _ = fs::remove_file(&probe);
        Ok(kept)
    }

    fn uninitialised(&self) -> StorageError {
        self.state.uninitialised()
    }

    /// Holds the workdir's lock until dropped; metadata changes happen under it.
    fn lock(&self) -> Result<File, StorageError> {
        self.state.lock()
    }

    fn read_meta(&self, id: &VolumeId) -> Result<Meta, StorageError> {
        self.state.read_record(id)
    }

    fn write_meta(&self, id: &VolumeId, meta: &Meta) -> Result<(), StorageError> {
        self.state.write_record(id, meta)
    }

    fn volume(&self, id: &VolumeId, meta: Meta) -> Result<Volume, StorageError> {
        Ok(Volume {
            id: id.clone(),
            path: self.volume_dir(id),
            origin: state_dir::origin(id, meta.origin.as_ref())?,
            sealed: meta.sealed.is_some(),
            created: meta.created,
            properties: meta.properties,
        })
    }

    fn mount_points() -> Result<BTreeSet<PathBuf>, StorageError> {
        Ok(mountinfo::read()
            .map_err(io_err("read", "/proc/self/mountinfo"))?
            .into_iter()
            .map(|m| m.point)
            .collect())
    }

    /// Mounts an overlay volume at its path.
    fn mount(&self, id: &VolumeId, meta: &Meta) -> Result<(), StorageError> {
        let lower: Vec<String> = meta
            .lower
            .iter()
            .map(|layer| self.state.workdir().join(layer).display().to_string())
            .collect();
        let upper = self.upper_dir(id);
        let data = format!(
            "lowerdir={},upperdir={},workdir={},{MOUNT_OPTIONS}",
            lower.join(":"),
            upper.join("upper").display(),
            upper.join("work").display()
        );
        // The kernel takes at most a page of options.
        if data.len() >= 4096 {
            return Err(StorageError::Unsupported {
                message: format!(
                    "{id} stands on {} layers, more than one overlay mount can name; \
                     copy it into a plain volume",
                    lower.len()
                ),
            });
        }
        let data = std::ffi::CString::new(data).expect("paths hold no NUL");
        let target = self.volume_dir(id);
        rustix::mount::mount(
            "autogentoo-overlay",
            &target,
            "overlay",
            rustix::mount::MountFlags::empty(),
            data.as_c_str(),
        )
        .map_err(|e| match e {
            Errno::NODEV => StorageError::MissingPrerequisite {
                what: "the overlay filesystem".into(),
                hint: "load it with `modprobe overlay`".into(),
            },
            Errno::PERM => StorageError::MissingPrerequisite {
                what: "the right to mount".into(),
                hint: "the overlay backend mounts its clones: run autogentoo as root".into(),
            },
            other => io_err("mount an overlay on", &target)(other.into()),
        })
    }

    /// Mounts an overlay volume that is not mounted (after a reboot).
    fn ensure_mounted(
        &self,
        id: &VolumeId,
        meta: &Meta,
        mounted: &BTreeSet<PathBuf>,
    ) -> Result<(), StorageError> {
        if meta.is_overlay() && !mounted.contains(&self.volume_dir(id)) {
            self.mount(id, meta)?;
        }
        Ok(())
    }

    fn unmount(&self, id: &VolumeId) -> Result<(), StorageError> {
        let path = self.volume_dir(id);
        if !mountinfo::is_mount_point(&path).map_err(io_err("read mounts at", &path))? {
            return Ok(());
        }
        rustix::mount::unmount(&path, rustix::mount::UnmountFlags::NOFOLLOW).map_err(|e| {
            if e == Errno::BUSY {
                StorageError::Unsupported {
                    message: format!(
                        "{id} is in use (a process works in {}); stop it first",
                        path.display()
                    ),
                }
            } else {
                io_err("unmount", &path)(e.into())
            }
        })
    }

    /// Moves a tree out of view at once, then deletes it.
    fn remove_tree(&self, path: &Path) -> Result<(), StorageError> {
        let trash = self.pending_name("trash");
        match fs::rename(path, &trash) {
            Ok(()) => fs::remove_dir_all(&trash).map_err(io_err("remove", &trash)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("move out of view", path)(e)),
        }
    }

    /// A hidden copy of the tree `source`.
    fn copy_to_pending(&self, source: &Path, label: &str) -> Result<PathBuf, StorageError> {
        if !self.pending_dir().is_dir() {
            return Err(self.uninitialised());
        }
        let pending = self.pending_name(label);
        fs::create_dir(&pending).map_err(io_err("create", &pending))?;
        if let Err(err) = copy_tree(source, &pending) {
            let _ = fs::remove_dir_all(&pending);
            return Err(err);
        }
        Ok(pending)
    }

    /// A hidden `upper/` and `work/` pair whose upper starts as a copy of `from` (or empty, with
    /// `from`'s owner, mode, times and xattrs: the top of the merged tree is the upper's).
    fn new_upper(&self, from: &Path, copy: bool) -> Result<PathBuf, StorageError> {
        if !self.pending_dir().is_dir() {
            return Err(self.uninitialised());
        }
        let pending = self.pending_name("upper");
        let made = (|| {
            fs::create_dir(&pending).map_err(io_err("create", &pending))?;
            let work = pending.join("work");
            fs::create_dir(&work).map_err(io_err("create", &work))?;
            let upper = pending.join("upper");
            fs::create_dir(&upper).map_err(io_err("create", &upper))?;
            if copy {
                copy_tree(from, &upper).map(drop)
            } else {
                copy_top_attributes(from, &upper)
            }
        })();
        if let Err(err) = made {
            let _ = fs::remove_dir_all(&pending);
            return Err(err);
        }
        Ok(pending)
    }

    /// Renames a finished hidden tree to `target`, failing if `target` exists.
    fn publish(
        &self,
        pending: &Path,
        target: &Path,
        what: &dyn Fn() -> String,
    ) -> Result<(), StorageError> {
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            pending,
            rustix::fs::CWD,
            target,
            RenameFlags::NOREPLACE,
        ) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = fs::remove_dir_all(pending);
                if e == Errno::EXIST || e == Errno::NOTEMPTY {
                    Err(StorageError::AlreadyExists(what()))
                } else {
                    Err(io_err("rename into place", target)(e.into()))
                }
            }
        }
    }

    /// The tree a snapshot of this volume copies: the whole of a plain volume, the upper
    /// directory of an overlay.
    fn own_tree(&self, id: &VolumeId, meta: &Meta) -> PathBuf {
        if meta.is_overlay() {
            self.upper_dir(id).join("upper")
        } else {
            self.volume_dir(id)
        }
    }

    /// Copies a volume's own tree into a new layer `SNAP` of it; returns the snapshot's layers.
    fn new_layer(&self, id: &SnapshotId, meta: &Meta) -> Result<Vec<PathBuf>, StorageError> {
        let volume = id.volume();
        let pending = self.copy_to_pending(&self.own_tree(volume, meta), "snapshot")?;
        let parent = self.layers_dir(volume);
        fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
        let layer = parent.join(id.name());
        self.publish(&pending, &layer, &|| id.to_string())?;
        let mut layers = vec![self.relative(&layer)];
        layers.extend(meta.lower.iter().cloned());
        Ok(layers)
    }

    /// Volumes cloned from `snapshot` of `volume` (any snapshot when `None`).
    fn clones_of(
        &self,
        volume: &VolumeId,
        snapshot: Option<&str>,
    ) -> Result<Vec<VolumeId>, StorageError> {
        (self as &dyn Storage).clones_of(volume, snapshot)
    }

    /// Refuses when anything is mounted below `path` (or at it, with `itself`).
    fn refuse_mounts(&self, path: &Path, itself: bool) -> Result<(), StorageError> {
        let mounts: Vec<PathBuf> = mountinfo::read()
            .map_err(io_err("read mounts under", path))?
            .into_iter()
            .map(|m| m.point)
            .filter(|p| p.starts_with(path) && (itself || p != path))
            .collect();
        if mounts.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
        Err(StorageError::Unsupported {
            message: format!(
                "{} has mounts below it ({}); unmount them first",
                path.display(),
                list.join(", ")
            ),
        })
    }
}

/// Gives `to` the owner, mode, xattrs (not overlayfs' own) and times of `from`.
fn copy_top_attributes(from: &Path, to: &Path) -> Result<(), StorageError> {
    let meta = fs::symlink_metadata(from).map_err(io_err("inspect", from))?;
    rustix::fs::chown(
        to,
        Some(rustix::fs::Uid::from_raw(meta.uid())),
        Some(rustix::fs::Gid::from_raw(meta.gid())),
    )
    .map_err(|e| io_err("chown", to)(e.into()))?;
    rustix::fs::chmod(to, rustix::fs::Mode::from_raw_mode(meta.mode() & 0o7777))
        .map_err(|e| io_err("chmod", to)(e.into()))?;
    let read_error = |e: Errno| io_err("read xattrs of", from)(e.into());
    let mut names = vec![0; rustix::fs::listxattr_query(from).map_err(read_error)?];
    let len = rustix::fs::listxattr(from, &mut names).map_err(read_error)?;
    names.truncate(len);
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") {
            continue;
        }
        let name = OsStr::from_bytes(name);
        let mut value = vec![0; rustix::fs::getxattr_query(from, name).map_err(read_error)?];
        let len = rustix::fs::getxattr(from, name, &mut value).map_err(read_error)?;
        value.truncate(len);
        rustix::fs::setxattr(to, name, &value, rustix::fs::XattrFlags::empty())
            .map_err(|e| io_err("set xattrs on", to)(e.into()))?;
    }
    let time = |secs, nanos| rustix::fs::Timespec {
        tv_sec: secs,
        tv_nsec: nanos,
    };
    let times = rustix::fs::Timestamps {
        last_access: time(meta.atime(), meta.atime_nsec()),
        last_modification: time(meta.mtime(), meta.mtime_nsec()),
    };
    rustix::fs::utimensat(rustix::fs::CWD, to, &times, rustix::fs::AtFlags::empty())
        .map_err(|e| io_err("set the times of", to)(e.into()))
}

impl Storage for OverlayStorage {
    fn backend_name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn init(&self) -> Result<(), StorageError> {
        self.state.create(&["layers", "upper"])
    }

    fn usage(&self) -> Result<Usage, StorageError> {
        self.state.usage()
    }

    fn create(&self, id: &VolumeId) -> Result<Volume, StorageError> {
        let pending = self.create_pending(id)?;
        self.commit(pending)
    }

    fn create_pending(&self, id: &VolumeId) -> Result<PendingVolume, StorageError> {
        if self.volume_dir(id).exists() {
            return Err(StorageError::AlreadyExists(id.to_string()));
        }
        if !self.pending_dir().is_dir() {
            return Err(self.uninitialised());
        }
        let path = self.pending_name(&format!("{}.{}", id.kind(), id.name()));
        fs::create_dir(&path).map_err(io_err("create", &path))?;
        let token = path
            .file_name()
            .expect("named")
            .to_string_lossy()
            .into_owned();
        Ok(PendingVolume {
            id: id.clone(),
            path,
            token,
        })
    }

    fn commit(&self, pending: PendingVolume) -> Result<Volume, StorageError> {
        let id = &pending.id;
        let _lock = self.lock()?;
        self.publish(&pending.path, &self.volume_dir(id), &|| id.to_string())?;
        // What a volume of this name left behind, if its removal was interrupted.
        self.remove_tree(&self.layers_dir(id))?;
        self.remove_tree(&self.upper_dir(id))?;
        let meta = Meta {
            created: state_dir::now(),
            ..Meta::default()
        };
        self.write_meta(id, &meta)?;
        self.volume(id, meta)
    }

    fn discard(&self, pending: PendingVolume) -> Result<(), StorageError> {
        if fs::symlink_metadata(&pending.path).is_err() {
            return Ok(());
        }
        fs::remove_dir_all(&pending.path).map_err(io_err("remove", &pending.path))
    }

    fn sweep_abandoned(&self) -> Result<usize, StorageError> {
        let dir = self.pending_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_err("read", &dir)(e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(io_err("read", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            // LABEL.PID.N: the owner is the second field from the end.
            let pid = name.rsplit('.').nth(1).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let path = entry.path();
                let result = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                result.map_err(io_err("remove", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn snapshot(&self, id: &SnapshotId) -> Result<Snapshot, StorageError> {
        let volume = id.volume();
        let meta = self.read_meta(volume)?;
        if meta.snapshot(id.name()).is_some() {
            return Err(StorageError::AlreadyExists(id.to_string()));
        }
        let _lock = self.lock()?;
        let mut meta = self.read_meta(volume)?;
        let layers = self.new_layer(id, &meta)?;
        let created = state_dir::now();
        meta.snapshots.push(SnapMeta {
            name: id.name().to_owned(),
            created,
            layers,
        });
        self.write_meta(volume, &meta)?;
        Ok(Snapshot {
            id: id.clone(),
            created,
        })
    }

    fn seal(&self, id: &VolumeId, snapshot: &str) -> Result<Snapshot, StorageError> {
        let snap_id = SnapshotId::new(id.clone(), snapshot)?;
        let _lock = self.lock()?;
        let mut meta = self.read_meta(id)?;
        if meta.sealed.is_some() || meta.snapshot(snapshot).is_some() {
            return Err(StorageError::AlreadyExists(snap_id.to_string()));
        }
        // A plain volume is its own seal snapshot; an overlay's upper is still mounted
        // read-write, so its seal snapshot is a copy.
        let layers = if meta.is_overlay() {
            self.new_layer(&snap_id, &meta)?
        } else {
            vec![self.relative(&self.volume_dir(id))]
        };
        let created = state_dir::now();
        meta.sealed = Some(snapshot.to_owned());
        meta.snapshots.push(SnapMeta {
            name: snapshot.to_owned(),
            created,
            layers,
        });
        self.write_meta(id, &meta)?;
        Ok(Snapshot {
            id: snap_id,
            created,
        })
    }

    fn snapshots(&self, id: &VolumeId) -> Result<Vec<Snapshot>, StorageError> {
        let meta = self.read_meta(id)?;
        meta.snapshots
            .iter()
            .map(|s| {
                Ok(Snapshot {
                    id: SnapshotId::new(id.clone(), &s.name)?,
                    created: s.created,
                })
            })
            .collect()
    }

    fn clone_snapshot(&self, from: &SnapshotId, id: &VolumeId) -> Result<Volume, StorageError> {
        let origin = self.read_meta(from.volume())?;
        let layers = origin
            .snapshot(from.name())
            .ok_or_else(|| StorageError::NotFound(from.to_string()))?
            .layers
            .clone();
        if self.volume_dir(id).exists() {
            return Err(StorageError::AlreadyExists(id.to_string()));
        }
        let pending = self.new_upper(&self.state.workdir().join(&layers[0]), false)?;
        let _lock = self.lock()?;
        let discard = |err: StorageError| {
            let _ = fs::remove_dir_all(&pending);
            Err(err)
        };
        // The origin may have gone, or the name been taken, while we prepared.
        match self.read_meta(from.volume()) {
            Ok(now) if now.snapshot(from.name()).is_some() => {}
            Ok(_) => return discard(StorageError::NotFound(from.to_string())),
            Err(err) => return discard(err),
        }
        let target = self.volume_dir(id);
        if let Err(e) = fs::create_dir(&target) {
            return discard(if e.kind() == ErrorKind::AlreadyExists {
                StorageError::AlreadyExists(id.to_string())
            } else {
                io_err("create", &target)(e)
            });
        }
        let meta = Meta {
            created: state_dir::now(),
            origin: Some((
                from.volume().kind().as_str().to_owned(),
                from.volume().name().to_owned(),
                from.name().to_owned(),
            )),
            lower: layers,
            ..Meta::default()
        };
        let placed = (|| {
            self.remove_tree(&self.layers_dir(id))?;
            self.remove_tree(&self.upper_dir(id))?;
            fs::rename(&pending, self.upper_dir(id))
                .map_err(io_err("rename into place", self.upper_dir(id)))?;
            self.write_meta(id, &meta)?;
            self.mount(id, &meta)
        })();
        if let Err(err) = placed {
            let _ = fs::remove_dir(&target);
            let _ = self.remove_tree(&self.upper_dir(id));
            let _ = self.state.remove_record(id);
            return discard(err);
        }
        self.volume(id, meta)
    }

    fn rollback(&self, to: &SnapshotId) -> Result<(), StorageError> {
        let volume = to.volume();
        let meta = self.read_meta(volume)?;
        if meta.sealed.is_some() {
            return Err(StorageError::ReadOnly(volume.to_string()));
        }
        let position = meta
            .snapshots
            .iter()
            .position(|s| s.name == to.name())
            .ok_or_else(|| StorageError::NotFound(to.to_string()))?;
        let newer: Vec<String> = meta.snapshots[position + 1..]
            .iter()
            .map(|s| s.name.clone())
            .collect();
        let mut blocking = Vec::new();
        for name in &newer {
            blocking.extend(self.clones_of(volume, Some(name))?);
        }
        if !blocking.is_empty() {
            return Err(StorageError::HasDependants {
                what: format!("a snapshot of {volume} newer than '{}'", to.name()),
                dependants: blocking,
            });
        }
        let path = self.volume_dir(volume);
        let top = self
            .state
            .workdir()
            .join(&meta.snapshots[position].layers[0]);
        if meta.is_overlay() {
            self.refuse_mounts(&path, false)?;
            let pending = self.new_upper(&top, true)?;
            let _lock = self.lock()?;
            let upper = self.upper_dir(volume);
            let swap = || {
                rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    &pending,
                    rustix::fs::CWD,
                    &upper,
                    RenameFlags::EXCHANGE,
                )
            };
            let swapped = self.unmount(volume).and_then(|()| {
                swap().map_err(|e| io_err("swap in the snapshot at", &upper)(e.into()))
            });
            if let Err(err) = swapped {
                let _ = fs::remove_dir_all(&pending);
                let _ = self.mount(volume, &meta);
                return Err(err);
            }
            if let Err(err) = self.mount(volume, &meta) {
                // Put the volume back as it was.
                let _ = swap();
                let _ = self.mount(volume, &meta);
                let _ = fs::remove_dir_all(&pending);
                return Err(err);
            }
            fs::remove_dir_all(&pending).map_err(io_err("remove", &pending))?;
        } else {
            self.refuse_mounts(&path, true)?;
            let pending = self.copy_to_pending(&top, "rollback")?;
            let _lock = self.lock()?;
            // Swap in one step, so the volume is never missing or half-restored.
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &pending,
                rustix::fs::CWD,
                &path,
                RenameFlags::EXCHANGE,
            )
            .map_err(|e| io_err("swap in the snapshot at", &path)(e.into()))?;
            fs::remove_dir_all(&pending).map_err(io_err("remove", &pending))?;
        }
        let mut meta = self.read_meta(volume)?;
        for name in &newer {
            self.remove_tree(&self.layers_dir(volume).join(name))?;
        }
        meta.snapshots.truncate(position + 1);
        self.write_meta(volume, &meta)
    }

    fn destroy(&self, id: &VolumeId) -> Result<(), StorageError> {
        let _lock = self.lock()?;
        let meta = self.read_meta(id)?;
        let dependants = self.clones_of(id, None)?;
        if !dependants.is_empty() {
            return Err(StorageError::HasDependants {
                what: id.to_string(),
                dependants,
            });
        }
        let path = self.volume_dir(id);
        if meta.is_overlay() {
            self.refuse_mounts(&path, false)?;
            self.unmount(id)?;
            self.remove_tree(&path)?;
            self.remove_tree(&self.upper_dir(id))?;
        } else {
            self.refuse_mounts(&path, true)?;
            self.remove_tree(&path)?;
        }
        self.remove_tree(&self.layers_dir(id))?;
        self.state.remove_record(id)
    }

    fn destroy_snapshot(&self, id: &SnapshotId) -> Result<(), StorageError> {
        let _lock = self.lock()?;
        let mut meta = self.read_meta(id.volume())?;
        let position = meta
            .snapshots
            .iter()
            .position(|s| s.name == id.name())
            .ok_or_else(|| StorageError::NotFound(id.to_string()))?;
        if meta.sealed.as_deref() == Some(id.name()) {
            return Err(StorageError::ReadOnly(format!(
                "{id} (it goes only with its volume)"
            )));
        }
        let dependants = self.clones_of(id.volume(), Some(id.name()))?;
        if !dependants.is_empty() {
            return Err(StorageError::HasDependants {
                what: id.to_string(),
                dependants,
            });
        }
        self.remove_tree(&self.layers_dir(id.volume()).join(id.name()))?;
        meta.snapshots.remove(position);
        self.write_meta(id.volume(), &meta)
    }

    fn list(&self, kind: VolumeKind) -> Result<Vec<Volume>, StorageError> {
        let ids = self.state.volume_ids(kind)?;
        let mounted = Self::mount_points()?;
        let mut volumes = Vec::new();
        for id in ids {
            match self.read_meta(&id) {
                Ok(meta) => {
                    // A volume that cannot be mounted is still listed; `get` says why.
                    let _ = self.ensure_mounted(&id, &meta, &mounted);
                    volumes.push(self.volume(&id, meta)?);
                }
                // Removed since the directory was read.
                Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(volumes)
    }

    fn get(&self, id: &VolumeId) -> Result<Volume, StorageError> {
        let meta = self.read_meta(id)?;
        self.ensure_mounted(id, &meta, &Self::mount_points()?)?;
        self.volume(id, meta)
    }

    fn set_property(&self, id: &VolumeId, key: &str, value: &str) -> Result<(), StorageError> {
        check_property(key, value)?;
        let _lock = self.lock()?;
        let mut meta = self.read_meta(id)?;
        meta.properties.insert(key.to_owned(), value.to_owned());
        self.write_meta(id, &meta)
    }
}
