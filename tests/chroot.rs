//! Chroots as a user works with them: `root mount` sets up proc, sys, dev, run, the caches and
//! the repository image in a root, one `root umount` takes all of it down again, `root run`
//! runs a command in private namespaces that leave nothing behind even under SIGKILL, and a
//! hostile root cannot move a mount or a write onto the host. Everything is checked against
//! the kernel's own records: `/proc/self/mountinfo`, `/sys/block/loop*` and `/proc/PID`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Result;
use autogentoo_tests::{
    build_busybox_tree, is_mount_point, list_dir, loop_devices_on, make_repo_image, mountinfo,
    mounts_below, parse_mountinfo, processes_rooted_in, MountEntry, MountedWorkdir, Spawned,
    FAKE_EBUILDS,
};
use rustix::process::Signal;

/// The root every test works in.
const ROOT: &str = "box";

/// The top-level mounts of the standard plan, relative to the root.
const TARGETS: [&str; 7] = [
    "proc",
    "sys",
    "dev",
    "run",
    "var/cache/distfiles",
    "var/cache/binpkgs",
    "var/db/repos/gentoo",
];

/// How long the kernel may take to tear down a dead namespace and free its loop device.
const SETTLE: Duration = Duration::from_secs(10);

/// The tests run one at a time: a `root run` copies every mount of the host into its
/// namespace, other tests' repository mounts included, and so holds their loop devices for as
/// long as it runs.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A workdir with a busybox stage, the root [`ROOT`] cloned from it, and a repository image.
struct Chroot {
    workdir: MountedWorkdir,
    root: PathBuf,
    image: PathBuf,
}

impl Chroot {
    fn new() -> Result<Self> {
        let workdir = MountedWorkdir::new();
        let tree = workdir.scratch().join("busybox");
        build_busybox_tree(&tree)?;
        workdir.import(&tree, "busybox");
        workdir.ok(["root", "create", ROOT, "--stage", "busybox"]);
        let root = workdir.root_path(ROOT);
        let image = workdir.path().join("repos/gentoo-TEST.sqfs");
        make_repo_image(&workdir.scratch().join("repo"), &image)?;
        Ok(Self {
            workdir,
            root,
            image,
        })
    }

    /// A cache volume's directory (dir backend).
    fn cache(&self, name: &str) -> PathBuf {
        self.workdir.path().join("cache").join(name)
    }

