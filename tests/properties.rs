//! Property tests of the archive writers: generated trees are packed by the built-in newc packer
//! (every compression it writes) and by the SquashFS writer, read back by the real readers (GNU
//! cpio; unsquashfs and the kernel) and compared entry by entry with what was generated.
//!
//! Every property states how many cases it runs, and all run from one fixed seed: CI packs the
//! same trees on every run, so a red run is never luck and a failure it reports is reproduced by
//! running the same test again. Nothing is persisted beside the sources. To explore other trees,
//! set `PROPTEST_RNG_SEED`.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use autogentoo_core::pack::initramfs::Newc;
use autogentoo_core::pack::squashfs_pack::{self, PackSource};
use autogentoo_core::pack::{Layer, PackRequest, Packer};
use autogentoo_core::site_config::Compression;
use autogentoo_core::stage_import::Silent;
use autogentoo_tests::{loop_devices_on, newc, require_root, wait_until};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};
use proptest::test_runner::{Config, RngSeed};
use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
use tempfile::TempDir;

/// The seed every property starts from unless `PROPTEST_RNG_SEED` names another.
const SEED: u64 = 0x6172_6368_6976_6573;

/// A runner configuration for `cases` cases from the fixed seed. Each case packs and reads
/// back archives, so shrinking a failure is bounded too.
fn cases(cases: u32) -> Config {
    let defaults = Config::default();
    let rng_seed = match defaults.rng_seed {
        RngSeed::Random => RngSeed::Fixed(SEED),
        chosen => chosen,
    };
    Config {
        cases,
        rng_seed,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..defaults
    }
}

/// Runs one case at a time across this file's tests. A child that one test spawns (cpio, gzip,
/// umount) holds copies of every file the process has open between its fork and its exec, so
/// while one test reads a mounted image another's spawn can make the kernel refuse to unmount
/// it ("target is busy").
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static CASES: Mutex<()> = Mutex::new(());
    CASES.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------------
// Generated trees.

/// What every entry has: permission bits with setuid, setgid and sticky, owners, and a
/// modification time that may lie outside what the archive formats hold.
#[derive(Clone, Copy, Debug)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    nsec: u32,
}

/// Bytes of a name, a symlink target or a file, shown escaped (and cut short) in a failing case.
#[derive(Clone, PartialEq, Eq)]
struct Bytes(Vec<u8>);

impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = &self.0[..self.0.len().min(40)];
        write!(f, "b\"{}\"", shown.escape_ascii())?;
        if shown.len() < self.0.len() {
            write!(f, "… ({} bytes)", self.0.len())?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
struct Dir {
    /// An index into the tree's directories, the top being 0 and `dirs[i]` being `i + 1`.
    parent: usize,
    name: Bytes,
    meta: Meta,
}

/// A regular file's inode; several names may share it.
#[derive(Clone, Debug)]
struct Inode {
    data: Bytes,
    meta: Meta,
}

/// A name of an inode in a directory.
#[derive(Clone, Debug)]
struct Name {
    dir: usize,
    name: Bytes,
    inode: usize,
}

/// A symlink in a directory.
#[derive(Clone, Debug)]
struct Link {
    dir: usize,
    name: Bytes,
    target: Bytes,
    meta: Meta,
}

/// A generated tree: its top, its directories, the inodes of its regular files with their
/// names, and its symlinks.
#[derive(Clone, Debug)]
struct Tree {
    top: Meta,
    dirs: Vec<Dir>,
    inodes: Vec<Inode>,
    names: Vec<Name>,
    links: Vec<Link>,
}

/// What a reader must find at one path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(Vec<u8>),
    CharDevice(u64),
}

#[derive(Clone, Debug)]
struct Want {
    kind: Kind,
    /// Permission bits; not compared for symlinks, which have none of their own.
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    /// The inode it shares with other paths, if any: each group must be one inode in the copy.
    group: Option<usize>,
}

/// A tree as paths relative to its top (the top itself is the empty path).
type Wanted = BTreeMap<Vec<u8>, Want>;

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

