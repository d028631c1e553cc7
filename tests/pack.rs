//! `autogentoo root pack` as a user runs it: a root with every kind of entry, the site's
//! `common/` and two overlays packed into one initramfs, read back by GNU cpio, gzip and zstd and
//! compared entry by entry with the merged tree built here by plain copying; reproducible bytes
//! under `SOURCE_DATE_EPOCH`; the root left untouched; refusals that leave nothing behind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context as _, Result};
use autogentoo_core::testkit::tree::{tree_diff, tree_diff_with, TreeDiffOptions};
use autogentoo_tests::{list_dir, newc, noise, Run, Workdir};
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, CWD};

/// The root that is packed.
const ROOT: &str = "web";
const HARDWARE: &str = "hardware/h1";
const APP: &str = "secret-sauce/app";

/// `pack.exclude` by default: the contents of these directories of the root stay out.
const EXCLUDED_DIRS: &[&str] = &[
    "var/cache/distfiles",
    "var/cache/binpkgs",
    "var/cache/binhost",
    "var/db/repos",
    "usr/src",
    "var/tmp",
    "tmp",
    "proc",
    "sys",
    "dev",
    "run",
];

/// Root entries carrying something special.
mod rootfs {
    pub const INIT: &str = "init";
    /// Mode 4755.
    pub const SETUID: &str = "usr/bin/su";
    /// Mode 0600.
    pub const PRIVATE: &str = "etc/shadow";
    /// Owned by [`OTHER_ID`], like Gentoo's `portage`.
    pub const OTHER_ID: u32 = 250;
    pub const OTHER_DIR: &str = "home/portage";
    pub const OTHER_FILE: &str = "home/portage/.bashrc";
    pub const OTHER_SYMLINK: &str = "home/portage/.profile";
    pub const LINKS3: [&str; 3] = [
        "usr/bin/gcc",
        "usr/bin/cc",
        "usr/bin/x86_64-pc-linux-gnu-gcc",
    ];
    /// Linked a third time below an excluded directory: two links in the image.
    pub const LINKS2: [&str; 2] = ["usr/lib/libz.so.1", "usr/lib/libz.so.1.3.1"];
    /// Linked only below an excluded directory: one plain file in the image.
    pub const LONELY_LINK: &str = "usr/bin/lonely";
    /// A pair of links of which the app overlay replaces the second.
    pub const SPLIT_LINKS: [&str; 2] = ["etc/issue", "etc/issue.net"];
    pub const ABS_SYMLINK: (&str, &str) = ("etc/localtime", "/usr/share/zoneinfo/UTC");
    pub const REL_SYMLINK: (&str, &str) = ("usr/lib/libz.so", "libz.so.1");
    /// Devices outside the excluded `dev/`, so that they are packed: `c 1 3` and `b 7 0`.
    pub const CHAR_DEV: &str = "lib/early-dev/null";
    pub const BLOCK_DEV: &str = "lib/early-dev/loop0";
    pub const FIFO: &str = "var/lib/misc/initctl";
    pub const SOCKET: &str = "var/lib/misc/socket";
    pub const EMPTY_DIR: &str = "var/empty";
    pub const DEEP_FILE: &str = "usr/share/doc/pkg/a/b/c/deep";
    /// Latin-1 "café".
    pub const NON_UTF8: &[u8] = b"srv/caf\xe9";
    /// Replaced by the app overlay.
    pub const OVERRIDDEN: &str = "etc/os-release";
    /// Only the root has it.
    pub const PLAIN: &str = "etc/passwd";
    /// Below the excluded directories: left out, their directories kept.
    pub const EXCLUDED_FILES: &[&str] = &[
        "var/cache/distfiles/x",
        "var/cache/binpkgs/pkg.gpkg.tar",
        "var/cache/binhost/farm/app-misc/hello/hello-1.0-1.gpkg.tar",
        "var/db/repos/gentoo/profiles/repo_name",
        "var/tmp/y",
        "usr/src/linux/z",
        "tmp/t",
        "proc/p",
        "run/r",
    ];
}

/// The root's entries get mtimes a day apart from here, with nanoseconds that round up.
const ROOT_TIME: i64 = 1_600_000_000;
/// The site's entries, from here.
const SITE_TIME: i64 = 1_650_000_000;
const DAY: i64 = 86_400;
/// The owner of the site's files on disk, as a user's checkout; packed as 0:0.
const SITE_OWNER: u32 = 1000;

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("mkdir {}", path.display()))?;
    set_mode(path, mode)
}

/// Writes a file, making its parents.
fn write(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
    }
    fs::write(path, content).with_context(|| format!("write {}", path.display()))?;
    set_mode(path, mode)
}

fn mknod(path: &Path, file_type: FileType, mode: u32, major: u32, minor: u32) -> Result<()> {
    let dev = rustix::fs::makedev(major, minor);
    rustix::fs::mknodat(CWD, path, file_type, Mode::from_raw_mode(mode), dev)
        .with_context(|| format!("mknod {}", path.display()))?;
    set_mode(path, mode)
}

fn chown(path: &Path, uid: u32, gid: u32) -> Result<()> {
    lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {uid}:{gid} {}", path.display()))
}

fn set_mtime(path: &Path, time: Timespec) -> Result<()> {
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("set the mtime of {}", path.display()))
}

/// Gives every entry below and including `path` its own mtime, `DAY` apart from `base`, children
/// before their directory (creating an entry changes the directory's mtime). The nanoseconds
/// are just below a second, so that rounding instead of truncating shows.
fn stamp_times(path: &Path, base: i64, counter: &mut i64) -> Result<()> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if meta.is_dir() {
        for child in list_dir(path) {
            stamp_times(&child, base, counter)?;
        }
    }
    *counter += 1;
    set_mtime(
        path,
        Timespec {
            tv_sec: base + *counter * DAY,
            tv_nsec: 999_999_999 - *counter,
        },
    )
}

