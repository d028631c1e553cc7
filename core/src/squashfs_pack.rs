//! SquashFS snapshots of the ebuild repository, written with backhand, and the listing of them.
//!
//! [`pack`] packs a root's repository (the site config's `mounts.repo`, resolved inside the
//! root) or any directory into `WORKDIR/repos/NAME.sqfs`, which `root mount` mounts read-only
//! into roots. The image is:
//! - **exact** for what an ebuild repository holds: directories, regular files and symlinks,
//!   with numeric owners, full modes and mtimes (to the second: SquashFS keeps no more).
//!   backhand's writer has no xattrs and no hardlinks, so xattrs are dropped and hardlinked files
//!   become copies (the report counts both, for one warning; a repository has neither). Devices,
//!   fifos and sockets are refused, naming the path. backhand cannot set the mtime of the image's
//!   root directory: it is always 0.
//! - **reproducible**: entries in path order, and no "now" anywhere. The image's time (the
//!   superblock's mkfs time, the image file's mtime and the default name) is `SOURCE_DATE_EPOCH`
//!   when that is set, mtimes newer than it being clamped to it; otherwise it is the newest mtime
//!   in the tree, so the date says how new the repository is, not when it was packed, and
//!   `newest_repo_image` (by mtime) picks the newest repository.
//! - **atomic**: written into an unnamed file in `repos/` (`O_TMPFILE`) that is linked in under
//!   its name only when complete, so an error, Ctrl-C or even SIGKILL leaves nothing behind.
//!   Where the filesystem has no `O_TMPFILE`, a hidden temporary name is used and removed on
//!   error.
//!
//! The tree is read without following a symlink anywhere below its top: directories are opened
//! with `O_NOFOLLOW` and files with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so a symlink in a
//! root's repository is packed as a symlink and never leads the reader out of the tree.
//!
//! backhand compresses one block at a time on the calling thread. To use every core as
//! mksquashfs does, a reader thread here predicts the blocks backhand will compress (its rules:
//! every block of a file of at least one block, all-zero blocks excepted; smaller files packed
//! into shared fragment blocks) and a thread pool compresses them ahead. backhand's compressor
//! takes a result only when the bytes it is asked to compress equal the predicted bytes, and
//! compresses inline otherwise: a wrong prediction costs time, never changes the image.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use backhand::compression::{CompressionAction, Compressor, DefaultCompressor, Lz4, Zstd};
use backhand::kind::Kind;
use backhand::{BackhandError, FilesystemCompressor, FilesystemWriter, NodeHeader, SuperBlock};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps, CWD};
use rustix::io::Errno;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::in_root::{InnerPath, RootDir};
use crate::names::{self, NameError};
use crate::storage::{io_err, StorageError};

/// The data block size when none is given: mksquashfs's default.
pub const DEFAULT_BLOCK_SIZE: u32 = 128 * 1024;
const MIN_BLOCK_SIZE: u64 = 4 * 1024;
const MAX_BLOCK_SIZE: u64 = 1024 * 1024;

/// The file name suffix of images in `repos/`.
pub const IMAGE_SUFFIX: &str = ".sqfs";

/// A SquashFS compressor the kernel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Zstd,
    Xz,
    Gzip,
    Lz4,
}

impl Compression {
    pub const ALL: [Self; 4] = [Self::Zstd, Self::Xz, Self::Gzip, Self::Lz4];

    pub fn name(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Xz => "xz",
            Self::Gzip => "gzip",
            Self::Lz4 => "lz4",
        }
    }

    /// The level each compresses at: mksquashfs's default for it, so that our images and
    /// mksquashfs's compare (zstd 15, the xz preset 6 with a dictionary of one block, gzip 9;
    /// lz4 has one level).
    pub fn level(self) -> u32 {
        match self {
            Self::Zstd => 15,
            Self::Xz => 6,
            Self::Gzip => 9,
            Self::Lz4 => 1,
        }
    }

    fn backhand(self) -> Compressor {
        match self {
            Self::Zstd => Compressor::Zstd,
            Self::Xz => Compressor::Xz,
            Self::Gzip => Compressor::Gzip,
            Self::Lz4 => Compressor::Lz4,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown compression '{s}'; use zstd, xz, gzip or lz4"))
    }
}

/// The name of a superblock's compressor id, for images made by any tool.
pub fn compressor_name(id: u16) -> String {
    match id {
        1 => "gzip".to_owned(),
        2 => "lzma".to_owned(),
        3 => "lzo".to_owned(),
        4 => "xz".to_owned(),
        5 => "lz4".to_owned(),
        6 => "zstd".to_owned(),
        other => format!("unknown ({other})"),
    }
}