impl Tree {
    /// The paths of the entries, made unique in each directory with a `~N` suffix. `init` and
    /// `dev` at the top are left to the newc cases, which give them meanings of their own.
    fn layout(&self) -> Layout {
        let mut taken: BTreeSet<Vec<u8>> = [b"init".to_vec(), b"dev".to_vec()].into();
        let mut unique = |dir: &[u8], name: &[u8]| {
            let mut path = join(dir, name);
            let mut n = 0;
            while taken.contains(&path) {
                n += 1;
                path = join(dir, &[name, format!("~{n}").as_bytes()].concat());
            }
            taken.insert(path.clone());
            path
        };
        let mut dirs = vec![Vec::new()];
        for dir in &self.dirs {
            let parent = dirs[dir.parent].clone();
            dirs.push(unique(&parent, &dir.name.0));
        }
        let names = self
            .names
            .iter()
            .map(|n| unique(&dirs[n.dir], &n.name.0))
            .collect();
        let links = self
            .links
            .iter()
            .map(|l| unique(&dirs[l.dir], &l.name.0))
            .collect();
        Layout { dirs, names, links }
    }

    /// The tree as generated, to check that it was made on disk as meant.
    fn wanted(&self, layout: &Layout) -> Wanted {
        let mut wanted = Wanted::new();
        let want = |kind, meta: &Meta, group| Want {
            kind,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            group,
        };
        wanted.insert(Vec::new(), want(Kind::Dir, &self.top, None));
        for (dir, path) in self.dirs.iter().zip(&layout.dirs[1..]) {
            wanted.insert(path.clone(), want(Kind::Dir, &dir.meta, None));
        }
        let mut links_to = vec![0; self.inodes.len()];
        for name in &self.names {
            links_to[name.inode] += 1;
        }
        for (name, path) in self.names.iter().zip(&layout.names) {
            let inode = &self.inodes[name.inode];
            let group = (links_to[name.inode] > 1).then_some(name.inode);
            wanted.insert(
                path.clone(),
                want(Kind::File(inode.data.0.clone()), &inode.meta, group),
            );
        }
        for (link, path) in self.links.iter().zip(&layout.links) {
            wanted.insert(
                path.clone(),
                want(Kind::Symlink(link.target.0.clone()), &link.meta, None),
            );
        }
        wanted
    }

    /// Makes the tree at `top`, which must exist: entries first, then owners, modes and times
    /// from the deepest up, so that making an entry does not change its directory's time and a
    /// setgid directory does not pass its group on.
    fn make(&self, top: &Path) {
        let layout = self.layout();
        let at = |rel: &[u8]| top.join(OsStr::from_bytes(rel));
        for path in &layout.dirs[1..] {
            fs::create_dir(at(path)).unwrap();
        }
        let mut first_name: Vec<Option<&Vec<u8>>> = vec![None; self.inodes.len()];
        for (name, path) in self.names.iter().zip(&layout.names) {
            match first_name[name.inode] {
                Some(first) => fs::hard_link(at(first), at(path)).unwrap(),
                None => {
                    fs::write(at(path), &self.inodes[name.inode].data.0).unwrap();
                    first_name[name.inode] = Some(path);
                }
            }
        }
        for (link, path) in self.links.iter().zip(&layout.links) {
            symlink(OsStr::from_bytes(&link.target.0), at(path)).unwrap();
        }
        let mut metas: Vec<(&Vec<u8>, &Meta)> = vec![(&layout.dirs[0], &self.top)];
        metas.extend(
            layout.dirs[1..]
                .iter()
                .zip(&self.dirs)
                .map(|(p, d)| (p, &d.meta)),
        );
        metas.extend(
            layout
                .names
                .iter()
                .zip(&self.names)
                .map(|(p, n)| (p, &self.inodes[n.inode].meta)),
        );
        metas.extend(
            layout
                .links
                .iter()
                .zip(&self.links)
                .map(|(p, l)| (p, &l.meta)),
        );
        metas.sort_by(|a, b| b.0.cmp(a.0));
        for (path, meta) in metas {
            set_meta(&at(path), meta);
        }
    }
}

/// Gives an entry its owner, mode (unless a symlink) and time: the owner first, since a
/// `chown` clears setuid and setgid bits.
fn set_meta(path: &Path, meta: &Meta) {
    lchown(path, Some(meta.uid), Some(meta.gid)).unwrap();
    if !path.symlink_metadata().unwrap().file_type().is_symlink() {
        fs::set_permissions(path, fs::Permissions::from_mode(meta.mode)).unwrap();
    }
    let stamp = Timespec {
        tv_sec: meta.mtime,
        tv_nsec: i64::from(meta.nsec),
    };
    let times = Timestamps {
        last_access: stamp,
        last_modification: stamp,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// The unique paths of a tree's entries.
struct Layout {
    dirs: Vec<Vec<u8>>,
    names: Vec<Vec<u8>>,
    links: Vec<Vec<u8>>,
}

// ---------------------------------------------------------------------------------------------
// Strategies.

/// A name byte: letters, digits, punctuation and blanks, control characters and bytes that are
/// not UTF-8; never `/` or NUL.
fn name_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        6 => prop_oneof![b'a'..=b'z', b'A'..=b'Z', b'0'..=b'9'],
        2 => select(b" .-_~!\"#$%&'()*+,:;<=>?@[\\]^`{|}".to_vec()),
        1 => select(vec![b'\n', b'\t', b'\r', 0x1b, 0x7f]),
        1 => 0x80u8..=0xff,
    ]
}