/// Builds, in the new directory `root`, the stage the packed root is cloned from (see
/// [`rootfs`]).
fn build_root_tree(root: &Path) -> Result<()> {
    use rootfs::*;
    let at = |rel: &str| root.join(rel);
    mkdir(root, 0o755)?;
    for dir in [
        "etc",
        "usr/bin",
        "usr/lib",
        "var/lib/misc",
        "srv",
        "sys",
        "dev",
        "proc",
        "run",
    ] {
        mkdir(&at(dir), 0o755)?;
    }
    mkdir(&at(EMPTY_DIR), 0o700)?;
    mkdir(&at("root"), 0o700)?;
    mkdir(&at("tmp"), 0o1777)?;
    mkdir(&at("var/tmp"), 0o1777)?;
    symlink("usr/bin", at("bin")).context("symlink bin")?;

    write(
        &at(INIT),
        b"#!/bin/sh\necho 'packed init'\nexec /bin/sh\n",
        0o755,
    )?;
    write(
        &at(PLAIN),
        b"root:x:0:0:root:/root:/bin/sh\nportage:x:250:250::/var/lib/portage:/bin/false\n",
        0o644,
    )?;
    write(&at(PRIVATE), b"root:*:10770:0:::::\n", 0o600)?;
    write(&at(OVERRIDDEN), b"NAME=Gentoo\nID=gentoo\n", 0o644)?;
    write(&at("etc/empty.conf"), b"", 0o644)?;
    write(&at(SETUID), b"#!/bin/sh\necho su\n", 0o755)?;
    set_mode(&at(SETUID), 0o4755)?;
    mkdir(&at("var/mail"), 0o775)?;
    chown(&at("var/mail"), 0, OTHER_ID)?;
    set_mode(&at("var/mail"), 0o2775)?;

    write(&at(LINKS3[0]), b"\x7fELF pretend compiler\n", 0o755)?;
    for name in &LINKS3[1..] {
        fs::hard_link(at(LINKS3[0]), at(name)).with_context(|| format!("link {name}"))?;
    }
    write(&at(LINKS2[0]), &noise(200 * 1024, 7), 0o755)?;
    fs::hard_link(at(LINKS2[0]), at(LINKS2[1])).context("link libz")?;
    write(&at(LONELY_LINK), b"lonely\n", 0o755)?;
    write(&at(SPLIT_LINKS[0]), b"Gentoo \\n \\l\n", 0o644)?;
    fs::hard_link(at(SPLIT_LINKS[0]), at(SPLIT_LINKS[1])).context("link issue")?;
    symlink(ABS_SYMLINK.1, at(ABS_SYMLINK.0)).context("absolute symlink")?;
    symlink(REL_SYMLINK.1, at(REL_SYMLINK.0)).context("relative symlink")?;

    mkdir(&at("lib/early-dev"), 0o755)?;
    mknod(&at(CHAR_DEV), FileType::CharacterDevice, 0o666, 1, 3)?;
    mknod(&at(BLOCK_DEV), FileType::BlockDevice, 0o660, 7, 0)?;
    chown(&at(BLOCK_DEV), 0, 6)?;
    mknod(&at(FIFO), FileType::Fifo, 0o600, 0, 0)?;

    mkdir(&at(OTHER_DIR), 0o750)?;
    write(&at(OTHER_FILE), b"export PS1='$ '\n", 0o644)?;
    symlink(".bashrc", at(OTHER_SYMLINK)).context("symlink .profile")?;
    for rel in [OTHER_DIR, OTHER_FILE, OTHER_SYMLINK] {
        chown(&at(rel), OTHER_ID, OTHER_ID)?;
    }
    write(&at(DEEP_FILE), b"deep\n", 0o644)?;
    write(&root.join(OsStr::from_bytes(NON_UTF8)), b"caf\xe9\n", 0o644)?;

    for rel in EXCLUDED_FILES {
        write(&at(rel), format!("{rel} stays out\n").as_bytes(), 0o644)?;
    }
    // A device under the excluded dev/: left out, like the rest.
    mknod(&at("dev/null"), FileType::CharacterDevice, 0o666, 1, 3)?;
    fs::hard_link(at(LINKS2[0]), at("var/tmp/libz-copy")).context("link libz")?;
    fs::hard_link(at(LONELY_LINK), at("tmp/lonely")).context("link lonely")?;
    // The listener goes; its socket file stays.
    std::os::unix::net::UnixListener::bind(at(SOCKET)).context("bind a socket")?;
    stamp_times(root, ROOT_TIME, &mut 0)
}

/// Builds, in the new directory `site`, a site: an `autogentoo.toml` with every setting at its
/// default, `common/`, and the overlays [`HARDWARE`] and [`APP`], owned by a user as a checkout
/// is. The app overlay replaces `etc/motd` of common, a root file and one of a root's hardlinks.
fn build_site(site: &Path) -> Result<()> {
    mkdir(site, 0o755)?;
    let at = |rel: &str| site.join(rel);
    write(
        &at("autogentoo.toml"),
        b"# The test site: every setting at its default.\n",
        0o644,
    )?;
    write(&at("common/etc/motd"), b"Welcome (common)\n", 0o644)?;
    write(
        &at("common/etc/profile.d/site.sh"),
        b"export SITE=test\n",
        0o644,
    )?;
    write(
        &at("common/usr/share/site/one"),
        b"linked in the site\n",
        0o644,
    )?;
    fs::hard_link(
        at("common/usr/share/site/one"),
        at("common/usr/share/site/two"),
    )
    .context("link in common")?;
    let hardware = format!("overlays/{HARDWARE}");
    write(&at(&format!("{hardware}/etc/hostname")), b"h1\n", 0o644)?;
    let app = format!("overlays/{APP}");
    write(
        &at(&format!("{app}/usr/local/bin/app")),
        b"#!/bin/sh\necho secret\n",
        0o755,
    )?;
    write(&at(&format!("{app}/etc/motd")), b"Welcome (app)\n", 0o644)?;
    write(
        &at(&format!("{app}/etc/os-release")),
        b"NAME=Appliance\nID=appliance\n",
        0o644,
    )?;
    write(&at(&format!("{app}/etc/issue.net")), b"appliance\n", 0o644)?;
    write(
        &at(&format!("{app}/etc/app.conf")),
        b"token=hunter2\n",
        0o600,
    )?;
    for tree in ["common", &hardware, &app] {
        chown_tree(&at(tree), SITE_OWNER)?;
        stamp_times(&at(tree), SITE_TIME, &mut 0)?;
    }
    Ok(())
}

