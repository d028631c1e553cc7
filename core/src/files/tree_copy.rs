//! Exact, parallel copies of directory trees, for filesystems that cannot clone a volume.
//!
//! Where a backend has no cheap clone, a root starts as a copy of its stage, and that copy must
//! be exact: a root whose `ping` lost its file capability, whose `su` lost its setuid bit or
//! whose files all changed mtime behaves differently from the stage, and portage sees every
//! file as modified. So [`copy_tree`] keeps what `cp -a` keeps (owners, full modes, every xattr
//! namespace, device nodes, hardlinks, nanosecond times) and shares file data by reflink where
//! the filesystem can, copying files in parallel where it cannot. Where it copies, it copies
//! only the data and leaves the holes of sparse files as holes: a stage holding a 1 TiB disk
//! image with a few megabytes in it must not cost each root a terabyte.

use std::collections::hash_map::{Entry, HashMap};
use std::ffi::{CStr, OsStr};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;
use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, SeekFrom, Timespec, Timestamps, Uid, XattrFlags, CWD,
};
use rustix::io::Errno;

use crate::storage::{io_err, StorageError};

/// What [`copy_tree`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Regular files whose data was copied or reflinked; a hardlink group counts once.
    pub files: u64,
    /// Bytes of file data in those files.
    pub bytes: u64,
    /// Files whose data was shared with the source by reflink rather than copied.
    pub reflinked: u64,
}

/// Copies the tree under `src` into `dst`, as `cp -a` would.
///
/// - `dst` must be an existing, empty directory; a missing or non-empty `dst` is an error naming
///   it. `src` must be a directory, not a symlink to one.
/// - Symlinks are never followed, in `src` or in `dst`: they are copied as symlinks, their targets
///   (absolute or relative) unchanged.
/// - Every file type is copied: directories, regular files, symlinks, character and block devices
///   (same device number), fifos and sockets.
/// - Each entry keeps its numeric owner and group, its full mode (setuid, setgid and sticky bits
///   included), all its extended attributes (`user.*`, `trusted.*`, `security.*`, `system.*`),
///   and its atime and mtime to the nanosecond. `dst` itself gets the owner, mode, xattrs and times
///   of `src`.
/// - Files that are hardlinked together in `src` are hardlinked together in `dst`.
/// - File data is reflinked where both sides are on a filesystem that can; otherwise it is copied.
/// - Holes stay holes: a sparse file's copy has the same length and contents and takes about the
///   blocks its source takes (its data), never more, on whatever filesystem `dst` is.
/// - An xattr `dst`'s filesystem cannot store is an error naming the path and the attribute,
///   except `user.*` on a symlink, which Linux never allows and which is skipped.
/// - On error, `dst` holds a partial copy; the caller removes it.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<CopyStats, StorageError> {
    let copier = Copier::open(src, dst)?;
    let walk = walk(src)?;
    copier.create_dirs(&walk.dirs)?;
    walk.leaves
        .par_iter()
        .try_for_each(|leaf| copier.copy_leaf(leaf))?;
    walk.hardlinks
        .par_iter()
        .try_for_each(|link| copier.link(link))?;
    // A directory's mtime changes whenever an entry is created in it, so directories get their
    // metadata last, children before parents; the walk lists parents before children.
    walk.dirs
        .iter()
        .rev()
        .try_for_each(|dir| copier.finish_dir(dir))?;
    Ok(copier.stats())
}

/// An entry of `src` by its path relative to `src`, with its metadata as the walk saw it.
struct Node {
    rel: PathBuf,
    meta: Metadata,
}

/// A later name of a file already copied under `target`.
struct Hardlink {
    target: PathBuf,
    link: PathBuf,
}

struct Walk {
    /// Every directory, the root (empty `rel`) first and each parent before its children.
    dirs: Vec<Node>,
    /// Every other entry, except later names of hardlinked files.
    leaves: Vec<Node>,
    hardlinks: Vec<Hardlink>,
}