    /// What of this root is left on the host: mounts below it, processes chrooted in it, loop
    /// devices on its repository image.
    fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = mounts_below(&self.root)
            .iter()
            .map(|m| format!("mount {} ({})", m.point.display(), m.fstype))
            .collect();
        left.extend(
            processes_rooted_in(&self.root)
                .iter()
                .map(|p| format!("process {} ({}) chrooted there", p.pid, p.command)),
        );
        left.extend(
            loop_devices_on(&self.image)
                .iter()
                .map(|d| format!("loop device {} on the image", d.display())),
        );
        left
    }

    /// Waits a little for the kernel to finish tearing down, then panics unless nothing of the
    /// root is left.
    #[track_caller]
    fn assert_nothing_left(&self, after: &str) {
        let start = Instant::now();
        let mut left = self.leftovers();
        while !left.is_empty() && start.elapsed() < SETTLE {
            std::thread::sleep(Duration::from_millis(20));
            left = self.leftovers();
        }
        assert!(left.is_empty(), "after {after}, left: {}", left.join("; "));
    }

    /// Waits until `sleep` runs chrooted in the root, started by `run`.
    #[track_caller]
    fn wait_for_sleep(&self, run: &mut Spawned) {
        let start = Instant::now();
        while !processes_rooted_in(&self.root)
            .iter()
            .any(|p| p.command == "sleep")
        {
            assert!(!run.has_exited(), "{}", run.wait(SETTLE).describe());
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "sleep did not start inside {}",
                self.root.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Mount points relative to `dir`, with their filesystem types, sorted (duplicates kept).
fn relative(dir: &Path, mounts: &[MountEntry]) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = mounts
        .iter()
        .map(|m| {
            let point = m.point.strip_prefix(dir).expect("below the directory");
            (point.to_owned(), m.fstype.clone())
        })
        .collect();
    out.sort();
    out
}

/// The mounts in `mounts` whose parent mount is not among them.
fn top_level(mounts: &[MountEntry]) -> Vec<MountEntry> {
    let ids: HashSet<u64> = mounts.iter().map(|m| m.id).collect();
    mounts
        .iter()
        .filter(|m| !ids.contains(&m.parent))
        .cloned()
        .collect()
}

/// The host mount whose filesystem holds `path`: the last one mounted on the longest prefix.
fn mount_holding(path: &Path) -> MountEntry {
    let mut best: Option<MountEntry> = None;
    for mount in mountinfo() {
        if path.starts_with(&mount.point)
            && best
                .as_ref()
                .is_none_or(|b| mount.point.components().count() >= b.point.components().count())
        {
            best = Some(mount);
        }
    }
    best.expect("/ is mounted")
}

/// The topmost host mount exactly on `point`.
fn mount_on(point: &Path) -> MountEntry {
    mountinfo()
        .into_iter()
        .rfind(|m| m.point == point)
        .unwrap_or_else(|| panic!("nothing is mounted on {}", point.display()))
}

/// How a bind mount of `source` shows in mountinfo: its filesystem's directory.
fn bind_root_of(source: &Path) -> PathBuf {
    let holder = mount_holding(source);
    let inner = source.strip_prefix(&holder.point).expect("a prefix");
    holder.fs_root.join(inner)
}

/// The host's mounts outside `root`, sorted: what no mount of the root may change.
fn mounts_outside(root: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = mountinfo()
        .into_iter()
        .filter(|m| !m.point.starts_with(root) || m.point == root)
        .map(|m| (m.point, m.fstype))
        .collect();
    out.sort();
    out
}

/// Panics unless the mounts below `c.root` are exactly the standard plan's, each once: proc,
/// sys and dev with the host's submounts, a tmpfs on run, binds of the caches, the repository
/// image read-only on a loop device of its own.
#[track_caller]
fn assert_standard_mounts(c: &Chroot) {
    let mounts = mounts_below(&c.root);
    let top = top_level(&mounts);
    let cache_fs = mount_holding(&c.cache("distfiles")).fstype;
    let mut expected: Vec<(PathBuf, String)> = vec![
        ("proc".into(), "proc".into()),
        ("sys".into(), mount_on(Path::new("/sys")).fstype),
        ("dev".into(), mount_on(Path::new("/dev")).fstype),
        ("run".into(), "tmpfs".into()),
        ("var/cache/distfiles".into(), cache_fs.clone()),
        ("var/cache/binpkgs".into(), cache_fs),
        ("var/db/repos/gentoo".into(), "squashfs".into()),
    ];
    expected.sort();
    assert_eq!(
        relative(&c.root, &top),
        expected,
        "the top-level mounts below the root"
    );

    // sys and dev come with every submount the host has there, as often as the host has it.
    for tree in ["sys", "dev"] {
        let host = Path::new("/").join(tree);
        let inside = c.root.join(tree);
        let want: Vec<(PathBuf, String)> = relative(&host, &mounts_below(&host));
        let got: Vec<(PathBuf, String)> = relative(
            &inside,
            &mounts
                .iter()
                .filter(|m| m.point.starts_with(&inside) && m.point != inside)
                .cloned()
                .collect::<Vec<_>>(),
        );
        assert_eq!(got, want, "the submounts of {tree} are the host's");
    }
    let sub = mounts.len() - top.len();
    let host_sub = mounts_below(Path::new("/sys")).len() + mounts_below(Path::new("/dev")).len();
    assert_eq!(
        sub, host_sub,
        "no mounts other than the plan's: {mounts:#?}"
    );

    let on = |target: &str| {
        let point = c.root.join(target);
        top.iter()
            .find(|m| m.point == point)
            .cloned()
            .expect("checked above")
    };
    for cache in ["distfiles", "binpkgs"] {
        let mount = on(&format!("var/cache/{cache}"));
        assert_eq!(
            mount.fs_root,
            bind_root_of(&c.cache(cache)),
            "var/cache/{cache} binds the workdir's cache"
        );
        assert!(!mount.is_read_only(), "the {cache} cache is writable");
    }
    let repo = on("var/db/repos/gentoo");
    assert!(repo.is_read_only(), "the repository is read-only: {repo:?}");
    assert!(
        repo.source.starts_with("/dev/loop"),
        "the repository comes from a loop device: {repo:?}"
    );
    assert_eq!(
        loop_devices_on(&c.image),
        [PathBuf::from(&repo.source)],
        "one loop device, on the image"
    );
    assert!(!on("run").is_read_only(), "run is writable");
}

#[test]
fn mount_sets_up_the_plan_and_one_umount_takes_it_down() -> Result<()> {
    let _serial = one_at_a_time();
    let c = Chroot::new()?;
    let wd = &c.workdir;
    assert_eq!(mounts_below(&c.root), [], "nothing mounted before");
    let outside = mounts_outside(&c.root);

    let mounted = wd.ok(["root", "mount", ROOT]);
    assert_eq!(mounted.stdout, "", "quiet: {}", mounted.describe());
    assert_standard_mounts(&c);
    assert_eq!(
        mounts_outside(&c.root),
        outside,
        "nothing mounted elsewhere"
    );
    for (rel, contents) in FAKE_EBUILDS {
        let path = c.root.join("var/db/repos/gentoo").join(rel);
        assert_eq!(
            fs::read_to_string(&path)?,
            *contents,
            "{} shows the image",
            path.display()
        );
    }
    assert!(c.root.join("proc/self/mountinfo").is_file(), "proc works");
    assert!(c.root.join("sys/kernel").is_dir(), "sys works");
    assert_eq!(
        fs::metadata(c.root.join("dev/null"))?.rdev(),
        rustix::fs::makedev(1, 3),
        "dev has the host's nodes"
    );
    fs::write(c.root.join("var/cache/distfiles/probe.tar.gz"), "fetched\n")?;
    assert_eq!(
        fs::read_to_string(c.cache("distfiles").join("probe.tar.gz"))?,
        "fetched\n",
        "a download in the root lands in the shared cache"
    );

    let before = mounts_below(&c.root);
    let again = wd.ok(["root", "mount", ROOT]);
    assert!(
        again.stderr.contains("already mounted"),
        "a second mount says so: {}",
        again.describe()
    );
    assert_eq!(mounts_below(&c.root), before, "a second mount adds nothing");

    // Inside, the command sees the same mounts at the root's own paths; its proc is a new one
    // of its PID namespace, mounted over the host's.
    let inside = wd.ok(["root", "run", ROOT, "--", "cat", "/proc/self/mountinfo"]);
    let seen = parse_mountinfo(&inside.stdout);
    // The command pivoted into the root: "/" is the root itself, every other mount is ours.
    let points: BTreeSet<PathBuf> = seen
        .iter()
        .map(|m| m.point.clone())
        .filter(|p| p != Path::new("/"))
        .collect();
    let seen_top: BTreeSet<PathBuf> = points
        .iter()
        .filter(|p| !p.ancestors().skip(1).any(|a| points.contains(a)))
        .cloned()
        .collect();
    let want_top: BTreeSet<PathBuf> = TARGETS.iter().map(|t| Path::new("/").join(t)).collect();
    assert_eq!(seen_top, want_top, "inside: {}", inside.stdout);
    let host_view: Vec<(PathBuf, String)> = relative(&c.root, &before)
        .into_iter()
        .filter(|(p, _)| p != Path::new("proc"))
        .map(|(p, t)| (Path::new("/").join(p), t))
        .collect();
    let mut inside_view: Vec<(PathBuf, String)> = seen
        .iter()
        .filter(|m| m.point != Path::new("/proc") && m.point != Path::new("/"))
        .map(|m| (m.point.clone(), m.fstype.clone()))
        .collect();
    inside_view.sort();
    assert_eq!(
        inside_view, host_view,
        "inside sees the host's mounts of the root"
    );
    let proc = seen.iter().rfind(|m| m.point == Path::new("/proc"));
    assert_eq!(proc.map(|m| m.fstype.as_str()), Some("proc"), "{seen:#?}");

    let umount = wd.ok(["root", "umount", ROOT]);
    assert_eq!(
        (umount.stdout.as_str(), umount.stderr.as_str()),
        ("", ""),
        "quiet: {}",
        umount.describe()
    );
    assert_eq!(mounts_below(&c.root), [], "one umount takes all");
    c.assert_nothing_left("one umount");
    assert_eq!(
        mounts_outside(&c.root),
        outside,
        "the host's mounts are as before"
    );
    assert_eq!(
        list_dir(&c.root.join("var/db/repos/gentoo")),
        Vec::<PathBuf>::new(),
        "the mount point is empty again"
    );

    let again = wd.ok(["root", "umount", ROOT]);
    assert_eq!(
        (again.stdout.as_str(), again.stderr.as_str()),
        ("", ""),
        "a second umount is quiet: {}",
        again.describe()
    );
    c.workdir.close()
}

#[test]
fn busy_umount_names_the_holder_and_lazy_finishes() -> Result<()> {
    let _serial = one_at_a_time();
    let c = Chroot::new()?;
    let wd = &c.workdir;
    wd.ok(["root", "mount", ROOT]);
    let distfiles = c.root.join("var/cache/distfiles");
    let mut sleep = Command::new("sleep");
    sleep.arg("300").current_dir(&distfiles);
    let mut sleeper = Spawned::start(sleep);
    let pid = sleeper.pid().as_raw_nonzero().get();
    let cwd = PathBuf::from(format!("/proc/{pid}/cwd"));
    autogentoo_tests::wait_until("the sleeper runs", SETTLE, || {
        fs::read_link(&cwd).is_ok_and(|p| p == distfiles)
    });

    let busy = wd.run(["root", "umount", ROOT]).expect_code(1);
    busy.expect_one_error();
    assert!(
        busy.stderr.contains(&format!("PID {pid} ")) && busy.stderr.contains("distfiles"),
        "names the mount and the PID holding it: {}",
        busy.describe()
    );
    assert!(is_mount_point(&distfiles), "the busy mount stays");

    wd.ok(["root", "umount", "--lazy", ROOT]);
    assert_eq!(mounts_below(&c.root), [], "lazy takes all");
    c.assert_nothing_left("a lazy umount");
    assert!(!sleeper.has_exited(), "lazy leaves the holder running");
    sleeper.signal(Signal::KILL);
    sleeper.wait(SETTLE);
    c.workdir.close()
}

#[test]
fn sigkill_of_run_leaves_nothing_behind() -> Result<()> {
    let _serial = one_at_a_time();
    let c = Chroot::new()?;
    let mut run = Spawned::start(
        c.workdir
            .command(["root", "run", ROOT, "--", "sleep", "300"]),
    );
    c.wait_for_sleep(&mut run);
    assert_eq!(
        mounts_below(&c.root),
        [],
        "the run's mounts are private to its namespace"
    );
    assert_eq!(
        loop_devices_on(&c.image).len(),
        1,
        "the run has the repository mounted"
    );

    run.signal(Signal::KILL);
    let killed = run.wait(SETTLE);
    assert_eq!(killed.status.signal(), Some(9), "{}", killed.describe());
    c.assert_nothing_left("SIGKILL of `root run`");
    c.workdir.close()
}

#[test]
fn run_passes_exit_codes_and_a_clean_environment() -> Result<()> {
    let _serial = one_at_a_time();
    let c = Chroot::new()?;
    let wd = &c.workdir;
    let run = |script: &str| wd.run(["root", "run", ROOT, "--", "sh", "-c", script]);
    run("exit 7").expect_code(7);
    run("exit 0").expect_code(0);
    run("kill -KILL $$").expect_code(128 + 9);
    run("kill -TERM $$").expect_code(128 + 15);

    let init = wd.ok(["root", "run", ROOT, "--", "cat", "/proc/1/cmdline"]);
    assert!(
        init.stdout.contains("internal-init"),
        "PID 1 of the command's namespace is autogentoo's init: {}",
        init.describe()
    );

    let output = wd
        .command(["root", "run", ROOT, "--", "env"])
        .env("AUTOGENTOO_TEST_LEAK", "1")
        .output()?;
    assert!(output.status.success(), "{output:?}");
    let env: BTreeMap<String, String> = String::from_utf8(output.stdout)?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(
        env.get("PATH")
            .is_some_and(|p| p.split(':').any(|d| d == "/bin")),
        "PATH: {env:?}"
    );
    assert_eq!(
        env.get("HOME").map(String::as_str),
        Some("/root"),
        "{env:?}"
    );
    assert!(
        env.get("MAKEOPTS").is_some_and(|m| m.starts_with("-j")),
        "MAKEOPTS: {env:?}"
    );
    assert!(!env.contains_key("AUTOGENTOO_TEST_LEAK"), "leaked: {env:?}");
    let allowed = ["PATH", "HOME", "USER", "TERM", "MAKEOPTS"];
    let foreign: Vec<&String> = env
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    assert!(foreign.is_empty(), "host variables inside: {foreign:?}");

    c.assert_nothing_left("commands ran");
    c.workdir.close()
}

/// Replaces the directory `rel` of the root by a symlink to `target`.
fn replace_with_symlink(root: &Path, rel: &str, target: &Path) -> Result<()> {
    let path = root.join(rel);
    fs::remove_dir(&path)?;
    symlink(target, &path)?;
    Ok(())
}

/// Panics unless the host directory `host` is untouched, while the mount meant for it
/// (`cache`'s bind) landed at the same path inside the root.
#[track_caller]
fn assert_bind_stayed_inside(c: &Chroot, host: &Path, cache: &str) {
    assert!(
        !is_mount_point(host),
        "{} is not a mount point",
        host.display()
    );
    assert_eq!(
        list_dir(host),
        Vec::<PathBuf>::new(),
        "{} is empty",
        host.display()
    );
    let landed = c.root.join(host.strip_prefix("/").expect("absolute"));
    let mount = mount_on(&landed);
    assert_eq!(
        mount.fs_root,
        bind_root_of(&c.cache(cache)),
        "the {cache} cache is bound at {} instead",
        landed.display()
    );
}

/// A root whose cache directory `cache` (`distfiles`, `binpkgs`) is a symlink made by `link`
/// from the host directory it points at: mounting binds the shared cache inside the root, what
/// is written there through the link (`written`) lands in the cache, and the host directory
/// stays empty and unmounted.
fn hostile_cache_link_stays_inside(
    cache: &str,
    link: impl Fn(&Path) -> Result<PathBuf>,
    written: &str,
) -> Result<()> {
    let _serial = one_at_a_time();
    let c = Chroot::new()?;
    let wd = &c.workdir;
    let host = wd.scratch().join(format!("host-{cache}"));
    fs::create_dir(&host)?;
    replace_with_symlink(&c.root, &format!("var/cache/{cache}"), &link(&host)?)?;
    assert_eq!(
        fs::canonicalize(c.root.join("var/cache").join(cache))?,
        host,
        "on the host, the link leads to the host dir"
    );
    let outside = mounts_outside(&c.root);

    wd.ok(["root", "mount", ROOT]);
    assert_bind_stayed_inside(&c, &host, cache);
    assert_eq!(mounts_outside(&c.root), outside, "nothing mounted outside");
    // Inside, the symlink leads to the cache: what emerge writes there is shared, not the host's.
    let inside = format!("/var/cache/{cache}/{written}");
    wd.ok(["root", "run", ROOT, "--", "touch", &inside]);
    assert!(c.cache(cache).join(written).is_file());
    assert_eq!(
        list_dir(&host),
        Vec::<PathBuf>::new(),
        "the host dir stays empty"
    );

    wd.ok(["root", "umount", ROOT]);
    assert!(!is_mount_point(&host));
    c.assert_nothing_left("umount of a hostile root");
    c.workdir.close()
}

#[test]
fn hostile_distfiles_symlink_to_a_host_dir_stays_inside() -> Result<()> {
    hostile_cache_link_stays_inside("distfiles", |host| Ok(host.to_owned()), "fetched")
}

#[test]
fn hostile_binpkgs_climbing_with_dotdot_stays_inside() -> Result<()> {
    hostile_cache_link_stays_inside(
        "binpkgs",
        |host| Ok(Path::new(&"../".repeat(9)).join(host.strip_prefix("/")?)),
        "built.gpkg.tar",
    )
}

/// Panics unless the root's `etc/resolv.conf`, reached through `dir` (its `etc` as the host
/// sees it), is a regular file with the host's resolv.conf in it, and no temporary is left.
#[track_caller]
fn assert_resolv_conf_copied(dir: &Path) {
    let copied = dir.join("resolv.conf");
    let meta = fs::symlink_metadata(&copied).expect("etc/resolv.conf exists");
    assert!(meta.is_file(), "{} is a regular file now", copied.display());
    if let Ok(host) = fs::read("/etc/resolv.conf") {
        assert_eq!(fs::read(&copied).unwrap(), host, "the host's resolv.conf");
    }
    let temporaries: Vec<PathBuf> = list_dir(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".resolv.conf."))
        .collect();
    assert_eq!(temporaries, Vec::<PathBuf>::new(), "no temporary left");
}