/// Parses a block size: bytes (`131072`) or with a `K` or `M` suffix (`128K`, `1M`), a power of
/// two from 4 KiB to 1 MiB.
pub fn parse_block_size(text: &str) -> Result<u32, PackError> {
    let (digits, unit) = match text.as_bytes().last() {
        Some(b'k' | b'K') => (&text[..text.len() - 1], 1024),
        Some(b'm' | b'M') => (&text[..text.len() - 1], 1024 * 1024),
        _ => (text, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|n| n.is_power_of_two() && (MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(n))
        .map(|n| n as u32)
        .ok_or_else(|| PackError::BadBlockSize(text.to_owned()))
}

/// Parses `SOURCE_DATE_EPOCH`: whole seconds since 1970, as reproducible-builds.org defines it.
pub fn parse_source_date_epoch(text: &str) -> Result<i64, PackError> {
    text.parse::<i64>()
        .ok()
        .filter(|t| *t >= 0 && !text.starts_with('+'))
        .ok_or_else(|| PackError::BadSourceDateEpoch(text.to_owned()))
}

/// The default image name for an image time: `gentoo-YYYYMMDD` (UTC), as Gentoo names its own
/// repository snapshots, so names sort by date.
pub fn default_name(time: u32) -> String {
    let (year, month, day, ..) = crate::civil_time::utc(i64::from(time));
    format!("gentoo-{year:04}{month:02}{day:02}")
}

/// Why a pack or a listing failed. After a failed pack, nothing new is in `repos/`.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{} does not exist; give the directory to pack", .path.display())]
    MissingSource { path: PathBuf },
    #[error("{} is not a directory; give the directory to pack", .path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} is a {kind}; an ebuild repository holds only directories, files and symlinks: remove it or pack another directory", .path.display())]
    SpecialFile { path: PathBuf, kind: &'static str },
    #[error("invalid image name '{name}': {reason}")]
    InvalidName { name: String, reason: NameError },
    #[error("image '{name}' already exists ({}); choose another --name or replace it with --force", .path.display())]
    Exists { name: String, path: PathBuf },
    #[error("block size '{0}' is not a power of two from 4K to 1M; give bytes or a K or M suffix, e.g. 128K")]
    BadBlockSize(String),
    #[error(
        "SOURCE_DATE_EPOCH='{0}' is not a whole number of seconds since 1970; fix it or unset it"
    )]
    BadSourceDateEpoch(String),
    #[error("{} does not exist; run `autogentoo workdir init` first", .0.display())]
    NoRepos(PathBuf),
    #[error("cannot write the image {}: {message}", .path.display())]
    Write { path: PathBuf, message: String },
    #[error("interrupted; no image was written")]
    Interrupted,
}

/// What to pack.
#[derive(Clone, Copy, Debug)]
pub enum PackSource<'a> {
    /// A directory on the host. The path itself is the user's and is followed; nothing below it.
    Dir(&'a Path),
    /// `repo` inside the root directory `root`, resolved as a chroot would see it: a symlink on
    /// the way leads somewhere inside the root, never out of it.
    InRoot { root: &'a Path, repo: &'a Path },
}

/// A pack, as `repo pack` asks for it.
pub struct PackRequest<'a> {
    pub source: PackSource<'a>,
    /// The workdir's `repos/` directory, which must exist.
    pub repos: &'a Path,
    /// The image name; `None` for [`default_name`] of the image time.
    pub name: Option<&'a str>,
    /// Replace an image of the same name instead of refusing.
    pub force: bool,
    pub compression: Compression,
    /// A power of two from 4 KiB to 1 MiB; see [`parse_block_size`].
    pub block_size: u32,
    /// `SOURCE_DATE_EPOCH`, which fixes the image time and clamps newer mtimes.
    pub source_date_epoch: Option<i64>,
    /// Set (from a signal handler) to stop; nothing is left behind.
    pub cancel: &'a AtomicBool,
}

/// What a pack produced; its JSON is what `repo pack --json` prints.
#[derive(Debug, Serialize)]
pub struct PackReport {
    pub name: String,
    pub path: PathBuf,
    /// The image file's size in bytes.
    pub size: u64,
    /// Inodes in the image, its root directory included (the superblock's inode count).
    pub entries: u32,
    pub compression: Compression,
    pub block_size: u32,
    pub sha256: String,
    /// The image time: the superblock's mkfs time and the file's mtime.
    #[serde(skip)]
    pub time: u32,
    /// Regular files with more than one name in the source; each became a copy.
    #[serde(skip)]
    pub hardlinked: u64,
    /// Entries of the source with xattrs, which the image does not keep.
    #[serde(skip)]
    pub with_xattrs: u64,
}

/// Packs the source into `repos/NAME.sqfs`; see the module documentation.
pub fn pack(request: &PackRequest) -> Result<PackReport, PackError> {
    let (top, shown) = open_source(request.source)?;
    let repos = request.repos;
    let repos_dir = rustix::fs::open(
        repos,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| match e {
        Errno::NOENT => PackError::NoRepos(repos.to_owned()),
        e => io_err("open", repos)(e.into()).into(),
    })?;
    if let Some(name) = request.name {
        check_free(&repos_dir, repos, name, request.force)?;
    }
    let walk = Walker::walk(&top, &shown, request.source_date_epoch, request.cancel)?;
    let time = match request.source_date_epoch {
        Some(epoch) => image_time(epoch, None),
        None => walk.newest,
    };
    let name = request
        .name
        .map_or_else(|| default_name(time), str::to_owned);
    check_free(&repos_dir, repos, &name, request.force)?;
    let path = repos.join(format!("{name}{IMAGE_SUFFIX}"));

    let output = Output::create(&repos_dir, repos, &name)?;
    let image = Image {
        walk: &walk,
        top: top.as_fd(),
        shown: &shown,
        compression: request.compression,
        block_size: request.block_size,
        time,
        cancel: request.cancel,
    };
    let written = image.write(output.file(), true).map_err(|e| e.at(&path))?;
    tracing::debug!(
        "{} blocks compressed ahead, {} mispredicted, {} compressed inline",
        written.ahead,
        written.missed,
        written.inline
    );
    let (size, sha256) = output.finish(time).map_err(|e| e.at(&path))?;
    if request.cancel.load(Ordering::Relaxed) {
        return Err(PackError::Interrupted);
    }
    output.commit(&name, &path, request.force)?;
    Ok(PackReport {
        name,
        path,
        size,
        entries: written.superblock.inode_count,
        compression: request.compression,
        block_size: request.block_size,
        sha256,
        time,
        hardlinked: walk.hardlinked,
        with_xattrs: walk.with_xattrs,
    })
}

