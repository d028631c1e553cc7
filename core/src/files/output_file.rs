//! Writing the files commands produce — archives, kernel images, manifests, configs, state — so
//! that each appears whole or not at all, and never lands on something that is not a file.
//!
//! One mechanism for every writer:
//! - the target is checked first ([`check_target`]): absent, a regular file, or a symlink to a
//!   regular file, which the output replaces (it is never written through: outputs live in
//!   directories that roots can reach, where a symlink is a root's, not the user's); a
//!   directory, a device node (`/dev/null`), a fifo, a socket, a symlink to one of those or a
//!   dangling symlink is refused before any work;
//! - the data goes into an unnamed file in the target's directory (`O_TMPFILE`), so a process
//!   killed while writing leaves nothing behind;
//! - on commit the file is synced, linked in under a hidden name that carries our PID and is
//!   locked by us, and renamed over the target; the directory is synced;
//! - where the filesystem has no `O_TMPFILE` (FUSE, such as zfs-fuse), the hidden name is created
//!   at once, under the same lock;
//! - a hidden name left by a process killed between link and rename (or while writing on a
//!   filesystem without `O_TMPFILE`) is swept by the next writer in that directory: its owner is
//!   gone and its lock is free.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, CWD};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use crate::files::bounded_read::FileKind;
use crate::storage::{io_err, StorageError};

/// The end of every hidden name; nothing else we write ends so.
const TEMP_SUFFIX: &str = ".autogentoo-tmp";

/// Why an output could not be written. Nothing is left at the target or beside it.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("refusing to write {}: it is {kind}, not a regular file; name a file to write", .path.display())]
    NotAFile { path: PathBuf, kind: FileKind },
    #[error("refusing to write {}: it is a symlink to {}, which is {kind}, not a regular file; name a file to write", .path.display(), .target.display())]
    SymlinkToNonFile {
        path: PathBuf,
        target: PathBuf,
        kind: FileKind,
    },
    #[error("refusing to write {}: it is a symlink to {}, which does not exist; remove the link or name another file", .path.display(), .target.display())]
    DanglingSymlink { path: PathBuf, target: PathBuf },
    #[error("{} already exists; remove it or ask for it to be replaced", .0.display())]
    Exists(PathBuf),
    #[error(transparent)]
    Io(#[from] StorageError),
}

/// For callers whose errors are storage errors (a backend's own metadata): an I/O error stays
/// one; a target that cannot be a file is corruption of the store.
impl From<OutputError> for StorageError {
    fn from(e: OutputError) -> Self {
        match e {
            OutputError::Io(e) => e,
            other => Self::Corrupt(other.to_string()),
        }
    }
}

/// Checks that `path` may be written as an output, before any work is done: it is absent, a
/// regular file, or a symlink to one (which the output will replace). Returns `path`.
pub fn check_target(path: &Path) -> Result<PathBuf, OutputError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(path.to_owned()),
        Err(e) => return Err(io_err("inspect", path)(e).into()),
    };
    let file_type = meta.file_type();
    if file_type.is_file() {
        return Ok(path.to_owned());
    }
    if !file_type.is_symlink() {
        return Err(OutputError::NotAFile {
            path: path.to_owned(),
            kind: FileKind::of(file_type),
        });
    }
    let link = std::fs::read_link(path).map_err(io_err("read link", path))?;
    let target = match std::fs::canonicalize(path) {
        Ok(target) => target,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(OutputError::DanglingSymlink {
                path: path.to_owned(),
                target: link,
            })
        }
        Err(e) => return Err(io_err("resolve", path)(e).into()),
    };
    let meta = std::fs::metadata(&target).map_err(io_err("inspect", &target))?;
    if meta.is_file() {
        Ok(path.to_owned())
    } else {
        Err(OutputError::SymlinkToNonFile {
            path: path.to_owned(),
            target,
            kind: FileKind::of(meta.file_type()),
        })
    }
}

/// An output being written; see the module documentation. Dropping it without a commit leaves
/// nothing behind.
pub struct OutputFile {
    /// Where it will appear.
    target: PathBuf,
    dir: OwnedFd,
    name: OsString,
    file: File,
    /// The hidden name, once the file has one.
    temp: Option<OsString>,
    mode: u32,
}