fn walk(src: &Path) -> Result<Walk, StorageError> {
    let root = fs::symlink_metadata(src).map_err(io_err("read", src))?;
    let mut dirs = vec![Node {
        rel: PathBuf::new(),
        meta: root,
    }];
    let mut leaves = Vec::new();
    let mut hardlinks = Vec::new();
    let mut first_names = HashMap::new();
    let mut next = 0;
    while next < dirs.len() {
        let path = src.join(&dirs[next].rel);
        for entry in fs::read_dir(&path).map_err(io_err("read", &path))? {
            let entry = entry.map_err(io_err("read", &path))?;
            let rel = dirs[next].rel.join(entry.file_name());
            // DirEntry::metadata does not follow symlinks.
            let meta = entry.metadata().map_err(io_err("read", src.join(&rel)))?;
            if meta.is_dir() {
                dirs.push(Node { rel, meta });
                continue;
            }
            if meta.nlink() > 1 {
                match first_names.entry((meta.dev(), meta.ino())) {
                    Entry::Occupied(first) => {
                        let target = PathBuf::clone(first.get());
                        hardlinks.push(Hardlink { target, link: rel });
                        continue;
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(rel.clone());
                    }
                }
            }
            leaves.push(Node { rel, meta });
        }
        next += 1;
    }
    Ok(Walk {
        dirs,
        leaves,
        hardlinks,
    })
}

/// The state one copy shares between its threads. Everything in `dst` is reached through
/// `dst_root` with *at() calls that do not follow a final symlink, except the xattrs of symlinks
/// and special files, which Linux only sets by path (with the l*xattr calls, which do not follow
/// it either).
struct Copier<'a> {
    src: &'a Path,
    dst: &'a Path,
    src_root: OwnedFd,
    dst_root: OwnedFd,
    /// Cleared after the first sign that the filesystems cannot reflink, so that a large copy
    /// does not pay a failing ioctl per file.
    try_reflink: AtomicBool,
    /// Cleared likewise when copy_file_range cannot work between these filesystems.
    try_copy_range: AtomicBool,
    files: AtomicU64,
    bytes: AtomicU64,
    reflinked: AtomicU64,
}