fn name() -> impl Strategy<Value = Bytes> {
    vec(name_byte(), 1..10)
        .prop_filter("not . or ..", |n| n != b"." && n != b"..")
        .prop_map(Bytes)
}

/// Metadata whose mode has at least the bits of `required`.
fn meta(required: u32) -> impl Strategy<Value = Meta> {
    let mode = prop_oneof![
        3 => select(vec![0o644, 0o755, 0o600, 0o700, 0o444]),
        2 => 0u32..=0o7777,
        1 => select(vec![0o4755, 0o2755, 0o1777, 0o6711, 0o3000]),
    ];
    let id = prop_oneof![
        3 => Just(0u32),
        2 => 1u32..2000,
        1 => 60_000u32..70_000,
        1 => Just(u32::MAX - 1),
    ];
    let mtime = prop_oneof![
        8 => 0i64..=i64::from(u32::MAX),
        1 => -100_000i64..0,
        1 => (i64::from(u32::MAX) + 1)..(1i64 << 33),
    ];
    (mode, id.clone(), id, mtime, 0u32..1_000_000_000).prop_map(
        move |(mode, uid, gid, mtime, nsec)| Meta {
            mode: mode | required,
            uid,
            gid,
            mtime,
            nsec,
        },
    )
}

/// Contents: short noise, longer noise, and long runs (zeros among them) that compress, fill
/// several SquashFS blocks and have sparse blocks.
fn data() -> impl Strategy<Value = Bytes> {
    let data = prop_oneof![
        3 => vec(any::<u8>(), 0..64),
        2 => vec(any::<u8>(), 0..5000),
        1 => (select(vec![0u8, b'x']), 0usize..14_000).prop_map(|(byte, len)| vec![byte; len]),
        1 => (vec(any::<u8>(), 1..16), 4000usize..14_000)
            .prop_map(|(unit, len)| unit.iter().copied().cycle().take(len).collect()),
    ];
    data.prop_map(Bytes)
}

/// Directories whose parents come before them.
fn dirs() -> impl Strategy<Value = Vec<Dir>> {
    vec((any::<Index>(), name(), meta(0)), 0..6).prop_map(|dirs| {
        dirs.into_iter()
            .enumerate()
            .map(|(i, (parent, name, meta))| Dir {
                parent: parent.index(i + 1),
                name,
                meta,
            })
            .collect()
    })
}

/// A tree; with `hardlinks`, several names may share an inode.
fn tree(hardlinks: bool) -> impl Strategy<Value = Tree> {
    (
        meta(0),
        dirs(),
        vec((data(), meta(0)), 1..6),
        vec((any::<Index>(), name(), any::<Index>()), 1..10),
        vec(
            (
                any::<Index>(),
                name(),
                vec(name_byte(), 1..40).prop_map(Bytes),
                meta(0),
            ),
            0..4,
        ),
    )
        .prop_map(move |(top, dirs, inodes, names, links)| {
            let places = dirs.len() + 1;
            let count = inodes.len();
            let mut names: Vec<Name> = names
                .into_iter()
                .enumerate()
                .map(|(i, (dir, name, inode))| Name {
                    dir: dir.index(places),
                    name,
                    inode: if hardlinks { inode.index(count) } else { i },
                })
                .filter(|name| name.inode < count)
                .collect();
            // Only inodes with a name are on disk: keep those, numbered in order.
            let mut number = vec![None; count];
            let mut kept = Vec::new();
            for name in &mut names {
                name.inode = *number[name.inode].get_or_insert_with(|| {
                    let (data, meta) = &inodes[name.inode];
                    kept.push(Inode {
                        data: data.clone(),
                        meta: *meta,
                    });
                    kept.len() - 1
                });
            }
            let links = links
                .into_iter()
                .map(|(dir, name, target, meta)| Link {
                    dir: dir.index(places),
                    name,
                    target,
                    meta,
                })
                .collect();
            Tree {
                top,
                dirs,
                inodes: kept,
                names,
                links,
            }
        })
}

