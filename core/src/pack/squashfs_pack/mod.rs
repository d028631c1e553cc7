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
//! - **atomic**: written as an [`OutputFile`] in `repos/`, linked in under its name only when
//!   complete, so an error, Ctrl-C or even SIGKILL leaves nothing behind.
//!
//! The tree is read without following a symlink anywhere below its top: directories are opened
//! with `O_NOFOLLOW` and files with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so a symlink in a
//! root's repository is packed as a symlink and never leads the reader out of the tree.
//!
//! The parts: `walk` reads the tree; `image` writes it with backhand into the output file; `ahead` compresses backhand's blocks ahead on a thread pool (backhand alone
//! compresses one at a time on the calling thread) without changing a byte of the image; and
//! `listing` reads the superblocks of the images in `repos/` for `repo list`.

mod ahead;
mod image;
mod listing;
mod walk;

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use backhand::compression::Compressor;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use serde::Serialize;

use crate::files::in_root::{InnerPath, RootDir};
use crate::files::output_file::{self, OutputError, OutputFile};
use crate::names::{self, NameError};
use crate::storage::{io_err, StorageError};

use image::Image;
pub use listing::{compressor_name, list_images, ImageInfo, Skipped, Superblock};
use walk::Walker;

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
    #[error(transparent)]
    Output(#[from] OutputError),
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

    let output = OutputFile::create(&path)?;
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
    image::set_time(output.file(), time).map_err(|e| e.at(&path))?;
    let (size, sha256) = output.digest()?;
    if request.cancel.load(Ordering::Relaxed) {
        return Err(PackError::Interrupted);
    }
    // Without --force, a link that never replaces what another pack made meanwhile.
    let committed = if request.force {
        output.commit()
    } else {
        output.commit_new()
    };
    committed.map_err(|e| match e {
        OutputError::Exists(path) => PackError::Exists {
            name: name.clone(),
            path,
        },
        other => other.into(),
    })?;
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
        // A directory or a node there is refused even with --force; a symlink (to a file) is
        // taken like a file, and --force replaces the link, never what it leads to.
        Ok(st)
            if !matches!(
                FileType::from_raw_mode(st.st_mode),
                FileType::RegularFile | FileType::Symlink
            ) =>
        {
            output_file::check_target(&repos.join(&file))?;
            Ok(())
        }
        Ok(_) if force => output_file::check_target(&repos.join(&file))
            .map(drop)
            .map_err(Into::into),
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
}