/// Checks the name and that no image has it (unless it is to be replaced).
fn check_free(repos_dir: &OwnedFd, repos: &Path, name: &str, force: bool) -> Result<(), PackError> {
    names::check(name).map_err(|reason| PackError::InvalidName {
        name: name.to_owned(),
        reason,
    })?;
    let file = format!("{name}{IMAGE_SUFFIX}");
    match rustix::fs::statat(repos_dir, file.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) if force => Ok(()),
        Ok(_) => Err(PackError::Exists {
            name: name.to_owned(),
            path: repos.join(file),
        }),
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(io_err("inspect", repos.join(file))(e.into()).into()),
    }
}

/// Opens the top of the tree to pack; returns it and its host path for messages.
fn open_source(source: PackSource) -> Result<(OwnedFd, PathBuf), PackError> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let (opened, shown) = match source {
        PackSource::Dir(path) => (
            rustix::fs::open(path, flags, Mode::empty()),
            path.to_owned(),
        ),
        PackSource::InRoot { root, repo } => {
            let inner = InnerPath::parse(repo.as_os_str().as_bytes())
                .ok_or_else(|| PackError::MissingSource {
                    path: root.join(repo),
                })?
                .relative();
            let dir = RootDir::open(root)?;
            (
                dir.open_at(&inner, flags, Mode::empty()),
                dir.display_path(&inner),
            )
        }
    };
    match opened {
        Ok(fd) => Ok((fd, shown)),
        Err(Errno::NOENT) => Err(PackError::MissingSource { path: shown }),
        Err(Errno::NOTDIR) => Err(PackError::NotADirectory { path: shown }),
        Err(e) => Err(io_err("open", shown)(e.into()).into()),
    }
}

/// An mtime as the image stores it: clamped to `SOURCE_DATE_EPOCH` when given, and to the
/// unsigned 32 bits of SquashFS times.
fn image_time(mtime: i64, epoch: Option<i64>) -> u32 {
    let clamped = epoch.map_or(mtime, |epoch| mtime.min(epoch));
    clamped.clamp(0, i64::from(u32::MAX)) as u32
}

/// What goes into the image at one path.
enum Content {
    Dir,
    File,
    Symlink(OsString),
}

struct Node {
    /// Relative to the top of the tree; never empty.
    rel: PathBuf,
    content: Content,
    header: NodeHeader,
}

/// The tree to pack, read once before anything is written.
struct Walk {
    /// The top directory's owner and mode.
    top: NodeHeader,
    /// Every entry below the top, in path order (backhand's order, so each insert appends).
    nodes: Vec<Node>,
    /// The newest image mtime of all, the top included.
    newest: u32,
    hardlinked: u64,
    with_xattrs: u64,
}

struct Walker<'a> {
    shown: &'a Path,
    epoch: Option<i64>,
    cancel: &'a AtomicBool,
    walk: Walk,
}

