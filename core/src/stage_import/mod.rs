//! Importing a stage: a stage3 tarball (plain, gzip, xz, bzip2 or zstd; recognised by its magic
//! bytes, not its name) or a directory, into a new stage volume that roots are cloned from.
//!
//! The tree lands exactly as GNU `tar --xattrs --numeric-owner -xpf` would leave it: numeric
//! owners, full modes, mtimes, xattrs (file capabilities), device nodes and fifos (which the tar
//! crate would write as plain files, so we make them ourselves), symlinks and hardlinks. Every
//! path is resolved inside the new volume, so a hostile tarball cannot write outside it.
//!
//! Sparse files are extracted as GNU tar extracts them, in every form it writes (old GNU, PAX
//! 0.0, 0.1 and 1.0): the holes stay holes, so a member costs the disk only its data.
//!
//! The import fills a pending volume that no listing shows; only a complete import is committed
//! and sealed. A failure or an interruption discards it. Errors name the tarball and the entry
//! as the archive writes it (escaped: a name is the archive's, not ours to print raw), never the
//! hidden place the volume is filled in.
//!
//! A DIGESTS check hashes the very bytes that are extracted, as they are read: the tarball is
//! read once, so a file that changes under us (a shared cache, NFS) cannot pass the check with
//! one content and be extracted with another.

mod quoting;
mod sparse;
mod tar_reader;

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, StatxFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;
use tar::EntryType;

use crate::chroot::mountinfo;
use crate::files::digests::{DigestError, Sha512Check};
use crate::files::in_root::{InnerPath, RootDir};
use crate::files::tree_copy;
use crate::storage::{PendingGuard, Storage, StorageError, Volume, VolumeId, VolumeKind};
use quoting::escape;
use tar_reader::{Member, ReadError, TarReader};

/// The snapshot of a stage that roots are cloned from.
pub const SEAL_SNAPSHOT: &str = "imported";

/// Reports how far an import has come. The library never draws; the binary does.
pub trait Progress: Sync {
    /// The total amount of work, in bytes of the source as read.
    fn start(&self, total: u64);
    /// `n` more bytes of the source were read.
    fn advance(&self, n: u64);
}

/// A [`Progress`] that reports nothing.
pub struct Silent;

impl Progress for Silent {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
}

/// What to import and how.
pub struct ImportRequest<'a> {
    /// A tarball or a directory.
    pub source: &'a Path,
    /// The new stage's name.
    pub name: &'a str,
    /// A Gentoo DIGESTS file whose SHA512 line must match the tarball.
    pub digests: Option<&'a Path>,
    pub progress: &'a dyn Progress,
    /// Set (from a signal handler) to stop the import; nothing is left behind.
    pub cancel: &'a AtomicBool,
}

/// What an import produced.
#[derive(Debug, serde::Serialize)]
pub struct ImportReport {
    pub volume: Volume,
    /// Entries written (files, directories, links, nodes).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// The verified SHA512 of the tarball, when a DIGESTS file was given.
    pub sha512: Option<String>,
}

/// Why an import failed. In every case nothing new is visible in the storage.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("cannot read {}: {source}", .path.display())]
    Source {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is neither a directory nor a tarball (.tar, .tar.gz, .tar.xz, .tar.bz2, .tar.zst)", .path.display())]
    UnknownFormat { path: PathBuf },
    #[error("{} is truncated or corrupt ({source}); download it again", .path.display())]
    Corrupt {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: entry '{entry}' {reason}", .path.display())]
    BadEntry {
        path: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{}: entry '{entry}': cannot {op} in the new stage: {source}; check that the workdir's \
             filesystem allows it", .path.display())]
    EntryWrite {
        path: PathBuf,
        entry: String,
        op: String,
        #[source]
        source: io::Error,
    },
    #[error("stage '{stage}' does not fit: {filesystem} {}{writing}; free space there or use a \
             workdir with more room; nothing was imported",
            if *.quota { "has no quota left" } else { "is full" })]
    DiskFull {
        stage: String,
        filesystem: Filesystem,
        /// Over quota rather than out of blocks.
        quota: bool,
        /// What was being written, for a tarball: " writing 'ENTRY' from TARBALL".
        writing: String,
    },
    #[error("{}: a DIGESTS check needs a tarball, not a directory", .path.display())]
    DigestsForDirectory { path: PathBuf },
    #[error("{}: '{entry}' has the extended attribute {attribute}, which the {backend} storage cannot keep; \
             import into a backend with xattrs (dir, btrfs, OpenZFS) — nothing was written", .path.display())]
    XattrsUnsupported {
        path: PathBuf,
        entry: String,
        attribute: String,
        backend: String,
    },
    #[error("interrupted; nothing was imported")]
    Interrupted,
}

