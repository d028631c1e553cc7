//! The operator's pipeline through the `autogentoo` binary on each storage backend for real:
//! `workdir init`, `stage import` of a busybox stage made by GNU tar, `root create`, `root run`,
//! `root pack`, `root snapshot`/`root rollback`, `root remove` and `stage remove` — dir in a
//! temporary directory, btrfs on a loop-mounted image made by mkfs.btrfs, ZFS on a file-backed
//! pool of zfs-fuse. One body runs on all three; what differs between them is read from the
//! capabilities `workdir status --json` reports. Then the refusals each backend owes its user:
//! a stage with xattrs on a ZFS that cannot keep them, a btrfs workdir that is not on btrfs, a
//! zfs workdir that is not a dataset.

use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _, Result};
use autogentoo_core::testkit::tree::{tree_diff_with, TreeDiffOptions};
use autogentoo_core::testkit::zfs_pool::Pool;
use autogentoo_tests::busybox_stage::{
    CAP_FILE, CHAR_DEV, HARDLINKS, INIT, INIT_MARKER, MARKER, MARKER_FILE, SETUID_FILE,
};
use autogentoo_tests::{
    archive_listing, build_busybox_stage, extract_reference, filesystem_of, is_mount_point,
    list_dir, mounts_below, pack, processes_rooted_in, require_root, run_tool, BackendCli,
    Compression, ScratchBtrfs, SweepGuard, ZfsDaemon,
};
use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
use tempfile::TempDir;

const STAGE: &str = "busybox";
const ROOT: &str = "web";
const SNAPSHOT: &str = "fresh";
/// What the root's marker file says once the test has written to the root.
const ROOT_MARKER: &str = "written in the root\n";
/// How long the kernel may take to tear down the namespaces of a `root run`.
const SETTLE: Duration = Duration::from_secs(10);

/// The tests that mount run one at a time: a `root run` copies every mount of the host into
/// its namespace, another test's btrfs or ZFS pool included, and holds it while it runs.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

fn temp_dir(prefix: &str) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("a temporary directory")
}

/// What `workdir status --json` must report for the backend under test.
struct Expected {
    backend: &'static str,
    cheap_clone: bool,
    enforced_read_only: bool,
}

#[test]
fn pipeline_on_dir() -> Result<()> {
    require_root();
    let _turn = one_at_a_time();
    let top = temp_dir("autogentoo-backends.")?;
    let sweep = SweepGuard::new(top.path());
    let scratch = top.path().join("scratch");
    fs::create_dir(&scratch)?;
    let cli = BackendCli::new(
        "dir",
        &top.path().join("work"),
        &scratch.join("autogentoo.toml"),
    )?;
    let expected = Expected {
        backend: "dir",
        cheap_clone: false,
        enforced_read_only: false,
    };
    let volumes = || -> Result<Vec<String>> {
        Ok(["stages", "roots"]
            .iter()
            .flat_map(|kind| list_dir(&cli.workdir().join(kind)))
            .map(|path| path.display().to_string())
            .collect())
    };
    pipeline(&cli, &scratch, &expected, &volumes)?;
    sweep.close()
}

#[test]
fn pipeline_on_btrfs() -> Result<()> {
    require_root();
    let _turn = one_at_a_time();
    let scratch = temp_dir("autogentoo-backends.")?;
    let btrfs = ScratchBtrfs::new()?;
    let cli = BackendCli::new(
        "btrfs",
        &btrfs.path().join("work"),
        &scratch.path().join("autogentoo.toml"),
    )?;
    let expected = Expected {
        backend: "btrfs",
        cheap_clone: true,
        enforced_read_only: true,
    };
    // Every subvolume but the caches `workdir init` makes.
    let volumes = || -> Result<Vec<String>> {
        let listing = run_tool(
            Command::new("btrfs")
                .args(["subvolume", "list"])
                .arg(btrfs.path()),
        )?;
        Ok(listing
            .lines()
            .filter_map(|line| line.split_once(" path ").map(|(_, path)| path))
            .filter(|path| !path.starts_with("work/cache/"))
            .map(str::to_owned)
            .collect())
    };
    pipeline(&cli, scratch.path(), &expected, &volumes)?;
    btrfs.close()
}