#[test]
fn hostile_resolv_conf_symlink_is_replaced_not_followed() -> Result<()> {
    let _serial = one_at_a_time();
    let c = Chroot::new()?;
    let wd = &c.workdir;
    let host_file = wd.scratch().join("host-resolv.conf");
    let original = "nameserver 192.0.2.53 # a host file no root may write\n";
    fs::write(&host_file, original)?;
    let before = fs::metadata(&host_file)?;
    symlink(&host_file, c.root.join("etc/resolv.conf"))?;

    wd.ok(["root", "mount", ROOT]);
    assert_eq!(fs::read_to_string(&host_file)?, original, "the host file");
    let after = fs::metadata(&host_file)?;
    assert_eq!(
        (
            after.ino(),
            after.mtime(),
            after.mtime_nsec(),
            after.nlink()
        ),
        (
            before.ino(),
            before.mtime(),
            before.mtime_nsec(),
            before.nlink()
        ),
        "the host file is untouched"
    );
    assert_resolv_conf_copied(&c.root.join("etc"));

    wd.ok(["root", "umount", ROOT]);
    c.assert_nothing_left("umount");
    c.workdir.close()
}

#[test]
fn hostile_etc_symlink_to_a_host_dir_keeps_resolv_conf_inside() -> Result<()> {
    let _serial = one_at_a_time();
    let c = Chroot::new()?;
    let wd = &c.workdir;
    let host_etc = wd.scratch().join("host-etc");
    fs::create_dir(&host_etc)?;
    fs::rename(c.root.join("etc"), c.root.join("etc.real"))?;
    symlink(&host_etc, c.root.join("etc"))?;

    wd.ok(["root", "mount", ROOT]);
    assert_eq!(
        list_dir(&host_etc),
        Vec::<PathBuf>::new(),
        "nothing on the host"
    );
    assert_resolv_conf_copied(&c.root.join(host_etc.strip_prefix("/")?));

    wd.ok(["root", "umount", ROOT]);
    c.assert_nothing_left("umount");
    c.workdir.close()
}