/// Imports a stage and seals it; see the module documentation.
pub fn import_stage(
    storage: &dyn Storage,
    request: &ImportRequest,
) -> Result<ImportReport, ImportError> {
    import_sealed(storage, VolumeKind::Stage, request)
}

/// The property of a stage that holds its programs' architecture (Gentoo's name), when its
/// import found one.
pub const ARCH_PROPERTY: &str = "arch";

/// Imports a tree as a sealed volume of `kind`: a stage, or kernel sources (which builds read
/// and never write: they build out of tree).
pub fn import_sealed(
    storage: &dyn Storage,
    kind: VolumeKind,
    request: &ImportRequest,
) -> Result<ImportReport, ImportError> {
    let id = VolumeId::new(kind, request.name)?;
    let source = request.source;
    let meta = std::fs::metadata(source).map_err(|e| ImportError::Source {
        path: source.to_owned(),
        source: e,
    })?;
    let swept = storage.sweep_abandoned()?;
    if swept > 0 {
        tracing::info!("removed {swept} unfinished volume(s) left by interrupted runs");
    }
    if storage.get(&id).is_ok() {
        return Err(StorageError::AlreadyExists(id.to_string()).into());
    }
    // Read before anything is written: a missing or malformed line is refused at once. The
    // tarball's bytes are checked as the extraction reads them.
    let check = match request.digests {
        Some(_) if meta.is_dir() => {
            return Err(ImportError::DigestsForDirectory {
                path: source.to_owned(),
            })
        }
        Some(digests) => Some(Sha512Check::new(source, digests)?),
        None => None,
    };

    if !storage.capabilities().xattrs {
        refuse_xattrs(storage.backend_name(), source, meta.is_dir(), request)?;
    }
    let pending = PendingGuard::new(storage, &id)?;
    let (extracted, sha512) = if meta.is_dir() {
        let filesystem = Filesystem::of(pending.path());
        let stats = tree_copy::copy_tree(source, pending.path()).map_err(|err| {
            let full = match &err {
                StorageError::Io { source, .. } => disk_full(source),
                _ => None,
            };
            match full {
                Some(errno) => ImportError::DiskFull {
                    stage: request.name.to_owned(),
                    filesystem: filesystem.clone(),
                    quota: errno == Errno::DQUOT,
                    writing: String::new(),
                },
                None => err.into(),
            }
        })?;
        if request.cancel.load(Ordering::Relaxed) {
            return Err(ImportError::Interrupted);
        }
        let copied = Extracted {
            entries: stats.files,
            bytes: stats.bytes,
        };
        (copied, None)
    } else {
        request.progress.start(meta.len());
        let extracted =
            open_decompressed(source, request.progress, check).and_then(|mut stream| {
                let extracted = extract_tar(
                    &mut stream,
                    source,
                    pending.path(),
                    request.name,
                    request.cancel,
                )?;
                Ok((extracted, stream.finish(source, request.cancel)?))
            });
        match extracted {
            // An interruption often shows first as a broken stream (the producer of a pipe was
            // interrupted too); say what really happened.
            Err(_) if request.cancel.load(Ordering::Relaxed) => {
                return Err(ImportError::Interrupted)
            }
            Err(err) => return Err(err),
            Ok(extracted) => extracted,
        }
    };

    // Sealed as it appears: a kill never leaves a stage listed that roots cannot be cloned from.
    let mut properties = vec![("source".to_owned(), source.display().to_string())];
    if let Some(hash) = &sha512 {
        properties.push(("sha512".to_owned(), hash.clone()));
    }
    // A stage says what its programs are, so that a system of another architecture is not
    // built on it by mistake.
    if kind == VolumeKind::Stage {
        if let Some((arch, program)) = crate::arch::of_tree(pending.path())? {
            tracing::info!("stage '{}' is {arch} (/{program})", request.name);
            properties.push((ARCH_PROPERTY.to_owned(), arch.gentoo.to_owned()));
        }
    }
    let volume = pending.commit_sealed(SEAL_SNAPSHOT, &properties)?;
    Ok(ImportReport {
        volume,
        entries: extracted.entries,
        bytes: extracted.bytes,
        sha512,
    })
}