impl OutputFile {
    /// Starts writing the output `path` (its directory is created if missing), mode 0644.
    pub fn create(path: &Path) -> Result<Self, OutputError> {
        let target = check_target(path)?;
        let (dir_path, name) = split(&target);
        std::fs::create_dir_all(&dir_path).map_err(io_err("create", &dir_path))?;
        let dir = rustix::fs::open(
            &dir_path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("open", &dir_path)(e.into()))?;
        sweep_fd(&dir, &dir_path);
        let flags = OFlags::RDWR | OFlags::CLOEXEC;
        let private = Mode::from_raw_mode(0o600);
        let fail = |e: Errno| OutputError::from(io_err("create a file in", &dir_path)(e.into()));
        let (fd, temp) = match rustix::fs::openat(&dir, ".", flags | OFlags::TMPFILE, private) {
            Ok(fd) => (fd, None),
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOSYS) => {
                let temp = temp_name(&name);
                let excl = flags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
                let fd = rustix::fs::openat(&dir, &temp, excl, private).map_err(fail)?;
                (fd, Some(temp))
            }
            Err(e) => return Err(fail(e)),
        };
        // Held until we exit: how the sweep tells a live writer's hidden file from a dead one's.
        rustix::fs::flock(&fd, FlockOperation::LockExclusive).map_err(fail)?;
        let output = Self {
            target,
            dir,
            name,
            file: File::from(fd),
            temp,
            mode: 0o644,
        };
        Ok(output)
    }

    /// The mode the file gets on commit (0644 unless set); never setuid, setgid or sticky.
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode & 0o777;
        self
    }

    /// Where the file will appear.
    pub fn path(&self) -> &Path {
        &self.target
    }

    /// The file being written.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The size and SHA-256 (lowercase hex) of what has been written, read back from the file.
    pub fn digest(&self) -> Result<(u64, String), OutputError> {
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 1 << 20];
        let mut size = 0;
        loop {
            let n = self
                .file
                .read_at(&mut buf, size)
                .map_err(|e| self.io_std("read back", e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok((size, crate::files::digests::hex(&hasher.finalize())))
    }

    /// Makes the file durable and puts it in place, replacing a regular file of that name.
    pub fn commit(mut self) -> Result<PathBuf, OutputError> {
        self.finish()?;
        let temp = match &self.temp {
            Some(temp) => temp.clone(),
            None => {
                let temp = temp_name(&self.name);
                self.link_unnamed(&temp).map_err(|e| self.io("create", e))?;
                self.temp = Some(temp.clone());
                temp
            }
        };
        // The check made at the start, again right before the name is taken: a directory or a
        // node that appeared meanwhile is refused. (One made between this check and the rename
        // is replaced as an entry, never written into.)
        check_target(&self.target)?;
        rustix::fs::renameat(&self.dir, &temp, &self.dir, &self.name)
            .map_err(|e| self.io("rename into place", e))?;
        self.temp = None;
        self.sync_dir()?;
        Ok(self.target.clone())
    }

    /// Like [`commit`](Self::commit), but an existing file of that name is kept and the output
    /// is refused with [`OutputError::Exists`].
    pub fn commit_new(mut self) -> Result<PathBuf, OutputError> {
        self.finish()?;
        let linked = match &self.temp {
            None => self.link_unnamed(&self.name),
            Some(temp) => {
                rustix::fs::linkat(&self.dir, temp, &self.dir, &self.name, AtFlags::empty())
            }
        };
        match linked {
            Ok(()) => {}
            Err(Errno::EXIST) => return Err(OutputError::Exists(self.target.clone())),
            Err(e) => return Err(self.io("create", e)),
        }
        self.sync_dir()?;
        Ok(self.target.clone())
    }

    fn finish(&mut self) -> Result<(), OutputError> {
        self.file.flush().map_err(|e| self.io_std("write", e))?;
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(self.mode))
            .map_err(|e| self.io("chmod", e))?;
        self.file.sync_all().map_err(|e| self.io_std("sync", e))
    }

    fn link_unnamed(&self, name: &OsStr) -> Result<(), Errno> {
        let proc = format!("/proc/self/fd/{}", self.file.as_raw_fd());
        rustix::fs::linkat(CWD, proc.as_str(), &self.dir, name, AtFlags::SYMLINK_FOLLOW)
    }

    fn sync_dir(&self) -> Result<(), OutputError> {
        // An O_PATH descriptor cannot be synced; open the directory for reading.
        let dir = rustix::fs::openat(
            &self.dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| rustix::fs::fsync(&fd));
        dir.map_err(|e| self.io("sync the directory of", e))
    }

    fn io(&self, op: &'static str, e: Errno) -> OutputError {
        self.io_std(op, e.into())
    }

    fn io_std(&self, op: &'static str, e: io::Error) -> OutputError {
        io_err(op, &self.target)(e).into()
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if let Some(temp) = self.temp.take() {
            if let Err(e) = rustix::fs::unlinkat(&self.dir, &temp, AtFlags::empty()) {
                let shown = self.target.with_file_name(&temp);
                tracing::warn!("cannot remove the temporary {}: {e}", shown.display());
            }
        }
    }
}