#[test]
fn config_with_a_mount_target_outside_the_root_is_refused() -> Result<()> {
    let _serial = one_at_a_time();
    let c = Chroot::new()?;
    let wd = &c.workdir;
    let outside = mounts_outside(&c.root);
    for (line, key) in [
        ("distfiles = \"../../etc\"", "mounts.distfiles"),
        ("repo = \"var/../../../etc\"", "mounts.repo"),
        ("binpkgs = \"/etc\"", "mounts.binpkgs"),
    ] {
        let config = wd.scratch().join("autogentoo.toml");
        fs::write(&config, format!("[mounts]\n{line}\n"))?;
        let config = config.to_str().expect("a UTF-8 path");
        for command in [
            vec!["--config", config, "root", "mount", ROOT],
            vec!["--config", config, "root", "run", ROOT, "--", "true"],
        ] {
            let refused = wd.run(&command).expect_code(1);
            let lines: Vec<&str> = refused.stderr.lines().collect();
            assert!(
                lines.len() == 1
                    && lines[0].starts_with("error: ")
                    && lines[0].contains(key)
                    && lines[0].contains(config),
                "one line naming the file and {key}: {}",
                refused.describe()
            );
            assert_eq!(mounts_below(&c.root), [], "nothing mounted");
            assert_eq!(mounts_outside(&c.root), outside, "nothing mounted anywhere");
        }
    }
    wd.ok(["root", "umount", ROOT]);
    c.assert_nothing_left("refused mounts");
    c.workdir.close()
}

