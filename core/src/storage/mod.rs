//! The storage model: volumes of a kind, snapshots, clones, and the contract every backend keeps.
//!
//! A backend stores *volumes*: directory trees that are mounted (or simply present) at a path on
//! the host. Each volume has a [`VolumeKind`] and a name unique within its kind. A *snapshot* is a
//! named, read-only point in time of one volume; a *clone* is a new writable volume that starts
//! as a copy of a snapshot. Stages are *sealed* volumes: read-only, with one snapshot that roots
//! are cloned from.
//!
//! Backends differ in what is cheap and what the filesystem enforces; those differences are the
//! [`Capabilities`] struct, which callers read instead of the backend's name.
pub mod state_dir;
pub mod workdir;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::names::{self, NameError};

/// What a volume holds. Each kind lives in its own namespace: a stage and a root may share a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// An imported stage tarball, sealed read-only; roots are cloned from it.
    Stage,
    /// A read-write build root.
    Root,
    /// A kernel source tree.
    Kernel,
    /// Shared caches (distfiles, binary packages).
    Cache,
}

impl VolumeKind {
    /// Every kind, in a stable order.
    pub const ALL: [VolumeKind; 4] = [Self::Stage, Self::Root, Self::Kernel, Self::Cache];

    /// The singular word used in messages and as the metadata value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stage => "stage",
            Self::Root => "root",
            Self::Kernel => "kernel",
            Self::Cache => "cache",
        }
    }

    /// The plural used for directory and dataset names (`stages`, `roots`, …).
    pub fn plural(self) -> &'static str {
        match self {
            Self::Stage => "stages",
            Self::Root => "roots",
            Self::Kernel => "kernels",
            Self::Cache => "cache",
        }
    }
}

impl fmt::Display for VolumeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A volume named by kind and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct VolumeId {
    kind: VolumeKind,
    name: String,
}

impl VolumeId {
    /// A volume id with a checked name.
    pub fn new(kind: VolumeKind, name: &str) -> Result<Self, StorageError> {
        names::check(name).map_err(|reason| StorageError::InvalidName {
            what: kind.as_str(),
            name: name.to_owned(),
            reason,
        })?;
        Ok(Self {
            kind,
            name: name.to_owned(),
        })
    }

    pub fn kind(&self) -> VolumeKind {
        self.kind
    }

    /// The name, already checked by [`names::check`]: safe as a path component.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for VolumeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.kind, self.name)
    }
}

/// A snapshot named by its volume and its own name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct SnapshotId {
    volume: VolumeId,
    name: String,
}

impl SnapshotId {
    /// A snapshot id with a checked name.
    pub fn new(volume: VolumeId, name: &str) -> Result<Self, StorageError> {
        names::check(name).map_err(|reason| StorageError::InvalidName {
            what: "snapshot",
            name: name.to_owned(),
            reason,
        })?;
        Ok(Self {
            volume,
            name: name.to_owned(),
        })
    }

    pub fn volume(&self) -> &VolumeId {
        &self.volume
    }

    /// The snapshot's own name, already checked by [`names::check`].
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "snapshot '{}@{}' of {}",
            self.volume.name, self.name, self.volume.kind
        )
    }
}

/// What a backend knows about one volume.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Volume {
    pub id: VolumeId,
    /// Where the volume's tree is on the host.
    pub path: PathBuf,
    /// The snapshot this volume was cloned from, if any.
    pub origin: Option<SnapshotId>,
    /// Sealed volumes are read-only; their seal snapshot is what clones come from.
    pub sealed: bool,
    /// Creation time, seconds since the epoch.
    pub created: i64,
    /// User metadata (`key → value`), as set with [`Storage::set_property`].
    pub properties: BTreeMap<String, String>,
}

/// What a backend knows about one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub id: SnapshotId,
    /// Creation time, seconds since the epoch.
    pub created: i64,
}

/// What a backend can do and what its filesystem enforces. The pipeline and the tests branch on
/// these, never on a backend's name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Cloning a snapshot takes about the same time whatever the volume's size.
    pub cheap_clone: bool,
    /// Taking a snapshot takes about the same time whatever the volume's size.
    pub cheap_snapshot: bool,
    /// The filesystem itself refuses writes to snapshots and sealed volumes (not only the tool).
    pub enforced_read_only: bool,
    /// Extended attributes (file capabilities, `user.*`) are stored.
    pub xattrs: bool,
    /// Device nodes and fifos are stored as such.
    pub special_files: bool,
    /// Clones share unchanged data blocks with their origin.
    pub shared_blocks: bool,
}

