//! The metadata of a backend whose volumes are directories of the workdir (`stages/NAME`,
//! `roots/NAME`, …): one JSON record per volume in a hidden state directory, a lock file that
//! serialises metadata changes between processes, and a place for work in progress, renamed
//! into view when complete. The dir backend (and btrfs, built on it) and the overlay plugin keep
//! their metadata this way, each with a record type of its own.
//!
//! ```text
//! STATE/volumes/KIND/NAME.json   the record of a volume
//! STATE/AREA/KIND/NAME/          per-volume trees of the backend's (snapshots, layers, …)
//! STATE/pending/LABEL.PID.N      work in progress of this process
//! STATE/lock                     held while metadata changes
//! ```

use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rustix::fs::FlockOperation;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::files::bounded_read::{self, Limit};
use crate::files::output_file;
use crate::storage::{io_err, SnapshotId, StorageError, Usage, VolumeId, VolumeKind};

/// A backend's state directory, `WORKDIR/NAME`.
#[derive(Clone, Debug)]
pub struct StateDir {
    workdir: PathBuf,
    state: PathBuf,
}

/// A volume's origin as records keep it: the kind, volume and snapshot names.
pub type RecordedOrigin = (String, String, String);

impl StateDir {
    /// The state directory `name` (like `.autogentoo`) of `workdir`, which is absolute.
    pub fn new(workdir: &Path, name: &str) -> Self {
        Self {
            workdir: workdir.to_owned(),
            state: workdir.join(name),
        }
    }

    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The state directory itself.
    pub fn path(&self) -> &Path {
        &self.state
    }

    /// Creates what [`Storage::init`](crate::storage::Storage::init) makes: a directory for
    /// each kind of volume, the records' directories, the backend's `areas` for each kind, and
    /// the pending directory. Existing ones are kept.
    pub fn create(&self, areas: &[&str]) -> Result<(), StorageError> {
        let mut dirs = vec![self.pending_dir()];
        for kind in VolumeKind::ALL {
            dirs.push(self.kind_dir(kind));
            for area in std::iter::once(&"volumes").chain(areas) {
                dirs.push(self.state.join(area).join(kind.as_str()));
            }
        }
        for dir in dirs {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        Ok(())
    }

    /// Measures the filesystem the workdir is on.
    pub fn usage(&self) -> Result<Usage, StorageError> {
        let st = rustix::fs::statvfs(&self.workdir)
            .map_err(|e| io_err("measure", &self.workdir)(e.into()))?;
        let total = st.f_blocks * st.f_frsize;
        let free = st.f_bfree * st.f_frsize;
        Ok(Usage {
            total_bytes: total,
            used_bytes: total - free,
            available_bytes: st.f_bavail * st.f_frsize,
        })
    }

    /// Whether `workdir init` has made the state directory.
    pub fn is_initialised(&self) -> bool {
        self.state.is_dir()
    }

    /// The error for a workdir that was never initialised.
    pub fn uninitialised(&self) -> StorageError {
        StorageError::MissingPrerequisite {
            what: format!("an initialised workdir at {}", self.workdir.display()),
            hint: "run `autogentoo workdir init` first".into(),
        }
    }

    /// Where the volumes of `kind` are seen: `WORKDIR/KINDS`.
    pub fn kind_dir(&self, kind: VolumeKind) -> PathBuf {
        self.workdir.join(kind.plural())
    }

    /// Where the volume `id` is seen: `WORKDIR/KINDS/NAME`.
    pub fn volume_dir(&self, id: &VolumeId) -> PathBuf {
        self.kind_dir(id.kind()).join(id.name())
    }

    /// The volumes of `kind` seen in the workdir, by name; entries that are no volume name are
    /// someone else's and left out.
    pub fn volume_ids(&self, kind: VolumeKind) -> Result<Vec<VolumeId>, StorageError> {
        let dir = self.kind_dir(kind);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound && !self.is_initialised() => {
                return Err(self.uninitialised())
            }
            Err(e) => return Err(io_err("read", &dir)(e)),
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("read", &dir))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if let Ok(id) = VolumeId::new(kind, &name) {
                ids.push(id);
            }
        }
        ids.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(ids)
    }

    /// A per-volume directory of the backend's own: `STATE/AREA/KIND/NAME`.
    pub fn volume_area(&self, area: &str, id: &VolumeId) -> PathBuf {
        self.state
            .join(area)
            .join(id.kind().as_str())
            .join(id.name())
    }

    /// The record of the volume `id`.
    pub fn record_path(&self, id: &VolumeId) -> PathBuf {
        self.state
            .join("volumes")
            .join(id.kind().as_str())
            .join(format!("{}.json", id.name()))
    }

    /// Where work in progress goes before it is renamed into view.
    pub fn pending_dir(&self) -> PathBuf {
        self.state.join("pending")
    }

    /// A fresh path in [`pending_dir`](Self::pending_dir) for this process: `LABEL.PID.N`.
    pub fn pending_name(&self, label: &str) -> PathBuf {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        self.pending_dir()
            .join(format!("{label}.{}.{n}", std::process::id()))
    }

    /// Holds the lock until the file is dropped; metadata changes happen under it.
    pub fn lock(&self) -> Result<File, StorageError> {
        if !self.is_initialised() {
            return Err(self.uninitialised());
        }
        let path = self.state.join("lock");
        let file = File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        rustix::fs::flock(&file, FlockOperation::LockExclusive)
            .map_err(|e| io_err("lock", &path)(e.into()))?;
        Ok(file)
    }

    /// The record of the volume `id`, whose directory must exist. A volume whose record was
    /// never written (a crash right after its rename into view) has the default record.
    pub fn read_record<R: DeserializeOwned + Default>(
        &self,
        id: &VolumeId,
    ) -> Result<R, StorageError> {
        let dir = self.volume_dir(id);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(StorageError::Corrupt(format!(
                    "{} is not a directory",
                    dir.display()
                )))
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StorageError::NotFound(id.to_string()))
            }
            Err(e) => return Err(io_err("inspect", &dir)(e)),
        }
        let path = self.record_path(id);
        match bounded_read::read(&path, Limit::STATE) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                StorageError::Corrupt(format!(
                    "{}: {e}; remove it to reset the metadata",
                    path.display()
                ))
            }),
            Err(e) if e.is_not_found() => Ok(R::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the record of the volume `id`, whole or not at all.
    pub fn write_record<R: Serialize>(
        &self,
        id: &VolumeId,
        record: &R,
    ) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec_pretty(record).expect("records serialise");
        output_file::write(&self.record_path(id), &bytes)?;
        Ok(())
    }

    /// Removes the record of the volume `id`, if it has one.
    pub fn remove_record(&self, id: &VolumeId) -> Result<(), StorageError> {
        let path = self.record_path(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io_err("remove", path)(e)),
            _ => Ok(()),
        }
    }
}

