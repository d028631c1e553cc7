//! The `dir` storage backend: volumes are plain directories under the workdir, so it works on any
//! local filesystem. Clones and snapshots are full copies (reflinks where the filesystem shares
//! blocks, e.g. XFS or btrfs), made in a hidden place and renamed into view, so a volume is
//! either complete or absent. A sealed stage is its own seal snapshot: sealing copies nothing.
//!
//! Layout under the workdir:
//! ```text
//! stages/NAME  roots/NAME  kernels/NAME  cache/NAME     the volumes
//! .autogentoo/volumes/KIND/NAME.json                    metadata: origin, snapshots, properties
//! .autogentoo/snapshots/KIND/NAME/SNAP/                 snapshot trees, never written to again
//! .autogentoo/pending/KIND.NAME.PID.N/                  volumes being filled, and trees being removed
//! .autogentoo/lock                                      serialises metadata changes between processes
//! ```

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use autogentoo_core::chroot::mountinfo;
use autogentoo_core::registry::StorageSettings;
use autogentoo_core::storage::state_dir::{self, RecordedOrigin, StateDir};
use autogentoo_core::storage::{
    check_property, check_seal, io_err, Capabilities, PendingVolume, Snapshot, SnapshotId, Storage,
    StorageError, Usage, Volume, VolumeId, VolumeKind,
};
use rustix::fs::RenameFlags;
use serde::{Deserialize, Serialize};

mod trees;

pub use trees::{Copies, Trees};

/// The name this backend registers under.
pub const NAME: &str = "dir";

/// Volumes as directory trees under a workdir, with their metadata beside them. What a tree is
/// (a plain directory, a btrfs subvolume) and how one is copied is `T`'s business.
pub struct TreeStore<T> {
    state: StateDir,
    capabilities: Capabilities,
    trees: T,
}

/// The `dir` backend: plain directories, copied.
pub type DirStorage = TreeStore<Copies>;

/// What we keep about a volume beside its tree.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Meta {
    created: i64,
    origin: Option<RecordedOrigin>,
    sealed: Option<String>,
    snapshots: Vec<SnapMeta>,
    properties: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapMeta {
    name: String,
    created: i64,
}

/// Opens the `dir` backend; the registry's factory.
pub fn open(settings: &StorageSettings) -> Result<Box<dyn Storage>, StorageError> {
    Ok(Box::new(DirStorage::open(&settings.workdir)?))
}

impl DirStorage {
    /// Opens a workdir; nothing is created until [`Storage::init`].
    pub fn open(workdir: &Path) -> Result<Self, StorageError> {
        TreeStore::with_trees(workdir, Copies)
    }
}

impl<T: Trees> TreeStore<T> {
    /// Opens a workdir whose trees `trees` makes; nothing is created until [`Storage::init`].
    pub fn with_trees(workdir: &Path, trees: T) -> Result<Self, StorageError> {
        let workdir = if workdir.is_absolute() {
            workdir.to_owned()
        } else {
            std::env::current_dir()
                .map_err(io_err("resolve", workdir))?
                .join(workdir)
        };
        trees.check(&workdir)?;
        let capabilities = trees.capabilities();
        let mut storage = Self {
            state: StateDir::new(&workdir, ".autogentoo"),
            capabilities,
            trees,
        };
        if storage.state.is_initialised() {
            storage.capabilities = storage.probe()?;
        }
        Ok(storage)
    }

    fn volume_dir(&self, id: &VolumeId) -> PathBuf {
        self.state.volume_dir(id)
    }

    fn snapshots_dir(&self, id: &VolumeId) -> PathBuf {
        self.state.volume_area("snapshots", id)
    }

    fn pending_dir(&self) -> PathBuf {
        self.state.pending_dir()
    }

    fn pending_name(&self, label: &str) -> PathBuf {
        self.state.pending_name(label)
    }