fn chown_tree(path: &Path, id: u32) -> Result<()> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    let mode = meta.mode() & 0o7777;
    chown(path, id, id)?;
    if !meta.file_type().is_symlink() {
        // chown clears setuid and setgid bits.
        set_mode(path, mode)?;
    }
    if meta.is_dir() {
        for child in list_dir(path) {
            chown_tree(&child, id)?;
        }
    }
    Ok(())
}

/// One tree merged into the expected image.
struct Source<'a> {
    dir: &'a Path,
    /// Site files are packed as owned by root.
    site: bool,
    /// Directories whose contents stay out.
    exclude: &'a [&'a str],
}

/// Builds, in the new directory `dest`, what the packed image should hold, by plain copying:
/// each source in order over the ones before (a later entry replaces an earlier one, taking all
/// of its metadata — except a directory over a directory, which keeps the earlier one's — and a
/// directory replaced by something else goes with its contents), owners
/// of site files made 0:0, excluded directories empty with mtime 0, hardlinks kept within a
/// source, then `/dev/console` (`c 5 1`, 0600,
/// 0:0, mtime 0).
fn merge_sources(dest: &Path, sources: &[Source]) -> Result<()> {
    mkdir(dest, 0o755)?;
    let mut times: BTreeMap<PathBuf, Timespec> = BTreeMap::new();
    for source in sources {
        let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let mut todo = vec![PathBuf::new()];
        while let Some(dir) = todo.pop() {
            for path in list_dir(&source.dir.join(&dir)) {
                let rel = dir.join(path.file_name().expect("a name"));
                let meta = fs::symlink_metadata(&path)
                    .with_context(|| format!("stat {}", path.display()))?;
                let target = dest.join(&rel);
                // A directory already there keeps the metadata of the layer that brought it.
                let kept_dir =
                    meta.is_dir() && fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir());
                place(&path, &meta, &target, &mut links)?;
                if kept_dir {
                    if !source.exclude.iter().any(|e| rel == Path::new(e)) {
                        todo.push(rel);
                    }
                    continue;
                }
                let (uid, gid) = if source.site {
                    (0, 0)
                } else {
                    (meta.uid(), meta.gid())
                };
                chown(&target, uid, gid)?;
                if !meta.file_type().is_symlink() {
                    set_mode(&target, meta.mode() & 0o7777)?;
                }
                let excluded = meta.is_dir() && source.exclude.iter().any(|e| rel == Path::new(e));
                // An excluded directory goes in empty with mtime 0: its own mtime only tells when
                // its left-out contents changed.
                let time = if excluded {
                    Timespec::default()
                } else {
                    Timespec {
                        tv_sec: meta.mtime(),
                        tv_nsec: meta.mtime_nsec(),
                    }
                };
                times.insert(rel.clone(), time);
                if meta.is_dir() && !excluded {
                    todo.push(rel);
                }
            }
        }
    }
    let console = dest.join("dev/console");
    mkdir(&dest.join("dev"), 0o755)?;
    mknod(&console, FileType::CharacterDevice, 0o600, 5, 1)?;
    chown(&console, 0, 0)?;
    times.insert(PathBuf::from("dev/console"), Timespec::default());
    // Children sort after their directory: backwards, a directory's time is set last.
    for (rel, time) in times.iter().rev() {
        let path = dest.join(rel);
        if fs::symlink_metadata(&path).is_ok() {
            set_mtime(&path, *time)?;
        }
    }
    Ok(())
}

/// Puts a copy of `source` at `target`, replacing what is there unless both are directories.
fn place(
    source: &Path,
    meta: &fs::Metadata,
    target: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(old) if old.is_dir() && meta.is_dir() => return Ok(()),
        Ok(old) if old.is_dir() => fs::remove_dir_all(target)?,
        Ok(_) => fs::remove_file(target)?,
        Err(_) => {}
    }
    let file_type = meta.file_type();
    if file_type.is_dir() {
        fs::create_dir(target).with_context(|| format!("mkdir {}", target.display()))
    } else if file_type.is_symlink() {
        symlink(fs::read_link(source)?, target)
            .with_context(|| format!("symlink {}", target.display()))
    } else if file_type.is_file() {
        if meta.nlink() > 1 {
            if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
                return fs::hard_link(first, target)
                    .with_context(|| format!("link {}", target.display()));
            }
            links.insert((meta.dev(), meta.ino()), target.to_owned());
        }
        fs::copy(source, target)
            .map(drop)
            .with_context(|| format!("copy {}", source.display()))
    } else {
        rustix::fs::mknodat(
            CWD,
            target,
            FileType::from_raw_mode(meta.mode()),
            Mode::from_raw_mode(meta.mode() & 0o7777),
            meta.rdev(),
        )
        .with_context(|| format!("mknod {}", target.display()))
    }
}

