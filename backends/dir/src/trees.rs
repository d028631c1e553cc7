//! What a volume's tree is and how it is made, copied and removed: the part a backend built on
//! [`crate::TreeStore`] supplies. The dir backend's trees are plain directories, copied file by
//! file (with reflinks where the filesystem shares blocks).

use std::fs;
use std::path::Path;

use autogentoo_core::files::tree_copy::copy_tree;
use autogentoo_core::storage::{io_err, Capabilities, StorageError};
use rustix::fs::RenameFlags;

/// How trees are made. Every path given is inside the workdir; `dst` paths do not exist yet.
pub trait Trees: Send + Sync {
    /// The backend's registered name.
    fn backend_name(&self) -> &'static str;

    /// Checks the workdir is somewhere these trees can live (a btrfs backend needs btrfs).
    fn check(&self, workdir: &Path) -> Result<(), StorageError>;

    /// What these trees can do, before probing the filesystem for xattrs and reflinks.
    fn capabilities(&self) -> Capabilities;

    /// Creates an empty, writable tree at `path`.
    fn create(&self, path: &Path) -> Result<(), StorageError>;

    /// Makes `dst` a copy of `src`: writable, or read-only when it is a snapshot (as far as
    /// the filesystem can enforce it).
    fn copy(&self, src: &Path, dst: &Path, read_only: bool) -> Result<(), StorageError>;

    /// Makes a tree read-only in place (a sealed stage), as far as the filesystem can.
    fn set_read_only(&self, path: &Path) -> Result<(), StorageError>;

    /// Removes a tree and everything in it.
    fn remove(&self, path: &Path) -> Result<(), StorageError>;

    /// Renames the tree at `from` to `to` (`flags` as for `renameat2`): how a finished tree is
    /// published and how one is moved out of view before removal. A filesystem that will not
    /// move a read-only tree to another directory (btrfs) lifts the flag for the move.
    fn rename(&self, from: &Path, to: &Path, flags: RenameFlags) -> rustix::io::Result<()> {
        rustix::fs::renameat_with(rustix::fs::CWD, from, rustix::fs::CWD, to, flags)
    }
}

/// Plain directories, copied.
pub struct Copies;

impl Trees for Copies {
    fn backend_name(&self) -> &'static str {
        crate::NAME
    }

    fn check(&self, _workdir: &Path) -> Result<(), StorageError> {
        Ok(())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cheap_clone: false,
            cheap_snapshot: false,
            enforced_read_only: false,
            xattrs: true,
            special_files: true,
            shared_blocks: false,
        }
    }

    fn create(&self, path: &Path) -> Result<(), StorageError> {
        fs::create_dir(path).map_err(io_err("create", path))
    }

    fn copy(&self, src: &Path, dst: &Path, _read_only: bool) -> Result<(), StorageError> {
        self.create(dst)?;
        copy_tree(src, dst).map(drop)
    }

    fn set_read_only(&self, _path: &Path) -> Result<(), StorageError> {
        // The tool never writes to a sealed directory; the filesystem cannot be asked to refuse.
        Ok(())
    }

    fn remove(&self, path: &Path) -> Result<(), StorageError> {
        fs::remove_dir_all(path).map_err(io_err("remove", path))
    }
}