// ---------------------------------------------------------------------------------------------
// Comparing a tree on disk with what it must hold.

struct Found {
    meta: fs::Metadata,
    target: Option<Vec<u8>>,
}

fn scan(top: &Path) -> BTreeMap<Vec<u8>, Found> {
    let mut found = BTreeMap::new();
    let mut pending = vec![Vec::new()];
    while let Some(rel) = pending.pop() {
        let path = top.join(OsStr::from_bytes(&rel));
        let meta = fs::symlink_metadata(&path).unwrap();
        let target = meta.file_type().is_symlink().then(|| {
            fs::read_link(&path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        });
        if meta.is_dir() {
            for child in fs::read_dir(&path).unwrap() {
                let child = child.unwrap().file_name();
                pending.push(join(&rel, child.as_bytes()));
            }
        }
        found.insert(rel, Found { meta, target });
    }
    found
}

/// What to leave out of a comparison: what the reader cannot restore.
#[derive(Clone, Copy)]
struct Skip {
    /// The top's own metadata (GNU cpio extracts into a directory of ours).
    top: bool,
    /// The modification times of directories and symlinks: GNU cpio sets neither (a directory's
    /// changes as its entries are made), so those are read from the archive's headers instead.
    dir_and_symlink_mtimes: bool,
}

/// Everything compared.
const EXACT: Skip = Skip {
    top: false,
    dir_and_symlink_mtimes: false,
};

/// A name of a hardlink group as found: its path, inode and link count.
struct Member<'a> {
    path: &'a [u8],
    ino: u64,
    nlink: u64,
}