/// Runs a tool, feeding it `input`, and returns its stdout and stderr; an error unless it exits
/// with 0.
fn tool(program: &str, args: &[&OsStr], input: &[u8], dir: &Path) -> Result<(Vec<u8>, String)> {
    let shown = format!("{program} {args:?}");
    let mut child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let output = std::thread::scope(|scope| {
        let feeder = scope.spawn(move || stdin.write_all(input));
        let output = child.wait_with_output();
        // A tool may exit without reading all of it; its status tells.
        let _ = feeder.join();
        output
    })
    .with_context(|| format!("wait for {shown}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    ensure!(
        output.status.success(),
        "{shown} failed ({}): {stderr}",
        output.status
    );
    Ok((output.stdout, stderr))
}

/// The archive, decompressed by `zcat` or `zstd -dc` as its name says.
fn decompress(archive: &Path) -> Result<Vec<u8>> {
    let name = archive.to_string_lossy();
    let here = Path::new("/");
    if name.ends_with(".gz") {
        Ok(tool("zcat", &[archive.as_os_str()], b"", here)?.0)
    } else if name.ends_with(".zst") {
        Ok(tool("zstd", &[OsStr::new("-dc"), archive.as_os_str()], b"", here)?.0)
    } else {
        fs::read(archive).with_context(|| format!("read {}", archive.display()))
    }
}

/// Extracts an uncompressed cpio stream with GNU cpio, as root, into the new directory `dest`,
/// and fails on any warning it prints.
fn gnu_cpio_extract(cpio: &[u8], dest: &Path) -> Result<()> {
    mkdir(dest, 0o755)?;
    let (_, stderr) = tool(
        "cpio",
        &[OsStr::new("-idm"), OsStr::new("--no-absolute-filenames")],
        cpio,
        dest,
    )?;
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| !(l.ends_with(" block") || l.ends_with(" blocks")))
        .collect();
    ensure!(warnings.is_empty(), "GNU cpio warned: {warnings:?}");
    Ok(())
}

/// The names GNU cpio lists (`cpio -t`) in an uncompressed stream.
fn gnu_cpio_list(cpio: &[u8]) -> Result<Vec<Vec<u8>>> {
    let (stdout, _) = tool("cpio", &[OsStr::new("-t")], cpio, Path::new("/"))?;
    Ok(stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect())
}

fn sha256sum(path: &Path) -> Result<String> {
    let (stdout, _) = tool("sha256sum", &[path.as_os_str()], b"", Path::new("/"))?;
    let text = String::from_utf8(stdout).context("sha256sum output")?;
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

/// CRC-32 as gzip's trailer holds it (ISO 3309, reflected).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A root cloned from a stage built by [`build_root_tree`], and a site built by [`build_site`].
struct Fixture {
    workdir: Workdir,
    site: PathBuf,
    stage: PathBuf,
    root: PathBuf,
}

impl Fixture {
    fn new() -> Result<Self> {
        let workdir = Workdir::new();
        let tree = workdir.scratch().join("stage-tree");
        build_root_tree(&tree)?;
        let stage = workdir.import(&tree, "base");
        workdir.ok(["root", "create", ROOT, "--stage", "base"]);
        let root = workdir.root_path(ROOT);
        let site = workdir.scratch().join("site");
        build_site(&site)?;
        Ok(Self {
            workdir,
            site,
            stage,
            root,
        })
    }

    fn config(&self) -> PathBuf {
        self.site.join("autogentoo.toml")
    }

    /// `WORKDIR/out/ROOT`, where archives go by default.
    fn out_dir(&self) -> PathBuf {
        self.workdir.path().join("out").join(ROOT)
    }

    /// Runs `autogentoo --config SITE/autogentoo.toml root pack ROOT --overlay HARDWARE --overlay
    /// APP EXTRA…`, with `SOURCE_DATE_EPOCH` set to `epoch` or unset.
    fn pack(&self, extra: &[&OsStr], epoch: Option<i64>) -> Run {
        self.pack_on(extra, epoch, false)
    }

    /// [`Fixture::pack`], on one CPU if `one_cpu`.
    fn pack_on(&self, extra: &[&OsStr], epoch: Option<i64>, one_cpu: bool) -> Run {
        let mut args: Vec<OsString> = [
            OsStr::new("--config"),
            self.config().as_os_str(),
            OsStr::new("root"),
            OsStr::new("pack"),
            OsStr::new(ROOT),
            OsStr::new("--overlay"),
            OsStr::new(HARDWARE),
            OsStr::new("--overlay"),
            OsStr::new(APP),
        ]
        .map(OsStr::to_owned)
        .to_vec();
        args.extend(extra.iter().map(|a| a.to_os_string()));
        self.run_on(&args, epoch, one_cpu)
    }

    fn run(&self, args: &[OsString], epoch: Option<i64>) -> Run {
        self.run_on(args, epoch, false)
    }

    /// [`Fixture::run`], on one CPU if `one_cpu`.
    fn run_on(&self, args: &[OsString], epoch: Option<i64>, one_cpu: bool) -> Run {
        let mut command = self.workdir.command(args);
        match epoch {
            Some(epoch) => command.env("SOURCE_DATE_EPOCH", epoch.to_string()),
            None => command.env_remove("SOURCE_DATE_EPOCH"),
        };
        if one_cpu {
            command = pinned_to_one_cpu(&command);
        }
        let shown = std::iter::once(OsStr::new("autogentoo"))
            .chain(args.iter().map(OsString::as_os_str))
            .map(OsStr::to_string_lossy)
            .collect::<Vec<_>>()
            .join(" ");
        let output = command.output().expect("run the binary");
        Run {
            command: shown,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Packs to `out` (under the scratch directory) and returns its path.
    #[track_caller]
    fn pack_to(&self, name: &str, extra: &[&str], epoch: Option<i64>) -> PathBuf {
        self.pack_to_on(name, extra, epoch, false)
    }

    /// [`Fixture::pack_to`], on one CPU if `one_cpu`.
    #[track_caller]
    fn pack_to_on(&self, name: &str, extra: &[&str], epoch: Option<i64>, one_cpu: bool) -> PathBuf {
        let out = self.workdir.scratch().join("out").join(name);
        let mut args = vec![OsStr::new("-o"), out.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        let run = self.pack_on(&args, epoch, one_cpu);
        assert!(run.status.success(), "pack: {}", run.describe());
        out
    }

    /// The merged tree the image should hold, built in the scratch directory.
    fn expected_tree(&self) -> Result<PathBuf> {
        let dest = self.workdir.scratch().join("expected");
        let overlays = self.site.join("overlays");
        let (common, hardware, app) = (
            self.site.join("common"),
            overlays.join(HARDWARE),
            overlays.join(APP),
        );
        let site = |dir| Source {
            dir,
            site: true,
            exclude: &[],
        };
        merge_sources(
            &dest,
            &[
                Source {
                    dir: &self.root,
                    site: false,
                    exclude: EXCLUDED_DIRS,
                },
                site(&common),
                site(&hardware),
                site(&app),
            ],
        )?;
        Ok(dest)
    }

    /// Panics unless a failed pack left no archive, manifest or temporary file anywhere in the
    /// workdir or the scratch directory.
    #[track_caller]
    fn assert_nothing_written(&self) {
        assert_eq!(
            list_dir(&self.out_dir()),
            Vec::<PathBuf>::new(),
            "out/{ROOT}"
        );
        let mut todo = vec![self.workdir.path().join("out"), self.workdir.scratch()];
        while let Some(dir) = todo.pop() {
            for path in list_dir(&dir) {
                let name = path.file_name().expect("a name").as_bytes();
                assert!(
                    !name.starts_with(b".initramfs.")
                        && !name.starts_with(b".manifest.")
                        && !name.starts_with(b"initramfs"),
                    "left behind: {}",
                    path.display()
                );
                if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                    todo.push(path);
                }
            }
        }
    }
}

/// `command` under `taskset -c 0`: the process sees one CPU, as `available_parallelism` follows
/// the affinity mask, and so compresses with one thread.
fn pinned_to_one_cpu(command: &Command) -> Command {
    let mut pinned = Command::new("taskset");
    pinned
        .args(["-c", "0"])
        .arg(command.get_program())
        .args(command.get_args())
        .stdin(Stdio::null());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => pinned.env(key, value),
            None => pinned.env_remove(key),
        };
    }
    pinned
}

/// The archive's manifest, by path without the leading `/`, and the whole document.
fn manifest(archive: &Path) -> Result<(BTreeMap<String, String>, serde_json::Value)> {
    let mut name = archive.as_os_str().to_owned();
    name.push(".manifest.json");
    let path = PathBuf::from(name);
    let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text).context("the manifest is JSON")?;
    let entries = doc["entries"]
        .as_array()
        .context("the manifest has an entries array")?;
    let mut layers = BTreeMap::new();
    for entry in entries {
        let (Some(path), Some(layer)) = (entry["path"].as_str(), entry["layer"].as_str()) else {
            bail!("a manifest entry without path and layer: {entry}");
        };
        layers.insert(path.trim_start_matches('/').to_owned(), layer.to_owned());
    }
    ensure!(
        layers.len() == entries.len(),
        "the manifest names a path twice"
    );
    Ok((layers, doc))
}

