//! Writing a walked tree into an image with backhand, and the image file until it has its name.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use backhand::kind::Kind;
use backhand::{BackhandError, FilesystemWriter, SuperBlock};
use rustix::fs::{AtFlags, Mode, OFlags, Timespec, Timestamps, CWD};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use super::ahead::{Active, Codec, Prediction, AHEAD_COMPRESSOR};
use super::walk::{open_regular, Content, Walk};
use super::{Compression, PackError, IMAGE_SUFFIX};
use crate::storage::io_err;

/// A failure while writing the image, before we know which file name to blame.
pub(super) enum WriteFailure {
    /// Fully described already (a source file could not be read, an interruption).
    Pack(PackError),
    /// Anything else, on the output.
    Output(String),
}

impl WriteFailure {
    pub(super) fn at(self, path: &Path) -> PackError {
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
pub(super) struct Written {
    pub(super) superblock: SuperBlock,
    /// Blocks compressed ahead on the pool.
    pub(super) ahead: u64,
    /// Blocks predicted wrongly, and so compressed by backhand's call.
    pub(super) missed: u64,
    /// Blocks that had no prediction (metadata, or after the predictions ran out).
    pub(super) inline: u64,
}

/// One image to write from a walked tree.
pub(super) struct Image<'a> {
    pub(super) walk: &'a Walk,
    pub(super) top: BorrowedFd<'a>,
    pub(super) shown: &'a Path,
    pub(super) compression: Compression,
    pub(super) block_size: u32,
    pub(super) time: u32,
    pub(super) cancel: &'a AtomicBool,
}

impl Image<'_> {
    /// Writes the image into `out`, compressing ahead on a thread pool when `ahead` is set
    /// (without, the bytes are the same: see [`super::ahead`]).
    pub(super) fn write(&self, out: &File, ahead: bool) -> Result<Written, WriteFailure> {
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

/// The image file while it is written; see [`super`] on atomicity.
pub(super) struct Output<'a> {
    dir: &'a OwnedFd,
    repos: &'a Path,
    file: File,
    /// The hidden name, where the filesystem has no `O_TMPFILE`; removed on drop.
    temp: Option<String>,
}

impl<'a> Output<'a> {
    pub(super) fn create(dir: &'a OwnedFd, repos: &'a Path, name: &str) -> Result<Self, PackError> {
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

    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Gives the written file its mode and time and makes it durable; returns its size and
    /// SHA-256.
    pub(super) fn finish(&self, time: u32) -> Result<(u64, String), WriteFailure> {
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
    pub(super) fn commit(mut self, name: &str, path: &Path, force: bool) -> Result<(), PackError> {
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