/// Space on the filesystem that holds the volumes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
}

/// A volume that is being filled and that no listing shows yet. Hand it back to
/// [`Storage::commit`] or [`Storage::discard`]; [`PendingGuard`] does the latter on drop.
#[derive(Debug, PartialEq, Eq)]
pub struct PendingVolume {
    /// The volume it becomes on commit.
    pub id: VolumeId,
    /// Where to write its tree now.
    pub path: PathBuf,
    /// The backend's own handle (a hidden directory, a dataset name, …).
    pub token: String,
}

/// A storage backend. Every method is safe to call from several processes; every mutation is
/// atomic as seen by the listing (a volume is either fully there or absent).
///
/// Each bullet below is a case in the conformance suite (`testkit`).
pub trait Storage: Send + Sync {
    /// The name this backend is registered under.
    fn backend_name(&self) -> &str;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// Creates the layout (one place per kind) if it is missing.
    /// - Calling it again on an initialised workdir changes nothing and succeeds.
    fn init(&self) -> Result<(), StorageError>;

    /// Space used and available where the volumes live.
    fn usage(&self) -> Result<Usage, StorageError>;

    /// Creates an empty, writable volume.
    /// - The new volume is listed, its path is an empty directory, it has no origin.
    /// - Creating a volume whose name is taken in that kind is `AlreadyExists`.
    /// - The same name in another kind is a different volume.
    fn create(&self, id: &VolumeId) -> Result<Volume, StorageError>;

    /// Starts a volume that stays invisible until [`Storage::commit`].
    /// - The pending volume is not listed and its name is not taken until commit.
    /// - A name already taken is `AlreadyExists` now, not at commit.
    fn create_pending(&self, id: &VolumeId) -> Result<PendingVolume, StorageError>;

    /// Makes a pending volume visible under its name, with its contents as written.
    /// - If the name was taken meanwhile, it is `AlreadyExists` and the pending volume is discarded.
    fn commit(&self, pending: PendingVolume) -> Result<Volume, StorageError>;

    /// Makes a pending volume visible sealed with the snapshot `snapshot` and carrying
    /// `properties`: how an import ends.
    /// - The volume is listed sealed, with its seal snapshot and its properties.
    /// - If the name was taken meanwhile, it is `AlreadyExists` and the pending volume is
    ///   discarded.
    ///
    /// The default commits, sets the properties and seals one after the other (and destroys the
    /// volume if a later part fails), so a process killed in between leaves an unsealed volume.
    /// The built-in backends override it to do the whole before the name appears (dir and btrfs
    /// write the sealed metadata first, zfs seals the pending dataset), so that no kill leaves
    /// a volume listed unsealed; the plugin ABI does not carry it yet, so plugin backends have
    /// the default.
    fn commit_sealed(
        &self,
        pending: PendingVolume,
        snapshot: &str,
        properties: &[(String, String)],
    ) -> Result<Volume, StorageError> {
        check_seal(&pending.id, snapshot, properties)?;
        let id = pending.id.clone();
        let volume = self.commit(pending)?;
        let finish = || -> Result<Volume, StorageError> {
            for (key, value) in properties {
                self.set_property(&id, key, value)?;
            }
            self.seal(&id, snapshot)?;
            self.get(&id)
        };
        finish().inspect_err(|_| {
            if let Err(cleanup) = self.destroy(&volume.id) {
                tracing::warn!("could not remove the unsealed {}: {cleanup}", volume.id);
            }
        })
    }

    /// Throws a pending volume away.
    /// - Nothing of it remains, in the listing or on disk.
    fn discard(&self, pending: PendingVolume) -> Result<(), StorageError>;

    /// Removes pending volumes left by processes that died, so an interrupted import leaves
    /// nothing behind. Returns how many it removed.
    /// - Pending volumes of live processes are kept.
    fn sweep_abandoned(&self) -> Result<usize, StorageError>;