/// Checks every header of `entries` against the entry of the same name in `expected`: mtime
/// (GNU cpio restores no directory or symlink mtimes, so the extraction cannot show those), and
/// the hardlink layout the kernel relies on: a group's headers share an inode number, give the
/// group's size as nlink, and only the last one carries the data.
fn check_headers(entries: &[newc::Entry], expected: &Path) -> Result<()> {
    let mut groups: BTreeMap<u32, Vec<&newc::Entry>> = BTreeMap::new();
    for entry in entries {
        let path = expected.join(OsStr::from_bytes(&entry.name));
        let meta = fs::symlink_metadata(&path)
            .with_context(|| format!("{} is in the archive only", entry.name.escape_ascii()))?;
        ensure!(
            i64::from(entry.mtime) == meta.mtime(),
            "{}: mtime {} in the archive, {} expected",
            entry.name.escape_ascii(),
            entry.mtime,
            meta.mtime()
        );
        if meta.is_file() && meta.nlink() > 1 {
            groups.entry(entry.ino).or_default().push(entry);
        }
    }
    for members in groups.values() {
        let names: Vec<String> = members
            .iter()
            .map(|e| e.name.escape_ascii().to_string())
            .collect();
        let (last, rest) = members.split_last().expect("a member");
        ensure!(
            members.iter().all(|e| e.nlink as usize == members.len()),
            "{names:?} share an inode number but not nlink {}",
            members.len()
        );
        ensure!(
            last.size > 0 && rest.iter().all(|e| e.size == 0),
            "{names:?}: the data is not on the last link only"
        );
    }
    Ok(())
}

