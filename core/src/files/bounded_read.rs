//! Reading a whole file that a user or a site names: the site config, a DIGESTS file, a kernel
//! config, a manifest, a state file. Each is read only if it is a regular file below a size
//! limit stated for its kind, so `--config /dev/zero`, a fifo or a multi-gigabyte file is one
//! clear line instead of a process that reads until memory runs out or waits forever. The type
//! is checked on a path descriptor before the file is opened for reading, so a device node's
//! driver never sees an open.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use std::os::fd::AsRawFd;

use rustix::fs::{Mode, OFlags};

use crate::files::in_root::RootDir;

/// What kind of file is read, with the largest size accepted for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// How messages name the file: "site config", "DIGESTS file", …
    pub what: &'static str,
    pub max_bytes: u64,
}

impl Limit {
    /// `autogentoo.toml`: a few kilobytes in practice.
    pub const SITE_CONFIG: Limit = Limit {
        what: "site config",
        max_bytes: 1 << 20,
    };
    /// A Gentoo DIGESTS file: a few hashes, perhaps clear-signed.
    pub const DIGESTS: Limit = Limit {
        what: "DIGESTS file",
        max_bytes: 1 << 20,
    };
    /// A kernel `.config` (about 300 KiB for a distribution kernel) or a fragment.
    pub const KERNEL_CONFIG: Limit = Limit {
        what: "kernel config",
        max_bytes: 16 << 20,
    };
    /// A program or a shared library inspected for what it needs.
    pub const PROGRAM: Limit = Limit {
        what: "program",
        max_bytes: 1 << 30,
    };
    /// `ld.so.conf` and the files it includes.
    pub const LIBRARY_PATHS: Limit = Limit {
        what: "ld.so.conf",
        max_bytes: 1 << 20,
    };
    /// A manifest or a state file of our own making.
    pub const STATE: Limit = Limit {
        what: "state file",
        max_bytes: 64 << 20,
    };
}

/// Why a file could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read the {what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the {what} {} is {kind}, not a regular file; name a file", .path.display())]
    NotRegular {
        what: &'static str,
        path: PathBuf,
        kind: FileKind,
    },
    #[error("the {what} {} is larger than {} bytes, more than a {what} can be; name the right file", .path.display(), .max_bytes)]
    TooLarge {
        what: &'static str,
        path: PathBuf,
        max_bytes: u64,
    },
    #[error("the {what} {} is not UTF-8 text", .path.display())]
    NotText { what: &'static str, path: PathBuf },
}

impl ReadError {
    /// Whether the file is simply not there (for callers where that is allowed).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// For callers whose errors are storage errors (a backend's own metadata): an I/O error stays
/// one, with its path; a file that is not what it should be is corruption of the store.
impl From<ReadError> for crate::storage::StorageError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Io { path, source, .. } => Self::Io {
                op: "read",
                path,
                source,
            },
            other => Self::Corrupt(other.to_string()),
        }
    }
}

/// The type of a file that is not a regular one, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    CharacterDevice,
    BlockDevice,
    Fifo,
    Socket,
    Symlink,
    Regular,
}

impl FileKind {
    /// The kind of a file type as rustix reports it.
    pub fn of_raw(file_type: rustix::fs::FileType) -> Self {
        use rustix::fs::FileType as T;
        match file_type {
            T::Directory => Self::Directory,
            T::CharacterDevice => Self::CharacterDevice,
            T::BlockDevice => Self::BlockDevice,
            T::Fifo => Self::Fifo,
            T::Socket => Self::Socket,
            T::Symlink => Self::Symlink,
            _ => Self::Regular,
        }
    }

    pub fn of(file_type: std::fs::FileType) -> Self {
        if file_type.is_dir() {
            Self::Directory
        } else if file_type.is_char_device() {
            Self::CharacterDevice
        } else if file_type.is_block_device() {
            Self::BlockDevice
        } else if file_type.is_fifo() {
            Self::Fifo
        } else if file_type.is_socket() {
            Self::Socket
        } else if file_type.is_symlink() {
            Self::Symlink
        } else {
            Self::Regular
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Directory => "a directory",
            Self::CharacterDevice => "a character device",
            Self::BlockDevice => "a block device",
            Self::Fifo => "a fifo",
            Self::Socket => "a socket",
            Self::Symlink => "a symlink",
            Self::Regular => "a regular file",
        })
    }
}