#[test]
fn mounted_root_refuses_remove_and_rollback() -> Result<()> {
    let _serial = one_at_a_time();
    let c = Chroot::new()?;
    let wd = &c.workdir;
    wd.ok(["root", "snapshot", ROOT, "before"]);
    let marker = c.root.join("etc/marker");
    fs::write(&marker, "made after the snapshot\n")?;
    wd.ok(["root", "mount", ROOT]);
    let mounted = mounts_below(&c.root);

    for command in [
        vec!["root", "remove", ROOT],
        vec!["root", "remove", "--recursive", ROOT],
        vec!["root", "rollback", ROOT, "before"],
    ] {
        let refused = wd.run(&command).expect_code(1);
        refused.expect_one_error();
        assert!(
            refused.stderr.contains("mounted")
                && refused.stderr.contains(&format!("root umount {ROOT}")),
            "says it is mounted and how to unmount: {}",
            refused.describe()
        );
        assert!(marker.is_file(), "the root is intact");
        assert_eq!(wd.root_names(), [ROOT], "still listed");
        assert_eq!(
            mounts_below(&c.root),
            mounted,
            "the mounts are as they were"
        );
    }

    wd.ok(["root", "umount", ROOT]);
    wd.ok(["root", "rollback", ROOT, "before"]);
    assert!(!marker.exists(), "unmounted, it rolls back");
    wd.ok(["root", "remove", ROOT]);
    assert_eq!(wd.root_names(), Vec::<String>::new(), "and is removed");
    c.assert_nothing_left("remove");
    c.workdir.close()
}