/// Checks by name what the image must hold, so that a mistake shared by the product and
/// [`merge_sources`] cannot hide: each kind of entry, the layers' winners, site owners, the
/// excluded directories kept empty, and `/dev/console`.
fn check_image(image: &Path) -> Result<()> {
    use rootfs::*;
    let at = |rel: &str| image.join(rel);
    let meta = |rel: &str| {
        fs::symlink_metadata(at(rel)).with_context(|| format!("{rel} is missing from the image"))
    };
    let content = |rel: &str| fs::read(at(rel)).with_context(|| format!("read {rel}"));
    let kind = |rel: &str| -> Result<FileType> { Ok(FileType::from_raw_mode(meta(rel)?.mode())) };

    ensure!(meta(INIT)?.mode() & 0o7777 == 0o755, "{INIT} is not 0755");
    ensure!(
        meta(SETUID)?.mode() & 0o7777 == 0o4755,
        "{SETUID} is not 4755"
    );
    ensure!(
        meta(PRIVATE)?.mode() & 0o7777 == 0o600,
        "{PRIVATE} is not 0600"
    );
    let setgid = meta("var/mail")?;
    ensure!(
        setgid.mode() & 0o7777 == 0o2775 && setgid.gid() == OTHER_ID,
        "var/mail is not 2775 of group {OTHER_ID}"
    );
    for rel in [OTHER_DIR, OTHER_FILE, OTHER_SYMLINK] {
        let m = meta(rel)?;
        ensure!(
            (m.uid(), m.gid()) == (OTHER_ID, OTHER_ID),
            "{rel} is not owned by {OTHER_ID}"
        );
    }
    for group in [
        &LINKS3[..],
        &LINKS2[..],
        &["usr/share/site/one", "usr/share/site/two"],
    ] {
        let first = meta(group[0])?;
        for rel in group {
            let m = meta(rel)?;
            ensure!(
                m.ino() == first.ino() && m.nlink() as usize == group.len(),
                "{group:?} are not {} links of one file",
                group.len()
            );
        }
    }
    ensure!(
        content(LINKS2[1])? == noise(200 * 1024, 7),
        "{} lost its data",
        LINKS2[1]
    );
    ensure!(
        meta(SPLIT_LINKS[0])?.nlink() == 1 && content(SPLIT_LINKS[0])? == b"Gentoo \\n \\l\n",
        "{} is not the root's, alone",
        SPLIT_LINKS[0]
    );
    ensure!(
        content(SPLIT_LINKS[1])? == b"appliance\n",
        "{} is not the app's",
        SPLIT_LINKS[1]
    );
    for (link, target) in [ABS_SYMLINK, REL_SYMLINK, ("bin", "usr/bin")] {
        ensure!(
            fs::read_link(at(link))? == Path::new(target),
            "{link} -> {target}"
        );
    }
    for (rel, file_type, major, minor) in [
        (CHAR_DEV, FileType::CharacterDevice, 1, 3),
        (BLOCK_DEV, FileType::BlockDevice, 7, 0),
        ("dev/console", FileType::CharacterDevice, 5, 1),
    ] {
        let rdev = meta(rel)?.rdev();
        ensure!(
            kind(rel)? == file_type
                && (rustix::fs::major(rdev), rustix::fs::minor(rdev)) == (major, minor),
            "{rel} is not {file_type:?} {major}:{minor}"
        );
    }
    ensure!(kind(FIFO)? == FileType::Fifo, "{FIFO} is not a fifo");
    ensure!(
        kind(SOCKET)? == FileType::Socket,
        "{SOCKET} is not a socket"
    );
    ensure!(
        meta(LONELY_LINK)?.nlink() == 1 && content(LONELY_LINK)? == b"lonely\n",
        "{LONELY_LINK} is not a plain file with its data"
    );
    ensure!(
        meta(EMPTY_DIR)?.is_dir() && list_dir(&at(EMPTY_DIR)).is_empty(),
        "{EMPTY_DIR}"
    );
    ensure!(content(DEEP_FILE)? == b"deep\n", "{DEEP_FILE}");
    ensure!(
        fs::read(image.join(OsStr::from_bytes(NON_UTF8)))? == b"caf\xe9\n",
        "the non-UTF-8 name"
    );
    for dir in EXCLUDED_DIRS {
        let left: Vec<PathBuf> = list_dir(&at(dir))
            .into_iter()
            .filter(|p| !p.ends_with("dev/console"))
            .collect();
        ensure!(
            meta(dir)?.is_dir() && left.is_empty(),
            "{dir} is not kept empty: {left:?}"
        );
    }
    for (rel, text) in [
        ("etc/motd", &b"Welcome (app)\n"[..]),
        (OVERRIDDEN, b"NAME=Appliance\nID=appliance\n"),
        ("etc/hostname", b"h1\n"),
        ("etc/app.conf", b"token=hunter2\n"),
        ("usr/local/bin/app", b"#!/bin/sh\necho secret\n"),
    ] {
        let m = meta(rel)?;
        ensure!(content(rel)? == text, "{rel} is not the last layer's");
        ensure!(
            (m.uid(), m.gid()) == (0, 0),
            "site file {rel} is not owned by 0:0"
        );
    }
    ensure!(
        meta("etc/app.conf")?.mode() & 0o7777 == 0o600,
        "etc/app.conf is not 0600"
    );
    ensure!(
        meta("usr/local/bin/app")?.mode() & 0o7777 == 0o755,
        "app is not 0755"
    );
    Ok(())
}

#[test]
fn packed_root_extracts_as_the_merged_layers_with_gnu_cpio() -> Result<()> {
    let fixture = Fixture::new()?;
    let run = fixture.pack(&[], None).expect_code(0);
    let archive = fixture.out_dir().join("initramfs.cpio.gz");
    assert_eq!(run.stdout.trim_end(), archive.to_str().expect("UTF-8"));

    let expected = fixture.expected_tree()?;
    let cpio = decompress(&archive)?;
    let extracted = fixture.workdir.scratch().join("extracted");
    gnu_cpio_extract(&cpio, &extracted)?;
    // GNU cpio does not restore the mtimes of directories (their children change them after it
    // set them) nor of symlinks, and newc carries neither xattrs (the tree has none) nor
    // nanoseconds: mtimes are compared here for the other entries, and for all of them from the
    // headers by `check_headers`.
    let no_times = TreeDiffOptions {
        mtime: false,
        mtime_nsec: false,
        xattrs: false,
        hardlinks: true,
    };
    let diffs = tree_diff_with(&expected, &extracted, &no_times);
    assert!(
        diffs.is_empty(),
        "the extracted image differs from the merged layers:\n  {}",
        diffs.join("\n  ")
    );
    let mut todo = vec![extracted.clone()];
    while let Some(dir) = todo.pop() {
        for path in list_dir(&dir) {
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                todo.push(path);
            } else if !meta.file_type().is_symlink() {
                let rel = path.strip_prefix(&extracted)?;
                let want = fs::symlink_metadata(expected.join(rel))?.mtime();
                assert_eq!(meta.mtime(), want, "mtime of {}", rel.display());
            }
        }
    }
    let entries = newc::parse(&cpio)?;
    check_headers(&entries, &expected)?;
    check_image(&extracted)?;

    let (layers, doc) = manifest(&archive)?;
    let root_layer = format!("root:{ROOT}");
    for (path, layer) in [
        ("etc/motd", APP),
        (rootfs::OVERRIDDEN, APP),
        ("usr/local/bin/app", APP),
        ("etc/hostname", HARDWARE),
        ("etc/profile.d/site.sh", "common"),
        (rootfs::PLAIN, &root_layer),
        (rootfs::SETUID, &root_layer),
        (rootfs::SPLIT_LINKS[0], &root_layer),
        (rootfs::SPLIT_LINKS[1], APP),
    ] {
        assert_eq!(
            layers.get(path).map(String::as_str),
            Some(layer),
            "layer of {path} in the manifest"
        );
    }
    let names: BTreeSet<String> = entries
        .iter()
        .map(|e| String::from_utf8_lossy(&e.name).into_owned())
        .collect();
    assert_eq!(
        layers.keys().cloned().collect::<BTreeSet<_>>(),
        names,
        "the manifest names each entry of the archive"
    );
    assert_eq!(doc["archive"], "initramfs.cpio.gz");
    assert_eq!(doc["compression"], "gzip");
    assert_eq!(doc["sha256"], sha256sum(&archive)?, "the manifest's sha256");
    Ok(())
}

