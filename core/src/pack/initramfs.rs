//! Packing a root plus site files into an initramfs: one newc cpio of the root, then
//! `config/common`, then the overlays in order (a later layer wins), compressed with parallel
//! gzip (one member, as pigz writes), multi-threaded zstd, or not at all.
//!
//! The archive is reproducible — entries sorted by path, inode numbers assigned in that order,
//! mtimes clamped to `SOURCE_DATE_EPOCH` when it is set, no time or name in the gzip header — so
//! the same inputs give the same bytes. It is written under a temporary name and renamed, with
//! a manifest beside it naming the layer that supplied each entry and the archive's SHA256.
//!
//! The root is untrusted: it is walked through directory descriptors without following
//! symlinks, and files are reopened inside it (`RESOLVE_IN_ROOT`), so a symlink swapped in
//! cannot pull a host file into the image. The root is only read.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::files::in_root::RootDir;
use crate::files::output_file::{self, OutputFile};
use crate::pack::cpio::{self, Header};
use crate::pack::{PackError, PackReport, PackRequest, Packer, PackerCapabilities};
use crate::site_config::Compression;
use crate::stage_import::Progress;
use crate::storage::{io_err, StorageError};

/// The built-in packer, registered as [`Newc::NAME`]: see the module documentation.
pub struct Newc;

impl Newc {
    pub const NAME: &'static str = "newc";
}

impl Packer for Newc {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn capabilities(&self) -> PackerCapabilities {
        PackerCapabilities {
            compressions: vec![Compression::Gzip, Compression::Zstd, Compression::None],
            reproducible: true,
            manifest: true,
        }
    }

    fn pack(&self, request: &PackRequest) -> Result<PackReport, PackError> {
        pack(request)
    }
}

/// What kind of entry, with what it needs beyond the common fields.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File { size: u64 },
    Symlink { target: Vec<u8> },
    Node { rdev: u64 },
}

/// One entry of the merged tree.
#[derive(Clone, Debug)]
struct Item {
    layer: usize,
    kind: Kind,
    /// Type and permission bits, as `st_mode`.
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    /// (device, inode) in its layer, for hardlink groups.
    identity: Option<(u64, u64)>,
}

#[derive(Serialize)]
struct Manifest<'a> {
    archive: String,
    sha256: &'a str,
    compression: Compression,
    entries: Vec<ManifestEntry>,
}

#[derive(Serialize)]
struct ManifestEntry {
    path: String,
    layer: String,
}

/// Packs the layers into the archive at `request.output`; see the module documentation.
pub fn pack(request: &PackRequest) -> Result<PackReport, PackError> {
    (&Newc as &dyn Packer).check(request.compression)?;
    // Refused before the layers are read if either cannot be a file.
    output_file::check_target(&request.output)?;
    output_file::check_target(&manifest_path(&request.output))?;
    let roots: Vec<RootDir> = request
        .layers
        .iter()
        .map(|layer| RootDir::open(&layer.path))
        .collect::<Result<_, _>>()?;
    let mut tree: BTreeMap<Vec<u8>, Item> = BTreeMap::new();
    let mut with_xattrs = 0;
    for (index, (layer, dir)) in request.layers.iter().zip(&roots).enumerate() {
        let exclude: Vec<Vec<u8>> = if index == 0 {
            request.exclude.iter().map(|p| relative_bytes(p)).collect()
        } else {
            Vec::new()
        };
        let mut walker = Walker {
            layer: index,
            root: dir,
            exclude: &exclude,
            keep_owner: !layer.site || request.keep_site_owners,
            tree: &mut tree,
            with_xattrs: 0,
        };
        walker.walk_dir(
            dir.fd()
                .try_clone_to_owned()
                .map_err(io_err("open", &layer.path))?,
            Vec::new(),
        )?;
        with_xattrs += walker.with_xattrs;
    }
    add_console(&mut tree);
    check_init(request, &tree)?;
    let mut report = write_archive(request, &roots, &tree)?;
    report.dropped_xattrs = with_xattrs;
    Ok(report)
}