impl<'a> Copier<'a> {
    fn open(src: &'a Path, dst: &'a Path) -> Result<Self, StorageError> {
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let src_root = rustix::fs::openat(CWD, src, dir_flags, Mode::empty())
            .map_err(|e| fail("open source", src, e))?;
        let dst_root = rustix::fs::openat(CWD, dst, dir_flags, Mode::empty())
            .map_err(|e| fail("open destination", dst, e))?;
        let mut entries = Dir::read_from(&dst_root).map_err(|e| fail("read", dst, e))?;
        for entry in &mut entries {
            let entry = entry.map_err(|e| fail("read", dst, e))?;
            if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
                return Err(fail("copy into", dst, Errno::NOTEMPTY));
            }
        }
        Ok(Self {
            src,
            dst,
            src_root,
            dst_root,
            try_reflink: AtomicBool::new(true),
            try_copy_range: AtomicBool::new(true),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            reflinked: AtomicU64::new(0),
        })
    }

    fn stats(&self) -> CopyStats {
        CopyStats {
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            reflinked: self.reflinked.load(Ordering::Relaxed),
        }
    }

    /// Creates every directory but the root, private until [`Copier::finish_dir`] sets its mode.
    fn create_dirs(&self, dirs: &[Node]) -> Result<(), StorageError> {
        for dir in dirs.iter().skip(1) {
            rustix::fs::mkdirat(&self.dst_root, &dir.rel, Mode::from_raw_mode(0o700))
                .map_err(|e| fail("create", self.dst.join(&dir.rel), e))?;
        }
        Ok(())
    }

    fn copy_leaf(&self, leaf: &Node) -> Result<(), StorageError> {
        match FileType::from_raw_mode(leaf.meta.mode()) {
            FileType::RegularFile => self.copy_file(leaf),
            FileType::Symlink => self.copy_symlink(leaf),
            _ => self.copy_special(leaf),
        }
    }

    fn copy_file(&self, leaf: &Node) -> Result<(), StorageError> {
        let rel = &leaf.rel;
        let from = rustix::fs::openat(
            &self.src_root,
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail("open", self.src.join(rel), e))?;
        let to = rustix::fs::openat(
            &self.dst_root,
            rel,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| fail("create", self.dst.join(rel), e))?;
        let (from, to) = (File::from(from), File::from(to));
        self.copy_data(&from, &to, leaf)?;
        // Writing clears setuid bits and file capabilities, and chown clears them again, so the
        // order is: data, owner, mode, xattrs.
        rustix::fs::fchown(&to, Some(uid(&leaf.meta)), Some(gid(&leaf.meta)))
            .map_err(|e| fail("chown", self.dst.join(rel), e))?;
        rustix::fs::fchmod(&to, permissions(&leaf.meta))
            .map_err(|e| fail("chmod", self.dst.join(rel), e))?;
        self.copy_xattrs(
            XattrNode::Fd(from.as_fd()),
            XattrNode::Fd(to.as_fd()),
            rel,
            false,
        )?;
        rustix::fs::futimens(&to, &timestamps(&leaf.meta))
            .map_err(|e| fail("set times on", self.dst.join(rel), e))
    }

    fn copy_data(&self, from: &File, to: &File, leaf: &Node) -> Result<(), StorageError> {
        let len = leaf.meta.len();
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len, Ordering::Relaxed);
        if len == 0 {
            return Ok(());
        }
        let copy_failed = |e: io::Error| io_err("copy", self.src.join(&leaf.rel))(e);
        if self.try_reflink.load(Ordering::Relaxed) {
            match rustix::fs::ioctl_ficlone(to, from) {
                Ok(()) => {
                    self.reflinked.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY | Errno::BADF) => {
                    self.try_reflink.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(copy_failed(e.into())),
            }
        }
        self.copy_extents(from, to, &leaf.meta).map_err(copy_failed)
    }

    /// Copies the data of `from` into the empty `to` run by run, so that each hole stays a hole:
    /// a sparse disk image in a stage costs the root its data, not its length.
    fn copy_extents(&self, from: &File, to: &File, meta: &Metadata) -> io::Result<()> {
        let len = meta.len();
        // A file whose blocks cover its length (nearly every file) has no hole, or holes smaller
        // than the blocks it holds past its end: copied whole, it costs no more than its source,
        // and it is spared the two seeks that finding holes takes.
        if meta.blocks() * 512 >= len {
            self.copy_range(from, to, 0, len)?;
            return Ok(());
        }
        let mut at = 0;
        while let Some((start, end)) = next_data(from, at, len)? {
            let reached = self.copy_range(from, to, start, end)?;
            if reached < end {
                // The source ended early (it shrank since the walk): the copy ends there too.
                return Ok(());
            }
            at = end;
        }
        if at < len {
            // The file ends in a hole, which nothing wrote: only the length makes it.
            to.set_len(len)?;
        }
        Ok(())
    }

    /// Copies bytes `start..end` of `from` to the same offsets in `to`. Returns where the copy
    /// stopped: `end`, or before it if `from` ended first.
    fn copy_range(&self, from: &File, to: &File, start: u64, end: u64) -> io::Result<u64> {
        let mut at = start;
        if self.try_copy_range.load(Ordering::Relaxed) {
            while at < end {
                let (mut off_in, mut off_out) = (at, at);
                let want = (end - at).min(1 << 30) as usize;
                match rustix::fs::copy_file_range(
                    from,
                    Some(&mut off_in),
                    to,
                    Some(&mut off_out),
                    want,
                ) {
                    // Some filesystems (procfs-like ones) report end of file at once instead of
                    // an error; reading tells a real end of file from that.
                    Ok(0) => break,
                    Ok(n) => at += n as u64,
                    Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP)
                        if at == start =>
                    {
                        self.try_copy_range.store(false, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        read_write(from, to, at, end)
    }

    fn copy_symlink(&self, leaf: &Node) -> Result<(), StorageError> {
        let rel = &leaf.rel;
        let target = rustix::fs::readlinkat(&self.src_root, rel, Vec::new())
            .map_err(|e| fail("read link", self.src.join(rel), e))?;
        rustix::fs::symlinkat(target.as_c_str(), &self.dst_root, rel)
            .map_err(|e| fail("create", self.dst.join(rel), e))?;
        self.chown_at(leaf)?;
        let (src, dst) = (self.src.join(rel), self.dst.join(rel));
        self.copy_xattrs(XattrNode::Path(&src), XattrNode::Path(&dst), rel, true)?;
        self.set_times_at(leaf)
    }

    /// Devices, fifos and sockets: opening them could block or touch hardware, so all their
    /// metadata is set by name.
    fn copy_special(&self, leaf: &Node) -> Result<(), StorageError> {
        let rel = &leaf.rel;
        let file_type = FileType::from_raw_mode(leaf.meta.mode());
        rustix::fs::mknodat(
            &self.dst_root,
            rel,
            file_type,
            Mode::from_raw_mode(0o600),
            leaf.meta.rdev(),
        )
        .map_err(|e| fail("create", self.dst.join(rel), e))?;
        self.chown_at(leaf)?;
        // fchmodat has no working AT_SYMLINK_NOFOLLOW on Linux; the name is the node mknodat
        // just made, in a tree only this copy writes to.
        rustix::fs::chmodat(
            &self.dst_root,
            rel,
            permissions(&leaf.meta),
            AtFlags::empty(),
        )
        .map_err(|e| fail("chmod", self.dst.join(rel), e))?;
        let (src, dst) = (self.src.join(rel), self.dst.join(rel));
        self.copy_xattrs(XattrNode::Path(&src), XattrNode::Path(&dst), rel, false)?;
        self.set_times_at(leaf)
    }

    fn chown_at(&self, leaf: &Node) -> Result<(), StorageError> {
        let (owner, group) = (Some(uid(&leaf.meta)), Some(gid(&leaf.meta)));
        rustix::fs::chownat(
            &self.dst_root,
            &leaf.rel,
            owner,
            group,
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| fail("chown", self.dst.join(&leaf.rel), e))
    }

    fn set_times_at(&self, leaf: &Node) -> Result<(), StorageError> {
        let times = timestamps(&leaf.meta);
        rustix::fs::utimensat(&self.dst_root, &leaf.rel, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| fail("set times on", self.dst.join(&leaf.rel), e))
    }

    fn link(&self, link: &Hardlink) -> Result<(), StorageError> {
        rustix::fs::linkat(
            &self.dst_root,
            &link.target,
            &self.dst_root,
            &link.link,
            AtFlags::empty(),
        )
        .map_err(|e| fail("link", self.dst.join(&link.link), e))
    }

    fn finish_dir(&self, dir: &Node) -> Result<(), StorageError> {
        let rel = if dir.rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &dir.rel
        };
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let from = rustix::fs::openat(&self.src_root, rel, flags, Mode::empty())
            .map_err(|e| fail("open", self.src.join(&dir.rel), e))?;
        let to = rustix::fs::openat(&self.dst_root, rel, flags, Mode::empty())
            .map_err(|e| fail("open", self.dst.join(&dir.rel), e))?;
        rustix::fs::fchown(&to, Some(uid(&dir.meta)), Some(gid(&dir.meta)))
            .map_err(|e| fail("chown", self.dst.join(&dir.rel), e))?;
        rustix::fs::fchmod(&to, permissions(&dir.meta))
            .map_err(|e| fail("chmod", self.dst.join(&dir.rel), e))?;
        self.copy_xattrs(
            XattrNode::Fd(from.as_fd()),
            XattrNode::Fd(to.as_fd()),
            &dir.rel,
            false,
        )?;
        rustix::fs::futimens(&to, &timestamps(&dir.meta))
            .map_err(|e| fail("set times on", self.dst.join(&dir.rel), e))
    }

    fn copy_xattrs(
        &self,
        from: XattrNode,
        to: XattrNode,
        rel: &Path,
        symlink: bool,
    ) -> Result<(), StorageError> {
        let names = from
            .names()
            .map_err(|e| fail("read xattrs of", self.src.join(rel), e))?;
        for name in names
            .split_inclusive(|&b| b == 0)
            .filter_map(|n| CStr::from_bytes_with_nul(n).ok())
        {
            let value = from
                .value(name)
                .map_err(|e| io_err("read xattrs of", self.src.join(rel))(naming(name, e)))?;
            match to.set(name, &value) {
                Ok(()) => {}
                Err(Errno::PERM | Errno::OPNOTSUPP)
                    if symlink && name.to_bytes().starts_with(b"user.") => {}
                Err(e) => return Err(io_err("set xattr on", self.dst.join(rel))(naming(name, e))),
            }
        }
        Ok(())
    }
}

/// An inode whose xattrs are read or written: an open file or directory, or (for symlinks and
/// special files, which cannot be opened for this) a path whose last component is not followed.
#[derive(Clone, Copy)]
enum XattrNode<'a> {
    Fd(BorrowedFd<'a>),
    Path(&'a Path),
}

impl XattrNode<'_> {
    /// The attribute names, each ending in NUL.
    fn names(self) -> rustix::io::Result<Vec<u8>> {
        read_sized(
            || match self {
                Self::Fd(fd) => rustix::fs::flistxattr_query(fd),
                Self::Path(path) => rustix::fs::llistxattr_query(path),
            },
            |buf| match self {
                Self::Fd(fd) => rustix::fs::flistxattr(fd, buf),
                Self::Path(path) => rustix::fs::llistxattr(path, buf),
            },
        )
    }

    fn value(self, name: &CStr) -> rustix::io::Result<Vec<u8>> {
        read_sized(
            || match self {
                Self::Fd(fd) => rustix::fs::fgetxattr_query(fd, name),
                Self::Path(path) => rustix::fs::lgetxattr_query(path, name),
            },
            |buf| match self {
                Self::Fd(fd) => rustix::fs::fgetxattr(fd, name, buf),
                Self::Path(path) => rustix::fs::lgetxattr(path, name, buf),
            },
        )
    }

    fn set(self, name: &CStr, value: &[u8]) -> rustix::io::Result<()> {
        match self {
            Self::Fd(fd) => rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty()),
            Self::Path(path) => rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()),
        }
    }
}