    /// Takes a read-only snapshot of a volume.
    /// - The snapshot keeps the contents as they were, whatever is written to the volume later.
    /// - Snapshot names are unique per volume: a taken name is `AlreadyExists`.
    /// - A missing volume is `NotFound` naming it.
    fn snapshot(&self, id: &SnapshotId) -> Result<Snapshot, StorageError>;

    /// Seals a volume: it becomes read-only and gains the snapshot `snapshot` that clones come
    /// from (a stage after import).
    /// - A sealed volume is listed with `sealed` set; its seal snapshot is listed.
    /// - Sealing twice is `AlreadyExists` for the snapshot name.
    fn seal(&self, id: &VolumeId, snapshot: &str) -> Result<Snapshot, StorageError>;

    /// Lists the snapshots of a volume, oldest first.
    /// - A missing volume is `NotFound`.
    fn snapshots(&self, id: &VolumeId) -> Result<Vec<Snapshot>, StorageError>;

    /// Creates a writable volume of kind `id.kind` starting as a copy of a snapshot.
    /// - The clone has the snapshot's contents and the snapshot as its origin.
    /// - Writing to the clone changes neither the snapshot nor its volume, and the other way round.
    /// - A missing snapshot is `NotFound` naming it; a taken name is `AlreadyExists`.
    fn clone_snapshot(&self, from: &SnapshotId, id: &VolumeId) -> Result<Volume, StorageError>;

    /// Returns a volume to a snapshot of its own.
    /// - Changes made since the snapshot are gone; the snapshot remains.
    /// - Newer snapshots of the volume are destroyed; if any of them has clones, the rollback is
    ///   `HasDependants` naming the clones and nothing changes.
    /// - A sealed volume cannot be rolled back: `ReadOnly`.
    fn rollback(&self, to: &SnapshotId) -> Result<(), StorageError>;

    /// Destroys a volume and its snapshots.
    /// - A volume any of whose snapshots has clones is `HasDependants` naming them; nothing changes.
    /// - A missing volume is `NotFound` naming it.
    /// - Afterwards the name is free and the volume is gone from the listing and the disk.
    fn destroy(&self, id: &VolumeId) -> Result<(), StorageError>;

    /// Destroys one snapshot.
    /// - A snapshot with clones is `HasDependants` naming them.
    /// - The seal snapshot of a sealed volume is destroyed only with the volume: `ReadOnly`.
    fn destroy_snapshot(&self, id: &SnapshotId) -> Result<(), StorageError>;

    /// Lists the volumes of one kind, sorted by name.
    /// - Pending volumes are not listed.
    fn list(&self, kind: VolumeKind) -> Result<Vec<Volume>, StorageError>;

    /// Describes one volume.
    /// - A missing volume is `NotFound` naming it.
    fn get(&self, id: &VolumeId) -> Result<Volume, StorageError>;

    /// Sets a user property (metadata) on a volume; an existing key is replaced.
    /// - Keys are `[a-z0-9_.-]+`; values are any UTF-8 text without newlines.
    /// - The property is listed with the volume by [`Storage::get`] and [`Storage::list`].
    fn set_property(&self, id: &VolumeId, key: &str, value: &str) -> Result<(), StorageError>;
}

impl dyn Storage + '_ {
    /// The directory of a volume, for scripts.
    pub fn path(&self, id: &VolumeId) -> Result<PathBuf, StorageError> {
        Ok(self.get(id)?.path)
    }

    /// The volumes cloned from any snapshot of `id`, for messages and recursive removal.
    pub fn dependants(&self, id: &VolumeId) -> Result<Vec<VolumeId>, StorageError> {
        self.clones_of(id, None)
    }

    /// The volumes of every kind cloned from a snapshot of `volume` (from the snapshot named
    /// `only`, if given).
    pub fn clones_of(
        &self,
        volume: &VolumeId,
        only: Option<&str>,
    ) -> Result<Vec<VolumeId>, StorageError> {
        let mut out = Vec::new();
        for kind in VolumeKind::ALL {
            for candidate in self.list(kind)? {
                let cloned = candidate
                    .origin
                    .as_ref()
                    .is_some_and(|o| o.volume() == volume && only.is_none_or(|s| s == o.name()));
                if cloned {
                    out.push(candidate.id);
                }
            }
        }
        Ok(out)
    }

    /// Destroys a volume after the volumes cloned from it, and theirs, deepest first; returns
    /// the volumes destroyed, in that order.
    pub fn destroy_recursive(&self, id: &VolumeId) -> Result<Vec<VolumeId>, StorageError> {
        let mut destroyed = Vec::new();
        for dependant in self.dependants(id)? {
            destroyed.extend(self.destroy_recursive(&dependant)?);
        }
        self.destroy(id)?;
        destroyed.push(id.clone());
        Ok(destroyed)
    }
}