/// The most symlinks the kernel follows on one path (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Refuses a tree whose `rdinit` the kernel could not run: missing, a symlink to nothing or
/// round in circles, or not an executable file once resolved inside the tree, as the kernel
/// resolves it (absolute link targets from the image's top).
fn check_init(request: &PackRequest, tree: &BTreeMap<Vec<u8>, Item>) -> Result<(), PackError> {
    let rdinit = &request.rdinit;
    match resolve_in_tree(tree, rdinit.as_bytes()) {
        Ok((_, item)) if matches!(item.kind, Kind::File { .. }) && item.mode & 0o111 != 0 => Ok(()),
        Ok((path, item)) if matches!(item.kind, Kind::File { .. }) => {
            Err(PackError::InitNotExecutable {
                rdinit: shown_in_tree(rdinit, &path),
                layer: request.layers[item.layer].name.clone(),
            })
        }
        Ok((path, _)) => Err(PackError::InitNotAFile {
            rdinit: shown_in_tree(rdinit, &path),
        }),
        Err(Unresolved::Missing { through_link: None }) => Err(PackError::NoInit {
            rdinit: rdinit.clone(),
        }),
        Err(Unresolved::Missing {
            through_link: Some(missing),
        }) => Err(PackError::InitDangling {
            rdinit: rdinit.clone(),
            missing: format!("/{}", String::from_utf8_lossy(&missing)),
        }),
        Err(Unresolved::Loop) => Err(PackError::InitLoop {
            rdinit: rdinit.clone(),
        }),
    }
}

/// `/init`, or `/init (→ /bin/busybox)` when a symlink led elsewhere.
fn shown_in_tree(rdinit: &str, resolved: &[u8]) -> String {
    let resolved = format!("/{}", String::from_utf8_lossy(resolved));
    if resolved == rdinit {
        resolved
    } else {
        format!("{rdinit} (→ {resolved})")
    }
}

/// Why a path could not be followed to an entry of the tree.
#[derive(Debug, PartialEq, Eq)]
enum Unresolved {
    /// Nothing at the path; `through_link` is the missing path when a symlink led there.
    Missing { through_link: Option<Vec<u8>> },
    /// More than [`MAX_SYMLINKS`] symlinks.
    Loop,
}

/// Follows `path` through the merged tree, symlinks included, to an entry that is not a
/// symlink; returns that entry's path and the entry.
fn resolve_in_tree<'t>(
    tree: &'t BTreeMap<Vec<u8>, Item>,
    path: &[u8],
) -> Result<(Vec<u8>, &'t Item), Unresolved> {
    let mut todo: std::collections::VecDeque<Vec<u8>> = components(path).collect();
    let mut at: Vec<Vec<u8>> = Vec::new();
    let mut links = 0;
    let mut followed = false;
    while let Some(part) = todo.pop_front() {
        if part == b".." {
            at.pop();
            continue;
        }
        at.push(part);
        let joined = at.join(&b'/');
        let missing = || Unresolved::Missing {
            through_link: followed.then(|| joined.clone()),
        };
        let item = tree.get(&joined).ok_or_else(missing)?;
        match &item.kind {
            Kind::Symlink { target } => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Unresolved::Loop);
                }
                followed = true;
                at.pop();
                if target.starts_with(b"/") {
                    at.clear();
                }
                for part in components(target).rev() {
                    todo.push_front(part);
                }
            }
            Kind::Dir => {}
            _ if todo.is_empty() => return Ok((joined, item)),
            // A file in the middle of a path: nothing is below it.
            _ => return Err(missing()),
        }
    }
    let joined = at.join(&b'/');
    match tree.get(&joined) {
        Some(item) => Ok((joined, item)),
        None => Err(Unresolved::Missing {
            through_link: followed.then_some(joined),
        }),
    }
}

