//! `autogentoo repo pack` and `repo list` as a user runs them: images of an ebuild-repository
//! tree mounted by the kernel and compared file by file with the source, listed by unsquashfs,
//! byte-identical from run to run, packed out of a root, listed with their superblocks; bad
//! input and interruptions leave nothing in `repos/`.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use autogentoo_core::chroot::root_mounts::newest_repo_image;
use autogentoo_core::testkit::tree::{tree_diff_with, TreeDiffOptions};
use autogentoo_tests::{build_small_tree, list_dir, noise, wait_until, Spawned, Workdir};
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, CWD};
use rustix::process::Signal;

/// Gentoo's `portage` user and group, which own a synced repository.
const PORTAGE: u32 = 250;

/// The multi-block file: several 128 KiB blocks, the last one partial.
const BIG_FILE: &str = "dev-libs/big/files/big-1.0.tar";
const BIG_LEN: usize = 3 * 1024 * 1024 + 12_345;

/// How long a child may take to react; generous for a loaded debug build.
const PATIENCE: Duration = Duration::from_secs(60);

/// What the mounted image cannot hold, compared as far as SquashFS and backhand allow:
/// - `mtime_nsec`: SquashFS stores mtimes in whole seconds;
/// - `xattrs`: backhand writes no xattr table, and the kernel then answers every xattr listing
///   on the mount with EOPNOTSUPP; the source's lack of xattrs is checked on its own instead
///   ([`assert_no_xattrs`]), so nothing is lost unnoticed;
/// - the image root's mtime: backhand's writer has no way to set it (always 0), checked apart.
///
/// Everything else is compared: names, types, modes, owners, mtimes, sizes, contents, symlink
/// targets and hardlinks (the source has none, the image none either).
const IMAGE_DIFF: TreeDiffOptions = TreeDiffOptions {
    mtime: true,
    mtime_nsec: false,
    xattrs: false,
    hardlinks: true,
};

/// Panics if any entry of `tree` has an xattr (which an image would lose).
#[track_caller]
fn assert_no_xattrs(tree: &Path) {
    let mut todo = vec![tree.to_owned()];
    while let Some(path) = todo.pop() {
        let len = rustix::fs::llistxattr_query(&path).unwrap_or(0);
        assert_eq!(len, 0, "{} has xattrs", path.display());
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            todo.extend(list_dir(&path));
        }
    }
}

