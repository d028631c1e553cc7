//! The tree to pack, read once, in path order and without following a symlink below its top.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use backhand::NodeHeader;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat};
use rustix::io::Errno;

use super::{image_time, PackError};
use crate::storage::io_err;

/// What goes into the image at one path.
pub(super) enum Content {
    Dir,
    File,
    Symlink(OsString),
}

pub(super) struct Node {
    /// Relative to the top of the tree; never empty.
    pub(super) rel: PathBuf,
    pub(super) content: Content,
    pub(super) header: NodeHeader,
}

/// The tree to pack, read once before anything is written.
pub(super) struct Walk {
    /// The top directory's owner and mode.
    pub(super) top: NodeHeader,
    /// Every entry below the top, in path order (backhand's order, so each insert appends).
    pub(super) nodes: Vec<Node>,
    /// The newest image mtime of all, the top included.
    pub(super) newest: u32,
    pub(super) hardlinked: u64,
    pub(super) with_xattrs: u64,
}

pub(super) struct Walker<'a> {
    shown: &'a Path,
    epoch: Option<i64>,
    cancel: &'a AtomicBool,
    walk: Walk,
}

impl<'a> Walker<'a> {
    pub(super) fn walk(
        top: &OwnedFd,
        shown: &'a Path,
        epoch: Option<i64>,
        cancel: &'a AtomicBool,
    ) -> Result<Walk, PackError> {
        let stat = rustix::fs::fstat(top).map_err(|e| io_err("inspect", shown)(e.into()))?;
        let mut walker = Walker {
            shown,
            epoch,
            cancel,
            walk: Walk {
                top: NodeHeader::default(),
                nodes: Vec::new(),
                newest: 0,
                hardlinked: 0,
                with_xattrs: 0,
            },
        };
        walker.walk.top = walker.header(&stat);
        if has_xattrs(format!("/proc/self/fd/{}", top.as_raw_fd())) {
            walker.walk.with_xattrs += 1;
        }
        walker.dir(top, Path::new(""))?;
        Ok(walker.walk)
    }

    fn header(&mut self, stat: &Stat) -> NodeHeader {
        let mtime = image_time(stat.st_mtime, self.epoch);
        self.walk.newest = self.walk.newest.max(mtime);
        NodeHeader::new(
            (stat.st_mode & 0o7777) as u16,
            stat.st_uid,
            stat.st_gid,
            mtime,
        )
    }

    /// Adds the entries of the directory `fd` (at `rel`) and everything below, depth first with
    /// names in byte order: that is path order.
    fn dir(&mut self, fd: &OwnedFd, rel: &Path) -> Result<(), PackError> {
        if self.cancel.load(Ordering::Relaxed) {
            return Err(PackError::Interrupted);
        }
        let shown = self.shown;
        let here = shown.join(rel);
        let fail = |op, e: Errno| PackError::from(io_err(op, &here)(e.into()));
        let mut names = Vec::new();
        for entry in rustix::fs::Dir::read_from(fd).map_err(|e| fail("read", e))? {
            let entry = entry.map_err(|e| fail("read", e))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsString::from_vec(name.to_vec()));
            }
        }
        names.sort_unstable();
        for name in names {
            let child = rel.join(&name);
            let at = |op, e: Errno| PackError::from(io_err(op, shown.join(&child))(e.into()));
            let stat = rustix::fs::statat(fd, &name, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| at("inspect", e))?;
            let proc_path = Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())).join(&name);
            if has_xattrs(proc_path.as_os_str()) {
                self.walk.with_xattrs += 1;
            }
            let header = self.header(&stat);
            let content = match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => Content::Dir,
                FileType::RegularFile => {
                    if stat.st_nlink > 1 {
                        self.walk.hardlinked += 1;
                    }
                    Content::File
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(fd, &name, Vec::new())
                        .map_err(|e| at("read the symlink", e))?;
                    Content::Symlink(OsString::from_vec(target.into_bytes()))
                }
                other => {
                    return Err(PackError::SpecialFile {
                        path: shown.join(&child),
                        kind: type_name(other),
                    })
                }
            };
            let is_dir = matches!(content, Content::Dir);
            self.walk.nodes.push(Node {
                rel: child.clone(),
                content,
                header,
            });
            if is_dir {
                let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC;
                let sub = rustix::fs::openat(fd, &name, flags, Mode::empty())
                    .map_err(|e| at("open", e))?;
                self.dir(&sub, &child)?;
            }
        }
        Ok(())
    }
}

/// Whether the entry at `path` (not followed if a symlink) has any xattr.
fn has_xattrs(path: impl AsRef<OsStr>) -> bool {
    rustix::fs::llistxattr_query(path.as_ref()).is_ok_and(|len| len > 0)
}

fn type_name(file_type: FileType) -> &'static str {
    match file_type {
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        FileType::Fifo => "fifo",
        FileType::Socket => "socket",
        _ => "special file",
    }
}

/// Opens a regular file below `top` without following any symlink, and without blocking if it
/// turned into a fifo since the walk.
pub(super) fn open_regular(top: BorrowedFd, rel: &Path) -> io::Result<File> {
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let how = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    let fd = loop {
        match rustix::fs::openat2(top, rel, flags, Mode::empty(), how) {
            Err(Errno::AGAIN | Errno::INTR) => continue,
            other => break other?,
        }
    };
    if FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode) != FileType::RegularFile {
        return Err(io::Error::other(
            "is no longer a regular file; the tree changed while it was packed",
        ));
    }
    Ok(File::from(fd))
}

/// Fills `buf` from `file` as far as the file goes; returns how much was read.
pub(super) fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walk_is_in_path_order_without_following_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        for dir in ["a/x", "a-b", "b"] {
            std::fs::create_dir_all(tree.join(dir)).unwrap();
        }
        std::fs::write(tree.join("a/x/f"), b"f").unwrap();
        std::os::unix::fs::symlink("/", tree.join("b/up")).unwrap();
        let cancel = AtomicBool::new(false);
        let top =
            rustix::fs::open(&tree, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
        let walk = Walker::walk(&top, &tree, None, &cancel).unwrap();
        let paths: Vec<&Path> = walk.nodes.iter().map(|n| n.rel.as_path()).collect();
        let expected = ["a", "a/x", "a/x/f", "a-b", "b", "b/up"].map(Path::new);
        assert_eq!(paths, expected);
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted, "backhand's order");
        assert!(matches!(&walk.nodes[5].content, Content::Symlink(t) if t == "/"));
    }
}