    /// Finds out what the filesystem under the workdir can do.
    fn probe(&self) -> Result<Capabilities, StorageError> {
        let a = self.pending_name("probe-a");
        let b = self.pending_name("probe-b");
        fs::write(&a, b"probe").map_err(io_err("write", &a))?;
        let src = File::open(&a).map_err(io_err("open", &a))?;
        let dst = File::create(&b).map_err(io_err("create", &b))?;
        let reflink = rustix::fs::ioctl_ficlone(&dst, &src).is_ok();
        let xattrs = rustix::fs::fsetxattr(
            &src,
            "user.autogentoo.probe",
            b"1",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        drop((src, dst));
        let _ = fs::remove_file(&a);
        let _ = fs::remove_file(&b);
        Ok(Capabilities {
            shared_blocks: self.capabilities.shared_blocks || reflink,
            xattrs,
            ..self.capabilities
        })
    }

    /// Holds the workdir's lock until dropped; metadata changes happen under it.
    fn lock(&self) -> Result<File, StorageError> {
        self.state.lock()
    }

    fn uninitialised_or(&self, err: std::io::Error, op: &'static str, path: &Path) -> StorageError {
        if err.kind() == ErrorKind::NotFound && !self.state.is_initialised() {
            self.state.uninitialised()
        } else {
            io_err(op, path)(err)
        }
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

    /// Where a snapshot's tree is: the volume itself for a seal snapshot.
    fn snapshot_dir(&self, id: &SnapshotId, meta: &Meta) -> PathBuf {
        if meta.sealed.as_deref() == Some(id.name()) {
            self.volume_dir(id.volume())
        } else {
            self.snapshots_dir(id.volume()).join(id.name())
        }
    }

    /// Moves a tree out of view at once, then deletes it. Refuses a tree with mounts in it:
    /// deleting would reach into the mounted filesystems.
    fn remove_tree(&self, path: &Path) -> Result<(), StorageError> {
        refuse_mounts(path)?;
        let trash = self.pending_name("trash");
        match self.trees.rename(path, &trash, RenameFlags::empty()) {
            Ok(()) => self.trees.remove(&trash),
            Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(io_err("move out of view", path)(e.into())),
        }
    }

    /// Makes a hidden copy of `source` (read-only for a snapshot) and returns its path.
    fn copy_to_pending(
        &self,
        source: &Path,
        label: &str,
        read_only: bool,
    ) -> Result<PathBuf, StorageError> {
        if !self.pending_dir().is_dir() {
            return Err(self.uninitialised_or(
                std::io::Error::from(ErrorKind::NotFound),
                "create in",
                &self.pending_dir(),
            ));
        }
        let pending = self.pending_name(label);
        if let Err(err) = self.trees.copy(source, &pending, read_only) {
            if pending.exists() {
                let _ = self.trees.remove(&pending);
            }
            return Err(err);
        }
        Ok(pending)
    }

    /// Renames a finished hidden tree to `target`, failing if `target` exists.
    fn publish(
        &self,
        pending: &Path,
        target: &Path,
        what: impl FnOnce() -> String,
    ) -> Result<(), StorageError> {
        match self.trees.rename(pending, target, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = self.trees.remove(pending);
                if e == rustix::io::Errno::EXIST || e == rustix::io::Errno::NOTEMPTY {
                    Err(StorageError::AlreadyExists(what()))
                } else {
                    Err(io_err("rename into place", target)(e.into()))
                }
            }
        }
    }

    fn new_volume_from(
        &self,
        pending: &Path,
        id: &VolumeId,
        meta: Meta,
    ) -> Result<Volume, StorageError> {
        let _lock = self.lock()?;
        self.publish(pending, &self.volume_dir(id), || id.to_string())?;
        if self.snapshots_dir(id).exists() {
            self.trees.remove(&self.snapshots_dir(id))?;
        }
        self.write_meta(id, &meta)?;
        self.volume(id, meta)
    }
}

impl<T: Trees> Storage for TreeStore<T> {
    fn backend_name(&self) -> &str {
        self.trees.backend_name()
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn init(&self) -> Result<(), StorageError> {
        self.state.create(&["snapshots"])
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
        let path = self.pending_name(&format!("{}.{}", id.kind(), id.name()));
        if !self.pending_dir().is_dir() {
            return Err(self.uninitialised_or(
                std::io::Error::from(ErrorKind::NotFound),
                "create",
                &path,
            ));
        }
        self.trees.create(&path)?;
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
        let meta = Meta {
            created: state_dir::now(),
            ..Meta::default()
        };
        self.new_volume_from(&pending.path, &pending.id, meta)
    }

    fn commit_sealed(
        &self,
        pending: PendingVolume,
        snapshot: &str,
        properties: &[(String, String)],
    ) -> Result<Volume, StorageError> {
        let id = &pending.id;
        check_seal(id, snapshot, properties)?;
        let _lock = self.lock()?;
        if self.volume_dir(id).exists() {
            let _ = self.trees.remove(&pending.path);
            return Err(StorageError::AlreadyExists(id.to_string()));
        }
        // All a sealed volume is, before its name appears: a read-only tree, and metadata
        // naming the seal. The metadata goes first: without its tree it describes nothing (a
        // volume is its directory), and the next commit of that name replaces it.
        self.trees.set_read_only(&pending.path)?;
        let created = state_dir::now();
        let meta = Meta {
            created,
            sealed: Some(snapshot.to_owned()),
            snapshots: vec![SnapMeta {
                name: snapshot.to_owned(),
                created,
            }],
            properties: properties.iter().cloned().collect(),
            ..Meta::default()
        };
        if self.snapshots_dir(id).exists() {
            self.trees.remove(&self.snapshots_dir(id))?;
        }
        self.write_meta(id, &meta)?;
        self.publish(&pending.path, &self.volume_dir(id), || id.to_string())?;
        self.volume(id, meta)
    }

    fn discard(&self, pending: PendingVolume) -> Result<(), StorageError> {
        if fs::symlink_metadata(&pending.path).is_err() {
            return Ok(());
        }
        self.trees.remove(&pending.path)
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
            // KIND.NAME.PID.N: the owner is the second field from the end.
            let pid = name.rsplit('.').nth(1).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let path = entry.path();
                if path.is_dir() {
                    self.trees.remove(&path)?;
                } else {
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                }
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn snapshot(&self, id: &SnapshotId) -> Result<Snapshot, StorageError> {
        let volume = id.volume();
        let meta = self.read_meta(volume)?;
        if meta.snapshots.iter().any(|s| s.name == id.name()) {
            return Err(StorageError::AlreadyExists(id.to_string()));
        }
        let pending = self.copy_to_pending(&self.volume_dir(volume), "snapshot", true)?;
        let _lock = self.lock()?;
        let mut meta = self.read_meta(volume)?;
        let parent = self.snapshots_dir(volume);
        fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
        self.publish(&pending, &parent.join(id.name()), || id.to_string())?;
        let created = state_dir::now();
        meta.snapshots.push(SnapMeta {
            name: id.name().to_owned(),
            created,
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
        if meta.sealed.is_some() || meta.snapshots.iter().any(|s| s.name == snapshot) {
            return Err(StorageError::AlreadyExists(snap_id.to_string()));
        }
        self.trees.set_read_only(&self.volume_dir(id))?;
        let created = state_dir::now();
        meta.sealed = Some(snapshot.to_owned());
        meta.snapshots.push(SnapMeta {
            name: snapshot.to_owned(),
            created,
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
        let origin_meta = self.read_meta(from.volume())?;
        if !origin_meta.snapshots.iter().any(|s| s.name == from.name()) {
            return Err(StorageError::NotFound(from.to_string()));
        }
        if self.volume_dir(id).exists() {
            return Err(StorageError::AlreadyExists(id.to_string()));
        }
        let pending =
            self.copy_to_pending(&self.snapshot_dir(from, &origin_meta), "clone", false)?;
        let meta = Meta {
            created: state_dir::now(),
            origin: Some(state_dir::record_origin(from)),
            ..Meta::default()
        };
        // The origin may have been destroyed while we copied; the lock makes the check final.
        {
            let _lock = self.lock()?;
            let origin_now = self.read_meta(from.volume())?;
            if !origin_now.snapshots.iter().any(|s| s.name == from.name()) {
                let _ = self.trees.remove(&pending);
                return Err(StorageError::NotFound(from.to_string()));
            }
        }
        self.new_volume_from(&pending, id, meta)
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
            blocking.extend((self as &dyn Storage).clones_of(volume, Some(name))?);
        }
        if !blocking.is_empty() {
            return Err(StorageError::HasDependants {
                what: format!("a snapshot of {volume} newer than '{}'", to.name()),
                dependants: blocking,
            });
        }
        refuse_mounts(&self.volume_dir(volume))?;
        let pending = self.copy_to_pending(&self.snapshot_dir(to, &meta), "rollback", false)?;
        let _lock = self.lock()?;
        let target = self.volume_dir(volume);
        // Swap in one step, so the volume is never missing or half-restored.
        self.trees
            .rename(&pending, &target, RenameFlags::EXCHANGE)
            .map_err(|e| io_err("swap in the snapshot at", &target)(e.into()))?;
        self.trees.remove(&pending)?;
        let mut meta = self.read_meta(volume)?;
        for name in &newer {
            self.remove_tree(&self.snapshots_dir(volume).join(name))?;
        }
        meta.snapshots.truncate(position + 1);
        self.write_meta(volume, &meta)
    }

    fn destroy(&self, id: &VolumeId) -> Result<(), StorageError> {
        let _lock = self.lock()?;
        self.read_meta(id)?;
        let dependants = (self as &dyn Storage).clones_of(id, None)?;
        if !dependants.is_empty() {
            return Err(StorageError::HasDependants {
                what: id.to_string(),
                dependants,
            });
        }
        self.remove_tree(&self.volume_dir(id))?;
        self.remove_tree(&self.snapshots_dir(id))?;
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
        let dependants = (self as &dyn Storage).clones_of(id.volume(), Some(id.name()))?;
        if !dependants.is_empty() {
            return Err(StorageError::HasDependants {
                what: id.to_string(),
                dependants,
            });
        }
        self.remove_tree(&self.snapshots_dir(id.volume()).join(id.name()))?;
        meta.snapshots.remove(position);
        self.write_meta(id.volume(), &meta)
    }

    fn list(&self, kind: VolumeKind) -> Result<Vec<Volume>, StorageError> {
        let mut volumes = Vec::new();
        for id in self.state.volume_ids(kind)? {
            match self.read_meta(&id) {
                Ok(meta) => volumes.push(self.volume(&id, meta)?),
                // Removed since the directory was read.
                Err(StorageError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(volumes)
    }

    fn get(&self, id: &VolumeId) -> Result<Volume, StorageError> {
        let meta = self.read_meta(id)?;
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

/// Replacing or deleting a tree with filesystems mounted in it would reach into them.
fn refuse_mounts(path: &Path) -> Result<(), StorageError> {
    let mounts = mountinfo::mounts_below(path).map_err(io_err("read mounts under", path))?;
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