/// The components of a path, without empty ones and `.`.
fn components(path: &[u8]) -> impl DoubleEndedIterator<Item = Vec<u8>> + '_ {
    path.split(|&b| b == b'/')
        .filter(|part| !part.is_empty() && *part != b".")
        .map(<[u8]>::to_vec)
}

/// The path as archive bytes: relative, without `./` or a trailing `/`.
fn relative_bytes(path: &Path) -> Vec<u8> {
    let parts: Vec<&[u8]> = path
        .components()
        .filter_map(|c| match c {
            std::path::Component::Normal(n) => Some(n.as_bytes()),
            _ => None,
        })
        .collect();
    parts.join(&b'/')
}

/// Early userspace needs a console before it can mount devtmpfs.
fn add_console(tree: &mut BTreeMap<Vec<u8>, Item>) {
    let root_owned = |kind, mode| Item {
        layer: 0,
        kind,
        mode,
        uid: 0,
        gid: 0,
        mtime: 0,
        identity: None,
    };
    tree.entry(b"dev".to_vec())
        .or_insert_with(|| root_owned(Kind::Dir, libc_mode(FileType::Directory, 0o755)));
    tree.entry(b"dev/console".to_vec()).or_insert_with(|| {
        root_owned(
            Kind::Node {
                rdev: rustix::fs::makedev(5, 1),
            },
            libc_mode(FileType::CharacterDevice, 0o600),
        )
    });
}

fn libc_mode(file_type: FileType, perm: u32) -> u32 {
    file_type.as_raw_mode() | perm
}

/// Walks one layer into the merged tree.
struct Walker<'a> {
    layer: usize,
    root: &'a RootDir,
    exclude: &'a [Vec<u8>],
    keep_owner: bool,
    tree: &'a mut BTreeMap<Vec<u8>, Item>,
    /// Entries with extended attributes, which newc cannot carry.
    with_xattrs: u64,
}

impl Walker<'_> {
    fn shown(&self, rel: &[u8]) -> PathBuf {
        self.root.display_path(Path::new(OsStr::from_bytes(rel)))
    }

    fn walk_dir(&mut self, dir: OwnedFd, rel: Vec<u8>) -> Result<(), PackError> {
        let mut names: Vec<Vec<u8>> = Vec::new();
        let listing =
            Dir::read_from(&dir).map_err(|e| io_err("read", self.shown(&rel))(e.into()))?;
        for entry in listing {
            let entry = entry.map_err(|e| io_err("read", self.shown(&rel))(e.into()))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort();
        for name in names {
            let path = if rel.is_empty() {
                name.clone()
            } else {
                [rel.as_slice(), b"/", name.as_slice()].concat()
            };
            let name_os = OsStr::from_bytes(&name);
            let st = rustix::fs::statat(&dir, name_os, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| io_err("inspect", self.shown(&path))(e.into()))?;
            let file_type = FileType::from_raw_mode(st.st_mode);
            let kind = match file_type {
                FileType::Directory => Kind::Dir,
                FileType::RegularFile => {
                    let size = st.st_size as u64;
                    if size > cpio::MAX_FILE_SIZE {
                        return Err(PackError::TooLarge {
                            path: self.shown(&path),
                            size,
                        });
                    }
                    Kind::File { size }
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(&dir, name_os, Vec::new())
                        .map_err(|e| io_err("read link", self.shown(&path))(e.into()))?;
                    Kind::Symlink {
                        target: target.into_bytes(),
                    }
                }
                _ => Kind::Node { rdev: st.st_rdev },
            };
            if file_type != FileType::Symlink && has_xattrs(&dir, name_os) {
                self.with_xattrs += 1;
            }
            let (uid, gid) = if self.keep_owner {
                (st.st_uid, st.st_gid)
            } else {
                (0, 0)
            };
            let identity = (file_type == FileType::RegularFile && st.st_nlink > 1)
                .then_some((st.st_dev, st.st_ino));
            let excluded = kind == Kind::Dir && self.exclude.contains(&path);
            let item = Item {
                layer: self.layer,
                kind: kind.clone(),
                mode: st.st_mode,
                uid,
                gid,
                // An excluded directory goes in empty; its mtime would only tell when its
                // left-out contents last changed, and make identical images differ.
                mtime: if excluded { 0 } else { st.st_mtime },
                identity,
            };
            self.insert(path.clone(), item);
            if kind == Kind::Dir && !excluded {
                let child = rustix::fs::openat(
                    &dir,
                    name_os,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io_err("open", self.shown(&path))(e.into()))?;
                self.walk_dir(child, path)?;
            }
        }
        Ok(())
    }

    /// A later layer wins, except over a directory with a directory: a site overlay's `etc/` or
    /// `var/lib/app/` only carries files, and must not take the root's owners and modes from
    /// its directories. An entry that replaces a directory with something else takes the
    /// directory's contents with it.
    fn insert(&mut self, path: Vec<u8>, item: Item) {
        if let Some(old) = self.tree.get(&path) {
            if old.kind == Kind::Dir && item.kind == Kind::Dir {
                return;
            }
            if old.kind == Kind::Dir && item.kind != Kind::Dir {
                let mut prefix = path.clone();
                prefix.push(b'/');
                let below: Vec<Vec<u8>> = self
                    .tree
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in below {
                    self.tree.remove(&key);
                }
            }
        }
        self.tree.insert(path, item);
    }
}