/// Removes the output `path` if it is there (a file or a symlink; nothing else is ours to
/// remove): a manifest, before the files it describes are replaced.
pub fn retract(path: &Path) -> Result<(), OutputError> {
    check_target(path)?;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e).into()),
        _ => Ok(()),
    }
}

/// Writes `bytes` as the output `path`, replacing a regular file there; see [`OutputFile`].
pub fn write(path: &Path, bytes: &[u8]) -> Result<PathBuf, OutputError> {
    let mut output = OutputFile::create(path)?;
    output
        .write_all(bytes)
        .map_err(|e| io_err("write", path)(e))?;
    output.commit()
}

/// Removes the hidden files that killed writers left in the directory `dir` (at `dir_path`);
/// returns how many. Errors are only logged: a sweep never stops the work that asked for it.
fn sweep_fd(dir: &OwnedFd, dir_path: &Path) -> usize {
    let listing = match rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .and_then(rustix::fs::Dir::read_from)
    {
        Ok(listing) => listing,
        Err(_) => return 0,
    };
    let mut removed = 0;
    for entry in listing.flatten() {
        let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_owned();
        let Some(pid) = temp_owner(&name) else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        // Only our own kind of leftover: a device node under such a name is not opened (its
        // driver would act on the open), a symlink not followed.
        let is_file = rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW)
            .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile);
        if !is_file {
            continue;
        }
        let Ok(fd) = rustix::fs::openat(
            dir,
            &name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) else {
            continue;
        };
        if rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        match rustix::fs::unlinkat(dir, &name, AtFlags::empty()) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(
                "cannot remove {}, left by an interrupted run: {e}",
                dir_path.join(&name).display()
            ),
        }
    }
    if removed > 0 {
        tracing::info!(
            "removed {removed} unfinished file(s) left in {} by interrupted runs",
            dir_path.display()
        );
    }
    removed
}

/// `.NAME.PID.autogentoo-tmp`, NAME cut short so the whole stays a valid file name.
fn temp_name(name: &OsStr) -> OsString {
    let bytes = name.as_bytes();
    let kept = &bytes[..bytes.len().min(200)];
    let mut temp = OsString::from(".");
    temp.push(OsStr::from_bytes(kept));
    temp.push(format!(".{}{TEMP_SUFFIX}", std::process::id()));
    temp
}

/// A hidden path beside the output `target` for an intermediate file of this process (an
/// uncompressed archive before compression, say), ending in `ext`. It is named as the hidden
/// files of [`OutputFile`] are, so a sweep removes it once this process is gone; while it runs,
/// the caller removes it.
pub fn scratch_path(target: &Path, ext: &str) -> PathBuf {
    let (dir, name) = split(target);
    let mut scratch = temp_name(&name);
    scratch.push(format!(".{ext}"));
    dir.join(scratch)
}

/// The PID in a hidden name of ours: `.NAME.PID.autogentoo-tmp`, perhaps with more after it.
fn temp_owner(name: &OsStr) -> Option<i32> {
    let text = name.as_bytes();
    if !text.starts_with(b".") {
        return None;
    }
    let suffix = TEMP_SUFFIX.as_bytes();
    let at = text.windows(suffix.len()).rposition(|w| w == suffix)?;
    let stem = &text[..at];
    let dot = stem.iter().rposition(|&b| b == b'.')?;
    std::str::from_utf8(&stem[dot + 1..]).ok()?.parse().ok()
}

fn process_alive(pid: i32) -> bool {
    match rustix::process::Pid::from_raw(pid) {
        Some(pid) => !matches!(rustix::process::test_kill_process(pid), Err(Errno::SRCH)),
        None => false,
    }
}