impl<'a> Walker<'a> {
    fn walk(
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
fn open_regular(top: BorrowedFd, rel: &Path) -> io::Result<File> {
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
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
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

/// A failure while writing the image, before we know which file name to blame.
enum WriteFailure {
    /// Fully described already (a source file could not be read, an interruption).
    Pack(PackError),
    /// Anything else, on the output.
    Output(String),
}

impl WriteFailure {
    fn at(self, path: &Path) -> PackError {
        match self {
            Self::Pack(error) => error,
            Self::Output(message) => PackError::Write {
                path: path.to_owned(),
                message,
            },
        }
    }
}

/// backhand's errors have no text without its `error-strings` feature; this gives them one.
fn backhand_message(error: BackhandError) -> String {
    match error {
        BackhandError::StdIo(e) => e.to_string(),
        BackhandError::InvalidFilePath => "a path the SquashFS writer refuses".to_owned(),
        BackhandError::DuplicatedFileName => "a path given twice".to_owned(),
        BackhandError::NumericConversion(what) | BackhandError::InternalState(what) => {
            format!("the SquashFS writer failed ({what})")
        }
        other => format!("the SquashFS writer failed ({})", io::Error::from(other)),
    }
}

/// A written image: its superblock, and how its blocks were compressed.
struct Written {
    superblock: SuperBlock,
    /// Blocks compressed ahead on the pool.
    ahead: u64,
    /// Blocks predicted wrongly, and so compressed by backhand's call.
    missed: u64,
    /// Blocks that had no prediction (metadata, or after the predictions ran out).
    inline: u64,
}

/// One image to write from a walked tree.
struct Image<'a> {
    walk: &'a Walk,
    top: BorrowedFd<'a>,
    shown: &'a Path,
    compression: Compression,
    block_size: u32,
    time: u32,
    cancel: &'a AtomicBool,
}

impl Image<'_> {
    /// Writes the image into `out`, compressing ahead on a thread pool when `ahead` is set
    /// (without, the bytes are the same: see the module documentation).
    fn write(&self, out: &File, ahead: bool) -> Result<Written, WriteFailure> {
        let codec = Codec::new(self.compression, self.block_size);
        let failure = RefCell::new(None);
        let fs = self.filesystem(codec, &failure);
        let mut fs = fs.map_err(|e| WriteFailure::Output(backhand_message(e)))?;
        let (written, stats) = std::thread::scope(|scope| {
            let predicted = ahead.then(|| Prediction::start(scope, self, codec));
            let active = Active::install(codec, predicted);
            let written = fs.write(BufWriter::with_capacity(256 * 1024, out));
            (written, active.uninstall())
        });
        match written {
            Ok((superblock, _)) => Ok(Written {
                superblock,
                ahead: stats.ahead,
                missed: stats.missed,
                inline: stats.inline,
            }),
            Err(error) => Err(match failure.take() {
                Some(pack_error) => WriteFailure::Pack(pack_error),
                None if self.cancel.load(Ordering::Relaxed) => {
                    WriteFailure::Pack(PackError::Interrupted)
                }
                None => WriteFailure::Output(backhand_message(error)),
            }),
        }
    }

    fn filesystem<'s>(
        &'s self,
        codec: Codec,
        failure: &'s RefCell<Option<PackError>>,
    ) -> Result<FilesystemWriter<'s, 's, 's>, BackhandError> {
        let mut fs = FilesystemWriter::default();
        fs.set_kind(Kind::new_v4(&AHEAD_COMPRESSOR));
        fs.set_block_size(self.block_size);
        fs.set_time(self.time);
        fs.set_compressor(codec.filesystem_compressor()?);
        fs.set_root_mode(self.walk.top.permissions);
        fs.set_root_uid(self.walk.top.uid);
        fs.set_root_gid(self.walk.top.gid);
        for node in &self.walk.nodes {
            match &node.content {
                Content::Dir => fs.push_dir(&node.rel, node.header)?,
                Content::File => {
                    let reader = SourceFile {
                        image: self,
                        rel: &node.rel,
                        failure,
                        file: None,
                        done: false,
                    };
                    fs.push_file(reader, &node.rel, node.header)?
                }
                Content::Symlink(target) => fs.push_symlink(target, &node.rel, node.header)?,
            }
        }
        Ok(fs)
    }
}

/// A file of the tree as backhand reads it: opened on the first read and closed at its end, so
/// no more than one is open however many the tree holds.
struct SourceFile<'a> {
    image: &'a Image<'a>,
    rel: &'a Path,
    /// The first failure, described; backhand passes on only an io error without a path.
    failure: &'a RefCell<Option<PackError>>,
    file: Option<File>,
    done: bool,
}

impl SourceFile<'_> {
    fn fail(&self, error: PackError) -> io::Error {
        let shown = io::Error::other(error.to_string());
        self.failure.borrow_mut().get_or_insert(error);
        shown
    }
}

impl Read for SourceFile<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.image.cancel.load(Ordering::Relaxed) {
            return Err(self.fail(PackError::Interrupted));
        }
        if self.done {
            return Ok(0);
        }
        let path = || self.image.shown.join(self.rel);
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = open_regular(self.image.top, self.rel)
                    .map_err(|e| self.fail(io_err("open", path())(e).into()))?;
                self.file.insert(file)
            }
        };
        match file.read(buf) {
            Ok(0) => {
                self.file = None;
                self.done = true;
                Ok(0)
            }
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => Err(self.fail(io_err("read", path())(e).into())),
        }
    }
}

/// The compressor and its settings, as both backhand's calls and the pool's workers use it.
#[derive(Clone, Copy)]
struct Codec {
    compression: Compression,
    block_size: u32,
}

thread_local! {
    /// One compression context per thread and compressor, reused from block to block.
    static ZSTD: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DEFLATE: RefCell<Option<flate2::Compress>> = const { RefCell::new(None) };
}

impl Codec {
    fn new(compression: Compression, block_size: u32) -> Self {
        Self {
            compression,
            block_size,
        }
    }

    /// backhand's description of it, written into the image's compression options.
    fn filesystem_compressor(self) -> Result<FilesystemCompressor, BackhandError> {
        use backhand::compression::CompressionOptions;
        let options = match self.compression {
            Compression::Zstd => Some(CompressionOptions::Zstd(Zstd {
                compression_level: self.compression.level(),
            })),
            // The kernel requires lz4's options: version 1 (legacy framing), no flags.
            Compression::Lz4 => Some(CompressionOptions::Lz4(Lz4 {
                version: 1,
                flags: 0,
            })),
            // Their defaults (dictionary of one block, level 9 and window 15) need no options.
            Compression::Xz | Compression::Gzip => None,
        };
        FilesystemCompressor::new(self.compression.backhand(), options)
    }