/// Whether an entry has extended attributes (file capabilities, say).
fn has_xattrs(dir: &OwnedFd, name: &OsStr) -> bool {
    use std::os::fd::AsRawFd;
    let path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    rustix::fs::llistxattr_query(&path).is_ok_and(|len| len > 0)
}

/// The file, hashing what is written, so the SHA256 is known without reading the archive back.
struct Hashing {
    file: OutputFile,
    hasher: Sha256,
    written: u64,
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// The compressor in front of the file.
enum Compressor {
    Gzip(gzp::par::compress::ParCompress<'static, gzp::deflate::Gzip, Hashing>),
    Zstd(zstd::stream::write::Encoder<'static, Hashing>),
    None(Hashing),
}

impl Write for Compressor {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Gzip(w) => w.write(buf),
            Self::Zstd(w) => w.write(buf),
            Self::None(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Gzip(w) => w.flush(),
            Self::Zstd(w) => w.flush(),
            Self::None(w) => w.flush(),
        }
    }
}

impl Compressor {
    fn new(
        compression: Compression,
        level: Option<u32>,
        threads: usize,
        out: Hashing,
    ) -> io::Result<Self> {
        let threads = threads.max(1);
        Ok(match compression {
            Compression::Gzip => {
                let level = gzp::Compression::new(level.unwrap_or(6));
                let writer =
                    gzp::par::compress::ParCompress::<gzp::deflate::Gzip, Hashing>::builder()
                        .compression_level(level)
                        .num_threads(threads)
                        .map_err(io::Error::other)?
                        .from_writer(out);
                Self::Gzip(writer)
            }
            Compression::Zstd => {
                let mut encoder =
                    zstd::stream::write::Encoder::new(out, level.unwrap_or(3) as i32)?;
                encoder.multithread(threads as u32)?;
                encoder.include_checksum(true)?;
                Self::Zstd(encoder)
            }
            Compression::None => Self::None(out),
            Compression::Xz => unreachable!("pack() refuses xz before it writes"),
        })
    }