/// What an extraction wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Entries written (files, directories, links, nodes).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Extracts a tar stream into the empty directory `dir` as `stage import` does (see the module
/// documentation): every path is resolved inside `dir`, so nothing is ever written outside it.
/// Errors name `archive` and the entry; a full disk is reported as the stage `stage` not
/// fitting. On an error, what was written stays in `dir` for the caller to discard.
pub fn extract_tar(
    stream: impl Read,
    archive: &Path,
    dir: &Path,
    stage: &str,
    cancel: &AtomicBool,
) -> Result<Extracted, ImportError> {
    let filesystem = Filesystem::of(dir);
    let target = Target {
        dir,
        stage,
        filesystem: &filesystem,
    };
    let mut extractor = Extractor::new(&target, archive, cancel)?;
    extractor.extract(stream)?;
    Ok(Extracted {
        entries: extractor.entries,
        bytes: extractor.bytes,
    })
}

/// Fails if the source holds extended attributes, before anything is written: a backend that
/// cannot store them would lose file capabilities silently. For a tarball this is a read of the
/// archive's headers (the contents are decompressed but not written).
fn refuse_xattrs(
    backend: &str,
    source: &Path,
    is_dir: bool,
    request: &ImportRequest,
) -> Result<(), ImportError> {
    let found = if is_dir {
        first_xattr_in_dir(source)?
    } else {
        let mut reader = TarReader::new(open_decompressed(source, &Silent, None)?);
        let mut found = None;
        while let Some(member) = reader
            .next_member()
            .map_err(|e| read_error(source, "", e))?
        {
            if request.cancel.load(Ordering::Relaxed) {
                return Err(ImportError::Interrupted);
            }
            if let Some((key, _)) = member
                .pax
                .iter()
                .find(|(key, _)| key.starts_with(b"SCHILY.xattr."))
            {
                let attribute = &key[b"SCHILY.xattr.".len()..];
                found = Some((member.shown_name(), escape(attribute)));
                break;
            }
        }
        found
    };
    match found {
        Some((entry, attribute)) => Err(ImportError::XattrsUnsupported {
            path: source.to_owned(),
            entry,
            attribute,
            backend: backend.to_owned(),
        }),
        None => Ok(()),
    }
}

/// The first entry (and attribute) with an extended attribute below `dir`.
fn first_xattr_in_dir(dir: &Path) -> Result<Option<(String, String)>, ImportError> {
    let mut todo = vec![dir.to_owned()];
    while let Some(current) = todo.pop() {
        let entries = std::fs::read_dir(&current).map_err(|e| ImportError::Source {
            path: current.clone(),
            source: e,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|e| ImportError::Source {
                    path: current.clone(),
                    source: e,
                })?
                .path();
            let mut names = vec![0u8; rustix::fs::llistxattr_query(&path).unwrap_or(0)];
            let len = rustix::fs::llistxattr(&path, &mut names).unwrap_or(0);
            if let Some(name) = names[..len].split(|&b| b == 0).find(|n| !n.is_empty()) {
                let shown = escape(
                    path.strip_prefix(dir)
                        .unwrap_or(&path)
                        .as_os_str()
                        .as_bytes(),
                );
                return Ok(Some((shown, escape(name))));
            }
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                todo.push(path);
            }
        }
    }
    Ok(None)
}

/// Compression formats, recognised by magic bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Xz,
    Bzip2,
    Zstd,
}

fn sniff(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some(Compression::Xz)
    } else if head.starts_with(b"BZh") {
        Some(Compression::Bzip2)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(Compression::None)
    } else {
        None
    }
}