    fn compress(self, bytes: &[u8]) -> io::Result<Vec<u8>> {
        let level = self.compression.level();
        match self.compression {
            Compression::Zstd => ZSTD.with(|cell| {
                let mut cell = cell.borrow_mut();
                let compressor = match &mut *cell {
                    Some(compressor) => compressor,
                    None => cell.insert(zstd::bulk::Compressor::new(level as i32)?),
                };
                compressor.compress(bytes)
            }),
            Compression::Xz => {
                let mut options = liblzma::stream::LzmaOptions::new_preset(level)?;
                options.dict_size(self.block_size);
                let mut filters = liblzma::stream::Filters::new();
                filters.lzma2(&options);
                let mut stream = liblzma::stream::Stream::new_stream_encoder(
                    &filters,
                    liblzma::stream::Check::Crc32,
                )?;
                let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8 + 128);
                loop {
                    let consumed = stream.total_in() as usize;
                    match stream.process_vec(
                        &bytes[consumed..],
                        &mut out,
                        liblzma::stream::Action::Finish,
                    )? {
                        liblzma::stream::Status::StreamEnd => return Ok(out),
                        _ => out.reserve(out.capacity().max(4096)),
                    }
                }
            }
            Compression::Gzip => DEFLATE.with(|cell| {
                let mut cell = cell.borrow_mut();
                let deflate = cell.get_or_insert_with(|| {
                    flate2::Compress::new(flate2::Compression::new(level), true)
                });
                deflate.reset();
                let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 8 + 64);
                loop {
                    let consumed = deflate.total_in() as usize;
                    match deflate
                        .compress_vec(&bytes[consumed..], &mut out, flate2::FlushCompress::Finish)
                        .map_err(io::Error::other)?
                    {
                        flate2::Status::StreamEnd => return Ok(out),
                        _ => out.reserve(out.capacity().max(4096)),
                    }
                }
            }),
            Compression::Lz4 => {
                let fs_compressor = self.filesystem_compressor().map_err(io::Error::from)?;
                DefaultCompressor
                    .compress(bytes, fs_compressor, self.block_size)
                    .map_err(io::Error::from)
            }
        }
    }
}

/// The compressor backhand calls: it takes predicted results where the bytes match.
struct AheadCompressor;

static AHEAD_COMPRESSOR: AheadCompressor = AheadCompressor;

thread_local! {
    /// The pack running on this thread, if any: backhand writes on the thread that calls it.
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
}

/// The codec of the pack running on this thread, its predicted blocks, and counts of how
/// blocks were compressed.
struct Active {
    codec: Codec,
    predicted: Option<Receiver<Predicted>>,
    stats: AheadStats,
}

#[derive(Clone, Copy, Default)]
struct AheadStats {
    ahead: u64,
    missed: u64,
    inline: u64,
}

/// Uninstalls the pack from its thread when dropped (also when backhand panics).
struct ActiveGuard;

impl Active {
    fn install(codec: Codec, predicted: Option<Receiver<Predicted>>) -> ActiveGuard {
        let active = Active {
            codec,
            predicted,
            stats: AheadStats::default(),
        };
        ACTIVE.with(|cell| *cell.borrow_mut() = Some(active));
        ActiveGuard
    }

    fn compress(&mut self, bytes: &[u8]) -> io::Result<Vec<u8>> {
        if let Some(predicted) = &self.predicted {
            match predicted.recv() {
                Ok(block) if *block.input == *bytes => {
                    if let Ok(result) = block.output.recv() {
                        self.stats.ahead += 1;
                        return result;
                    }
                }
                Ok(_) => {}
                // Every predicted block was taken: what comes now is metadata.
                Err(_) => self.predicted = None,
            }
            if self.predicted.is_some() {
                self.stats.missed += 1;
                return self.codec.compress(bytes);
            }
        }
        self.stats.inline += 1;
        self.codec.compress(bytes)
    }
}

impl ActiveGuard {
    /// Uninstalls the pack; returns its counts. Dropping the predictions stops their thread.
    fn uninstall(self) -> AheadStats {
        ACTIVE.with(|cell| {
            cell.borrow_mut()
                .take()
                .map(|a| a.stats)
                .unwrap_or_default()
        })
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.with(|cell| cell.borrow_mut().take());
    }
}

impl CompressionAction for AheadCompressor {
    type Error = BackhandError;
    type Compressor = Compressor;
    type FilesystemCompressor = FilesystemCompressor;
    type SuperBlock = SuperBlock;

    fn decompress(
        &self,
        bytes: &[u8],
        out: &mut Vec<u8>,
        compressor: Compressor,
    ) -> Result<(), BackhandError> {
        DefaultCompressor.decompress(bytes, out, compressor)
    }

    fn compress(
        &self,
        bytes: &[u8],
        fc: FilesystemCompressor,
        block_size: u32,
    ) -> Result<Vec<u8>, BackhandError> {
        ACTIVE.with(|cell| match &mut *cell.borrow_mut() {
            Some(active) => active.compress(bytes).map_err(BackhandError::StdIo),
            None => DefaultCompressor.compress(bytes, fc, block_size),
        })
    }

    fn compression_options(
        &self,
        superblock: &mut SuperBlock,
        kind: &Kind,
        fs_compressor: FilesystemCompressor,
    ) -> Result<Option<Vec<u8>>, BackhandError> {
        DefaultCompressor.compression_options(superblock, kind, fs_compressor)
    }
}