/// The differences between the tree at `top` and `wanted`, one line each.
fn differences(top: &Path, wanted: &Wanted, skip: Skip) -> Vec<String> {
    let found = scan(top);
    let mut out = Vec::new();
    let show = |p: &[u8]| format!("{:?}", p.escape_ascii().to_string());
    for path in found.keys().filter(|p| !wanted.contains_key(*p)) {
        out.push(format!("{}: not wanted", show(path)));
    }
    let mut groups: BTreeMap<usize, Vec<Member>> = BTreeMap::new();
    for (path, want) in wanted {
        let Some(got) = found.get(path) else {
            out.push(format!("{}: missing", show(path)));
            continue;
        };
        let mut differ = |what: &str, want: String, got: String| {
            if want != got {
                out.push(format!("{}: {what} {got}, wanted {want}", show(path)));
            }
        };
        let file_type = got.meta.file_type();
        let kind = if file_type.is_dir() {
            Kind::Dir
        } else if file_type.is_symlink() {
            Kind::Symlink(got.target.clone().unwrap_or_default())
        } else if file_type.is_char_device() {
            Kind::CharDevice(got.meta.rdev())
        } else if file_type.is_file() {
            Kind::File(fs::read(top.join(OsStr::from_bytes(path))).unwrap())
        } else {
            Kind::CharDevice(u64::MAX)
        };
        let brief = |kind: &Kind| match kind {
            Kind::File(data) => format!(
                "file of {} bytes {:x?}",
                data.len(),
                &data[..data.len().min(8)]
            ),
            Kind::Symlink(target) => format!("symlink to {}", show(target)),
            other => format!("{other:?}"),
        };
        differ("is a", brief(&want.kind), brief(&kind));
        if path.is_empty() && skip.top {
            continue;
        }
        let is_link = matches!(want.kind, Kind::Symlink(_));
        if !is_link {
            differ(
                "mode",
                format!("{:o}", want.mode),
                format!("{:o}", got.meta.mode() & 0o7777),
            );
        }
        differ(
            "owner",
            format!("{}:{}", want.uid, want.gid),
            format!("{}:{}", got.meta.uid(), got.meta.gid()),
        );
        let restored = !matches!(want.kind, Kind::Dir | Kind::Symlink(_));
        if restored || !skip.dir_and_symlink_mtimes {
            differ(
                "mtime",
                want.mtime.to_string(),
                got.meta.mtime().to_string(),
            );
        }
        if let Kind::File(_) = want.kind {
            match want.group {
                Some(group) => groups.entry(group).or_default().push(Member {
                    path,
                    ino: got.meta.ino(),
                    nlink: got.meta.nlink(),
                }),
                None => differ("link count", "1".into(), got.meta.nlink().to_string()),
            }
        }
    }
    for members in groups.values() {
        let first = &members[0];
        for member in members {
            if member.ino != first.ino || member.nlink != members.len() as u64 {
                out.push(format!(
                    "{}: not one inode with {} (inode {} of {} links, {} names wanted)",
                    show(member.path),
                    show(first.path),
                    member.ino,
                    member.nlink,
                    members.len()
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// newc: the built-in packer, read back by GNU cpio.

/// The program the kernel starts, which the packer insists on.
const INIT: &[u8] = b"#!/bin/sh\nexec /bin/sh\n";

#[derive(Clone, Debug)]
struct NewcCase {
    tree: Tree,
    init: Meta,
    /// A `dev` directory of the tree's own; without one the packer makes it.
    dev: Option<Meta>,
    /// A directory (an index into the tree's directories) whose contents are left out.
    exclude: Option<Index>,
    source_date_epoch: Option<u64>,
    threads: usize,
    /// The gzip and the zstd levels; `None` for the default.
    levels: (Option<u32>, Option<u32>),
}

fn newc_case() -> impl Strategy<Value = NewcCase> {
    (
        tree(true),
        meta(0o100),
        proptest::option::of(meta(0)),
        proptest::option::weighted(0.3, any::<Index>()),
        proptest::option::weighted(0.3, 0u64..(1u64 << 33)),
        1usize..=2,
        (
            proptest::option::of(1u32..=9),
            proptest::option::of(1u32..=19),
        ),
    )
        .prop_map(
            |(tree, init, dev, exclude, source_date_epoch, threads, levels)| NewcCase {
                tree,
                init,
                dev,
                exclude,
                source_date_epoch,
                threads,
                levels,
            },
        )
}

impl NewcCase {
    /// The excluded directory's path, if the tree has directories to exclude.
    fn excluded(&self, layout: &Layout) -> Option<Vec<u8>> {
        let index = self.exclude?;
        (layout.dirs.len() > 1).then(|| layout.dirs[1 + index.index(layout.dirs.len() - 1)].clone())
    }

    /// The tree on disk: the generated one, `init` and maybe `dev`.
    fn make(&self, top: &Path) -> (Wanted, Layout) {
        let layout = self.tree.layout();
        let mut wanted = self.tree.wanted(&layout);
        let want = |kind, meta: &Meta| Want {
            kind,
            mode: meta.mode & 0o7777,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            group: None,
        };
        wanted.insert(
            b"init".to_vec(),
            want(Kind::File(INIT.to_vec()), &self.init),
        );
        if let Some(dev) = &self.dev {
            wanted.insert(b"dev".to_vec(), want(Kind::Dir, dev));
        }
        self.tree.make(top);
        fs::write(top.join("init"), INIT).unwrap();
        set_meta(&top.join("init"), &self.init);
        if let Some(dev) = &self.dev {
            fs::create_dir(top.join("dev")).unwrap();
            set_meta(&top.join("dev"), dev);
        }
        // Adding them changed the top's time.
        set_meta(top, &self.tree.top);
        (wanted, layout)
    }

    /// What GNU cpio must extract: the source with mtimes clamped, the excluded directory
    /// emptied (its time 0, since its contents' changes must not show), `dev/console` added.
    fn extracted(&self, source: &Wanted, layout: &Layout) -> Wanted {
        let excluded = self.excluded(layout);
        let clamp = |mtime: i64| {
            let mtime = self
                .source_date_epoch
                .map_or(mtime, |e| mtime.min(e as i64));
            mtime.clamp(0, i64::from(u32::MAX))
        };
        let mut wanted: Wanted = source
            .iter()
            .filter(|(path, _)| {
                excluded
                    .as_ref()
                    .is_none_or(|ex| !(path.starts_with(ex) && path.get(ex.len()) == Some(&b'/')))
            })
            .map(|(path, want)| {
                let mut want = want.clone();
                want.mtime = if Some(path) == excluded.as_ref() {
                    0
                } else {
                    clamp(want.mtime)
                };
                (path.clone(), want)
            })
            .collect();
        // A hardlink group cut down to one name is a plain file.
        let mut members: BTreeMap<usize, usize> = BTreeMap::new();
        for want in wanted.values() {
            if let Some(group) = want.group {
                *members.entry(group).or_default() += 1;
            }
        }
        for want in wanted.values_mut() {
            if want.group.is_some_and(|g| members[&g] < 2) {
                want.group = None;
            }
        }
        wanted.entry(b"dev".to_vec()).or_insert(Want {
            kind: Kind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: 0,
            group: None,
        });
        wanted.insert(
            b"dev/console".to_vec(),
            Want {
                kind: Kind::CharDevice(rustix::fs::makedev(5, 1)),
                mode: 0o600,
                uid: 0,
                gid: 0,
                mtime: 0,
                group: None,
            },
        );
        wanted
    }
}

/// Extracts `archive` into `into` with GNU cpio as root: `-d` makes directories, `-m` keeps
/// mtimes, and owners are kept because root extracts without `--no-preserve-owner`. `-H newc`
/// makes cpio refuse anything but a newc archive.
fn cpio_extract(archive: &Path, compression: Compression, into: &Path) -> Result<(), String> {
    let input = File::open(archive).unwrap();
    let mut decompress = decompressor(compression).map(|[program, args]| {
        Command::new(program)
            .arg(args)
            .stdin(input.try_clone().unwrap())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
    });
    let stdin = match &mut decompress {
        Some(child) => Stdio::from(child.stdout.take().unwrap()),
        None => Stdio::from(input),
    };
    let cpio = Command::new("cpio")
        .args([
            "-i",
            "-d",
            "-m",
            "-H",
            "newc",
            "--no-absolute-filenames",
            "--quiet",
        ])
        .current_dir(into)
        .stdin(stdin)
        .output()
        .expect("cannot run cpio (apt-get install cpio)");
    if let Some(mut child) = decompress {
        let status = child.wait().unwrap();
        if !status.success() {
            return Err(format!("the decompressor failed: {status}"));
        }
    }
    if !cpio.status.success() || !cpio.stderr.is_empty() {
        return Err(format!(
            "cpio -i: {}: {}",
            cpio.status,
            String::from_utf8_lossy(&cpio.stderr)
        ));
    }
    Ok(())
}

/// The compressor's own tool, decompressing to its standard output.
fn decompressor(compression: Compression) -> Option<[&'static str; 2]> {
    match compression {
        Compression::Gzip => Some(["gzip", "-dc"]),
        Compression::Zstd => Some(["zstd", "-qdc"]),
        Compression::Xz => Some(["xz", "-dc"]),
        Compression::None => None,
    }
}

/// The archive's uncompressed bytes, by the compressor's own tool.
fn decompress(archive: &Path, compression: Compression) -> Vec<u8> {
    let Some(tool) = decompressor(compression) else {
        return fs::read(archive).unwrap();
    };
    let output = Command::new(tool[0])
        .arg(tool[1])
        .arg(archive)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool[0]));
    assert!(output.status.success(), "{} failed", tool[0]);
    output.stdout
}

/// What the headers say against what they must: every path once, with its type, permission
/// bits, owner and mtime (the mtimes of directories and symlinks being seen only here).
fn header_differences(cpio: &[u8], wanted: &Wanted) -> Vec<String> {
    let entries = match newc::parse(cpio) {
        Ok(entries) => entries,
        Err(e) => return vec![format!("the archive does not parse: {e:#}")],
    };
    let mut out = Vec::new();
    let mut seen = BTreeMap::new();
    for entry in &entries {
        let shown = format!("{:?}", entry.name.escape_ascii().to_string());
        if seen.insert(entry.name.clone(), ()).is_some() {
            out.push(format!("header {shown}: twice in the archive"));
        }
        let Some(want) = wanted.get(&entry.name).filter(|_| !entry.name.is_empty()) else {
            out.push(format!("header {shown}: not wanted"));
            continue;
        };
        let file_type = match want.kind {
            Kind::Dir => 0o040000,
            Kind::File(_) => 0o100000,
            Kind::Symlink(_) => 0o120000,
            Kind::CharDevice(_) => 0o020000,
        };
        let permissions = if matches!(want.kind, Kind::Symlink(_)) {
            entry.mode & 0o7777
        } else {
            want.mode
        };
        let fields = |mode: u32, uid: u32, gid: u32, mtime: i64| {
            format!("mode {mode:o}, owner {uid}:{gid}, mtime {mtime}")
        };
        let wanted_fields = fields(file_type | permissions, want.uid, want.gid, want.mtime);
        let found = fields(entry.mode, entry.uid, entry.gid, i64::from(entry.mtime));
        if found != wanted_fields {
            out.push(format!("header {shown}: {found}, wanted {wanted_fields}"));
        }
    }
    for path in wanted
        .keys()
        .filter(|p| !p.is_empty() && !seen.contains_key(*p))
    {
        out.push(format!(
            "header {:?}: missing",
            path.escape_ascii().to_string()
        ));
    }
    out
}

fn newc_round_trip(case: &NewcCase) -> Result<(), TestCaseError> {
    let work = TempDir::new().unwrap();
    let root = work.path().join("root");
    fs::create_dir(&root).unwrap();
    let (source, layout) = case.make(&root);
    let made = differences(&root, &source, EXACT);
    prop_assert!(
        made.is_empty(),
        "the tree was not made as generated: {:#?}",
        made
    );

    let wanted = case.extracted(&source, &layout);
    let exclude: Vec<PathBuf> = case
        .excluded(&layout)
        .map(|p| PathBuf::from(OsStr::from_bytes(&p)))
        .into_iter()
        .collect();
    let cancel = AtomicBool::new(false);
    for compression in Newc.capabilities().compressions {
        let level = match compression {
            Compression::Gzip => case.levels.0,
            Compression::Zstd => case.levels.1,
            _ => None,
        };
        let output = work.path().join(format!("initramfs-{compression}.cpio"));
        let request = PackRequest {
            layers: vec![Layer {
                name: "root:generated".into(),
                path: root.clone(),
                site: false,
            }],
            exclude: exclude.clone(),
            rdinit: "/init".into(),
            keep_site_owners: false,
            compression,
            level,
            source_date_epoch: case.source_date_epoch,
            threads: case.threads,
            output: output.clone(),
            progress: &Silent,
            cancel: &cancel,
        };
        let report = Newc
            .pack(&request)
            .map_err(|e| TestCaseError::fail(format!("{compression}: {e}")))?;
        prop_assert_eq!(
            report.entries,
            wanted.len() as u64 - 1,
            "{}: entries",
            compression
        );
        let into = work.path().join(format!("extracted-{compression}"));
        fs::create_dir(&into).unwrap();
        cpio_extract(&output, compression, &into)
            .map_err(|e| TestCaseError::fail(format!("{compression}: {e}")))?;
        let skip = Skip {
            top: true,
            dir_and_symlink_mtimes: true,
        };
        let mut diffs = differences(&into, &wanted, skip);
        diffs.extend(header_differences(
            &decompress(&output, compression),
            &wanted,
        ));
        prop_assert!(diffs.is_empty(), "{}: {:#?}", compression, diffs);
    }
    let again = differences(&root, &source, EXACT);
    prop_assert!(again.is_empty(), "packing changed the root: {:#?}", again);
    Ok(())
}

proptest! {
    #![proptest_config(cases(64))]

    /// A generated root packed by `newc` with gzip, zstd and no compression is extracted by GNU
    /// cpio to the same tree, entry by entry, plus `/dev/console`.
    #[test]
    fn newc_archives_extract_to_the_tree_they_were_packed_from(case in newc_case()) {
        require_root();
        let _alone = one_at_a_time();
        newc_round_trip(&case)?;
    }
}

// ---------------------------------------------------------------------------------------------
// SquashFS: the repository snapshot writer, read back by unsquashfs and by the kernel.

#[derive(Clone, Debug)]
struct SquashfsCase {
    tree: Tree,
    compression: squashfs_pack::Compression,
    block_size: u32,
    source_date_epoch: Option<i64>,
}

fn squashfs_case() -> impl Strategy<Value = SquashfsCase> {
    (
        tree(false),
        select(squashfs_pack::Compression::ALL.to_vec()),
        select(vec![4096u32, 8192, 131_072]),
        proptest::option::weighted(0.3, 0i64..(1i64 << 33)),
    )
        .prop_map(
            |(tree, compression, block_size, source_date_epoch)| SquashfsCase {
                tree,
                compression,
                block_size,
                source_date_epoch,
            },
        )
}

/// A SquashFS image mounted read-only by the kernel; unmounted (and so its loop device, which
/// `mount` sets to clear itself, detached) by `close`, or on drop when a comparison failed.
struct Mounted {
    point: PathBuf,
    image: PathBuf,
    mounted: bool,
}

impl Mounted {
    fn new(image: &Path, point: &Path) -> Result<Self, String> {
        fs::create_dir(point).unwrap();
        let output = Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(image)
            .arg(point)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run mount");
        if !output.status.success() {
            return Err(format!(
                "the kernel does not mount the image: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(Self {
            point: point.to_owned(),
            image: image.to_owned(),
            mounted: true,
        })
    }

    fn close(mut self) {
        let output = Command::new("umount").arg(&self.point).output().unwrap();
        assert!(
            output.status.success(),
            "umount {} failed: {}",
            self.point.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        self.mounted = false;
        wait_until(
            "the loop device is detached",
            Duration::from_secs(30),
            || loop_devices_on(&self.image).is_empty(),
        );
    }
}

impl Drop for Mounted {
    /// Detaches the mount even while something still holds it, so that a failed case leaves
    /// nothing mounted.
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount")
                .arg("--lazy")
                .arg(&self.point)
                .status();
        }
    }
}

fn squashfs_round_trip(case: &SquashfsCase) -> Result<(), TestCaseError> {
    let work = TempDir::new().unwrap();
    let source = work.path().join("repo");
    let repos = work.path().join("repos");
    fs::create_dir(&source).unwrap();
    fs::create_dir(&repos).unwrap();
    case.tree.make(&source);
    let layout = case.tree.layout();
    let made_wanted = case.tree.wanted(&layout);
    let made = differences(&source, &made_wanted, EXACT);
    prop_assert!(
        made.is_empty(),
        "the tree was not made as generated: {:#?}",
        made
    );

    let clamp = |mtime: i64| {
        let mtime = case.source_date_epoch.map_or(mtime, |e| mtime.min(e));
        mtime.clamp(0, i64::from(u32::MAX))
    };
    let mut wanted: Wanted = made_wanted
        .into_iter()
        .map(|(path, mut want)| {
            want.mtime = clamp(want.mtime);
            (path, want)
        })
        .collect();
    // The writer cannot set the image's top directory time.
    wanted.get_mut(b"".as_slice()).expect("the top").mtime = 0;

    let cancel = AtomicBool::new(false);
    let request = squashfs_pack::PackRequest {
        source: PackSource::Dir(&source),
        repos: &repos,
        name: Some("generated"),
        force: false,
        compression: case.compression,
        block_size: case.block_size,
        source_date_epoch: case.source_date_epoch,
        cancel: &cancel,
    };
    let report = squashfs_pack::pack(&request).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(u64::from(report.entries), wanted.len() as u64, "inodes");
    prop_assert_eq!((report.hardlinked, report.with_xattrs), (0, 0));

    let unsquashed = work.path().join("unsquashed");
    let output = Command::new("unsquashfs")
        .args(["-no-progress", "-quiet", "-d"])
        .arg(&unsquashed)
        .arg(&report.path)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run unsquashfs (apt-get install squashfs-tools)");
    prop_assert!(
        output.status.success(),
        "unsquashfs: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let diffs = differences(&unsquashed, &wanted, EXACT);
    prop_assert!(diffs.is_empty(), "unsquashfs: {:#?}", diffs);

    let mounted =
        Mounted::new(&report.path, &work.path().join("mounted")).map_err(TestCaseError::fail)?;
    let diffs = differences(&mounted.point, &wanted, EXACT);
    prop_assert!(diffs.is_empty(), "mounted by the kernel: {:#?}", diffs);
    mounted.close();
    Ok(())
}

proptest! {
    #![proptest_config(cases(64))]

    /// A generated repository packed into SquashFS reads back, by unsquashfs and through a
    /// kernel mount, as the same tree entry by entry, with any compressor and block size.
    #[test]
    fn squashfs_images_read_back_as_the_tree_they_were_packed_from(case in squashfs_case()) {
        require_root();
        let _alone = one_at_a_time();
        squashfs_round_trip(&case)?;
    }
}

/// The case the SquashFS property first found: the writer left the top directory's owner out of
/// the image's id table when no entry below shared it, and the pack failed.
#[test]
fn a_squashfs_top_owned_by_nobody_else_below_packs() {
    require_root();
    let _alone = one_at_a_time();
    let meta = |uid, gid| Meta {
        mode: 0o755,
        uid,
        gid,
        mtime: 1_700_000_000,
        nsec: 0,
    };
    let case = SquashfsCase {
        tree: Tree {
            top: meta(250, 250),
            dirs: Vec::new(),
            inodes: vec![Inode {
                data: Bytes(b"EAPI=8\n".to_vec()),
                meta: meta(0, 0),
            }],
            names: vec![Name {
                dir: 0,
                name: Bytes(b"metadata.ebuild".to_vec()),
                inode: 0,
            }],
            links: Vec::new(),
        },
        compression: squashfs_pack::Compression::Zstd,
        block_size: squashfs_pack::DEFAULT_BLOCK_SIZE,
        source_date_epoch: None,
    };
    squashfs_round_trip(&case).unwrap();
}
