//! Locks on a root, between processes: `root run` and `root mount` use a root, `root remove` and
//! `root rollback` need it to themselves, and mounting is done by one process at a time.
//! They are `flock`s, so a process that dies lets go of them.

use std::fs::File;
use std::path::PathBuf;

use rustix::fs::FlockOperation;
use rustix::io::Errno;

use crate::chroot::root_mounts::{holders, Holder};
use crate::storage::workdir::Layout;
use crate::storage::{io_err, StorageError};

/// What the lock is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    /// Held shared while a root is in use (run, mount), exclusive to change it wholesale.
    Use,
    /// Held exclusive while mounting or unmounting.
    Mounts,
    /// Held exclusive by the build of a system (the name is the system's, not a root's).
    Build,
}

/// A held lock; dropping it lets go.
pub struct RootLock {
    _file: File,
}

/// The root is in use by other processes.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("root '{root}' is in use by {}; wait for it or stop it", describe(.holders))]
    Busy { root: String, holders: Vec<Holder> },
    #[error("system '{system}' is being built by {}; wait for it or stop it", describe(.holders))]
    Building {
        system: String,
        holders: Vec<Holder>,
    },
}

fn describe(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "another process".into();
    }
    let list: Vec<String> = holders
        .iter()
        .map(|h| format!("PID {} ({})", h.pid, h.command))
        .collect();
    list.join(", ")
}

fn lock_path(layout: &Layout, root: &str, kind: LockKind) -> PathBuf {
    let suffix = match kind {
        LockKind::Use => "use",
        LockKind::Mounts => "mounts",
        LockKind::Build => return layout.locks().join(format!("system.{root}.build")),
    };
    layout.locks().join(format!("root.{root}.{suffix}"))
}

fn open(layout: &Layout, root: &str, kind: LockKind) -> Result<(File, PathBuf), StorageError> {
    let path = lock_path(layout, root, kind);
    std::fs::create_dir_all(layout.locks()).map_err(io_err("create", layout.locks()))?;
    let file = File::options()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    Ok((file, path))
}

impl RootLock {
    /// Waits for the lock, shared or exclusive.
    pub fn wait(
        layout: &Layout,
        root: &str,
        kind: LockKind,
        shared: bool,
    ) -> Result<Self, StorageError> {
        let (file, path) = open(layout, root, kind)?;
        let op = if shared {
            FlockOperation::LockShared
        } else {
            FlockOperation::LockExclusive
        };
        rustix::fs::flock(&file, op).map_err(|e| io_err("lock", &path)(e.into()))?;
        Ok(Self { _file: file })
    }

    /// Takes the lock exclusively now, or says who holds it.
    pub fn exclusive_now(layout: &Layout, root: &str, kind: LockKind) -> Result<Self, LockError> {
        let (file, path) = open(layout, root, kind)?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Self { _file: file }),
            Err(Errno::WOULDBLOCK) if kind == LockKind::Build => Err(LockError::Building {
                system: root.to_owned(),
                holders: holders(&path),
            }),
            Err(Errno::WOULDBLOCK) => Err(LockError::Busy {
                root: root.to_owned(),
                holders: holders(&path),
            }),
            Err(e) => Err(io_err("lock", &path)(e.into()).into()),
        }
    }
}