/// A block that backhand is predicted to compress, and its result when a worker has it.
struct Predicted {
    input: Arc<Vec<u8>>,
    output: Receiver<io::Result<Vec<u8>>>,
}

/// The reader thread that predicts backhand's blocks and hands them to the pool.
struct Prediction;

impl Prediction {
    /// Starts predicting in `scope`; the receiver yields the blocks in backhand's order. The
    /// thread stops when the receiver is dropped.
    fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        image: &'scope Image<'scope>,
        codec: Codec,
    ) -> Receiver<Predicted> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (sender, receiver) = mpsc::sync_channel(4 * threads);
        scope.spawn(move || {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("sqfs-compress-{i}"))
                .build();
            match pool {
                Ok(pool) => Self::run(image, codec, &pool, &sender),
                // Then every block is compressed by backhand's own calls, on one thread.
                Err(e) => tracing::debug!("no compression threads: {e}"),
            }
        });
        receiver
    }

    /// backhand's data writer in outline: the same blocks in the same order, compressed on the
    /// pool. Stops early, without harm, at any surprise.
    fn run(image: &Image, codec: Codec, pool: &rayon::ThreadPool, out: &SyncSender<Predicted>) {
        let block = codec.block_size as usize;
        let emit = |input: Vec<u8>| {
            let input = Arc::new(input);
            let (done, output) = mpsc::sync_channel(1);
            let job = Arc::clone(&input);
            pool.spawn(move || {
                let _ = done.send(codec.compress(&job));
            });
            out.send(Predicted { input, output }).is_ok()
        };
        let mut fragment = Vec::with_capacity(block);
        let mut buf = vec![0; block];
        let files = image
            .walk
            .nodes
            .iter()
            .filter(|node| matches!(node.content, Content::File));
        for node in files {
            if image.cancel.load(Ordering::Relaxed) {
                return;
            }
            let Ok(mut file) = open_regular(image.top, &node.rel) else {
                return;
            };
            let Ok(mut len) = read_full(&mut file, &mut buf) else {
                return;
            };
            if len == 0 {
                continue;
            }
            if len < block {
                if len + fragment.len() > block
                    && !emit(std::mem::replace(&mut fragment, Vec::with_capacity(block)))
                {
                    return;
                }
                fragment.extend_from_slice(&buf[..len]);
                continue;
            }
            while len > 0 {
                let chunk = &buf[..len];
                // backhand stores an all-zero block as a hole, without compressing it.
                if chunk.iter().any(|&b| b != 0) && !emit(chunk.to_vec()) {
                    return;
                }
                len = match read_full(&mut file, &mut buf) {
                    Ok(len) => len,
                    Err(_) => return,
                };
            }
        }
        // backhand compresses the last fragment block at the end, even an empty one.
        emit(fragment);
    }
}

/// The image file while it is written; see the module documentation on atomicity.
struct Output<'a> {
    dir: &'a OwnedFd,
    repos: &'a Path,
    file: File,
    /// The hidden name, where the filesystem has no `O_TMPFILE`; removed on drop.
    temp: Option<String>,
}

impl<'a> Output<'a> {
    fn create(dir: &'a OwnedFd, repos: &'a Path, name: &str) -> Result<Self, PackError> {
        let mode = Mode::from_raw_mode(0o644);
        let flags = OFlags::RDWR | OFlags::CLOEXEC;
        let fail = |e: Errno| PackError::from(io_err("create a file in", repos)(e.into()));
        match rustix::fs::openat(dir, ".", flags | OFlags::TMPFILE, mode) {
            Ok(fd) => Ok(Self {
                dir,
                repos,
                file: File::from(fd),
                temp: None,
            }),
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {
                let temp = temp_name(name);
                let excl = flags | OFlags::CREATE | OFlags::EXCL;
                let fd = rustix::fs::openat(dir, temp.as_str(), excl, mode).map_err(fail)?;
                Ok(Self {
                    dir,
                    repos,
                    file: File::from(fd),
                    temp: Some(temp),
                })
            }
            Err(e) => Err(fail(e)),
        }
    }

    fn file(&self) -> &File {
        &self.file
    }