    fn finish(self) -> io::Result<Hashing> {
        match self {
            Self::Gzip(mut w) => gzp::ZWriter::finish(&mut w).map_err(io::Error::other),
            Self::Zstd(w) => w.finish(),
            Self::None(mut w) => w.flush().map(|()| w),
        }
    }
}

fn write_archive(
    request: &PackRequest,
    roots: &[RootDir],
    tree: &BTreeMap<Vec<u8>, Item>,
) -> Result<PackReport, PackError> {
    let output = &request.output;
    let write_err = |source| PackError::Write {
        path: output.clone(),
        source,
    };
    let hashing = Hashing {
        file: OutputFile::create(output)?,
        hasher: Sha256::new(),
        written: 0,
    };
    let compressor = Compressor::new(request.compression, request.level, request.threads, hashing)
        .map_err(write_err)?;
    let total: u64 = tree
        .values()
        .map(|item| match item.kind {
            Kind::File { size } => size,
            _ => 0,
        })
        .sum();
    request.progress.start(total);

    let mut writer = cpio::Writer::new(compressor);
    let links = hardlink_plan(tree);
    let mut manifest = Vec::with_capacity(tree.len());
    let mut buf = vec![0u8; 1 << 20];
    for (number, (path, item)) in tree.iter().enumerate() {
        if request.cancel.load(Ordering::Relaxed) {
            return Err(PackError::Interrupted);
        }
        let (ino, nlink, carries_data) = match links.get(path) {
            Some(link) => (link.ino, link.nlink, link.last),
            None => (
                number as u32 + 1,
                if item.kind == Kind::Dir { 2 } else { 1 },
                true,
            ),
        };
        let size = match &item.kind {
            Kind::File { size } if carries_data => *size,
            Kind::Symlink { target } => target.len() as u64,
            _ => 0,
        };
        let (rdev_major, rdev_minor) = match item.kind {
            Kind::Node { rdev } => (rustix::fs::major(rdev), rustix::fs::minor(rdev)),
            _ => (0, 0),
        };
        let header = Header {
            ino,
            mode: item.mode,
            uid: item.uid,
            gid: item.gid,
            nlink,
            mtime: clamp_mtime(item.mtime, request.source_date_epoch),
            size: size as u32,
            rdev_major,
            rdev_minor,
        };
        writer.header(&header, path).map_err(write_err)?;
        match &item.kind {
            Kind::Symlink { target } => writer.data(target).map_err(write_err)?,
            Kind::File { size } if carries_data => copy_file(
                &roots[item.layer],
                path,
                *size,
                &mut writer,
                &mut buf,
                request.progress,
            )
            .map_err(|e| match e {
                // The archive, not the file being read, is what could not be written.
                CopyError::Write(source) => write_err(source),
                CopyError::Read(e) => e,
            })?,
            _ => {}
        }
        writer.end_entry().map_err(write_err)?;
        manifest.push(ManifestEntry {
            path: format!("/{}", String::from_utf8_lossy(path)),
            layer: request.layers[item.layer].name.clone(),
        });
    }
    let cpio_bytes = writer.written();
    let hashing = writer
        .finish()
        .map_err(write_err)?
        .finish()
        .map_err(write_err)?;
    let archive_bytes = hashing.written;
    let sha256 = crate::files::digests::hex(&hashing.hasher.finalize());
    let manifest_path = manifest_path(output);
    let archive_name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let text = serde_json::to_vec_pretty(&Manifest {
        archive: archive_name,
        sha256: &sha256,
        compression: request.compression,
        entries: manifest,
    })
    .expect("the manifest serialises");
    let mut manifest_file = OutputFile::create(&manifest_path)?;
    manifest_file
        .write_all(&text)
        .map_err(io_err("write", &manifest_path))?;
    // The old manifest goes before the archive is replaced, the new one comes after it: a
    // manifest never describes an archive that is not the one beside it.
    output_file::retract(&manifest_path)?;
    hashing.file.commit()?;
    manifest_file.commit()?;
    Ok(PackReport {
        archive: output.clone(),
        manifest: Some(manifest_path),
        sha256,
        compression: request.compression,
        entries: tree.len() as u64,
        cpio_bytes,
        archive_bytes,
        dropped_xattrs: 0,
    })
}

/// `initramfs.cpio.gz` → `initramfs.cpio.gz.manifest.json`.
pub fn manifest_path(archive: &Path) -> PathBuf {
    let mut name = archive.file_name().unwrap_or_default().to_os_string();
    name.push(".manifest.json");
    archive.with_file_name(name)
}

fn clamp_mtime(mtime: i64, epoch: Option<u64>) -> u32 {
    let clamped = match epoch {
        Some(epoch) => mtime.min(epoch as i64),
        None => mtime,
    };
    clamped.clamp(0, u32::MAX as i64) as u32
}

/// A hardlink group member's place: the group's inode number, its link count in the archive,
/// and whether this member carries the data (the last one, as the kernel and GNU cpio expect).
struct Link {
    ino: u32,
    nlink: u32,
    last: bool,
}

fn hardlink_plan(tree: &BTreeMap<Vec<u8>, Item>) -> HashMap<Vec<u8>, Link> {
    // (layer, device, inode) → the members' positions in archive order.
    let mut groups: BTreeMap<(usize, u64, u64), Vec<usize>> = BTreeMap::new();
    let paths: Vec<&Vec<u8>> = tree.keys().collect();
    for (number, item) in tree.values().enumerate() {
        if let Some((dev, ino)) = item.identity {
            groups
                .entry((item.layer, dev, ino))
                .or_default()
                .push(number);
        }
    }
    let mut plan = HashMap::new();
    for members in groups.values().filter(|m| m.len() > 1) {
        let ino = members[0] as u32 + 1;
        for (i, number) in members.iter().enumerate() {
            let path = paths[*number];
            plan.insert(
                path.clone(),
                Link {
                    ino,
                    nlink: members.len() as u32,
                    last: i + 1 == members.len(),
                },
            );
        }
    }
    plan
}

/// Why one file could not be copied into the archive: reading it, or writing the archive.
enum CopyError {
    Read(PackError),
    Write(io::Error),
}

impl From<StorageError> for CopyError {
    fn from(e: StorageError) -> Self {
        Self::Read(e.into())
    }
}

/// Streams one file from its layer into the archive, checking it is still the file we indexed.
fn copy_file<W: Write>(
    root: &RootDir,
    path: &[u8],
    size: u64,
    writer: &mut cpio::Writer<W>,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<(), CopyError> {
    let rel = Path::new(OsStr::from_bytes(path));
    let shown = root.display_path(rel);
    let fd = root
        .open_at(rel, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty())
        .map_err(|e| io_err("open", &shown)(e.into()))?;
    let mut file = File::from(fd);
    let st = rustix::fs::fstat(&file).map_err(|e| io_err("inspect", &shown)(e.into()))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile || st.st_size as u64 != size {
        return Err(CopyError::Read(PackError::Changed { path: shown }));
    }
    let mut left = size;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => return Err(CopyError::Read(PackError::Changed { path: shown })),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("read", &shown)(e).into()),
        };
        writer.data(&buf[..n]).map_err(CopyError::Write)?;
        progress.advance(n as u64);
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtimes_are_clamped_to_the_epoch_and_to_32_bits() {
        assert_eq!(
            clamp_mtime(1_700_000_000, Some(1_600_000_000)),
            1_600_000_000
        );
        assert_eq!(
            clamp_mtime(1_500_000_000, Some(1_600_000_000)),
            1_500_000_000
        );
        assert_eq!(clamp_mtime(-5, None), 0);
        assert_eq!(clamp_mtime(i64::MAX, None), u32::MAX);
    }

