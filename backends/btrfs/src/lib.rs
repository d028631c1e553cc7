//! The `btrfs` storage backend: every volume is a subvolume, so a clone or a snapshot is a
//! btrfs snapshot, made in constant time and sharing every block with its origin. A snapshot is
//! a read-only snapshot; a clone is a writable one; a stage is sealed by setting its subvolume's
//! read-only flag, which the kernel enforces (writes fail with `EROFS`); a rollback swaps in a
//! fresh writable snapshot of the snapshot. Metadata, the layout under the workdir and
//! publishing by rename are the dir backend's [`TreeStore`]; this crate supplies the trees.
//!
//! The subvolumes are made and deleted through the kernel's btrfs ioctls (`subvolume.rs`)
//! rather than by running the `btrfs` command: nothing to install at run time besides the
//! kernel's btrfs, no command output to parse, and an exact errno for every failure (`EROFS`,
//! `ENOTEMPTY`, `EPERM`) instead of a message to interpret. The libbtrfsutil bindings would do
//! the same but need libclang to build.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use autogentoo_backend_dir::{TreeStore, Trees};
use autogentoo_core::files::tree_copy::copy_tree;
use autogentoo_core::registry::StorageSettings;
use autogentoo_core::storage::{io_err, Capabilities, Storage, StorageError};
use rustix::fs::{RenameFlags, CWD};
use rustix::io::Errno;

mod subvolume;

/// The name this backend registers under.
pub const NAME: &str = "btrfs";

/// `BTRFS_SUPER_MAGIC`, the filesystem type `statfs` reports for btrfs.
const BTRFS_MAGIC: u32 = 0x9123_683e;

/// The `btrfs` backend: volumes as subvolumes.
pub type BtrfsStorage = TreeStore<Subvolumes>;

/// Opens the `btrfs` backend; the registry's factory. Fails unless the workdir is on btrfs.
pub fn open(settings: &StorageSettings) -> Result<Box<dyn Storage>, StorageError> {
    Ok(Box::new(TreeStore::with_trees(
        &settings.workdir,
        Subvolumes,
    )?))
}

/// Trees as btrfs subvolumes.
pub struct Subvolumes;