    /// Gives the written file its mode and time and makes it durable; returns its size and
    /// SHA-256.
    fn finish(&self, time: u32) -> Result<(u64, String), WriteFailure> {
        let fail = |e: io::Error| WriteFailure::Output(e.to_string());
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(0o644)).map_err(|e| fail(e.into()))?;
        let stamp = Timespec {
            tv_sec: i64::from(time),
            tv_nsec: 0,
        };
        let times = Timestamps {
            last_access: stamp,
            last_modification: stamp,
        };
        rustix::fs::futimens(&self.file, &times).map_err(|e| fail(e.into()))?;
        self.file.sync_all().map_err(fail)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 1024 * 1024];
        let mut size = 0;
        loop {
            let n = self.file.read_at(&mut buf, size).map_err(fail)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let sha256 = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok((size, sha256))
    }

    /// Gives the image its name `path` (in `repos/`): refused if that exists, unless `force`.
    fn commit(mut self, name: &str, path: &Path, force: bool) -> Result<(), PackError> {
        let target = format!("{name}{IMAGE_SUFFIX}");
        let exists = || PackError::Exists {
            name: name.to_owned(),
            path: path.to_owned(),
        };
        let fail = |e: Errno| PackError::from(io_err("create", path)(e.into()));
        let linked = if force {
            if self.temp.is_none() {
                let temp = temp_name(name);
                self.link_unnamed(&temp).map_err(fail)?;
                self.temp = Some(temp);
            }
            self.rename_temp(&target)
        } else {
            // A link, unlike a rename, never replaces what another pack made meanwhile. The
            // hidden name, if any, goes when `self` is dropped.
            match &self.temp {
                None => self.link_unnamed(&target),
                Some(temp) => rustix::fs::linkat(
                    self.dir,
                    temp.as_str(),
                    self.dir,
                    target.as_str(),
                    AtFlags::empty(),
                ),
            }
        };
        match linked {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(exists()),
            Err(e) => return Err(fail(e)),
        }
        // The directory entry too must survive a crash.
        rustix::fs::fsync(self.dir).map_err(|e| io_err("sync", self.repos)(e.into()))?;
        Ok(())
    }

    /// Links the unnamed file in as `name`.
    fn link_unnamed(&self, name: &str) -> Result<(), Errno> {
        let proc = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        rustix::fs::linkat(CWD, proc.as_str(), self.dir, name, AtFlags::SYMLINK_FOLLOW)
    }

    /// Renames the hidden name over `target`; the hidden name is gone on success.
    fn rename_temp(&mut self, target: &str) -> Result<(), Errno> {
        let temp = self.temp.as_deref().expect("a temporary name");
        rustix::fs::renameat(self.dir, temp, self.dir, target)?;
        self.temp = None;
        Ok(())
    }
}

impl Drop for Output<'_> {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            if let Err(e) = rustix::fs::unlinkat(self.dir, temp.as_str(), AtFlags::empty()) {
                tracing::warn!(
                    "cannot remove the temporary {}: {e}",
                    self.repos.join(temp).display()
                );
            }
        }
    }
}

/// The hidden name an image is written under where it needs one; not `*.sqfs`, so neither the
/// listing nor `root mount` ever takes it for an image.
fn temp_name(name: &str) -> String {
    format!(".{name}{IMAGE_SUFFIX}.{}.tmp", std::process::id())
}

/// The fields of a SquashFS 4.0 superblock that a listing shows (all little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub inode_count: u32,
    pub mkfs_time: u32,
    pub block_size: u32,
    pub compression: u16,
    pub bytes_used: u64,
}

impl Superblock {
    /// The superblock's size, at the start of the image.
    pub const SIZE: usize = 96;

    /// Parses the superblock; the error says why it is not SquashFS 4.0.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < Self::SIZE {
            return Err(format!("{} bytes, shorter than a superblock", bytes.len()));
        }
        if &bytes[0..4] != b"hsqs" {
            return Err("no 'hsqs' magic".to_owned());
        }
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let (major, minor) = (u16_at(28), u16_at(30));
        if (major, minor) != (4, 0) {
            return Err(format!("SquashFS version {major}.{minor}"));
        }
        Ok(Self {
            inode_count: u32_at(4),
            mkfs_time: u32_at(8),
            block_size: u32_at(12),
            compression: u16_at(20),
            bytes_used: u64_at(40),
        })
    }
}

/// One image in `repos/`, as `repo list` shows it.
#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub path: PathBuf,
    /// The file's size in bytes.
    pub size: u64,
    /// The superblock's mkfs time, in seconds since 1970.
    pub date: u32,
    /// The superblock's inode count.
    pub entries: u32,
    pub compression: String,
    pub block_size: u32,
}

/// A `*.sqfs` file of `repos/` that is not an image.
#[derive(Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skipping {}: not a SquashFS 4.0 image ({})",
            self.path.display(),
            self.reason
        )
    }
}

/// The images in `repos/` (files named `NAME.sqfs`), sorted by name, and the `*.sqfs` files
/// that are not SquashFS 4.0. A missing `repos/` has no images.
pub fn list_images(repos: &Path) -> Result<(Vec<ImageInfo>, Vec<Skipped>), PackError> {
    let entries = match std::fs::read_dir(repos) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(io_err("read", repos)(e).into()),
    };
    let mut images = Vec::new();
    let mut skipped = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("read", repos))?;
        let file_name = entry.file_name();
        let Some(name) = file_name
            .to_str()
            .and_then(|n| n.strip_suffix(IMAGE_SUFFIX))
            .filter(|n| !n.is_empty() && !n.starts_with('.'))
        else {
            continue;
        };
        let path = entry.path();
        match read_image_info(&path) {
            Ok((size, superblock)) => images.push(ImageInfo {
                name: name.to_owned(),
                path,
                size,
                date: superblock.mkfs_time,
                entries: superblock.inode_count,
                compression: compressor_name(superblock.compression),
                block_size: superblock.block_size,
            }),
            Err(reason) => skipped.push(Skipped { path, reason }),
        }
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((images, skipped))
}