#[test]
fn running_root_refuses_remove_naming_the_pid() -> Result<()> {
    let _serial = one_at_a_time();
    let c = Chroot::new()?;
    let wd = &c.workdir;
    wd.ok(["root", "snapshot", ROOT, "before"]);
    let marker = c.root.join("etc/marker");
    fs::write(&marker, "made after the snapshot\n")?;
    let mut run = Spawned::start(wd.command(["root", "run", ROOT, "--", "sleep", "300"]));
    c.wait_for_sleep(&mut run);
    let pid = run.pid().as_raw_nonzero().get();

    for command in [
        vec!["root", "remove", ROOT],
        vec!["root", "rollback", ROOT, "before"],
    ] {
        let refused = wd.run(&command).expect_code(1);
        refused.expect_one_error();
        assert!(
            refused.stderr.contains(&format!("in use by PID {pid} ")),
            "names the running autogentoo, PID {pid}: {}",
            refused.describe()
        );
        assert!(marker.is_file(), "the root is intact");
        assert_eq!(wd.root_names(), [ROOT], "still listed");
    }
    assert!(!run.has_exited(), "the command runs on");

    run.signal(Signal::KILL);
    run.wait(SETTLE);
    c.assert_nothing_left("the run ended");
    wd.ok(["root", "remove", ROOT]);
    assert_eq!(wd.root_names(), Vec::<String>::new());
    c.workdir.close()
}