/// The directory and the name of an output path.
fn split(path: &Path) -> (PathBuf, OsString) {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or(path.as_os_str()).to_owned();
    (dir.to_owned(), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(dir: &Path) -> usize {
        let fd = rustix::fs::open(dir, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        sweep_fd(&fd, dir)
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn an_output_appears_whole_on_commit_and_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/image.efi");
        let mut output = OutputFile::create(&path).unwrap();
        output.write_all(b"half").unwrap();
        assert!(!path.exists(), "nothing visible while writing");
        assert!(names_in(&dir.path().join("out")).is_empty());
        output.write_all(b" and whole").unwrap();
        let (size, sha256) = output.digest().unwrap();
        assert_eq!(size, 14);
        assert_eq!(&sha256[..8], "00040220", "{sha256}");
        assert_eq!(output.commit().unwrap(), path);
        assert_eq!(std::fs::read(&path).unwrap(), b"half and whole");
        assert_eq!(names_in(&dir.path().join("out")), ["image.efi"]);
        let mode = std::fs::metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o7777,
            0o644
        );
    }

    #[test]
    fn an_output_dropped_without_commit_leaves_the_old_file_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("initramfs.cpio.gz");
        std::fs::write(&path, "old").unwrap();
        let mut output = OutputFile::create(&path).unwrap();
        output.write_all(b"new").unwrap();
        drop(output);
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(names_in(dir.path()), ["initramfs.cpio.gz"]);
    }

    #[test]
    fn non_files_and_links_to_them_are_refused_before_anything_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let to_null = dir.path().join("to-null");
        std::os::unix::fs::symlink("/dev/null", &to_null).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("missing"), &dangling).unwrap();
        for (path, says) in [
            (Path::new("/dev/null"), "a character device"),
            (fifo.as_path(), "a fifo"),
            (dir.path(), "a directory"),
            (to_null.as_path(), "symlink to /dev/null"),
            (dangling.as_path(), "does not exist"),
        ] {
            let err = OutputFile::create(path).err().expect("refused");
            assert!(err.to_string().contains(says), "{path:?}: {err}");
        }
        assert_eq!(names_in(dir.path()), ["dangling", "fifo", "to-null"]);
    }

    #[test]
    fn a_symlink_to_a_file_is_replaced_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("host-file");
        std::fs::write(&elsewhere, "the host's").unwrap();
        let link = dir.path().join("web.efi");
        std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
        write(&link, b"new").unwrap();
        assert_eq!(std::fs::read(&elsewhere).unwrap(), b"the host's");
        let meta = std::fs::symlink_metadata(&link).unwrap();
        assert!(meta.is_file(), "the link became the output");
        assert_eq!(std::fs::read(&link).unwrap(), b"new");
    }

    #[test]
    fn outputs_are_never_setuid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".config");
        let mut output = OutputFile::create(&path).unwrap().with_mode(0o6777);
        output.write_all(b"x").unwrap();
        output.commit().unwrap();
        let mode = std::fs::metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o7777,
            0o777
        );
    }

    #[test]
    fn commit_new_keeps_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gentoo.sqfs");
        std::fs::write(&path, "first").unwrap();
        let mut output = OutputFile::create(&path).unwrap();
        output.write_all(b"second").unwrap();
        let err = output.commit_new().unwrap_err();
        assert!(matches!(err, OutputError::Exists(_)), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert_eq!(names_in(dir.path()), ["gentoo.sqfs"]);
    }

    #[test]
    fn hidden_files_of_dead_writers_are_swept_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        // A fifo under such a name is not ours: left alone, and never opened (it would block).
        let fifo = dir.path().join(".trap.4194305.autogentoo-tmp");
        rustix::fs::mknodat(
            CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // A PID that cannot be alive: above the kernel's maximum.
        let dead = dir.path().join(".image.efi.4194305.autogentoo-tmp");
        std::fs::write(&dead, "left by a kill").unwrap();
        let ours = dir
            .path()
            .join(format!(".image.efi.{}.autogentoo-tmp", std::process::id()));
        std::fs::write(&ours, "being written").unwrap();
        let unrelated = dir.path().join(".keep.4194305.tmp");
        std::fs::write(&unrelated, "not ours").unwrap();
        assert_eq!(sweep(dir.path()), 1);
        assert!(!dead.exists());
        assert!(ours.exists() && unrelated.exists() && fifo.exists());
    }

    #[test]
    fn hidden_names_carry_the_pid_and_stay_valid_file_names() {
        let long = OsString::from("x".repeat(255));
        let temp = temp_name(&long);
        assert!(temp.len() <= 255, "{}", temp.len());
        assert_eq!(temp_owner(&temp), Some(std::process::id() as i32));
        assert_eq!(temp_owner(OsStr::new("image.efi")), None);
        assert_eq!(temp_owner(OsStr::new(".image.efi.12.tmp")), None);
        let scratch = scratch_path(Path::new("out/web/initramfs.cpio.xz"), "cpio");
        assert_eq!(scratch.parent(), Some(Path::new("out/web")));
        let scratch = scratch.file_name().unwrap();
        assert_eq!(temp_owner(scratch), Some(std::process::id() as i32));
        let mut manifest = scratch.to_owned();
        manifest.push(".manifest.json");
        assert_eq!(temp_owner(&manifest), Some(std::process::id() as i32));
    }
}