fn write(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    fs::create_dir_all(path.parent().expect("a parent"))?;
    fs::write(path, content).with_context(|| format!("write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("mkdir {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Builds, in the new directory `root`, a tree shaped like a synced Gentoo repository: a few
/// categories and packages with ebuilds, Manifests and metadata.xml, `metadata/` and
/// `profiles/`, symlinks (one pointing out of the tree), odd modes, entries owned by portage
/// (250) and mixed owners, deep paths, a non-UTF-8 name, an empty file, an empty directory, a
/// file of exactly one block and a file of several MB; every entry with its own sub-second
/// mtime.
fn build_repo_tree(root: &Path) -> Result<()> {
    mkdir(root, 0o755)?;
    let at = |rel: &str| root.join(rel);
    let ebuild = |name: &str| {
        format!("# Copyright 2026 Gentoo Authors\nEAPI=8\nDESCRIPTION=\"{name}\"\nSLOT=\"0\"\nKEYWORDS=\"~amd64\"\n")
    };
    for (category, package, version) in [
        ("sys-apps", "hello", "1.0"),
        ("sys-apps", "hello", "1.1-r1"),
        ("app-misc", "marker", "2"),
        ("dev-libs", "big", "1.0"),
        ("dev-python", "py-thing", "0.3.1"),
    ] {
        let dir = format!("{category}/{package}");
        write(
            &at(&format!("{dir}/{package}-{version}.ebuild")),
            ebuild(package).as_bytes(),
            0o644,
        )?;
        write(
            &at(&format!("{dir}/Manifest")),
            format!("DIST {package}-{version}.tar.gz 1234 BLAKE2B abc SHA512 def\n").as_bytes(),
            0o644,
        )?;
        write(
            &at(&format!("{dir}/metadata.xml")),
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<pkgmetadata/>\n",
            0o644,
        )?;
        write(
            &at(&format!(
                "metadata/md5-cache/{category}/{package}-{version}"
            )),
            format!(
                "DEFINED_PHASES=-\nEAPI=8\nSLOT=0\n_md5_={}\n",
                package.len()
            )
            .as_bytes(),
            0o644,
        )?;
    }
    write(&at("profiles/repo_name"), b"gentoo\n", 0o644)?;
    write(&at("profiles/arch.list"), b"amd64\narm64\n", 0o644)?;
    write(
        &at("metadata/layout.conf"),
        b"masters =\nthin-manifests = true\n",
        0o644,
    )?;
    write(
        &at("metadata/timestamp.chk"),
        b"Fri, 27 Nov 2026 00:45:01 +0000\n",
        0o644,
    )?;
    write(
        &at("Manifest"),
        b"MANIFEST metadata/Manifest.gz 100 SHA512 0\n",
        0o644,
    )?;
    write(
        &at("sys-apps/hello/files/hello-1.0-fix.patch"),
        b"--- a\n+++ b\n",
        0o644,
    )?;
    write(&at("sys-apps/hello/files/empty"), b"", 0o644)?;
    write(&at("scripts/bootstrap.sh"), b"#!/bin/sh\nexit 0\n", 0o755)?;
    write(&at("scripts/secret.conf"), b"token=none\n", 0o600)?;
    write(&at("scripts/setuid-helper"), b"#!/bin/sh\n", 0o755)?;
    fs::set_permissions(
        at("scripts/setuid-helper"),
        fs::Permissions::from_mode(0o4755),
    )?;
    write(
        &at("eclass/tests/a/b/c/d/e/f/g/h/deep.sh"),
        b"deep\n",
        0o644,
    )?;
    mkdir(&at("distfiles-empty"), 0o755)?;
    mkdir(&at("metadata/private"), 0o700)?;
    mkdir(&at("metadata/shared"), 0o2775)?;
    mkdir(&at("metadata/sticky"), 0o1777)?;
    write(&at(BIG_FILE), &noise(BIG_LEN, 7), 0o644)?;
    // Exactly one block, and compressible.
    write(
        &at("dev-libs/big/files/one-block"),
        &b"0123456789abcdef".repeat(128 * 1024 / 16),
        0o644,
    )?;
    write(
        &root.join(OsStr::from_bytes(b"app-misc/marker/caf\xe9")),
        b"caf\xe9\n",
        0o644,
    )?;
    std::os::unix::fs::symlink("../../profiles/repo_name", at("metadata/repo_name"))?;
    std::os::unix::fs::symlink("/etc/passwd", at("metadata/escape"))?;

    // Portage owns the tree; a few entries keep other owners.
    chown_tree(root, PORTAGE, PORTAGE)?;
    lchown(at("scripts/setuid-helper"), Some(0), Some(0))?;
    fs::set_permissions(
        at("scripts/setuid-helper"),
        fs::Permissions::from_mode(0o4755),
    )?;
    lchown(at("metadata/shared"), Some(0), Some(PORTAGE))?;
    lchown(at("metadata/escape"), Some(0), Some(0))?;
    let mut counter = 0;
    set_times(root, &mut counter)
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    lchown(path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for child in list_dir(path) {
            chown_tree(&child, uid, gid)?;
        }
    }
    Ok(())
}

/// Gives every entry its own mtime with nanoseconds, children before their directory.
fn set_times(path: &Path, counter: &mut i64) -> Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        for child in list_dir(path) {
            set_times(&child, counter)?;
        }
    }
    *counter += 1;
    let time = Timespec {
        tv_sec: 1_790_000_000 + *counter * 3_607,
        tv_nsec: 100_000_000 + *counter * 7_654_321,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("set the times of {}", path.display()))
}

/// The newest mtime in a tree, in whole seconds.
fn newest_mtime(path: &Path) -> i64 {
    let meta = fs::symlink_metadata(path).expect("stat");
    let mut newest = meta.mtime();
    if meta.is_dir() {
        for child in list_dir(path) {
            newest = newest.max(newest_mtime(&child));
        }
    }
    newest
}

/// A SquashFS image mounted by the kernel (`mount -o loop,ro`), unmounted and its loop device
/// detached by `close`, or on drop if the test fails first.
struct MountedImage {
    image: PathBuf,
    point: PathBuf,
    mounted: bool,
}

impl MountedImage {
    fn mount(image: &Path, point: &Path) -> Result<Self> {
        fs::create_dir_all(point)?;
        let output = Command::new("mount")
            .args(["-t", "squashfs", "-o", "loop,ro"])
            .arg(image)
            .arg(point)
            .stdin(Stdio::null())
            .output()
            .context("cannot run mount")?;
        ensure!(
            output.status.success(),
            "the kernel does not mount {}: {}",
            image.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(Self {
            image: image.to_owned(),
            point: point.to_owned(),
            mounted: true,
        })
    }

    fn path(&self) -> &Path {
        &self.point
    }

    /// Unmounts; checks that the loop device went with it.
    fn close(mut self) -> Result<()> {
        self.mounted = false;
        let status = Command::new("umount").arg(&self.point).status()?;
        ensure!(status.success(), "umount {} failed", self.point.display());
        wait_until("the loop device is detached", PATIENCE, || {
            loop_devices_on(&self.image).is_empty()
        });
        Ok(())
    }
}

impl Drop for MountedImage {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(&self.point)
            .status();
        for device in loop_devices_on(&self.image) {
            let _ = Command::new("losetup")
                .arg("--detach")
                .arg(&device)
                .status();
        }
        if !loop_devices_on(&self.image).is_empty() {
            eprintln!(
                "a loop device on {} is still attached",
                self.image.display()
            );
        }
    }
}

/// The loop devices backed by `image`, from `/sys/block/loop*/loop/backing_file`.
fn loop_devices_on(image: &Path) -> Vec<PathBuf> {
    list_dir(Path::new("/sys/block"))
        .into_iter()
        .filter(|dir| {
            fs::read_to_string(dir.join("loop/backing_file"))
                .is_ok_and(|backing| Path::new(backing.trim_end()) == image)
        })
        .map(|dir| Path::new("/dev").join(dir.file_name().expect("a name")))
        .collect()
}

/// Panics unless the mounted image equals the source in everything SquashFS keeps; the image's
/// root directory has mtime 0 (see [`IMAGE_DIFF`]).
#[track_caller]
fn assert_image_equals(source: &Path, mounted: &Path) {
    assert_no_xattrs(source);
    let diffs = tree_diff_with(source, mounted, &IMAGE_DIFF);
    let (root, rest): (Vec<&String>, Vec<&String>) =
        diffs.iter().partition(|d| d.starts_with(".: mtime "));
    assert!(
        rest.is_empty(),
        "{} and the image differ:\n  {}",
        source.display(),
        rest.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
    assert!(
        root.len() <= 1 && root.iter().all(|d| d.ends_with("!= 0.000000000")),
        "the root's mtime: {root:?}"
    );
}

/// `repo pack ARGS…` with `SOURCE_DATE_EPOCH` as given (unset for `None`); returns the image's
/// path as printed.
#[track_caller]
fn pack(workdir: &Workdir, args: &[&OsStr], epoch: Option<&str>) -> PathBuf {
    let run = pack_run(workdir, args, epoch);
    assert!(run.status.success(), "expected success: {}", run.describe());
    let path = PathBuf::from(run.stdout.trim_end());
    assert!(path.is_file(), "{} is printed but missing", path.display());
    path
}

fn pack_run(workdir: &Workdir, args: &[&OsStr], epoch: Option<&str>) -> autogentoo_tests::Run {
    let mut all = vec![OsStr::new("repo"), OsStr::new("pack")];
    all.extend_from_slice(args);
    let shown = all
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let mut command = workdir.command(&all);
    match epoch {
        Some(epoch) => command.env("SOURCE_DATE_EPOCH", epoch),
        None => command.env_remove("SOURCE_DATE_EPOCH"),
    };
    let output = command.output().expect("run autogentoo");
    autogentoo_tests::Run {
        command: format!("autogentoo {shown}"),
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// `ls -l`'s mode column, as unsquashfs prints it.
fn mode_string(mode: u32) -> String {
    let kind = match FileType::from_raw_mode(mode) {
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        _ => '-',
    };
    let bit = |mask: u32, c: char| if mode & mask != 0 { c } else { '-' };
    let special = |exec: u32, special: u32, set: char, unset: char| match (
        mode & exec != 0,
        mode & special != 0,
    ) {
        (true, true) => set,
        (false, true) => unset,
        (true, false) => 'x',
        (false, false) => '-',
    };
    [
        kind,
        bit(0o400, 'r'),
        bit(0o200, 'w'),
        special(0o100, 0o4000, 's', 'S'),
        bit(0o040, 'r'),
        bit(0o020, 'w'),
        special(0o010, 0o2000, 's', 'S'),
        bit(0o004, 'r'),
        bit(0o002, 'w'),
        special(0o001, 0o1000, 't', 'T'),
    ]
    .iter()
    .collect()
}

/// `(mode, uid/gid, path[ -> target])` of every entry, as `unsquashfs -lln` lists an image of
/// `source`, sorted by path.
fn expected_listing(source: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let path = source.join(&rel);
        let meta = fs::symlink_metadata(&path).expect("stat");
        let mut shown = if rel.as_os_str().is_empty() {
            "squashfs-root".into()
        } else {
            Path::new("squashfs-root").join(&rel).into_os_string()
        };
        if meta.file_type().is_symlink() {
            shown.push(" -> ");
            shown.push(fs::read_link(&path).expect("readlink"));
        }
        out.push((
            mode_string(meta.mode()),
            format!("{}/{}", meta.uid(), meta.gid()),
            String::from_utf8_lossy(shown.as_bytes()).into_owned(),
        ));
        if meta.is_dir() {
            todo.extend(
                list_dir(&path)
                    .iter()
                    .map(|child| rel.join(child.file_name().expect("a name"))),
            );
        }
    }
    out.sort_by(|a, b| a.2.cmp(&b.2));
    out
}

/// `unsquashfs -lln IMAGE`, parsed into `(mode, uid/gid, path[ -> target])`, sorted by path.
fn unsquashfs_listing(image: &Path) -> Result<Vec<(String, String, String)>> {
    let output = Command::new("unsquashfs")
        .arg("-lln")
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .context("cannot run unsquashfs (apt-get install squashfs-tools)")?;
    ensure!(
        output.status.success(),
        "unsquashfs -lln failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        // MODE UID/GID SIZE DATE TIME PATH[ -> TARGET], the columns padded with spaces.
        let mut rest = line;
        let mut fields = Vec::new();
        for _ in 0..5 {
            rest = rest.trim_start();
            let end = rest.find(' ').context("a listing line has six columns")?;
            fields.push(&rest[..end]);
            rest = &rest[end..];
        }
        entries.push((
            fields[0].to_owned(),
            fields[1].to_owned(),
            rest.trim_start().to_owned(),
        ));
    }
    entries.sort_by(|a, b| a.2.cmp(&b.2));
    Ok(entries)
}

/// `unsquashfs -s IMAGE`'s inode count.
fn unsquashfs_inodes(image: &Path) -> Result<u64> {
    let output = Command::new("unsquashfs")
        .arg("-s")
        .arg(image)
        .stdin(Stdio::null())
        .output()
        .context("cannot run unsquashfs")?;
    ensure!(output.status.success(), "unsquashfs -s failed");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Number of inodes "))
        .with_context(|| format!("no inode count in:\n{text}"))?;
    Ok(line.trim().parse()?)
}

/// The names in `repos/`, hidden ones included.
fn repos_listing(workdir: &Workdir) -> Vec<String> {
    list_dir(&workdir.path().join("repos"))
        .iter()
        .map(|p| {
            p.file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
fn packed_directory_mounts_as_the_same_tree() -> Result<()> {
    let workdir = Workdir::new();
    let source = workdir.scratch().join("gentoo");
    build_repo_tree(&source)?;
    let image = pack(
        &workdir,
        &[os("--dir"), source.as_os_str(), os("--name"), os("snap")],
        None,
    );
    assert_eq!(image, workdir.path().join("repos/snap.sqfs"));
    assert_eq!(
        repos_listing(&workdir),
        ["snap.sqfs"],
        "the image and nothing else"
    );

    let mounted = MountedImage::mount(&image, &workdir.top().join("mnt"))?;
    assert_image_equals(&source, mounted.path());
    let big = fs::metadata(mounted.path().join(BIG_FILE))?;
    assert_eq!(big.len(), BIG_LEN as u64, "the multi-block file");
    mounted.close()?;

    assert_eq!(
        unsquashfs_listing(&image)?,
        expected_listing(&source),
        "unsquashfs -lln lists the source's paths, modes and owners"
    );
    // The image's time is the newest mtime in the tree, and so is the file's mtime.
    let newest = newest_mtime(&source);
    assert_eq!(fs::metadata(&image)?.mtime(), newest);
    Ok(())
}

#[test]
fn every_compression_mounts_and_matches() -> Result<()> {
    let workdir = Workdir::new();
    let source = workdir.scratch().join("gentoo");
    build_repo_tree(&source)?;
    for compression in ["zstd", "xz", "gzip", "lz4"] {
        let args = [
            os("--json"),
            os("--dir"),
            source.as_os_str(),
            os("--name"),
            os(compression),
            os("--compression"),
            os(compression),
        ];
        let run = pack_run(&workdir, &args, None);
        assert!(run.status.success(), "{}", run.describe());
        let report = run.json();
        let image = PathBuf::from(report["path"].as_str().expect("path"));
        assert_eq!(report["name"], compression);
        assert_eq!(report["compression"], compression);
        assert_eq!(report["block_size"], 131_072);
        assert_eq!(report["size"], fs::metadata(&image)?.len());
        assert_eq!(report["entries"], unsquashfs_inodes(&image)?);
        let sha256 = report["sha256"].as_str().expect("sha256");
        let sum = Command::new("sha256sum").arg(&image).output()?;
        assert!(String::from_utf8_lossy(&sum.stdout).starts_with(sha256));

        let mounted = MountedImage::mount(&image, &workdir.top().join(compression))?;
        assert_image_equals(&source, mounted.path());
        mounted.close()?;
    }
    Ok(())
}

#[test]
fn packs_are_byte_identical_for_the_same_input() -> Result<()> {
    let workdir = Workdir::new();
    let source = workdir.scratch().join("gentoo");
    build_repo_tree(&source)?;
    let dir = [os("--dir"), source.as_os_str()];
    let named = |name: &'static str| [dir[0], dir[1], os("--name"), os(name)];
    let first = fs::read(pack(&workdir, &named("a"), None))?;
    let second = fs::read(pack(&workdir, &named("b"), None))?;
    assert!(
        first == second,
        "two packs of the same tree are the same bytes"
    );

    let epoch = "1790000000";
    let x1 = fs::read(pack(&workdir, &named("x1"), Some(epoch)))?;
    let x2 = fs::read(pack(&workdir, &named("x2"), Some(epoch)))?;
    assert!(x1 == x2, "the same SOURCE_DATE_EPOCH gives the same bytes");
    let y = fs::read(pack(&workdir, &named("y"), Some("1790000001")))?;
    assert!(x1 != y, "another SOURCE_DATE_EPOCH gives other bytes");
    // An epoch no older than every mtime clamps nothing: the same image as without one.
    let newest = newest_mtime(&source).to_string();
    let same = fs::read(pack(&workdir, &named("same"), Some(&newest)))?;
    assert!(
        same == first,
        "SOURCE_DATE_EPOCH = the newest mtime changes nothing"
    );
    Ok(())
}

#[test]
fn pack_root_packs_its_repository_resolved_inside_it() -> Result<()> {
    let workdir = Workdir::new();
    let stage_tree = workdir.scratch().join("stage");
    build_small_tree(&stage_tree)?;
    workdir.import(&stage_tree, "base");
    workdir.ok(["root", "create", "web", "--stage", "base"]);
    let root = workdir.root_path("web");
    let repo = root.join("var/db/repos/gentoo");
    build_repo_tree(&repo)?;
    let image = pack(
        &workdir,
        &[os("--root"), os("web"), os("--name"), os("web")],
        None,
    );
    let mounted = MountedImage::mount(&image, &workdir.top().join("mnt-web"))?;
    assert_image_equals(&repo, mounted.path());
    mounted.close()?;

    // A repository behind an absolute symlink is found inside the root, never on the host.
    fs::rename(&repo, root.join("srv-repo"))?;
    std::os::unix::fs::symlink("/srv-repo", &repo)?;
    assert!(!Path::new("/srv-repo").exists(), "no such host path");
    let image = pack(
        &workdir,
        &[os("--root"), os("web"), os("--name"), os("linked")],
        None,
    );
    let mounted = MountedImage::mount(&image, &workdir.top().join("mnt-linked"))?;
    assert_image_equals(&root.join("srv-repo"), mounted.path());
    mounted.close()?;
    Ok(())
}

#[test]
fn repo_list_shows_the_superblocks() -> Result<()> {
    let workdir = Workdir::new();
    let source = workdir.scratch().join("gentoo");
    build_repo_tree(&source)?;
    let dir = [os("--dir"), source.as_os_str()];
    // Default names: the image time's date, as Gentoo names its snapshots.
    let older = pack(&workdir, &dir, Some("1790000000"));
    let newer = pack(&workdir, &dir, Some("1795804245"));
    assert_eq!(older, workdir.path().join("repos/gentoo-20260921.sqfs"));
    assert_eq!(newer, workdir.path().join("repos/gentoo-20261127.sqfs"));
    // `root mount` mounts the newest repository, by mtime.
    let newest = newest_repo_image(&workdir.path().join("repos"))?;
    assert_eq!(newest.as_ref(), Some(&newer));
    fs::write(workdir.path().join("repos/notes.sqfs"), "not an image\n")?;

    let run = workdir.ok(["repo", "list", "--json"]);
    assert!(
        run.stderr.contains("notes.sqfs") && run.stderr.contains("not a SquashFS"),
        "a warning names the file that is not an image: {}",
        run.describe()
    );
    let list = run.json();
    let list = list.as_array().expect("an array");
    let names: Vec<&str> = list.iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["gentoo-20260921", "gentoo-20261127"],
        "sorted by name"
    );
    for (item, (image, epoch)) in list
        .iter()
        .zip([(&older, 1_790_000_000), (&newer, 1_795_804_245)])
    {
        assert_eq!(item["size"], fs::metadata(image)?.len());
        assert_eq!(item["date"], epoch);
        assert_eq!(item["entries"], unsquashfs_inodes(image)?);
        assert_eq!(item["compression"], "zstd");
        assert_eq!(
            fs::metadata(image)?.mtime(),
            epoch,
            "the file's mtime is the image time"
        );
    }
    let text = workdir.ok(["repo", "list"]);
    assert!(
        text.stdout.starts_with("gentoo-20260921\t")
            && text.stdout.contains("2026-11-27 18:30:45 UTC"),
        "{}",
        text.describe()
    );
    Ok(())
}

#[test]
fn bad_input_is_one_error_and_leaves_nothing() -> Result<()> {
    let workdir = Workdir::new();
    let source = workdir.scratch().join("gentoo");
    build_repo_tree(&source)?;
    let dir = [os("--dir"), source.as_os_str()];

    let missing = workdir.scratch().join("missing");
    let run = pack_run(&workdir, &[os("--dir"), missing.as_os_str()], None).expect_code(1);
    run.expect_one_error();
    assert!(run.stderr.contains("does not exist"), "{}", run.describe());

    let with_device = workdir.scratch().join("with-device");
    build_repo_tree(&with_device)?;
    let device = with_device.join("sys-apps/hello/files/null");
    rustix::fs::mknodat(
        CWD,
        &device,
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )?;
    let run = pack_run(&workdir, &[os("--dir"), with_device.as_os_str()], None).expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr
            .contains(&format!("{} is a character device", device.display())),
        "the error names the device: {}",
        run.describe()
    );

    for size in ["3000", "2M", "2K", "big"] {
        let args = [dir[0], dir[1], os("--block-size"), os(size)];
        let run = pack_run(&workdir, &args, None).expect_code(1);
        run.expect_one_error();
        assert!(run.stderr.contains("block size"), "{}", run.describe());
    }
    assert_eq!(
        repos_listing(&workdir),
        Vec::<String>::new(),
        "nothing in repos/"
    );

    let named = [dir[0], dir[1], os("--name"), os("snap")];
    let image = pack(&workdir, &named, None);
    let before = fs::read(&image)?;
    let run = pack_run(
        &workdir,
        &[
            dir[0],
            dir[1],
            os("--name"),
            os("snap"),
            os("--compression"),
            os("xz"),
        ],
        None,
    )
    .expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr.contains("already exists") && run.stderr.contains("--force"),
        "{}",
        run.describe()
    );
    assert!(fs::read(&image)? == before, "the image is untouched");
    let run = pack_run(&workdir, &[os("--name"), os("../x"), dir[0], dir[1]], None).expect_code(1);
    run.expect_one_error();
    assert_eq!(
        repos_listing(&workdir),
        ["snap.sqfs"],
        "nothing else, not even a temporary"
    );

    let forced = [
        dir[0],
        dir[1],
        os("--name"),
        os("snap"),
        os("--compression"),
        os("xz"),
        os("--force"),
    ];
    pack(&workdir, &forced, None);
    assert!(fs::read(&image)? != before, "--force replaced the image");
    assert_eq!(repos_listing(&workdir), ["snap.sqfs"]);
    Ok(())
}

/// Waits until the pack has its (unnamed) image file open in `repos/`, then signals it.
fn interrupt_while_writing(
    workdir: &Workdir,
    source: &Path,
    signal: Signal,
) -> autogentoo_tests::Run {
    let mut command = workdir.command([
        os("repo"),
        os("pack"),
        os("--dir"),
        source.as_os_str(),
        os("--compression"),
        os("xz"),
    ]);
    command.env_remove("SOURCE_DATE_EPOCH");
    let mut child = Spawned::start(command);
    let repos = workdir.path().join("repos");
    let fds = PathBuf::from(format!("/proc/{}/fd", child.pid().as_raw_nonzero()));
    wait_until("the pack opens its image file", PATIENCE, || {
        list_dir(&fds).iter().any(|fd| {
            // The unnamed file shows as `repos/#INODE (deleted)`; `repos` itself is open too.
            fs::read_link(fd).is_ok_and(|target| target.starts_with(&repos) && target != repos)
        })
    });
    child.signal(signal);
    child.wait(PATIENCE)
}

#[test]
fn interrupted_pack_leaves_nothing() -> Result<()> {
    let workdir = Workdir::new();
    let source = workdir.scratch().join("big");
    // Enough work for xz in a debug build to be caught in the middle.
    for i in 0..4 {
        write(
            &source.join(format!("blob-{i}")),
            &noise(16 * 1024 * 1024, i),
            0o644,
        )?;
    }
    let run = interrupt_while_writing(&workdir, &source, Signal::INT).expect_code(1);
    run.expect_one_error();
    assert!(run.stderr.contains("interrupted"), "{}", run.describe());
    assert_eq!(
        repos_listing(&workdir),
        Vec::<String>::new(),
        "nothing after Ctrl-C"
    );

    let run = interrupt_while_writing(&workdir, &source, Signal::KILL);
    assert_eq!(run.code(), None, "killed: {}", run.describe());
    assert_eq!(
        repos_listing(&workdir),
        Vec::<String>::new(),
        "nothing after SIGKILL"
    );
    Ok(())
}

#[test]
fn hardlinks_and_xattrs_are_one_warning() -> Result<()> {
    let workdir = Workdir::new();
    let source = workdir.scratch().join("gentoo");
    build_repo_tree(&source)?;
    let first = source.join("sys-apps/hello/hello-1.0.ebuild");
    fs::hard_link(&first, source.join("sys-apps/hello/hello-9999.ebuild"))?;
    rustix::fs::setxattr(
        source.join("profiles/repo_name"),
        "user.autogentoo.test",
        b"x",
        rustix::fs::XattrFlags::empty(),
    )
    .context("set a user xattr (does the temp dir's filesystem hold xattrs?)")?;
    let run = pack_run(&workdir, &[os("--dir"), source.as_os_str()], None);
    assert!(run.status.success(), "{}", run.describe());
    let warnings: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(warnings.len(), 1, "one warning line: {}", run.describe());
    assert!(
        warnings[0].contains("2 hardlinked files became copies")
            && warnings[0].contains("the xattrs of 1 entry were dropped"),
        "{}",
        run.describe()
    );
    let image = PathBuf::from(run.stdout.trim_end());
    let mounted = MountedImage::mount(&image, &workdir.top().join("mnt"))?;
    let copy = fs::metadata(mounted.path().join("sys-apps/hello/hello-9999.ebuild"))?;
    assert_eq!(copy.nlink(), 1, "a hardlink becomes a copy");
    assert_eq!(
        fs::read(mounted.path().join("sys-apps/hello/hello-9999.ebuild"))?,
        fs::read(&first)?
    );
    mounted.close()?;
    Ok(())
}