#[test]
fn concurrent_mounts_mount_everything_once() -> Result<()> {
    let _serial = one_at_a_time();
    let c = Chroot::new()?;
    let wd = &c.workdir;
    let mut first = Spawned::start(wd.command(["root", "mount", ROOT]));
    let mut second = Spawned::start(wd.command(["root", "mount", ROOT]));
    let runs = [
        first.wait(Duration::from_secs(60)),
        second.wait(Duration::from_secs(60)),
    ];
    for run in &runs {
        assert!(run.status.success(), "{}", run.describe());
    }
    let already = runs
        .iter()
        .filter(|r| r.stderr.contains("already mounted"))
        .count();
    assert_eq!(
        already,
        1,
        "the one that waited found it mounted: {}\n{}",
        runs[0].describe(),
        runs[1].describe()
    );
    for target in TARGETS {
        let point = c.root.join(target);
        let count = mountinfo().iter().filter(|m| m.point == point).count();
        assert_eq!(count, 1, "{target} is mounted once");
    }
    assert_standard_mounts(&c);

    wd.ok(["root", "umount", ROOT]);
    c.assert_nothing_left("umount");
    c.workdir.close()
}

/// Host paths a test may cause to be made outside its workdir; removed, by their exact paths,
/// when the test ends however it ends (after the workdir's mounts: declare it before them).
struct HostLitter {
    paths: Vec<PathBuf>,
}

impl Drop for HostLitter {
    fn drop(&mut self) {
        for path in &self.paths {
            if is_mount_point(path) {
                eprintln!("{} is a mount point; left as it is", path.display());
            } else if fs::symlink_metadata(path).is_ok() {
                eprintln!("removing {} from the host", path.display());
                let _ = fs::remove_dir_all(path);
            }
        }
    }
}

