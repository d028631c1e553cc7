//! Writing a walked tree into an image with backhand.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufWriter, Read};
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use backhand::kind::Kind;
use backhand::{BackhandError, FilesystemWriter, SuperBlock};
use rustix::fs::{Timespec, Timestamps};

use super::ahead::{Active, Codec, Prediction, AHEAD_COMPRESSOR};
use super::walk::{open_regular, Content, Walk};
use super::{Compression, PackError};
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
        // `set_root_uid` and `set_root_gid` leave the top's owner out of the image's id table,
        // and writing fails ("invalid data") when no entry below shares it. A push enters its
        // header's owner in the table before it checks the path, so pushing the top itself,
        // which is refused as it is already there, enters it. After the entries, so that the
        // table is unchanged whenever one of them shares the owner.
        match fs.push_dir("/", self.walk.top) {
            Ok(()) | Err(BackhandError::InvalidFilePath | BackhandError::DuplicatedFileName) => {}
            Err(other) => return Err(other),
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

/// Gives the written image its time.
pub(super) fn set_time(file: &File, time: u32) -> Result<(), WriteFailure> {
    let stamp = Timespec {
        tv_sec: i64::from(time),
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: stamp,
        last_modification: stamp,
    };
    rustix::fs::futimens(file, &times).map_err(|e| WriteFailure::Output(e.to_string()))
}