/// The regular file at `path` (symlinks followed), open for reading, for callers that stream
/// it; `what` names it in errors.
pub fn open_regular(path: &Path, what: &'static str) -> Result<(File, u64), ReadError> {
    let located = rustix::fs::open(path, OFlags::PATH | OFlags::CLOEXEC, Mode::empty());
    reopen_regular(located, path, what)
}

/// The same for `inner`, resolved inside `dir` as a chroot would resolve it: for files in
/// directories that untrusted code can write to, where a symlink must not lead us out.
pub fn open_regular_in(
    dir: &RootDir,
    inner: &Path,
    what: &'static str,
) -> Result<(File, u64), ReadError> {
    let located = dir.open_at(inner, OFlags::PATH, Mode::empty());
    reopen_regular(located, &dir.display_path(inner), what)
}

/// Opens for reading the file a path descriptor (`O_PATH`) names, once it is known to be a
/// regular file: a device node is never opened (its driver would act on the open), a fifo never
/// waited on.
fn reopen_regular(
    located: rustix::io::Result<std::os::fd::OwnedFd>,
    shown: &Path,
    what: &'static str,
) -> Result<(File, u64), ReadError> {
    let io = |source: std::io::Error| ReadError::Io {
        what,
        path: shown.to_owned(),
        source,
    };
    let located = located.map_err(|e| io(e.into()))?;
    let st = rustix::fs::fstat(&located).map_err(|e| io(e.into()))?;
    let file_type = rustix::fs::FileType::from_raw_mode(st.st_mode);
    if file_type != rustix::fs::FileType::RegularFile {
        return Err(ReadError::NotRegular {
            what,
            path: shown.to_owned(),
            kind: FileKind::of_raw(file_type),
        });
    }
    let proc = format!("/proc/self/fd/{}", located.as_raw_fd());
    let flags = OFlags::RDONLY | OFlags::NOCTTY | OFlags::CLOEXEC;
    let file = rustix::fs::open(proc.as_str(), flags, Mode::empty()).map_err(|e| io(e.into()))?;
    Ok((File::from(file), st.st_size as u64))
}

/// The bytes of the regular file at `path` (symlinks followed), at most `limit.max_bytes`.
pub fn read(path: &Path, limit: Limit) -> Result<Vec<u8>, ReadError> {
    read_opened(open_regular(path, limit.what)?, path, limit)
}

/// The bytes of `inner`, resolved inside `dir` (see [`open_regular_in`]), at most
/// `limit.max_bytes`.
pub fn read_in(dir: &RootDir, inner: &Path, limit: Limit) -> Result<Vec<u8>, ReadError> {
    read_opened(
        open_regular_in(dir, inner, limit.what)?,
        &dir.display_path(inner),
        limit,
    )
}

fn read_opened((file, len): (File, u64), path: &Path, limit: Limit) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        what: limit.what,
        path: path.to_owned(),
        source,
    };
    let too_large = || ReadError::TooLarge {
        what: limit.what,
        path: path.to_owned(),
        max_bytes: limit.max_bytes,
    };
    if len > limit.max_bytes {
        return Err(too_large());
    }
    // The size can change while we read (a file being written): never read past the limit.
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(limit.max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > limit.max_bytes {
        return Err(too_large());
    }
    Ok(bytes)
}

/// The same, as UTF-8 text.
pub fn read_text(path: &Path, limit: Limit) -> Result<String, ReadError> {
    String::from_utf8(read(path, limit)?).map_err(|_| ReadError::NotText {
        what: limit.what,
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Limit = Limit {
        what: "test file",
        max_bytes: 16,
    };

    #[test]
    fn a_regular_file_within_the_limit_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "0123456789abcdef").unwrap();
        assert_eq!(read(&path, SMALL).unwrap(), b"0123456789abcdef");
        assert_eq!(read_text(&path, SMALL).unwrap(), "0123456789abcdef");
    }

    #[test]
    fn a_larger_file_is_refused_naming_it_and_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        std::fs::write(&path, "0123456789abcdefg").unwrap();
        let err = read(&path, SMALL).unwrap_err();
        assert!(matches!(err, ReadError::TooLarge { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("big") && text.contains("16 bytes"), "{text}");
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(Path::new("/dev/zero"), SMALL).unwrap_err();
        assert!(err.to_string().contains("a character device"), "{err}");
        let err = read(dir.path(), SMALL).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // Without O_NONBLOCK this would wait for a writer forever.
        let err = read(&fifo, SMALL).unwrap_err();
        assert!(err.to_string().contains("a fifo"), "{err}");
    }

    #[test]
    fn a_missing_file_says_so() {
        let err = read(Path::new("/nonexistent/file"), SMALL).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }
}