/// The size and superblock of the image at `path`; the error says why it is not one.
fn read_image_info(path: &Path) -> Result<(u64, Superblock), String> {
    let file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut bytes = [0; Superblock::SIZE];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read it: {e}")),
        }
    }
    Superblock::parse(&bytes[..filled]).map(|superblock| (size, superblock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_are_powers_of_two_from_4k_to_1m() {
        assert_eq!(parse_block_size("128K").unwrap(), 131_072);
        assert_eq!(parse_block_size("128k").unwrap(), 131_072);
        assert_eq!(parse_block_size("1M").unwrap(), 1_048_576);
        assert_eq!(parse_block_size("4096").unwrap(), 4096);
        for bad in [
            "", "K", "2K", "3000", "2M", "0", "-4K", "128KiB", "1G", " 4K",
        ] {
            assert!(
                matches!(parse_block_size(bad), Err(PackError::BadBlockSize(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn source_date_epoch_is_whole_seconds() {
        assert_eq!(
            parse_source_date_epoch("1700000000").unwrap(),
            1_700_000_000
        );
        assert_eq!(parse_source_date_epoch("0").unwrap(), 0);
        for bad in ["", "-1", "+5", "1.5", "now"] {
            assert!(parse_source_date_epoch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn times_are_clamped_to_the_epoch_and_to_32_bits() {
        assert_eq!(image_time(100, None), 100);
        assert_eq!(image_time(100, Some(50)), 50);
        assert_eq!(image_time(40, Some(50)), 40);
        assert_eq!(image_time(-5, None), 0);
        assert_eq!(image_time(1 << 40, None), u32::MAX);
    }

    #[test]
    fn default_names_are_utc_dates() {
        assert_eq!(default_name(0), "gentoo-19700101");
        assert_eq!(default_name(951_782_400), "gentoo-20000229");
        assert_eq!(default_name(1_795_804_245), "gentoo-20261127");
    }

    #[test]
    fn superblocks_are_parsed_and_checked() {
        let mut bytes = [0u8; 96];
        bytes[0..4].copy_from_slice(b"hsqs");
        bytes[4..8].copy_from_slice(&7u32.to_le_bytes());
        bytes[8..12].copy_from_slice(&1_700_000_000u32.to_le_bytes());
        bytes[12..16].copy_from_slice(&131_072u32.to_le_bytes());
        bytes[20..22].copy_from_slice(&6u16.to_le_bytes());
        bytes[28..30].copy_from_slice(&4u16.to_le_bytes());
        bytes[40..48].copy_from_slice(&4096u64.to_le_bytes());
        assert_eq!(
            Superblock::parse(&bytes),
            Ok(Superblock {
                inode_count: 7,
                mkfs_time: 1_700_000_000,
                block_size: 131_072,
                compression: 6,
                bytes_used: 4096,
            })
        );
        assert!(Superblock::parse(&bytes[..95]).is_err());
        let mut v3 = bytes;
        v3[28..30].copy_from_slice(&3u16.to_le_bytes());
        assert!(Superblock::parse(&v3).unwrap_err().contains("3.0"));
        let mut not = bytes;
        not[0..4].copy_from_slice(b"sqsh");
        assert!(Superblock::parse(&not).unwrap_err().contains("magic"));
    }

    /// A tree with small files sharing fragments, files of several blocks, a hole, a duplicate
    /// and an empty file: every path of backhand's data writer.
    fn sample_tree(root: &Path) {
        let write = |rel: &str, data: &[u8]| {
            let path = root.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, data).unwrap();
        };
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut noise = |len: usize| -> Vec<u8> {
            (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 7) as u8 + b'a'
                })
                .collect()
        };
        for i in 0..40 {
            write(
                &format!("cat-{}/pkg/pkg-{i}.ebuild", i % 3),
                &noise(900 + i * 97),
            );
        }
        write("big/one", &noise(3 * 4096 + 100));
        write("big/two", &noise(4096));
        let mut holed = noise(4096);
        holed.extend_from_slice(&[0; 4096]);
        holed.extend(noise(10));
        write("big/holed", &holed);
        write("big/copy", &std::fs::read(root.join("big/one")).unwrap());
        write("empty", b"");
        std::os::unix::fs::symlink("big/one", root.join("link")).unwrap();
    }

    #[test]
    fn predicted_blocks_change_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("tree");
        sample_tree(&tree);
        let cancel = AtomicBool::new(false);
        let top =
            rustix::fs::open(&tree, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
        let walk = Walker::walk(&top, &tree, None, &cancel).unwrap();
        for compression in Compression::ALL {
            let image = Image {
                walk: &walk,
                top: top.as_fd(),
                shown: &tree,
                compression,
                block_size: 4096,
                time: 0,
                cancel: &cancel,
            };
            let mut images = Vec::new();
            for ahead in [true, false] {
                let out = tempfile::tempfile().unwrap();
                let Ok(written) = image.write(&out, ahead) else {
                    panic!("{compression}, ahead: {ahead}: the write failed");
                };
                if ahead {
                    // 40 small files in fragment blocks, 4 + 1 + 2 + 4 data blocks, the last
                    // fragment block.
                    assert!(
                        written.ahead >= 11 + 2,
                        "{compression}: {} ahead",
                        written.ahead
                    );
                    assert_eq!(written.missed, 0, "{compression}: mispredicted blocks");
                } else {
                    assert_eq!(written.ahead + written.missed, 0);
                }
                let mut bytes = Vec::new();
                std::io::Seek::rewind(&mut &out).unwrap();
                (&out).read_to_end(&mut bytes).unwrap();
                images.push(bytes);
            }
            assert!(
                images[0] == images[1],
                "{compression}: the same bytes either way"
            );
        }
    }

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