#[test]
fn pipeline_on_zfs() -> Result<()> {
    require_root();
    let _daemon = ZfsDaemon::acquire();
    let _turn = one_at_a_time();
    let scratch = temp_dir("autogentoo-backends.")?;
    let pool = Pool::new(256);
    let sweep = sweep_keeping_datasets(&pool);
    let cli = BackendCli::new(
        "zfs",
        &pool.mountpoint,
        &scratch.path().join("autogentoo.toml"),
    )?;
    let expected = Expected {
        backend: "zfs",
        cheap_clone: true,
        enforced_read_only: true,
    };
    // Every dataset and snapshot below the layout's own datasets.
    let volumes = || -> Result<Vec<String>> {
        let layout: Vec<String> = ["stages", "roots", "pending"]
            .iter()
            .map(|kind| format!("{}/{kind}", pool.name))
            .collect();
        Ok(zfs_datasets(&pool.name)?
            .into_iter()
            .filter(|name| {
                layout.iter().any(|parent| {
                    name.strip_prefix(parent.as_str())
                        .is_some_and(|rest| rest.starts_with(['/', '@']))
                })
            })
            .collect())
    };
    pipeline(&cli, scratch.path(), &expected, &volumes)?;
    sweep.close()
}

/// Only root may reach what a stage's tarball held — its world-writable device node, its
/// setuid program — in the stage and in the roots cloned from it: the workdir's top is 0700.
/// Opened to others (as a workdir made before this rule was), the same paths are reachable,
/// which shows the check can fail; the next `workdir init` closes it again.
fn out_of_others_reach(cli: &BackendCli, volumes: &[&Path]) -> Result<()> {
    let top_mode = || -> Result<u64> {
        let status = cli.ok(["workdir", "status", "--json"]).json();
        status["top_mode"]
            .as_u64()
            .with_context(|| format!("top_mode in {status:#}"))
    };
    let reachable = |path: &Path| -> Result<bool> {
        let output = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg("stat")
            .arg(path)
            .output()
            .context("run setpriv (util-linux)")?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        ensure!(
            output.status.success() || stderr.contains("Permission denied"),
            "stat as nobody failed for another reason: {stderr}"
        );
        Ok(output.status.success())
    };
    let targets: Vec<PathBuf> = volumes
        .iter()
        .flat_map(|v| [v.join(CHAR_DEV), v.join(SETUID_FILE)])
        .collect();
    assert_eq!(top_mode()?, 0o700, "workdir init makes the top 0700");
    for target in &targets {
        ensure!(
            !reachable(target)?,
            "nobody cannot reach {}",
            target.display()
        );
    }
    fs::set_permissions(
        cli.workdir(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let status = cli.ok(["workdir", "status"]);
    assert!(
        status.stderr.contains("any local user can reach"),
        "status warns of an open workdir: {}",
        status.describe()
    );
    for target in &targets {
        ensure!(
            reachable(target)?,
            "with the top open, nobody reaches {}",
            target.display()
        );
    }
    cli.ok(["workdir", "init"]);
    assert_eq!(
        top_mode()?,
        0o700,
        "workdir init tightens an existing workdir"
    );
    for target in &targets {
        ensure!(
            !reachable(target)?,
            "nobody cannot reach {} again",
            target.display()
        );
    }
    Ok(())
}

/// Sweeps what a failed test leaves mounted below the pool's mountpoint, keeping the mounts
/// of the pool's own datasets.
fn sweep_keeping_datasets(pool: &Pool) -> SweepGuard {
    let name = pool.name.clone();
    SweepGuard::keeping(&pool.mountpoint, move |mount| {
        mount.source == name
            || mount
                .source
                .strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// Every dataset and snapshot of `pool`, as `zfs list` names them.
fn zfs_datasets(pool: &str) -> Result<Vec<String>> {
    let listing =
        run_tool(Command::new("zfs").args(["list", "-H", "-r", "-t", "all", "-o", "name", pool]))?;
    Ok(listing.lines().map(str::to_owned).collect())
}

/// The whole pipeline on the workdir `cli` drives, with sources and references in `scratch`;
/// `volumes` lists the stage and root volumes as the backend itself sees them.
fn pipeline(
    cli: &BackendCli,
    scratch: &Path,
    expected: &Expected,
    volumes: &dyn Fn() -> Result<Vec<String>>,
) -> Result<()> {
    cli.ok(["workdir", "init"]);
    let status = cli.ok(["workdir", "status", "--json"]).json();
    assert_eq!(status["backend"], expected.backend, "backend in {status:#}");
    let capabilities = &status["capabilities"];
    assert_eq!(
        capabilities["cheap_clone"], expected.cheap_clone,
        "cheap_clone in {status:#}"
    );
    assert_eq!(
        capabilities["enforced_read_only"], expected.enforced_read_only,
        "enforced_read_only in {status:#}"
    );
    let keeps_xattrs = capabilities["xattrs"]
        .as_bool()
        .with_context(|| format!("capabilities.xattrs in {status:#}"))?;

    // A file capability goes into the stage only where the backend can keep it: zfs-fuse
    // stores no xattrs and refuses such a stage (zfs_refuses_a_stage_with_xattrs_before_writing).
    let tree = scratch.join("tree");
    build_busybox_stage(&tree, keeps_xattrs)?;
    let tarball = scratch.join("stage3-busybox.tar.xz");
    pack(&tree, &tarball, Compression::Xz)?;
    let listing = archive_listing(&tarball)?;
    assert_eq!(
        listing.contains("security.capability"),
        keeps_xattrs,
        "the tarball holds a file capability exactly when the backend keeps xattrs:\n{listing}"
    );
    let reference = scratch.join("reference");
    extract_reference(&tarball, &reference)?;

    let imported = cli.ok([
        OsStr::new("stage"),
        OsStr::new("import"),
        tarball.as_os_str(),
        OsStr::new("--name"),
        OsStr::new(STAGE),
    ]);
    let stage = cli.volume_path("stage", STAGE);
    assert_eq!(
        Path::new(imported.stdout.trim_end()),
        stage,
        "import prints the stage's path"
    );
    assert_eq!(cli.names("stage"), [STAGE]);
    // Compared: names, types, owners, modes, contents, device numbers, symlink targets,
    // hardlinks, mtimes and xattrs (the stage holds xattrs only where the backend keeps them).
    // Skipped only where the filesystem itself cannot keep it: zfs-fuse stores mtimes in whole
    // seconds (a `touch -d 00:00:00.123456789` on it reads back .000000000).
    let compared = TreeDiffOptions {
        mtime_nsec: keeps_nanosecond_mtimes(cli.workdir())?,
        ..TreeDiffOptions::default()
    };
    let same_tree = |a: &Path, b: &Path| assert_same_tree_with(a, b, &compared);
    same_tree(&reference, &stage);
    if keeps_xattrs {
        ensure!(
            has_xattr(&stage.join(CAP_FILE), "security.capability"),
            "{CAP_FILE} keeps its file capability in the stage"
        );
    }
    if expected.enforced_read_only {
        let written = fs::write(stage.join("etc/intruder"), "no\n");
        assert_eq!(
            written.as_ref().map_err(|e| e.raw_os_error()),
            Err(Some(rustix::io::Errno::ROFS.raw_os_error())),
            "the filesystem refuses writes to the sealed stage"
        );
    }

    cli.ok(["root", "create", ROOT, "--stage", STAGE]);
    let root = cli.volume_path("root", ROOT);
    assert_eq!(cli.names("root"), [ROOT]);
    same_tree(&reference, &root);
    out_of_others_reach(cli, &[&stage, &root])?;
    let snapshot = cli.ok(["root", "snapshot", ROOT, SNAPSHOT]);
    assert_eq!(snapshot.stdout.trim_end(), SNAPSHOT);

    fs::write(root.join(MARKER_FILE), ROOT_MARKER)?;
    fs::write(root.join("etc/new.conf"), "new\n")?;
    fs::remove_file(root.join(HARDLINKS[1]))?;
    fs::set_permissions(
        root.join(SETUID_FILE),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    same_tree(&reference, &stage);

    let ran = cli.run([
        "root",
        "run",
        ROOT,
        "--",
        "/bin/sh",
        "-c",
        &format!("cat /{MARKER_FILE} && /{INIT} && exit 42"),
    ]);
    assert_eq!(
        ran.code(),
        Some(42),
        "the command's exit code: {}",
        ran.describe()
    );
    assert_eq!(
        ran.stdout,
        format!("{ROOT_MARKER}{INIT_MARKER}\n"),
        "the command ran in the root: {}",
        ran.describe()
    );
    wait_until_nothing_left(&root)?;
    same_tree(&reference, &stage);

    let packed = cli.ok(["root", "pack", ROOT]);
    let archive = PathBuf::from(packed.stdout.trim_end());
    let names = cpio_names(&archive)?;
    for wanted in [INIT, "dev/console", MARKER_FILE, HARDLINKS[0], SETUID_FILE] {
        ensure!(
            names.iter().any(|name| name == wanted),
            "/{wanted} is in {}: {names:?}",
            archive.display()
        );
    }

    cli.ok(["root", "rollback", ROOT, SNAPSHOT]);
    assert_eq!(cli.volume_path("root", ROOT), root);
    same_tree(&reference, &root);
    assert_eq!(fs::read_to_string(root.join(MARKER_FILE))?, MARKER);

    cli.ok(["root", "remove", ROOT]);
    cli.ok(["stage", "remove", STAGE]);
    for kind in ["stage", "root"] {
        assert_eq!(cli.ok([kind, "list"]).stdout, "", "`{kind} list` is empty");
        assert_eq!(cli.names(kind), Vec::<String>::new());
    }
    ensure!(
        !root.exists() && !stage.exists(),
        "{} and {} are gone",
        root.display(),
        stage.display()
    );
    assert_eq!(volumes()?, Vec::<String>::new(), "no volume is left");
    Ok(())
}

/// Whether a file in `dir` keeps the nanoseconds of an mtime set on it.
fn keeps_nanosecond_mtimes(dir: &Path) -> Result<bool> {
    let probe = dir.join(".mtime-probe");
    fs::write(&probe, "")?;
    let time = Timespec {
        tv_sec: 1_700_000_000,
        tv_nsec: 123_456_789,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    let set = rustix::fs::utimensat(CWD, &probe, &times, AtFlags::empty());
    let kept = fs::metadata(&probe).map(|m| m.mtime_nsec() == time.tv_nsec);
    fs::remove_file(&probe)?;
    set.context("set a nanosecond mtime")?;
    Ok(kept?)
}

/// Panics listing the first 50 differences `tree_diff_with` finds.
#[track_caller]
fn assert_same_tree_with(a: &Path, b: &Path, compared: &TreeDiffOptions) {
    let diffs = tree_diff_with(a, b, compared);
    assert!(
        diffs.is_empty(),
        "{} and {} differ:\n  {}",
        a.display(),
        b.display(),
        diffs
            .iter()
            .take(50)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}

fn has_xattr(path: &Path, name: &str) -> bool {
    rustix::fs::lgetxattr_query(path, name).is_ok_and(|len| len > 0)
}

/// Waits until nothing is mounted below `root` and no process runs in it.
fn wait_until_nothing_left(root: &Path) -> Result<()> {
    let start = Instant::now();
    loop {
        let mounts = mounts_below(root);
        let processes = processes_rooted_in(root);
        if mounts.is_empty() && processes.is_empty() {
            return Ok(());
        }
        ensure!(
            start.elapsed() < SETTLE,
            "after `root run`, left in {}: mounts {:?}, processes {:?}",
            root.display(),
            mounts.iter().map(|m| &m.point).collect::<Vec<_>>(),
            processes
                .iter()
                .map(|p| (p.pid, &p.command))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The names GNU cpio lists (`cpio -t`) in a gzip-compressed archive.
fn cpio_names(archive: &Path) -> Result<Vec<String>> {
    let cpio = Command::new("gzip")
        .arg("-dc")
        .arg(archive)
        .stdin(Stdio::null())
        .output()
        .context("cannot run gzip")?;
    ensure!(
        cpio.status.success(),
        "gzip -dc {} failed: {}",
        archive.display(),
        String::from_utf8_lossy(&cpio.stderr)
    );
    let mut lister = Command::new("cpio")
        .args(["-t", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run cpio (apt-get install cpio)")?;
    let mut input = lister.stdin.take().context("cpio's stdin")?;
    let feeder = std::thread::spawn(move || input.write_all(&cpio.stdout));
    let listed = lister.wait_with_output()?;
    feeder.join().expect("the feeding thread")?;
    ensure!(
        listed.status.success(),
        "cpio -t failed: {}",
        String::from_utf8_lossy(&listed.stderr)
    );
    Ok(String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(|name| {
            name.trim_start_matches("./")
                .trim_start_matches('/')
                .to_owned()
        })
        .collect())
}

#[test]
fn zfs_refuses_a_stage_with_xattrs_before_writing() -> Result<()> {
    require_root();
    let _daemon = ZfsDaemon::acquire();
    let _turn = one_at_a_time();
    let scratch = temp_dir("autogentoo-backends.")?;
    let pool = Pool::new(128);
    let sweep = sweep_keeping_datasets(&pool);
    let cli = BackendCli::new(
        "zfs",
        &pool.mountpoint,
        &scratch.path().join("autogentoo.toml"),
    )?;
    cli.ok(["workdir", "init"]);
    let status = cli.ok(["workdir", "status", "--json"]).json();
    assert_eq!(
        status["capabilities"]["xattrs"], false,
        "this test needs a ZFS that stores no xattrs, as zfs-fuse does (with OpenZFS it would \
         need a pool made with xattr=off), but the capability probe found xattrs: {status:#}"
    );

    let tree = scratch.path().join("tree");
    build_busybox_stage(&tree, true)?;
    let tarball = scratch.path().join("stage3-caps.tar");
    pack(&tree, &tarball, Compression::None)?;
    let listing = archive_listing(&tarball)?;
    ensure!(
        listing.contains("security.capability"),
        "GNU tar stored the file capability:\n{listing}"
    );
    let before = zfs_datasets(&pool.name)?;

    let refused = cli
        .run([
            OsStr::new("stage"),
            OsStr::new("import"),
            tarball.as_os_str(),
            OsStr::new("--name"),
            OsStr::new("capable"),
        ])
        .expect_code(1);
    refused.expect_one_error();
    ensure!(
        refused
            .stderr
            .lines()
            .any(|line| line.contains(CAP_FILE) && line.contains("security.capability")),
        "one line names the entry {CAP_FILE} and the attribute: {}",
        refused.describe()
    );

    assert_eq!(
        zfs_datasets(&pool.name)?,
        before,
        "no dataset or snapshot was made"
    );
    let pending = run_tool(
        Command::new("zfs")
            .args(["list", "-H", "-r", "-o", "name"])
            .arg(format!("{}/pending", pool.name)),
    )?;
    assert_eq!(
        pending.lines().collect::<Vec<_>>(),
        [format!("{}/pending", pool.name)],
        "nothing pending"
    );
    assert_eq!(
        cli.ok(["stage", "list"]).stdout,
        "",
        "`stage list` is empty"
    );
    assert_eq!(cli.names("stage"), Vec::<String>::new());
    sweep.close()
}

#[test]
fn btrfs_refuses_a_workdir_elsewhere() -> Result<()> {
    require_root();
    let workdir = tempfile::Builder::new()
        .prefix("autogentoo-not-btrfs.")
        .tempdir_in("/tmp")?;
    let found = filesystem_of(workdir.path()).context("the filesystem of /tmp")?;
    assert_ne!(
        found, "btrfs",
        "this test needs /tmp on a filesystem other than btrfs"
    );
    let site = temp_dir("autogentoo-backends.")?;
    let cli = BackendCli::new(
        "btrfs",
        workdir.path(),
        &site.path().join("autogentoo.toml"),
    )?;

    let refused = cli.run(["workdir", "init"]).expect_code(1);
    refused.expect_one_error();
    ensure!(
        refused.stderr.contains(&format!("on {found}")),
        "names the filesystem found ({found}): {}",
        refused.describe()
    );
    ensure!(
        refused
            .stderr
            .contains(&workdir.path().display().to_string()),
        "names the workdir: {}",
        refused.describe()
    );
    assert_eq!(
        list_dir(workdir.path()),
        Vec::<PathBuf>::new(),
        "nothing was made"
    );
    Ok(())
}

#[test]
fn zfs_needs_its_dataset() -> Result<()> {
    require_root();
    let _daemon = ZfsDaemon::acquire();
    let workdir = tempfile::Builder::new()
        .prefix("autogentoo-not-zfs.")
        .tempdir_in("/tmp")?;
    assert!(!is_mount_point(workdir.path()), "a plain directory");
    let site = temp_dir("autogentoo-backends.")?;
    let cli = BackendCli::new("zfs", workdir.path(), &site.path().join("autogentoo.toml"))?;

    for command in [["workdir", "init"], ["stage", "list"]] {
        let refused = cli.run(command).expect_code(1);
        refused.expect_one_error();
        for wanted in [
            "zfs create".to_owned(),
            "storage.zfs_dataset".to_owned(),
            workdir.path().display().to_string(),
        ] {
            ensure!(
                refused.stderr.contains(&wanted),
                "says to create a dataset at the workdir or set storage.zfs_dataset ({wanted}): {}",
                refused.describe()
            );
        }
    }
    assert_eq!(
        list_dir(workdir.path()),
        Vec::<PathBuf>::new(),
        "nothing was made"
    );
    Ok(())
}

#[test]
fn zfs_workdir_init_creates_the_named_dataset_in_an_existing_parent() -> Result<()> {
    require_root();
    let _daemon = ZfsDaemon::acquire();
    let _turn = one_at_a_time();
    let pool = Pool::new(128);
    let sweep = sweep_keeping_datasets(&pool);
    let site = temp_dir("autogentoo-backends.")?;
    let config = site.path().join("autogentoo.toml");
    let dataset = format!("{}/autogentoo", pool.name);
    let workdir = pool.dir().join("work");
    fs::write(
        &config,
        format!("[storage]\nbackend = \"zfs\"\nzfs_dataset = \"{dataset}\"\n"),
    )?;
    let cli = BackendCli::with_site_config("zfs", &workdir, &config);
    // Before `workdir init` creates it, other commands say so instead of working on nothing.
    let early = cli.run(["stage", "list"]).expect_code(1);
    early.expect_one_error();
    ensure!(
        early.stderr.contains(&dataset) && early.stderr.contains("autogentoo workdir init"),
        "names the dataset and the command that creates it: {}",
        early.describe()
    );
    cli.ok(["workdir", "init"]);
    let mounted =
        run_tool(Command::new("zfs").args(["get", "-H", "-o", "value", "mountpoint", &dataset]))?;
    assert_eq!(
        Path::new(mounted.trim()),
        workdir,
        "the dataset is mounted at the workdir"
    );
    ensure!(
        is_mount_point(&workdir),
        "{} is a mount point",
        workdir.display()
    );
    let status = cli.ok(["workdir", "status", "--json"]).json();
    assert_eq!(status["backend"], "zfs", "{status:#}");
    assert_eq!(status["top_mode"], 0o700, "{status:#}");
    cli.ok(["workdir", "init"]);

    // A parent that does not exist is not made up: one line, nothing created.
    let orphan = format!("{}/missing/autogentoo", pool.name);
    fs::write(
        &config,
        format!("[storage]\nbackend = \"zfs\"\nzfs_dataset = \"{orphan}\"\n"),
    )?;
    let refused = cli.run(["workdir", "init"]).expect_code(1);
    refused.expect_one_error();
    ensure!(
        refused.stderr.contains(&orphan) && refused.stderr.contains("parent"),
        "names the dataset and its missing parent: {}",
        refused.describe()
    );
    ensure!(
        !zfs_datasets(&pool.name)?
            .iter()
            .any(|d| d.contains("missing")),
        "nothing was created"
    );
    sweep.close()
}