#[test]
fn gzip_is_one_member_and_zstd_and_plain_carry_the_same_cpio() -> Result<()> {
    let fixture = Fixture::new()?;
    let gzip = fixture.pack_to("image.cpio.gz", &[], None);
    let zstd = fixture.pack_to("image.cpio.zst", &["--compression", "zstd"], None);
    let plain = fixture.pack_to("image.cpio", &["--compression", "none"], None);
    let here = Path::new("/");

    tool("gzip", &[OsStr::new("-t"), gzip.as_os_str()], b"", here)?;
    let bytes = fs::read(&gzip)?;
    let cpio = decompress(&gzip)?;
    assert_eq!(&bytes[..3], b"\x1f\x8b\x08", "a gzip header, deflate");
    assert_eq!(
        bytes[3] & 0x18,
        0,
        "no file name or comment in the gzip header"
    );
    assert_eq!(&bytes[4..8], &[0; 4], "no time in the gzip header");
    // A gzip trailer covers its own member only: the last one holding the CRC and size of the
    // whole stream shows there is one member (earlier members could only be empty ones).
    let trailer = &bytes[bytes.len() - 8..];
    let crc = u32::from_le_bytes(trailer[..4].try_into()?);
    let size = u32::from_le_bytes(trailer[4..].try_into()?);
    assert_eq!(
        size,
        cpio.len() as u32,
        "the gzip trailer's size is the whole stream's"
    );
    assert_eq!(
        crc,
        crc32(&cpio),
        "the gzip trailer's CRC is the whole stream's"
    );

    tool("zstd", &[OsStr::new("-t"), zstd.as_os_str()], b"", here)?;
    assert!(
        decompress(&zstd)? == cpio,
        "zstd carries the same cpio as gzip"
    );
    assert!(
        fs::read(&plain)? == cpio,
        "--compression none writes the same cpio as gzip carries"
    );
    let listing = gnu_cpio_list(&cpio)?;
    assert_eq!(gnu_cpio_list(&decompress(&zstd)?)?, listing);
    assert_eq!(gnu_cpio_list(&fs::read(&plain)?)?, listing);
    assert!(listing.contains(&b"usr/local/bin/app".to_vec()));

    let (_, doc) = manifest(&zstd)?;
    assert_eq!(doc["compression"], "zstd");
    assert_eq!(doc["sha256"], sha256sum(&zstd)?);
    let (_, doc) = manifest(&plain)?;
    assert_eq!(doc["compression"], "none");
    assert_eq!(doc["sha256"], sha256sum(&plain)?);
    Ok(())
}

#[test]
fn same_inputs_pack_to_the_same_bytes_under_source_date_epoch() -> Result<()> {
    let fixture = Fixture::new()?;
    // Between the root's mtimes, below the site's: both clamped and kept mtimes are packed.
    let epoch = ROOT_TIME + 20 * DAY;
    let late = fixture.root.join(rootfs::SETUID);
    set_mtime(
        &late,
        Timespec {
            tv_sec: epoch + 100,
            tv_nsec: 0,
        },
    )?;
    let first = fixture.pack_to("first.cpio.gz", &[], Some(epoch));
    let second = fixture.pack_to("second.cpio.gz", &[], Some(epoch));
    let bytes = fs::read(&first)?;
    assert!(
        bytes == fs::read(&second)?,
        "two packs of the same inputs differ"
    );

    let mtimes: Vec<i64> = newc::parse(&decompress(&first)?)?
        .iter()
        .map(|e| i64::from(e.mtime))
        .collect();
    assert!(
        mtimes.iter().all(|&t| t <= epoch),
        "an mtime after the epoch"
    );
    assert!(mtimes.contains(&epoch), "no mtime was clamped");
    assert!(mtimes.iter().any(|&t| t < epoch), "every mtime was clamped");

    set_mtime(
        &late,
        Timespec {
            tv_sec: epoch + 10 * DAY,
            tv_nsec: 5,
        },
    )?;
    let touched = fixture.pack_to("touched.cpio.gz", &[], Some(epoch));
    assert!(
        bytes == fs::read(&touched)?,
        "touching a file after the epoch changed the archive"
    );
    let earlier = fixture.pack_to("earlier.cpio.gz", &[], Some(epoch - 5 * DAY));
    assert!(
        bytes != fs::read(&earlier)?,
        "an earlier SOURCE_DATE_EPOCH did not change the archive"
    );
    // A builder with fewer CPUs compresses with fewer threads, to the same bytes.
    for (name, extra) in [("gz", &[][..]), ("zst", &["--compression", "zstd"][..])] {
        let all = fixture.pack_to(&format!("all-cpus.cpio.{name}"), extra, Some(epoch));
        let one = fixture.pack_to_on(&format!("one-cpu.cpio.{name}"), extra, Some(epoch), true);
        assert!(
            fs::read(&all)? == fs::read(&one)?,
            "{name}: packs on one CPU and on all CPUs differ"
        );
    }
    let unset = [
        fixture.pack_to("unset1.cpio.gz", &[], None),
        fixture.pack_to("unset2.cpio.gz", &[], None),
    ];
    assert!(
        fs::read(&unset[0])? == fs::read(&unset[1])?,
        "two packs without SOURCE_DATE_EPOCH differ"
    );
    Ok(())
}