/// The snapshot a record names as the origin of the volume `id`.
pub fn origin(
    id: &VolumeId,
    recorded: Option<&RecordedOrigin>,
) -> Result<Option<SnapshotId>, StorageError> {
    let Some((kind, volume, snapshot)) = recorded else {
        return Ok(None);
    };
    let kind = VolumeKind::ALL
        .into_iter()
        .find(|k| k.as_str() == kind)
        .ok_or_else(|| StorageError::Corrupt(format!("{id}: unknown origin kind '{kind}'")))?;
    Ok(Some(SnapshotId::new(
        VolumeId::new(kind, volume)?,
        snapshot,
    )?))
}

/// How a record keeps the origin `snapshot`.
pub fn record_origin(snapshot: &SnapshotId) -> RecordedOrigin {
    (
        snapshot.volume().kind().as_str().to_owned(),
        snapshot.volume().name().to_owned(),
        snapshot.name().to_owned(),
    )
}

/// Seconds since the epoch, as records keep creation times.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize, Serialize)]
    struct Record {
        created: i64,
        origin: Option<RecordedOrigin>,
    }

    #[test]
    fn records_round_trip_and_a_corrupt_one_says_how_to_reset_it() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path(), ".state");
        let id = VolumeId::new(VolumeKind::Root, "web").unwrap();
        assert!(matches!(
            state.lock(),
            Err(StorageError::MissingPrerequisite { .. })
        ));
        state.create(&["snapshots"]).unwrap();
        assert!(state
            .volume_area("snapshots", &id)
            .parent()
            .unwrap()
            .is_dir());
        assert!(matches!(
            state.read_record::<Record>(&id),
            Err(StorageError::NotFound(_))
        ));
        fs::create_dir(state.volume_dir(&id)).unwrap();
        assert_eq!(state.read_record::<Record>(&id).unwrap(), Record::default());
        let from =
            SnapshotId::new(VolumeId::new(VolumeKind::Stage, "openrc").unwrap(), "seal").unwrap();
        let record = Record {
            created: 7,
            origin: Some(record_origin(&from)),
        };
        state.write_record(&id, &record).unwrap();
        let read: Record = state.read_record(&id).unwrap();
        assert_eq!(read, record);
        assert_eq!(origin(&id, read.origin.as_ref()).unwrap(), Some(from));
        assert_eq!(
            state.volume_ids(VolumeKind::Root).unwrap(),
            std::slice::from_ref(&id)
        );

        fs::write(state.record_path(&id), b"{").unwrap();
        let message = state.read_record::<Record>(&id).unwrap_err().to_string();
        assert!(
            message.contains("remove it to reset the metadata"),
            "{message}"
        );
        let bad = ("pool".to_owned(), "x".to_owned(), "y".to_owned());
        assert!(origin(&id, Some(&bad)).is_err());
        state.remove_record(&id).unwrap();
        state.remove_record(&id).unwrap();
    }
}