#[test]
fn hostile_links_through_the_dev_bind_write_nothing_on_the_host() -> Result<()> {
    let _serial = one_at_a_time();
    // Declared first, so it goes last: only once the root's mounts are gone can its
    // directories be removed.
    let mut litter = HostLitter { paths: Vec::new() };
    let c = Chroot::new()?;
    let wd = &c.workdir;
    // Inside the root, /dev/shm is the host's /dev/shm (bound with /dev): a link into it must
    // not let `root mount` create directories or write files on the host.
    let shm = Path::new("/dev/shm");
    assert!(shm.is_dir(), "the host has /dev/shm");
    let unique = wd
        .top()
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a UTF-8 temp dir")
        .to_owned();
    let host_dir = shm.join(format!("{unique}-binpkgs"));
    let host_etc = shm.join(format!("{unique}-etc"));
    litter.paths = vec![host_dir.clone(), host_etc.clone()];
    replace_with_symlink(&c.root, "var/cache/binpkgs", &host_dir)?;
    fs::rename(c.root.join("etc"), c.root.join("etc.real"))?;
    symlink(&host_etc, c.root.join("etc"))?;
    let outside = mounts_outside(&c.root);

    let mount = wd.run(["root", "mount", ROOT]);
    if !mount.status.success() {
        mount.expect_one_error();
    }
    let made: Vec<PathBuf> = list_dir(shm)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(&unique))
        .collect();
    assert_eq!(
        made,
        Vec::<PathBuf>::new(),
        "`root mount` made these on the host through the root's /dev: {}",
        mount.describe()
    );
    assert_eq!(mounts_outside(&c.root), outside, "nothing mounted outside");

    wd.ok(["root", "umount", ROOT]);
    c.assert_nothing_left("umount of a hostile root");
    c.workdir.close()
}

#[test]
fn failed_mount_leaves_nothing_mounted() -> Result<()> {
    let _serial = one_at_a_time();
    let c = Chroot::new()?;
    let wd = &c.workdir;
    let outside = mounts_outside(&c.root);

    // A repository image that is not SquashFS: the mounts made before it are undone, and its
    // loop device is let go.
    let bad = wd.path().join("repos/gentoo-ZZZ.sqfs");
    fs::write(&bad, autogentoo_tests::noise(256 * 1024, 7))?;
    let image = c.image.clone();
    for command in [
        vec!["root", "mount", ROOT],
        vec!["root", "run", ROOT, "--", "true"],
    ] {
        let failed = wd.run(&command).expect_code(1);
        failed.expect_one_error();
        assert!(
            failed.stderr.contains("gentoo-ZZZ.sqfs"),
            "names the image: {}",
            failed.describe()
        );
        assert_eq!(mounts_below(&c.root), [], "nothing left mounted");
        assert_eq!(mounts_outside(&c.root), outside);
        assert_eq!(
            loop_devices_on(&bad),
            Vec::<PathBuf>::new(),
            "no loop device"
        );
    }
    fs::remove_file(&bad)?;

    // A mount target that is a file in the root.
    replace_with_symlink(&c.root, "var/cache/distfiles", Path::new("/etc/passwd"))?;
    let failed = wd.run(["root", "mount", ROOT]).expect_code(1);
    failed.expect_one_error();
    assert!(
        failed.stderr.contains("distfiles"),
        "names the mount point: {}",
        failed.describe()
    );
    assert_eq!(mounts_below(&c.root), [], "nothing left mounted");
    assert_eq!(loop_devices_on(&image), Vec::<PathBuf>::new());
    assert_eq!(
        fs::read_to_string(c.root.join("etc/passwd"))?,
        "root:x:0:0:root:/root:/bin/sh\n",
        "the file is untouched"
    );
    c.assert_nothing_left("failed mounts");
    c.workdir.close()
}

#[test]
fn umount_frees_the_loop_device_while_another_root_runs() -> Result<()> {
    let _serial = one_at_a_time();
    let busy = Chroot::new()?;
    let c = Chroot::new()?;
    c.workdir.ok(["root", "mount", ROOT]);
    // A command in another root, started while this one is mounted: its namespace starts as a
    // copy of the host's, this root's mounts included.
    let mut run = Spawned::start(
        busy.workdir
            .command(["root", "run", ROOT, "--", "sleep", "300"]),
    );
    busy.wait_for_sleep(&mut run);

    c.workdir.ok(["root", "umount", ROOT]);
    assert_eq!(mounts_below(&c.root), [], "nothing mounted on the host");
    c.assert_nothing_left("umount, while another root runs a command");

    run.signal(Signal::KILL);
    run.wait(SETTLE);
    busy.assert_nothing_left("the other root's command was killed");
    c.workdir.close()?;
    busy.workdir.close()
}