/// Reads a value of unknown size: asks for the size, then reads, again if it grew in between.
fn read_sized(
    mut size: impl FnMut() -> rustix::io::Result<usize>,
    mut read: impl FnMut(&mut Vec<u8>) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    loop {
        let mut buf = vec![0; size()?];
        if buf.is_empty() {
            return Ok(buf);
        }
        match read(&mut buf) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The run after `at` that holds data, as `start..end` with `end` at the next hole or at `len`;
/// `None` when only a hole is left.
fn next_data(file: &File, at: u64, len: u64) -> io::Result<Option<(u64, u64)>> {
    let start = match rustix::fs::seek(file, SeekFrom::Data(at)) {
        Ok(start) if start < len => start,
        Ok(_) | Err(Errno::NXIO) => return Ok(None),
        // A filesystem that cannot say where its holes are: the rest is all data.
        Err(Errno::INVAL) => return Ok(Some((at, len))),
        Err(e) => return Err(e.into()),
    };
    let end = rustix::fs::seek(file, SeekFrom::Hole(start))?;
    Ok(Some((start, end.min(len))))
}

/// Copies `at..end` at the same offsets through a buffer, for filesystems that
/// copy_file_range cannot copy between. Returns where it stopped, as [`Copier::copy_range`].
fn read_write(from: &File, to: &File, mut at: u64, end: u64) -> io::Result<u64> {
    if at >= end {
        return Ok(at);
    }
    let mut buf = vec![0; (end - at).min(256 * 1024) as usize];
    while at < end {
        let want = (end - at).min(buf.len() as u64) as usize;
        match from.read_at(&mut buf[..want], at) {
            Ok(0) => break,
            Ok(n) => {
                to.write_all_at(&buf[..n], at)?;
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}

fn fail(op: &'static str, path: impl Into<PathBuf>, err: Errno) -> StorageError {
    io_err(op, path)(err.into())
}

/// An io error that names the xattr it is about, since the path alone does not say which failed.
fn naming(name: &CStr, err: Errno) -> io::Error {
    let err = io::Error::from(err);
    let name = OsStr::from_bytes(name.to_bytes());
    io::Error::new(
        err.kind(),
        format!("attribute {}: {err}", name.to_string_lossy()),
    )
}

fn uid(meta: &Metadata) -> Uid {
    Uid::from_raw(meta.uid())
}

fn gid(meta: &Metadata) -> Gid {
    Gid::from_raw(meta.gid())
}

fn permissions(meta: &Metadata) -> Mode {
    Mode::from_raw_mode(meta.mode() & 0o7777)
}

fn timestamps(meta: &Metadata) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::fs::Permissions;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::process::Command;

    use rustix::fs::makedev;

    use super::*;
    use crate::testkit::tree::assert_same_tree;

    /// These tests create devices, chown and set trusted.* xattrs: they need root.
    fn as_root<T>(what: &str, result: rustix::io::Result<T>) -> T {
        result.unwrap_or_else(|e| panic!("{what}: {e} (tree_copy tests must run as root)"))
    }

    fn write(path: &Path, data: &[u8], mode: u32) {
        fs::write(path, data).unwrap();
        fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
    }

    fn chown(path: &Path, id: u32) {
        let (uid, gid) = (Some(Uid::from_raw(id)), Some(Gid::from_raw(id)));
        as_root(
            "chown",
            rustix::fs::chownat(CWD, path, uid, gid, AtFlags::SYMLINK_NOFOLLOW),
        );
    }

    fn set_xattr(path: &Path, name: &str, value: &[u8]) {
        as_root(
            "lsetxattr",
            rustix::fs::lsetxattr(path, name, value, XattrFlags::empty()),
        );
    }

    fn mknod(path: &Path, file_type: FileType, mode: u32, dev: u64) {
        as_root(
            "mknod",
            rustix::fs::mknodat(CWD, path, file_type, Mode::from_raw_mode(mode), dev),
        );
        rustix::fs::chmod(path, Mode::from_raw_mode(mode)).unwrap();
    }

    /// Gives every entry its own atime = mtime, with nanoseconds, children before their directory.
    fn stamp(path: &Path, next: &mut i64) {
        let meta = fs::symlink_metadata(path).unwrap();
        if meta.is_dir() {
            for entry in fs::read_dir(path).unwrap() {
                stamp(&entry.unwrap().path(), next);
            }
        }
        *next += 1;
        let time = Timespec {
            tv_sec: 1_600_000_000 + *next * 3600,
            tv_nsec: *next * 7_919_123 % 1_000_000_000,
        };
        let times = Timestamps {
            last_access: time,
            last_modification: time,
        };
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    /// A small stage-like tree with one of everything `copy_tree` must keep. Returns the number of
    /// regular files (a hardlink group once) and their bytes.
    fn sample_tree(root: &Path) -> (u64, u64) {
        for dir in [
            "bin",
            "dev",
            "etc/hard",
            "home/user",
            "links",
            "nested/a/b/c",
            "empty",
            "tmp",
            "shared",
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        let big: Vec<u8> = (0..5 * 1024 * 1024 + 123u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let files: [(&str, &[u8], u32); 8] = [
            ("bin/su", b"su binary", 0o4755),
            ("bin/ping", b"ping binary", 0o755),
            ("bin/sgid", b"setgid binary", 0o2711),
            ("etc/notes", b"notes", 0o644),
            ("etc/hard/one", &[7; 65536], 0o640),
            ("etc/empty", b"", 0o000),
            ("home/user/file", b"user data", 0o640),
            ("big", &big, 0o644),
        ];
        let mut bytes = 0;
        for (rel, data, mode) in files {
            write(&root.join(rel), data, mode);
            bytes += data.len() as u64;
        }
        let non_utf8 = root.join("home/user").join(OsStr::from_bytes(b"caf\xe9"));
        write(&non_utf8, b"latin-1 name", 0o600);
        bytes += 12;

        let setcap = Command::new("setcap")
            .arg("cap_net_raw+ep")
            .arg(root.join("bin/ping"))
            .status();
        assert!(
            setcap.is_ok_and(|s| s.success()),
            "setcap failed (it needs root and libcap2-bin)"
        );
        set_xattr(&root.join("etc/notes"), "user.comment", b"hello");
        set_xattr(&root.join("etc/notes"), "trusted.origin", b"stage3\0binary");
        set_xattr(root, "user.root", b"1");

        fs::hard_link(root.join("etc/hard/one"), root.join("etc/hard/two")).unwrap();
        fs::hard_link(root.join("etc/hard/one"), root.join("nested/a/three")).unwrap();

        chown(&root.join("home/user/file"), 250);
        chown(&non_utf8, 250);
        chown(&root.join("home/user"), 250);
        chown(&root.join("shared"), 250);
        fs::set_permissions(root.join("shared"), Permissions::from_mode(0o2775)).unwrap();
        fs::set_permissions(root.join("tmp"), Permissions::from_mode(0o1777)).unwrap();
        fs::set_permissions(root.join("nested/a/b"), Permissions::from_mode(0o500)).unwrap();
        fs::set_permissions(root, Permissions::from_mode(0o751)).unwrap();

        mknod(
            &root.join("dev/null"),
            FileType::CharacterDevice,
            0o666,
            makedev(1, 3),
        );
        mknod(
            &root.join("dev/sda"),
            FileType::BlockDevice,
            0o660,
            makedev(8, 0),
        );
        mknod(&root.join("dev/initctl"), FileType::Fifo, 0o600, 0);
        mknod(&root.join("dev/log"), FileType::Socket, 0o777, 0);
        chown(&root.join("dev/log"), 250);
        set_xattr(&root.join("dev/null"), "trusted.device", b"null");

        symlink("/etc", root.join("links/abs")).unwrap();
        symlink("../bin/su", root.join("links/rel")).unwrap();
        symlink("nowhere", root.join("links/dangling")).unwrap();
        chown(&root.join("links/rel"), 250);
        set_xattr(&root.join("links/abs"), "trusted.link", b"kept");

        stamp(root, &mut 0);
        (9, bytes)
    }

    #[test]
    fn tree_copy_keeps_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        let (files, bytes) = sample_tree(&src);

        let stats = copy_tree(&src, &dst).unwrap();

        let meta = |rel: &str| fs::symlink_metadata(dst.join(rel)).unwrap();
        // Before anything reads the copy and updates its atimes.
        for rel in ["big", "links/rel", "dev/null", "nested/a/b"] {
            let m = meta(rel);
            assert_eq!(
                (m.atime(), m.atime_nsec()),
                (m.mtime(), m.mtime_nsec()),
                "{rel}: atime"
            );
        }
        assert_same_tree(&src, &dst);
        assert_eq!((stats.files, stats.bytes), (files, bytes));
        assert!(stats.reflinked <= stats.files);
        // tree_diff compared all of it; these make sure the sample really has what matters most.
        assert!(meta("links/abs").file_type().is_symlink());
        assert_eq!(
            fs::read_link(dst.join("links/abs")).unwrap(),
            Path::new("/etc")
        );
        assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755);
        assert!(rustix::fs::lgetxattr_query(dst.join("bin/ping"), "security.capability").is_ok());
        assert_eq!(meta("nested/a/three").nlink(), 3);
        assert_eq!(meta("").mode() & 0o7777, 0o751);
    }

    #[test]
    fn tree_copy_needs_an_empty_destination() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("file"), "data").unwrap();

        let missing = tmp.path().join("missing");
        match copy_tree(&src, &missing) {
            Err(StorageError::Io { path, source, .. }) => {
                assert_eq!((path, source.kind()), (missing, io::ErrorKind::NotFound));
            }
            other => panic!("copy into a missing directory: {other:?}"),
        }

        let full = tmp.path().join("full");
        fs::create_dir(&full).unwrap();
        fs::write(full.join("old"), "old").unwrap();
        let err = copy_tree(&src, &full).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("copy into {}: ", full.display())),
            "{err}"
        );
        match err {
            StorageError::Io { source, .. } => {
                assert_eq!(source.kind(), io::ErrorKind::DirectoryNotEmpty)
            }
            other => panic!("copy into a non-empty directory: {other:?}"),
        }
        assert!(!full.join("file").exists());
    }

    /// A filesystem mounted for one test, detached when the test ends.
    struct Mounted(PathBuf);

    impl Mounted {
        fn new(path: PathBuf, fstype: &str) -> Self {
            fs::create_dir(&path).unwrap();
            let flags = rustix::mount::MountFlags::empty();
            as_root(
                "mount",
                rustix::mount::mount("none", &path, fstype, flags, None::<&CStr>),
            );
            Self(path)
        }
    }

    impl Drop for Mounted {
        fn drop(&mut self) {
            if let Err(err) = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH) {
                eprintln!("could not unmount {}: {err}", self.0.display());
            }
        }
    }

    #[test]
    fn tree_copy_names_an_xattr_the_destination_cannot_store() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("file"), "data").unwrap();
        set_xattr(&src.join("file"), "user.comment", b"hello");
        // ramfs stores no xattrs at all.
        let ramfs = Mounted::new(tmp.path().join("ramfs"), "ramfs");

        let err = copy_tree(&src, &ramfs.0).unwrap_err().to_string();

        let expected = format!(
            "set xattr on {}: attribute user.comment: ",
            ramfs.0.join("file").display()
        );
        assert!(err.starts_with(&expected), "{err}");
    }

    const MIB: u64 = 1 << 20;

    /// A file of `len` bytes with data at each `(offset, length)` and holes elsewhere.
    fn sparse_file(path: &Path, len: u64, runs: &[(u64, usize)]) {
        let file = File::create(path).unwrap();
        file.set_len(len).unwrap();
        for (seed, &(offset, size)) in runs.iter().enumerate() {
            let data: Vec<u8> = (0..size as u32)
                .map(|i| (i.wrapping_add(seed as u32).wrapping_mul(2_654_435_761) >> 13) as u8)
                .collect();
            file.write_all_at(&data, offset).unwrap();
        }
    }

    /// Sparse files as stages hold them (disk images, databases): one with data at its start,
    /// in its middle (not on a block boundary) and at its end; one that ends in a hole; one that
    /// is all hole. Returns their names.
    fn sparse_tree(root: &Path) -> [&'static str; 3] {
        let len = 32 * MIB + 777;
        sparse_file(
            &root.join("disk.img"),
            len,
            &[
                (0, 70_000),
                (13 * MIB + 12_345, 50_000),
                (len - 30_000, 30_000),
            ],
        );
        sparse_file(
            &root.join("tail-hole.db"),
            32 * MIB,
            &[(8192, 4096), (16 * MIB, 100_000)],
        );
        sparse_file(&root.join("blank.img"), 64 * MIB, &[]);
        stamp(root, &mut 0);
        ["disk.img", "tail-hole.db", "blank.img"]
    }

    /// Copies a tree of sparse files from `src` into `dst` (each on the filesystem it is on) and
    /// checks that the copies are the same files and take about the blocks their sources take.
    fn assert_sparse_copy(src: &Path, dst: &Path) {
        let names = sparse_tree(src);

        let stats = copy_tree(src, dst).unwrap();

        assert_same_tree(src, dst);
        assert_eq!(stats.files, names.len() as u64);
        for name in names {
            let (from, to) = (src.join(name), dst.join(name));
            let (a, b) = (fs::metadata(&from).unwrap(), fs::metadata(&to).unwrap());
            let (used_a, used_b) = (a.blocks() * 512, b.blocks() * 512);
            assert!(
                used_a < a.len() / 8,
                "{name}: the source takes {used_a} bytes for {}: not sparse, so this test \
                 proves nothing on {}",
                a.len(),
                src.display()
            );
            assert_eq!(b.len(), a.len(), "{name}: size");
            assert!(
                used_b.abs_diff(used_a) <= 64 * 1024,
                "{name}: the copy takes {used_b} bytes on disk, its source {used_a}, for an \
                 apparent size of {}",
                a.len()
            );
        }
    }

    #[test]
    fn tree_copy_keeps_holes() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();

        assert_sparse_copy(&src, &dst);
    }

    /// Between two kinds of filesystem copy_file_range refuses, so the copy goes through a
    /// buffer: holes must stay holes there too.
    #[test]
    fn tree_copy_keeps_holes_across_filesystems() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let tmpfs = Mounted::new(tmp.path().join("tmpfs"), "tmpfs");

        assert_sparse_copy(&src, &tmpfs.0);
    }
}