/// The tarball's tar stream, decompressed on a thread of its own so that decompression and
/// writing files overlap (as GNU tar does by running the compressor as a separate process).
/// With a `check`, that thread hashes the source's bytes as it reads them.
fn open_decompressed<'a>(
    path: &Path,
    progress: &'a dyn Progress,
    check: Option<Sha512Check>,
) -> Result<TarStream<'a>, ImportError> {
    let source_err = |e| ImportError::Source {
        path: path.to_owned(),
        source: e,
    };
    let mut file = File::open(path).map_err(source_err)?;
    let mut head = [0u8; 512];
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]).map_err(source_err)? {
            0 => break,
            n => filled += n,
        }
    }
    let compression = sniff(&head[..filled]).ok_or_else(|| ImportError::UnknownFormat {
        path: path.to_owned(),
    })?;
    // Read the source once, head included, so a pipe or fifo works as well as a file.
    let file = io::Cursor::new(head[..filled].to_vec()).chain(file);
    let (tx, rx) = mpsc::sync_channel::<io::Result<Vec<u8>>>(16);
    let (count_tx, count_rx) = mpsc::channel::<u64>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (verdict_tx, verdict_rx) = mpsc::channel::<Result<String, DigestError>>();
    let finish = check.is_some().then_some(Finish {
        go: go_tx,
        verdict: verdict_rx,
    });
    let source = path.to_owned();
    std::thread::Builder::new()
        .name("decompress".into())
        .spawn(move || {
            let mut counted = CountingSend {
                inner: file,
                tx: count_tx,
                check,
            };
            decompress(&mut counted, compression, &tx);
            let Some(mut check) = counted.check.take() else {
                return;
            };
            // Whether the archive was read to its end (and the digest is wanted) or the
            // import failed (and it is not) is the reader's to say.
            if go_rx.recv().is_err() {
                return;
            }
            // The digest covers the whole file, what follows the archive's end too.
            let verdict = match io::copy(&mut counted.inner, &mut HashInto(&mut check)) {
                Ok(_) => check.finish(),
                Err(e) => Err(DigestError::Read {
                    path: source,
                    source: e,
                }),
            };
            let _ = verdict_tx.send(verdict);
        })
        .map_err(source_err)?;
    Ok(TarStream {
        rx,
        chunk: Vec::new(),
        pos: 0,
        counts: count_rx,
        progress,
        finish,
    })
}

/// Decompresses `source` into `tx` until the stream ends, fails, or the reader leaves.
fn decompress<R: Read>(
    source: &mut R,
    compression: Compression,
    tx: &mpsc::SyncSender<io::Result<Vec<u8>>>,
) {
    let buffered = BufReader::with_capacity(1 << 20, source);
    let mut reader: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Xz => Box::new(liblzma::bufread::XzDecoder::new_parallel(buffered)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
        Compression::Zstd => match zstd::stream::read::Decoder::with_buffer(buffered) {
            Ok(d) => Box::new(d),
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        },
    };
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        match read_full(&mut reader, &mut chunk) {
            Ok(0) => return,
            Ok(n) => {
                chunk.truncate(n);
                if tx.send(Ok(chunk)).is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
    }
}

fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The file reader on the decompression thread, sending how much it read and hashing it when
/// a DIGESTS check asks: the bytes hashed are the bytes decompressed.
struct CountingSend<R> {
    inner: R,
    tx: mpsc::Sender<u64>,
    check: Option<Sha512Check>,
}

impl<R: Read> Read for CountingSend<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(check) = &mut self.check {
            check.update(&buf[..n]);
        }
        let _ = self.tx.send(n as u64);
        Ok(n)
    }
}

/// A writer that hashes what it is given: the rest of the source after the archive's end.
struct HashInto<'a>(&'a mut Sha512Check);

impl io::Write for HashInto<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The receiving end: a `Read` over the decompressed chunks.
struct TarStream<'a> {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    counts: mpsc::Receiver<u64>,
    progress: &'a dyn Progress,
    /// The DIGESTS check's end, when there is one.
    finish: Option<Finish>,
}

/// How the reader ends a DIGESTS check on the decompression thread.
struct Finish {
    /// Sent: hash the rest of the source and give the verdict. Dropped unsent: stop.
    go: mpsc::Sender<()>,
    verdict: mpsc::Receiver<Result<String, DigestError>>,
}

impl TarStream<'_> {
    /// Once the archive has been read: the verified SHA512 of every byte of the source, when
    /// there is a DIGESTS check. What follows the archive is read for it, so `cancel` is
    /// watched meanwhile.
    fn finish(self, path: &Path, cancel: &AtomicBool) -> Result<Option<String>, ImportError> {
        let TarStream { rx, finish, .. } = self;
        let Some(Finish { go, verdict }) = finish else {
            return Ok(None);
        };
        // A thread blocked on a full channel sees that the reader is done.
        drop(rx);
        let _ = go.send(());
        loop {
            match verdict.recv_timeout(Duration::from_millis(100)) {
                Ok(verdict) => return Ok(Some(verdict?)),
                Err(mpsc::RecvTimeoutError::Timeout) if cancel.load(Ordering::Relaxed) => {
                    return Err(ImportError::Interrupted)
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // It gives a verdict whenever there is a check and it is told to go on: a
                // thread gone without one is our bug, and never a pass.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(ImportError::Source {
                        path: path.to_owned(),
                        source: io::Error::other(
                            "the decompression thread stopped before hashing it",
                        ),
                    })
                }
            }
        }
    }
}