    fn item(layer: usize, kind: Kind, uid: u32) -> Item {
        Item {
            layer,
            kind,
            mode: 0o40750,
            uid,
            gid: uid,
            mtime: 0,
            identity: None,
        }
    }

    #[test]
    fn a_later_layer_wins_but_keeps_the_directories_it_passes_through() {
        let root = tempfile::tempdir().unwrap();
        let dir = RootDir::open(root.path()).unwrap();
        let mut tree = BTreeMap::new();
        let mut walker = Walker {
            layer: 1,
            root: &dir,
            exclude: &[],
            keep_owner: false,
            tree: &mut tree,
            with_xattrs: 0,
        };
        walker.insert(b"var/lib/app".to_vec(), item(0, Kind::Dir, 250));
        walker.insert(
            b"var/lib/app/db".to_vec(),
            item(0, Kind::File { size: 1 }, 250),
        );
        walker.insert(b"etc/motd".to_vec(), item(0, Kind::File { size: 1 }, 0));
        walker.insert(b"var/lib/app".to_vec(), item(1, Kind::Dir, 0));
        walker.insert(b"etc/motd".to_vec(), item(1, Kind::File { size: 2 }, 0));
        assert_eq!(
            (
                tree[&b"var/lib/app".to_vec()].layer,
                tree[&b"var/lib/app".to_vec()].uid
            ),
            (0, 250)
        );
        assert_eq!(tree[&b"etc/motd".to_vec()].layer, 1);
        let mut walker = Walker {
            layer: 2,
            root: &dir,
            exclude: &[],
            keep_owner: false,
            tree: &mut tree,
            with_xattrs: 0,
        };
        walker.insert(
            b"var/lib/app".to_vec(),
            item(
                2,
                Kind::Symlink {
                    target: b"/srv".to_vec(),
                },
                0,
            ),
        );
        assert!(
            !tree.contains_key(b"var/lib/app/db".as_slice()),
            "a replaced directory takes its contents"
        );
    }