impl Trees for Subvolumes {
    fn backend_name(&self) -> &'static str {
        NAME
    }

    fn check(&self, workdir: &Path) -> Result<(), StorageError> {
        // The workdir itself may not exist before `workdir init`: its filesystem is that of its
        // nearest existing ancestor.
        let mut found = None;
        for dir in workdir.ancestors() {
            match rustix::fs::statfs(dir) {
                Ok(st) => {
                    // `f_type` is a signed long; the magic numbers are 32-bit.
                    found = Some((dir, st.f_type as u32));
                    break;
                }
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(io_err("inspect the filesystem of", dir)(e.into())),
            }
        }
        let Some((dir, magic)) = found else {
            return Err(io_err("inspect the filesystem of", workdir)(
                ErrorKind::NotFound.into(),
            ));
        };
        if magic == BTRFS_MAGIC {
            return Ok(());
        }
        Err(StorageError::MissingPrerequisite {
            what: format!("a btrfs filesystem at {}", workdir.display()),
            hint: format!(
                "{} is on {}; put the workdir on btrfs or use --backend dir",
                dir.display(),
                filesystem_name(magic)
            ),
        })
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            cheap_clone: true,
            cheap_snapshot: true,
            enforced_read_only: true,
            xattrs: true,
            special_files: true,
            shared_blocks: true,
        }
    }

    fn create(&self, path: &Path) -> Result<(), StorageError> {
        subvolume::create(path).map_err(sys_err("create the subvolume", path))
    }

    fn copy(&self, src: &Path, dst: &Path, read_only: bool) -> Result<(), StorageError> {
        // A snapshot taken through a plain directory would be of the whole subvolume holding
        // it, so a tree that is not a subvolume (a workdir the dir backend filled) is copied
        // into a new one instead.
        if subvolume::is_subvolume(src).map_err(sys_err("inspect", src))? {
            return subvolume::snapshot(src, dst, read_only)
                .map_err(sys_err("snapshot the subvolume", src));
        }
        self.create(dst)?;
        copy_tree(src, dst)?;
        if read_only {
            self.set_read_only(dst)?;
        }
        Ok(())
    }

    fn set_read_only(&self, path: &Path) -> Result<(), StorageError> {
        if !subvolume::is_subvolume(path).map_err(sys_err("inspect", path))? {
            return Err(StorageError::Unsupported {
                message: format!(
                    "{} is a plain directory, not a btrfs subvolume, so it cannot be made \
                     read-only; it was made by another backend",
                    path.display()
                ),
            });
        }
        subvolume::set_read_only(path, true)
            .map(drop)
            .map_err(sys_err("make read-only the subvolume", path))
    }

    fn remove(&self, path: &Path) -> Result<(), StorageError> {
        let meta = fs::symlink_metadata(path).map_err(io_err("inspect", path))?;
        if !meta.is_dir() {
            return fs::remove_file(path).map_err(io_err("remove", path));
        }
        if subvolume::is_subvolume(path).map_err(sys_err("inspect", path))? {
            return delete_subvolume(path);
        }
        // A plain directory (the snapshots of a volume): its subvolumes are deleted whole.
        for entry in fs::read_dir(path).map_err(io_err("read", path))? {
            let entry = entry.map_err(io_err("read", path))?;
            self.remove(&entry.path())?;
        }
        fs::remove_dir(path).map_err(io_err("remove", path))
    }

    fn rename(&self, from: &Path, to: &Path, flags: RenameFlags) -> Result<(), Errno> {
        let rename = || rustix::fs::renameat_with(CWD, from, CWD, to, flags);
        match rename() {
            // Moving a directory to another directory rewrites its `..`, which a read-only
            // subvolume refuses: the flag is lifted for the move, which only ever takes a tree
            // that nobody else knows of into view, or one about to be deleted out of it.
            Err(Errno::ROFS) if subvolume::is_subvolume(from)? => {
                if !subvolume::set_read_only(from, false)? {
                    return Err(Errno::ROFS);
                }
                let result = rename();
                let now_at = if result.is_ok() { to } else { from };
                subvolume::set_read_only(now_at, true)?;
                result
            }
            result => result,
        }
    }
}

/// Deletes a subvolume, first deleting any subvolumes made inside it (a container tool run in a
/// root may have made some), which the kernel will not delete along with it.
fn delete_subvolume(path: &Path) -> Result<(), StorageError> {
    match subvolume::delete(path) {
        Err(Errno::NOTEMPTY) => {
            delete_nested_subvolumes(path)?;
            subvolume::delete(path).map_err(sys_err("delete the subvolume", path))
        }
        result => result.map_err(sys_err("delete the subvolume", path)),
    }
}

fn delete_nested_subvolumes(dir: &Path) -> Result<(), StorageError> {
    for entry in fs::read_dir(dir).map_err(io_err("read", dir))? {
        let entry = entry.map_err(io_err("read", dir))?;
        let path = entry.path();
        if !entry
            .file_type()
            .map_err(io_err("inspect", &path))?
            .is_dir()
        {
            continue;
        }
        if subvolume::is_subvolume(&path).map_err(sys_err("inspect", &path))? {
            delete_subvolume(&path)?;
        } else {
            delete_nested_subvolumes(&path)?;
        }
    }
    Ok(())
}

/// [`io_err`] for the errno of a system call.
fn sys_err(op: &'static str, path: &Path) -> impl FnOnce(Errno) -> StorageError {
    let err = io_err(op, path.to_owned());
    move |errno| err(errno.into())
}

/// A readable name for a filesystem type found by `statfs`.
fn filesystem_name(magic: u32) -> String {
    let name = match magic {
        0xef53 => "ext4",
        0x5846_5342 => "xfs",
        0x0102_1994 => "tmpfs",
        0x2fc1_2fc1 => "zfs",
        0x6573_5546 => "fuse",
        0x794c_7630 => "overlayfs",
        0x6969 => "nfs",
        0x7366_7173 => "squashfs",
        _ => return format!("a filesystem of type {magic:#x}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystems_are_named() {
        assert_eq!(filesystem_name(0xef53), "ext4");
        assert_eq!(filesystem_name(0x0102_1994), "tmpfs");
        assert_eq!(filesystem_name(0x1234), "a filesystem of type 0x1234");
    }
}