impl Read for TarStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.chunk.len() {
            let read: u64 = self.counts.try_iter().sum();
            if read > 0 {
                self.progress.advance(read);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The filesystem a new volume is written to, as it was when the import started: what a full
/// disk is reported with (the hidden place the volume is filled in means nothing to a user).
#[derive(Clone, Debug)]
pub struct Filesystem {
    /// Where it is mounted and its type, from the kernel's mount table.
    pub mount: Option<(PathBuf, String)>,
    /// Bytes available to writers when the import started.
    pub free_bytes: Option<u64>,
}

impl Filesystem {
    /// The filesystem holding `dir`; what cannot be learnt is left out of messages.
    pub fn of(dir: &Path) -> Self {
        let free_bytes = rustix::fs::statvfs(dir)
            .ok()
            .map(|st| st.f_bavail.saturating_mul(st.f_frsize));
        let mount = rustix::fs::statx(rustix::fs::CWD, dir, AtFlags::empty(), StatxFlags::MNT_ID)
            .ok()
            .and_then(|stx| {
                mountinfo::read()
                    .ok()?
                    .into_iter()
                    .find(|m| m.id == stx.stx_mnt_id)
            })
            .map(|m| (m.point, m.fstype));
        Self { mount, free_bytes }
    }
}

impl fmt::Display for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.mount {
            Some((point, fstype)) => write!(f, "the {fstype} filesystem at {}", point.display())?,
            None => f.write_str("the workdir's filesystem")?,
        }
        if let Some(free) = self.free_bytes {
            write!(f, " ({} free when the import started)", human_bytes(free))?;
        }
        Ok(())
    }
}

/// Binary units, one decimal: what `df -h` users read.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// ENOSPC or EDQUOT: the disk (or the user's share of it) is full.
fn disk_full(err: &io::Error) -> Option<Errno> {
    let errno = Errno::from_io_error(err)?;
    (errno == Errno::NOSPC || errno == Errno::DQUOT).then_some(errno)
}

/// A stream error as the user sees it: the tarball is corrupt (`place` says where, as
/// ", in entry 'X'"), or one of its entries is.
fn read_error(archive: &Path, place: &str, err: ReadError) -> ImportError {
    match err {
        ReadError::Stream(source) if place.is_empty() => ImportError::Corrupt {
            path: archive.to_owned(),
            source,
        },
        ReadError::Stream(source) => ImportError::Corrupt {
            path: archive.to_owned(),
            source: io::Error::new(source.kind(), format!("{source}{place}")),
        },
        ReadError::Member { entry, reason } => ImportError::BadEntry {
            path: archive.to_owned(),
            entry,
            reason,
        },
    }
}

/// Metadata of one entry, with the pax records applied.
struct EntryMeta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Where an extraction writes: the pending volume's directory, and what errors say instead.
struct Target<'a> {
    dir: &'a Path,
    stage: &'a str,
    filesystem: &'a Filesystem,
}