/// Discards a pending volume unless it was committed. Dropping it only logs a failure; call
/// [`PendingGuard::commit`] or [`PendingGuard::discard`] to see errors.
pub struct PendingGuard<'a> {
    storage: &'a dyn Storage,
    pending: Option<PendingVolume>,
}

impl<'a> PendingGuard<'a> {
    pub fn new(storage: &'a dyn Storage, id: &VolumeId) -> Result<Self, StorageError> {
        let pending = storage.create_pending(id)?;
        Ok(Self {
            storage,
            pending: Some(pending),
        })
    }

    /// Where to write the volume's tree.
    pub fn path(&self) -> &Path {
        &self
            .pending
            .as_ref()
            .expect("pending volume present until consumed")
            .path
    }

    pub fn commit(mut self) -> Result<Volume, StorageError> {
        let pending = self
            .pending
            .take()
            .expect("pending volume present until consumed");
        self.storage.commit(pending)
    }

    /// See [`Storage::commit_sealed`].
    pub fn commit_sealed(
        mut self,
        snapshot: &str,
        properties: &[(String, String)],
    ) -> Result<Volume, StorageError> {
        let pending = self
            .pending
            .take()
            .expect("pending volume present until consumed");
        self.storage.commit_sealed(pending, snapshot, properties)
    }

    pub fn discard(mut self) -> Result<(), StorageError> {
        let pending = self
            .pending
            .take()
            .expect("pending volume present until consumed");
        self.storage.discard(pending)
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            let id = pending.id.clone();
            if let Err(err) = self.storage.discard(pending) {
                tracing::warn!("could not discard the unfinished {id}: {err}");
            }
        }
    }
}

/// Errors of storage backends. Each names the volume, path or command involved.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{0} does not exist")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{what} is still needed by {}; remove them first", list_ids(.dependants))]
    HasDependants {
        what: String,
        dependants: Vec<VolumeId>,
    },
    #[error("{0} is read-only")]
    ReadOnly(String),
    #[error("invalid {what} name '{name}': {reason}")]
    InvalidName {
        what: &'static str,
        name: String,
        reason: NameError,
    },
    #[error("invalid property {0}")]
    InvalidProperty(String),
    #[error("{what} is missing: {hint}")]
    MissingPrerequisite { what: String, hint: String },
    #[error("{message}")]
    Unsupported { message: String },
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("{0}")]
    Corrupt(String),
}

fn list_ids(ids: &[VolumeId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Attaches the operation and the path to an io error: the one place io errors get context.
pub fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> StorageError {
    let path = path.into();
    move |source| StorageError::Io { op, path, source }
}

/// Checks the seal snapshot's name and the properties [`Storage::commit_sealed`] is given,
/// before anything changes.
pub fn check_seal(
    id: &VolumeId,
    snapshot: &str,
    properties: &[(String, String)],
) -> Result<(), StorageError> {
    SnapshotId::new(id.clone(), snapshot)?;
    for (key, value) in properties {
        check_property(key, value)?;
    }
    Ok(())
}

/// Checks a property key and value as [`Storage::set_property`] documents them, so every
/// backend refuses the same inputs.
pub fn check_property(key: &str, value: &str) -> Result<(), StorageError> {
    let key_ok = !key.is_empty()
        && key.len() <= 64
        && key.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
    if !key_ok {
        return Err(StorageError::InvalidProperty(format!(
            "key '{key}': use lowercase letters, digits, '_', '.' and '-' (at most 64)"
        )));
    }
    if value.contains(['\n', '\r', '\0']) {
        return Err(StorageError::InvalidProperty(format!(
            "value of '{key}': a value is one line of text"
        )));
    }
    Ok(())
}