#[test]
fn packing_leaves_the_root_unchanged() -> Result<()> {
    let fixture = Fixture::new()?;
    let copy = fixture.workdir.scratch().join("root-copy");
    tool(
        "cp",
        &[OsStr::new("-a"), fixture.root.as_os_str(), copy.as_os_str()],
        b"",
        Path::new("/"),
    )?;
    let before = tree_diff(&fixture.stage, &fixture.root);
    assert_eq!(tree_diff(&copy, &fixture.root), Vec::<String>::new());
    fixture.pack(&[], None).expect_code(0);
    fixture
        .pack(&[OsStr::new("--compression"), OsStr::new("zstd")], None)
        .expect_code(0);
    assert_eq!(
        tree_diff(&copy, &fixture.root),
        Vec::<String>::new(),
        "packing changed the root"
    );
    assert_eq!(tree_diff(&fixture.stage, &fixture.root), before);
    Ok(())
}

#[test]
fn root_without_init_is_refused_and_leaves_nothing() -> Result<()> {
    let fixture = Fixture::new()?;
    fs::remove_file(fixture.root.join(rootfs::INIT))?;
    let run = fixture.pack(&[], None).expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr.contains("/init") && run.stderr.contains("pack.rdinit"),
        "names /init and what to do: {}",
        run.describe()
    );
    fixture.assert_nothing_written();

    // The configured program is the one required, and an overlay may supply it.
    fs::write(
        fixture.site.join("custom.toml"),
        "[pack]\nrdinit = \"/usr/local/bin/app\"\n",
    )?;
    let custom = fixture.site.join("custom.toml");
    let with = |overlays: &[&str]| {
        let mut args: Vec<OsString> = vec!["--config".into(), custom.clone().into()];
        args.extend(["root", "pack", ROOT].map(OsString::from));
        for overlay in overlays {
            args.extend(["--overlay", overlay].map(OsString::from));
        }
        fixture.run(&args, None)
    };
    let run = with(&[HARDWARE]).expect_code(1);
    assert!(
        run.stderr.contains("/usr/local/bin/app"),
        "names the configured rdinit: {}",
        run.describe()
    );
    fixture.assert_nothing_written();
    with(&[HARDWARE, APP]).expect_code(0);
    Ok(())
}

#[test]
fn file_of_4_gib_is_refused_naming_it() -> Result<()> {
    let fixture = Fixture::new()?;
    let big = fixture.root.join("srv/disk.img");
    tool(
        "truncate",
        &[OsStr::new("-s"), OsStr::new("4G"), big.as_os_str()],
        b"",
        Path::new("/"),
    )?;
    let run = fixture.pack(&[], None).expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr.contains("srv/disk.img"),
        "names the file: {}",
        run.describe()
    );
    fixture.assert_nothing_written();
    Ok(())
}

#[test]
fn missing_overlay_is_refused_naming_its_directory() -> Result<()> {
    let fixture = Fixture::new()?;
    let run = fixture
        .pack(&[OsStr::new("--overlay"), OsStr::new("hardware/h2")], None)
        .expect_code(1);
    run.expect_one_error();
    let expected = fixture.site.join("overlays/hardware/h2");
    assert!(
        run.stderr.contains(expected.to_str().expect("UTF-8")),
        "names {}: {}",
        expected.display(),
        run.describe()
    );
    fixture.assert_nothing_written();
    Ok(())
}

#[test]
fn level_out_of_range_is_refused() -> Result<()> {
    let fixture = Fixture::new()?;
    for args in [
        ["--level", "12", "--compression", "gzip"],
        ["--level", "0", "--compression", "gzip"],
        ["--level", "20", "--compression", "zstd"],
        ["--level", "3", "--compression", "none"],
    ] {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let run = fixture.pack(&args, None).expect_code(1);
        run.expect_one_error();
        assert!(run.stderr.contains("--level"), "{}", run.describe());
        fixture.assert_nothing_written();
    }
    Ok(())
}

#[test]
fn an_unknown_packer_or_a_compression_it_cannot_write_is_refused() -> Result<()> {
    let fixture = Fixture::new()?;
    let cases: [(&[&str], &str); 2] = [
        (
            &["--packer", "erofs"],
            "unknown packer 'erofs'; known packers: newc",
        ),
        (
            &["--compression", "xz"],
            "packer 'newc' does not write xz archives; it writes gzip, zstd, none",
        ),
    ];
    for (args, message) in cases {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let run = fixture.pack(&args, None).expect_code(1);
        run.expect_one_error();
        assert!(run.stderr.contains(message), "{}", run.describe());
        fixture.assert_nothing_written();
    }
    Ok(())
}

#[test]
fn json_names_archive_manifest_sha256_and_entries() -> Result<()> {
    let fixture = Fixture::new()?;
    let run = fixture.pack(&[OsStr::new("--json")], None).expect_code(0);
    let report = run.json();
    let archive = fixture.out_dir().join("initramfs.cpio.gz");
    let manifest_path = fixture.out_dir().join("initramfs.cpio.gz.manifest.json");
    assert_eq!(report["archive"], archive.to_str().expect("UTF-8"));
    assert_eq!(report["manifest"], manifest_path.to_str().expect("UTF-8"));
    assert_eq!(report["sha256"], sha256sum(&archive)?);
    let (layers, _) = manifest(&archive)?;
    let listed = gnu_cpio_list(&decompress(&archive)?)?;
    assert_eq!(report["entries"], layers.len() as u64);
    assert_eq!(report["entries"], listed.len() as u64);
    assert_eq!(
        list_dir(&fixture.out_dir()),
        vec![archive.clone(), manifest_path],
        "only the archive and its manifest in out/{ROOT}"
    );
    assert_eq!(
        fs::metadata(&archive)?.mode() & 0o777,
        0o644,
        "the archive is an ordinary output"
    );
    Ok(())
}