    fn file(mode: u32) -> Item {
        Item {
            mode: 0o100000 | mode,
            ..item(0, Kind::File { size: 1 }, 0)
        }
    }

    fn link(target: &str) -> Item {
        item(
            0,
            Kind::Symlink {
                target: target.as_bytes().to_vec(),
            },
            0,
        )
    }

    #[test]
    fn rdinit_is_resolved_through_symlinks_as_the_kernel_would() {
        let mut tree = BTreeMap::new();
        tree.insert(b"bin".to_vec(), item(0, Kind::Dir, 0));
        tree.insert(b"bin/busybox".to_vec(), file(0o755));
        tree.insert(b"sbin".to_vec(), link("bin"));
        tree.insert(b"init".to_vec(), link("/sbin/../bin/busybox"));
        tree.insert(b"relative".to_vec(), link("sbin/./busybox"));
        tree.insert(b"dangling".to_vec(), link("/bin/missing"));
        tree.insert(b"loop".to_vec(), link("loop"));
        tree.insert(b"through-file".to_vec(), link("bin/busybox/x"));
        let found = |path: &str| resolve_in_tree(&tree, path.as_bytes()).map(|(p, _)| p);
        assert_eq!(found("/init"), Ok(b"bin/busybox".to_vec()));
        assert_eq!(found("relative"), Ok(b"bin/busybox".to_vec()));
        assert_eq!(
            found("/dangling"),
            Err(Unresolved::Missing {
                through_link: Some(b"bin/missing".to_vec())
            })
        );
        assert_eq!(
            found("/nothing"),
            Err(Unresolved::Missing { through_link: None })
        );
        assert_eq!(found("/loop"), Err(Unresolved::Loop));
        assert!(matches!(
            found("/through-file"),
            Err(Unresolved::Missing { .. })
        ));
    }

    #[test]
    fn manifest_sits_beside_the_archive() {
        assert_eq!(
            manifest_path(Path::new("out/web/initramfs.cpio.gz")),
            PathBuf::from("out/web/initramfs.cpio.gz.manifest.json")
        );
    }
}

/// The packer conformance suite on the built-in packer.
#[cfg(test)]
mod conformance {
    crate::packer_conformance!(|| -> Box<dyn crate::pack::Packer> { Box::new(super::Newc) });
}