/// Writes a tar stream into a root directory.
struct Extractor<'a> {
    root: RootDir,
    archive: &'a Path,
    stage: &'a str,
    filesystem: &'a Filesystem,
    cancel: &'a AtomicBool,
    /// The entry being written, as the archive names it: what errors name.
    current: String,
    /// The directory of the previous entry: tarballs list a directory's entries together.
    last_parent: Option<(Vec<std::ffi::OsString>, OwnedFd)>,
    /// Directory metadata, applied deepest first at the end (creating entries changes mtimes).
    dirs: Vec<(InnerPath, String, EntryMeta)>,
    entries: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl<'a> Extractor<'a> {
    fn new(
        target: &Target<'a>,
        archive: &'a Path,
        cancel: &'a AtomicBool,
    ) -> Result<Self, ImportError> {
        Ok(Self {
            root: RootDir::open(target.dir)?,
            archive,
            stage: target.stage,
            filesystem: target.filesystem,
            cancel,
            current: String::new(),
            last_parent: None,
            dirs: Vec::new(),
            entries: 0,
            bytes: 0,
            buf: vec![0u8; 1 << 18],
        })
    }

    /// A stream error inside the current entry's data.
    fn read_err(&self, err: ReadError) -> ImportError {
        read_error(self.archive, &format!(", in entry '{}'", self.current), err)
    }

    fn bad_entry(&self, reason: impl Into<String>) -> ImportError {
        ImportError::BadEntry {
            path: self.archive.to_owned(),
            entry: self.current.clone(),
            reason: reason.into(),
        }
    }

    /// A failure to write the current entry: a full disk is said as such, anything else names
    /// the entry and what was being done to it.
    fn write_err(&self, op: impl Into<String>, source: io::Error) -> ImportError {
        if let Some(errno) = disk_full(&source) {
            return ImportError::DiskFull {
                stage: self.stage.to_owned(),
                filesystem: self.filesystem.clone(),
                quota: errno == Errno::DQUOT,
                writing: format!(
                    " while writing '{}' from {}",
                    self.current,
                    self.archive.display()
                ),
            };
        }
        ImportError::EntryWrite {
            path: self.archive.to_owned(),
            entry: self.current.clone(),
            op: op.into(),
            source,
        }
    }

    fn errno_err(&self, op: &str, errno: Errno) -> ImportError {
        self.write_err(op, errno.into())
    }

    /// An error of the in-root lookups, which name the volume's hidden path: told again with
    /// the entry instead.
    fn root_err(&self, err: StorageError) -> ImportError {
        match err {
            // The lookups' operations are "open directory", "create directory", "follow", …
            StorageError::Io { op, source, .. } => {
                let verb = op.split(' ').next().unwrap_or(op);
                self.write_err(format!("{verb} its directory"), source)
            }
            StorageError::Unsupported { .. } => self.bad_entry(
                "leads into a filesystem mounted inside the stage; the tarball cannot be imported",
            ),
            other => other.into(),
        }
    }

    fn extract(&mut self, stream: impl Read) -> Result<(), ImportError> {
        let mut reader = TarReader::new(stream);
        loop {
            let member = match reader.next_member() {
                Ok(Some(member)) => member,
                Ok(None) => break,
                Err(err) if self.entries == 0 => return Err(read_error(self.archive, "", err)),
                Err(err) => {
                    let place = format!(", after entry '{}'", self.current);
                    return Err(read_error(self.archive, &place, err));
                }
            };
            if self.cancel.load(Ordering::Relaxed) {
                return Err(ImportError::Interrupted);
            }
            self.current = member.shown_name();
            self.entry(&member, &mut reader)?;
            self.entries += 1;
        }
        self.last_parent = None;
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(path, _, _)| std::cmp::Reverse(path.depth()));
        for (path, name, meta) in dirs {
            self.current = name;
            let fd = self
                .root
                .open_at(
                    &path.relative(),
                    OFlags::DIRECTORY | OFlags::RDONLY,
                    Mode::empty(),
                )
                .map_err(|e| self.errno_err("open the directory", e))?;
            self.apply_meta(&fd, &meta)?;
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        member: &Member,
        reader: &mut TarReader<R>,
    ) -> Result<(), ImportError> {
        let path = InnerPath::parse(&member.name)
            .ok_or_else(|| self.bad_entry("climbs out of the stage with '..'"))?;
        let meta = self.meta(member);
        let kind = member.kind();
        if path.is_root() {
            if kind == EntryType::Directory {
                self.dirs.push((path, self.current.clone(), meta));
            }
            return Ok(());
        }
        let (parent_components, name) = path.split_last().expect("not the root");
        let parent = self.parent(parent_components)?;
        match kind {
            EntryType::Directory => {
                match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) if is_dir_at(&parent, name) => {}
                    Err(Errno::EXIST) => {
                        remove_at(&parent, name)
                            .map_err(|e| self.errno_err("replace what is there", e))?;
                        rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o700))
                            .map_err(|e| self.errno_err("create it", e))?;
                    }
                    Err(e) => return Err(self.errno_err("create it", e)),
                }
                self.dirs.push((path.clone(), self.current.clone(), meta));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                let fd = create_at(&parent, name, |flags| {
                    rustix::fs::openat(&parent, name, flags, Mode::from_raw_mode(0o600))
                })
                .map_err(|e| self.errno_err("create it", e))?;
                let file = File::from(fd);
                self.write_data(member, reader, &file)?;
                self.apply_meta(&file, &meta)?;
            }
            EntryType::Symlink => {
                let target = member
                    .link
                    .as_deref()
                    .ok_or_else(|| self.bad_entry("is a symlink without a target"))?;
                let target = OsStr::from_bytes(target);
                create_at(&parent, name, |_| {
                    rustix::fs::symlinkat(target, &parent, name)
                })
                .map_err(|e| self.errno_err("create the symlink", e))?;
                self.apply_meta_at(&parent, name, &meta, true)?;
            }
            EntryType::Link => self.hardlink(member, &parent, name)?,
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (file_type, dev) = match kind {
                    EntryType::Char => (FileType::CharacterDevice, self.device(member)?),
                    EntryType::Block => (FileType::BlockDevice, self.device(member)?),
                    _ => (FileType::Fifo, 0),
                };
                create_at(&parent, name, |_| {
                    rustix::fs::mknodat(&parent, name, file_type, Mode::from_raw_mode(0o600), dev)
                })
                .map_err(|e| self.errno_err("create the node", e))?;
                self.apply_meta_at(&parent, name, &meta, false)?;
            }
            // pax and GNU long-name headers are read with the member they describe; anything
            // else (sockets cannot be archived) has no place in a stage.
            other => {
                return Err(self.bad_entry(format!("has an unsupported type {other:?}")));
            }
        }
        Ok(())
    }

    /// A hardlink to an entry the archive made before it, inside the stage.
    fn hardlink(&self, member: &Member, parent: &OwnedFd, name: &OsStr) -> Result<(), ImportError> {
        let raw = member
            .link
            .as_deref()
            .ok_or_else(|| self.bad_entry("is a hardlink without a target"))?;
        let shown = escape(raw);
        let target = InnerPath::parse(raw)
            .filter(|t| !t.is_root())
            .ok_or_else(|| {
                self.bad_entry(format!(
                    "is a hardlink to '{shown}', which is outside the stage; the tarball is \
                     hostile or broken: do not import it"
                ))
            })?;
        let missing = || {
            self.bad_entry(format!(
                "is a hardlink to '{shown}', which the archive does not hold before it; the \
                 tarball is incomplete or corrupt: download or create it again"
            ))
        };
        let (target_parent, target_name) = target.split_last().expect("not the root");
        let target_dir = match self.root.dir(target_parent, false) {
            Ok(fd) => fd,
            Err(StorageError::Io { ref source, .. })
                if matches!(
                    Errno::from_io_error(source),
                    Some(Errno::NOENT | Errno::NOTDIR)
                ) =>
            {
                return Err(missing())
            }
            Err(err) => return Err(self.root_err(err)),
        };
        create_at(parent, name, |_| {
            rustix::fs::linkat(&target_dir, target_name, parent, name, AtFlags::empty())
        })
        .map_err(|e| match e {
            Errno::NOENT => missing(),
            e => self.errno_err(&format!("link it to '{shown}'"), e),
        })
    }

    fn device(&self, member: &Member) -> Result<u64, ImportError> {
        let (major, minor) = member.device().map_err(|reason| self.bad_entry(reason))?;
        Ok(rustix::fs::makedev(major, minor))
    }

    /// The directory `components`, reusing the previous entry's when it is the same.
    fn parent(&mut self, components: &[std::ffi::OsString]) -> Result<OwnedFd, ImportError> {
        if let Some((last, fd)) = &self.last_parent {
            if last.as_slice() == components {
                return fd
                    .try_clone()
                    .map_err(|e| self.write_err("open its directory", e));
            }
        }
        let fd = self
            .root
            .dir(components, true)
            .map_err(|e| self.root_err(e))?;
        let copy = fd
            .try_clone()
            .map_err(|e| self.write_err("open its directory", e))?;
        self.last_parent = Some((components.to_vec(), copy));
        Ok(fd)
    }

    /// Writes the member's data where its map puts it: runs at their offsets, holes never
    /// read nor written (the file is new, so they read as zeros), then the file's full size.
    fn write_data<R: Read>(
        &mut self,
        member: &Member,
        reader: &mut TarReader<R>,
        file: &File,
    ) -> Result<(), ImportError> {
        let mut buf = std::mem::take(&mut self.buf);
        let written = self.write_runs(member, reader, file, &mut buf);
        self.buf = buf;
        let end = written?;
        if member.layout.size > end {
            file.set_len(member.layout.size)
                .map_err(|e| self.write_err("set its size", e))?;
        }
        Ok(())
    }

    /// Where the last run ended.
    fn write_runs<R: Read>(
        &mut self,
        member: &Member,
        reader: &mut TarReader<R>,
        file: &File,
        buf: &mut [u8],
    ) -> Result<u64, ImportError> {
        let mut end = 0;
        for run in &member.layout.runs {
            let mut offset = run.offset;
            end = run.offset + run.len;
            while offset < end {
                // A single member may be gigabytes: stop inside it when asked to.
                if self.cancel.load(Ordering::Relaxed) {
                    return Err(ImportError::Interrupted);
                }
                let want = buf
                    .len()
                    .min(usize::try_from(end - offset).unwrap_or(usize::MAX));
                let n = reader
                    .read_data(&mut buf[..want])
                    .map_err(|e| self.read_err(e.into()))?;
                if n == 0 {
                    // The map was checked against the stored size, so this is our bug; an
                    // error beats a loop that never ends.
                    let short = io::Error::other("the member's data ends before its map does");
                    return Err(self.read_err(short.into()));
                }
                file.write_all_at(&buf[..n], offset)
                    .map_err(|e| self.write_err("write it", e))?;
                offset += n as u64;
                self.bytes += n as u64;
            }
        }
        Ok(end)
    }

    fn meta(&self, member: &Member) -> EntryMeta {
        let attributes = &member.attributes;
        let xattrs = member
            .pax
            .iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix(b"SCHILY.xattr.")?;
                Some((name.to_vec(), value.clone()))
            })
            .collect();
        EntryMeta {
            mode: attributes.mode,
            uid: attributes.uid,
            gid: attributes.gid,
            mtime: attributes.mtime,
            xattrs,
        }
    }

    /// Owner, then mode (chown clears setuid), then xattrs (chown clears file capabilities),
    /// then times, on an open file or directory.
    fn apply_meta(&self, fd: &impl AsFd, meta: &EntryMeta) -> Result<(), ImportError> {
        rustix::fs::fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| self.errno_err("set its owner", e))?;
        rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| self.errno_err("set its mode", e))?;
        for (name, value) in &meta.xattrs {
            rustix::fs::fsetxattr(fd, OsStr::from_bytes(name), value, XattrFlags::empty())
                .map_err(|e| self.xattr_err(name, e))?;
        }
        let times = Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        };
        rustix::fs::futimens(fd, &times).map_err(|e| self.errno_err("set its times", e))?;
        Ok(())
    }

    /// The same for entries we cannot open: symlinks and device nodes.
    fn apply_meta_at(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        meta: &EntryMeta,
        symlink: bool,
    ) -> Result<(), ImportError> {
        rustix::fs::chownat(
            parent,
            name,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.errno_err("set its owner", e))?;
        if !symlink {
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_raw_mode(meta.mode),
                AtFlags::empty(),
            )
            .map_err(|e| self.errno_err("set its mode", e))?;
        }
        if !meta.xattrs.is_empty() {
            // No fd can be opened on a symlink or node for fsetxattr; name it through the parent's
            // descriptor, which `lsetxattr` does not follow at the last component.
            let via = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd())).join(name);
            for (xname, value) in &meta.xattrs {
                rustix::fs::lsetxattr(&via, OsStr::from_bytes(xname), value, XattrFlags::empty())
                    .map_err(|e| self.xattr_err(xname, e))?;
            }
        }
        let times = Timestamps {
            last_access: meta.mtime,
            last_modification: meta.mtime,
        };
        rustix::fs::utimensat(parent, name, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.errno_err("set its times", e))?;
        Ok(())
    }

    fn xattr_err(&self, name: &[u8], e: Errno) -> ImportError {
        let name = escape(name);
        if e == Errno::NOTSUP || e == Errno::OPNOTSUPP {
            self.bad_entry(format!(
                "has the extended attribute {name}, which this storage cannot hold; use a backend with xattrs"
            ))
        } else {
            // Not a full disk even on ENOSPC: a filesystem says so for an attribute too large
            // for it.
            ImportError::EntryWrite {
                path: self.archive.to_owned(),
                entry: self.current.clone(),
                op: format!("set its extended attribute {name}"),
                source: e.into(),
            }
        }
    }
}

fn is_dir_at(parent: &OwnedFd, name: &OsStr) -> bool {
    rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory)
        .unwrap_or(false)
}

fn remove_at(parent: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    let flags = if is_dir_at(parent, name) {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    rustix::fs::unlinkat(parent, name, flags)
}

/// Runs `create`; if the name exists (a later entry replaces an earlier one, as with tar),
/// removes it and tries once more. Regular files are opened with `O_EXCL | O_NOFOLLOW`.
fn create_at<T>(
    parent: &OwnedFd,
    name: &OsStr,
    create: impl Fn(OFlags) -> Result<T, Errno>,
) -> Result<T, Errno> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match create(flags) {
        Err(Errno::EXIST) => {
            remove_at(parent, name)?;
            create(flags)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_recognised_by_magic() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8]), Some(Compression::Gzip));
        assert_eq!(sniff(b"\xfd7zXZ\0rest"), Some(Compression::Xz));
        assert_eq!(sniff(b"BZh91AY"), Some(Compression::Bzip2));
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Some(Compression::Zstd));
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(sniff(&tar), Some(Compression::None));
        assert_eq!(sniff(b"PK\x03\x04 a zip file"), None);
    }
}
