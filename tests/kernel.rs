//! Kernels really built and really booted. The standard pipeline (`build SYSTEM`) builds the
//! example site's system as `cargo xtask demo` does: emerge in a root of the Portage stand-in
//! stage, a slim image of the Portage-built packages over a busybox base, and a small x86_64
//! kernel built on the host around it; the EFI image boots in QEMU/OVMF to the marker that the
//! Portage-built `greet` prints from /init; a second build skips every step; a change to one overlay file
//! repacks and relinks without recompiling anything outside usr/; a kernel config without ACPI
//! fails at olddefconfig naming CONFIG_EFI and ACPI; and a Debian root given its own toolchain
//! (by apt, inside it) builds its kernel itself, that image boots too, and then nothing is left
//! for the pipeline to do.
//!
//! The whole file shares one workdir, target/test-kernel-workdir, made afresh by each run of
//! this test binary under a lock file and left there to look at afterwards: one kernel import,
//! one full host build. Kernel builds and boots take both cores, so they run one at a time; the
//! tests on the `demo` system change its files, so they run one at a time too.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Context as _, Result};
use autogentoo_tests::{
    binary, build_busybox_tree, example_repo, gnu_tar, kernel_source, mounts_below, newc,
    portage_stage, processes_rooted_in, require_root, run_tool, sweep_below, wait_until,
    BackendCli, Run, Spawned, SweepGuard,
};

/// What the demo system's /init has `greet` print first, as in `cargo xtask demo`.
const MARKER: &str = "autogentoo-demo: init reached";
/// What the Debian system's /init prints, followed by the contents of its /etc/debian_version.
const DEBIAN_MARKER: &str = "autogentoo-debian: init reached on Debian";

/// The kernel volume: Debian's Linux 6.1 sources.
const KERNEL: &str = "linux-6.1";
/// The example site's system, built on the host.
const DEMO: &str = "demo";
/// The demo system with a kernel config that lacks CONFIG_ACPI.
const NO_ACPI: &str = "noacpi";
/// A Debian root that builds its own kernel.
const DEBIAN: &str = "debian";

/// The overlay of the demo system with its /init, from the example site.
const INIT_OVERLAY: &str = "boot/greet";
/// The stage of the demo system's build root: the Portage stand-in.
const PORTAGE: &str = "portage";
/// The overlay of the demo system holding the `etc/motd` its /init shows.
const MOTD_OVERLAY: &str = "secret-sauce/hello";
/// The overlay of the Debian system: its /init and a static busybox to power off with.
const DEBIAN_OVERLAY: &str = "boot/debian";

/// What building the kernel takes, installed into the Debian root.
const DEBIAN_TOOLCHAIN: &[&str] = &[
    "make",
    "gcc",
    "libc6-dev",
    "bc",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
];
const DEBIAN_MIRROR: &str = "http://deb.debian.org/debian";

/// Seconds a boot may take; under TCG an image with a Debian root needs a while to unpack.
const BOOT_TIMEOUT: &str = "600";

/// Directories whose contents stay out of the images: the default list, and what a Debian root
/// with a toolchain boots without (documentation, translations, headers, the compiler's own
/// programs and apt's caches), which keeps its initramfs small.
const EXCLUDE: &[&str] = &[
    "var/cache/distfiles",
    "var/cache/binpkgs",
    "var/db/repos",
    "usr/src",
    "var/tmp",
    "tmp",
    "proc",
    "sys",
    "dev",
    "run",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/i18n",
    "usr/share/zoneinfo",
    "usr/share/perl",
    "usr/include",
    "usr/lib/gcc",
    "usr/libexec/gcc",
    "var/lib/apt",
    "var/cache/apt",
    "var/cache/debconf",
    "var/lib/dpkg",
    "var/log",
];

/// The workspace's target directory, where the shared workdir and the caches live.
fn target_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    fs::create_dir_all(&dir).expect("the target directory");
    fs::canonicalize(&dir).expect("the target directory resolves")
}

/// Kernel builds and boots each keep both cores busy: one at a time.
fn heavy_work() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The tests on the `demo` system change its overlay, outputs and build directory.
fn demo_system() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A value made once per process and shared by the tests; if making it fails, each test that
/// needs it fails with the first failure's message instead of trying again.
fn shared<T>(
    cell: &'static OnceLock<Result<T, String>>,
    what: &str,
    make: impl FnOnce() -> T,
) -> &'static T {
    let made = cell.get_or_init(|| {
        std::panic::catch_unwind(AssertUnwindSafe(make)).map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(no message)".to_owned())
        })
    });
    match made {
        Ok(value) => value,
        Err(message) => panic!("{what} failed: {message}"),
    }
}

/// The shared workdir with the test site, the demo stage and the kernel sources imported.
struct Site {
    /// target/test-kernel-workdir: the workdir, the site and scratch files.
    top: PathBuf,
    workdir: PathBuf,
    site: PathBuf,
    cli: BackendCli,
    /// Held for the life of the process: another run of these tests waits for it.
    _lock: fs::File,
}

impl Site {
    fn out(&self, name: &str) -> PathBuf {
        self.workdir.join("out").join(name)
    }

    fn kbuild(&self, system: &str) -> PathBuf {
        self.workdir.join("kbuild").join(system)
    }

    fn image(&self, system: &str) -> PathBuf {
        self.out(system).join(format!("{system}.efi"))
    }

    /// The packed initramfs of a root (gzip, as the site config says).
    fn initramfs(&self, root: &str) -> PathBuf {
        self.out(root).join("initramfs.cpio.gz")
    }

    fn motd(&self) -> PathBuf {
        self.site
            .join("overlays")
            .join(MOTD_OVERLAY)
            .join("etc/motd")
    }
}

fn site() -> &'static Site {
    static SITE: OnceLock<Result<Site, String>> = OnceLock::new();
    shared(&SITE, "setting up the shared kernel workdir", || {
        make_site().unwrap_or_else(|e| panic!("{e:#}"))
    })
}

fn make_site() -> Result<Site> {
    require_root();
    let target = target_dir();
    let lock = fs::File::create(target.join("test-kernel-workdir.lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .context("lock the shared kernel workdir")?;
    let top = target.join("test-kernel-workdir");
    remove_tree(&top)?;
    fs::create_dir(&top)?;
    let site = top.join("site");
    write_site(&site)?;
    let workdir = top.join("work");
    let cli = BackendCli::with_site_config("dir", &workdir, &site.join("autogentoo.toml"));
    cli.ok(["workdir", "init"]);
    let stage = top.join("demo-stage");
    build_demo_stage(&stage)?;
    cli.ok([
        OsStr::new("stage"),
        OsStr::new("import"),
        stage.as_os_str(),
        OsStr::new("--name"),
        OsStr::new(DEMO),
    ]);
    cli.ok([
        OsStr::new("stage"),
        OsStr::new("import"),
        portage_stage().as_os_str(),
        OsStr::new("--name"),
        OsStr::new(PORTAGE),
    ]);
    let (repo, distfiles) = example_repo();
    cli.ok([
        OsStr::new("repo"),
        OsStr::new("pack"),
        OsStr::new("--dir"),
        repo.as_os_str(),
        OsStr::new("--name"),
        OsStr::new("example"),
    ]);
    run_tool(Command::new(distfiles).arg(workdir.join("cache/distfiles")))?;
    let started = Instant::now();
    cli.ok([
        OsStr::new("kernel"),
        OsStr::new("import"),
        kernel_source().as_os_str(),
        OsStr::new("--name"),
        OsStr::new(KERNEL),
    ]);
    eprintln!(
        "timing: kernel import (a copy of the source tree): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(Site {
        top,
        workdir,
        site,
        cli,
        _lock: lock,
    })
}

/// Removes a tree a previous run left, after undoing whatever is still mounted in it.
fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let left = sweep_below(dir, &|_| false);
    if !left.is_empty() {
        eprintln!("cleaned up after a previous run: {}", left.join("; "));
    }
    let mounted = mounts_below(dir);
    ensure!(
        mounted.is_empty(),
        "{} still has mounts below it ({}): not removing it",
        dir.display(),
        mounted
            .iter()
            .map(|m| m.point.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))
}

/// The test site: the example site's common/, overlays/ and kernel/, a kernel config without
/// ACPI, a `motd` in an overlay, the Debian system's overlay, and a site config with three
/// systems.
fn write_site(site: &Path) -> Result<()> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    fs::create_dir_all(site)?;
    for dir in ["common", "overlays", "kernel"] {
        run_tool(
            Command::new("cp")
                .arg("-a")
                .arg(example.join(dir))
                .arg(site),
        )?;
    }
    let kconfig = fs::read_to_string(site.join("kernel/qemu-x86_64.kconfig"))?;
    let no_acpi: String = kconfig
        .lines()
        .filter(|line| line.trim() != "CONFIG_ACPI=y")
        .map(|line| format!("{line}\n"))
        .collect();
    ensure!(
        no_acpi.len() < kconfig.len() && no_acpi.contains("CONFIG_EFI=y\n"),
        "the example kernel config sets CONFIG_ACPI=y and CONFIG_EFI=y"
    );
    fs::write(site.join("kernel/no-acpi.kconfig"), no_acpi)?;

    let motd = site.join("overlays").join(MOTD_OVERLAY).join("etc/motd");
    fs::create_dir_all(motd.parent().expect("a directory"))?;
    fs::write(&motd, "motd from the overlay, first build\n")?;

    let debian = site.join("overlays").join(DEBIAN_OVERLAY);
    fs::create_dir_all(debian.join("usr/local/bin"))?;
    fs::copy("/bin/busybox", debian.join("usr/local/bin/busybox"))
        .context("copy /bin/busybox (apt-get install busybox-static)")?;
    fs::write(
        debian.join("init"),
        format!(
            "#!/bin/sh\n# The Debian root's early userspace: say where we are, then power off.\n\
             echo \"{DEBIAN_MARKER} $(cat /etc/debian_version)\"\n\
             exec /usr/local/bin/busybox poweroff -f\n"
        ),
    )?;
    fs::set_permissions(debian.join("init"), fs::Permissions::from_mode(0o755))?;

    let exclude = EXCLUDE
        .iter()
        .map(|dir| format!("    \"{dir}\",\n"))
        .collect::<String>();
    let config = format!(
        r#"# The site of tests/kernel.rs: the example site's files and `demo` system, the same system
# with a kernel config lacking ACPI, and a Debian root that builds its kernel itself.

[storage]
backend = "dir"

[mounts]
repo = "var/db/repos/example"

[build.env]
DEBIAN_FRONTEND = "noninteractive"
FEATURES = "buildpkg binpkg-multi-instance -news"
EMERGE_DEFAULT_OPTS = "--usepkg --binpkg-respect-use=y --quiet-build=y"

[pack]
compression = "gzip"
exclude = [
{exclude}]
rdinit = "/init"

[systems.{DEMO}]
stage = "{PORTAGE}"
overlays = ["hardware/qemu-x86_64", "{MOTD_OVERLAY}", "{INIT_OVERLAY}"]
kernel_config = "kernel/qemu-x86_64.kconfig"
kernel = "{KERNEL}"
cmdline = "console=ttyS0 rdinit=/init"
commands = ["emerge --update --newuse app-misc/greet app-misc/hello"]
kernel_build = "host"

[systems.{DEMO}.image]
packages = ["app-misc/greet", "app-misc/hello"]
base = "{DEMO}"

[systems.{NO_ACPI}]
stage = "{DEMO}"
root = "{DEMO}"
kernel_config = "kernel/no-acpi.kconfig"
kernel = "{KERNEL}"
cmdline = "console=ttyS0 rdinit=/init"
kernel_build = "host"

[systems.{DEBIAN}]
stage = "{DEBIAN}"
overlays = ["{DEBIAN_OVERLAY}"]
kernel_config = "kernel/qemu-x86_64.kconfig"
kernel = "{KERNEL}"
cmdline = "console=ttyS0 rdinit=/init"
kernel_build = "root"
"#
    );
    fs::write(site.join("autogentoo.toml"), config)?;
    Ok(())
}

/// The base of the demo system's image, as `cargo xtask demo` makes it: busybox; its own /init,
/// which prints [`MARKER`] too, is replaced by the boot/greet overlay's.
fn build_demo_stage(tree: &Path) -> Result<()> {
    build_busybox_tree(tree)?;
    symlink("busybox", tree.join("bin/poweroff"))?;
    let init = tree.join("init");
    fs::write(
        &init,
        format!(
            "#!/bin/sh\n# The demo system's early userspace: say we got here, then power off.\n\
             mount -t proc proc /proc\nmount -t sysfs sys /sys\necho \"{MARKER}\"\n\
             cat /etc/motd 2>/dev/null\npoweroff -f\n"
        ),
    )?;
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The first `build demo` of this run, from scratch.
struct FirstBuild {
    run: Run,
    seconds: f64,
}

fn first_build() -> &'static FirstBuild {
    static BUILD: OnceLock<Result<FirstBuild, String>> = OnceLock::new();
    shared(&BUILD, "the first `build demo`", || {
        let site = site();
        let _heavy = heavy_work();
        let started = Instant::now();
        let run = site.cli.run(["build", DEMO]);
        let seconds = started.elapsed().as_secs_f64();
        assert!(run.status.success(), "{}", run.describe());
        eprintln!("timing: first build of {DEMO} (from scratch, on the host): {seconds:.0} s");
        FirstBuild { run, seconds }
    })
}

/// The `run|skip STEP …` lines of `build` (on stderr; with --pretend on stdout), as (verb, step).
fn steps(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let verb = words.next().filter(|w| *w == "run" || *w == "skip")?;
            Some((verb.to_owned(), words.next()?.to_owned()))
        })
        .collect()
}

/// Starts `build SYSTEM`, waits for it to announce its kernel step, lets make work for a while,
/// and kills it with SIGKILL.
fn kill_build_in_its_kernel_step(site: &Site, system: &str) {
    let mut command = Command::new(binary());
    command
        .args(["--backend", "dir", "--workdir"])
        .arg(&site.workdir)
        .arg("--config")
        .arg(site.site.join("autogentoo.toml"))
        .args(["build", system]);
    let mut build = Spawned::start(command);
    let announced = BufReader::new(build.take_stderr())
        .lines()
        .map_while(Result::ok)
        .any(|line| line.starts_with("run  kernel "));
    assert!(announced, "build {system} reached its kernel step");
    std::thread::sleep(Duration::from_secs(20));
    assert!(!build.has_exited(), "make was still running after 20 s");
    build.signal(rustix::process::Signal::KILL);
    build.wait(Duration::from_secs(30));
}

/// What `build` did with `step`: `run` or `skip`.
#[track_caller]
fn verb_of(run: &Run, step: &str) -> String {
    steps(&run.stderr)
        .into_iter()
        .find(|(_, s)| s == step)
        .map(|(verb, _)| verb)
        .unwrap_or_else(|| panic!("no line for step {step}: {}", run.describe()))
}

/// `kernel boot IMAGE --expect TEXT`, alone on the machine; returns the run and its seconds.
fn boot(site: &Site, image: &Path, expect: &str, memory_mb: u32) -> (Run, f64) {
    let _heavy = heavy_work();
    let started = Instant::now();
    let memory = memory_mb.to_string();
    let run = site.cli.run([
        OsStr::new("kernel"),
        OsStr::new("boot"),
        image.as_os_str(),
        OsStr::new("--expect"),
        OsStr::new(expect),
        OsStr::new("--timeout"),
        OsStr::new(BOOT_TIMEOUT),
        OsStr::new("--memory"),
        OsStr::new(&memory),
    ]);
    (run, started.elapsed().as_secs_f64())
}

/// The console transcript `kernel boot` keeps beside the image.
fn boot_log(image: &Path) -> String {
    let mut log = image.as_os_str().to_owned();
    log.push(".boot.log");
    fs::read_to_string(&log).unwrap_or_default()
}

/// `sha256sum FILE`, the hash alone.
fn sha256sum(file: &Path) -> String {
    let out = run_tool(Command::new("sha256sum").arg(file)).expect("sha256sum");
    out.split_whitespace()
        .next()
        .expect("sha256sum prints a hash")
        .to_owned()
}

fn modified(path: &Path) -> SystemTime {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The names in a gzip-compressed newc archive, read back by gzip and the tests' own parser.
fn archive_names(archive: &Path) -> Vec<String> {
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(archive)
        .stdin(Stdio::null())
        .output()
        .expect("run gzip");
    assert!(out.status.success(), "gzip -dc {}", archive.display());
    newc::parse(&out.stdout)
        .unwrap_or_else(|e| panic!("{} is not a newc archive: {e:#}", archive.display()))
        .into_iter()
        .map(|entry| String::from_utf8_lossy(&entry.name).into_owned())
        .collect()
}

/// The modification times of the object files (`*.o`) below a build directory.
fn object_mtimes(dir: &Path) -> BTreeMap<PathBuf, SystemTime> {
    let mut found = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for entry in fs::read_dir(dir.join(&rel)).expect("read the build directory") {
            let entry = entry.expect("a directory entry");
            let path = rel.join(entry.file_name());
            let meta = entry.metadata().expect("inspect a build file");
            if meta.is_dir() {
                todo.push(path);
            } else if path.extension() == Some(OsStr::new("o")) {
                found.insert(path, meta.modified().expect("an mtime"));
            }
        }
    }
    found
}

/// Objects kbuild makes again on every link of vmlinux, whatever changed: the link's own at the
/// top (`vmlinux.o`, the kallsyms passes), the version stamp, and the compressed bzImage wrapper
/// around vmlinux. After an initramfs-only change, usr/ is what really changed.
fn remade_by_a_relink(object: &Path) -> bool {
    object.components().count() == 1
        || object.starts_with("usr")
        || object.starts_with("arch/x86/boot")
        || object.to_string_lossy().starts_with("init/version")
}

/// The objects kbuild's quiet output says it compiled (`  CC      init/main.o`).
fn compiled(log: &str) -> Vec<&str> {
    log.lines()
        .filter_map(|line| line.strip_prefix("  CC "))
        .map(str::trim)
        .collect()
}

#[test]
fn host_built_kernel_boots_and_prints_the_marker() {
    let _demo = demo_system();
    let site = site();
    let first = first_build();
    for step in ["root", "commands", "image", "pack", "kernel"] {
        assert_eq!(
            verb_of(&first.run, step),
            "run",
            "a first build runs {step}: {}",
            first.run.describe()
        );
    }
    let image = site.image(DEMO);
    assert_eq!(
        first.run.stdout.trim_end(),
        image.to_str().expect("a UTF-8 workdir"),
        "`build` prints the image"
    );
    assert!(image.is_file(), "{} exists", image.display());

    let archive = site.initramfs(DEMO);
    let manifest: serde_json::Value = serde_json::from_slice(
        &fs::read(site.out(DEMO).join(format!("{DEMO}.manifest.json"))).expect("the manifest"),
    )
    .expect("the manifest is JSON");
    assert_eq!(
        manifest["sha256"].as_str(),
        Some(sha256sum(&image).as_str()),
        "the manifest's sha256 is the image's: {manifest}"
    );
    let inputs = manifest["inputs"]
        .as_array()
        .expect("inputs in the manifest");
    assert!(
        inputs.contains(&serde_json::json!([
            "initramfs_sha256",
            sha256sum(&archive)
        ])),
        "the manifest names the embedded initramfs by its hash: {manifest}"
    );

    let config = fs::read_to_string(site.out(DEMO).join(format!("{DEMO}.config")))
        .expect("the published config");
    let lines: Vec<&str> = config.lines().collect();
    let source_line = format!("CONFIG_INITRAMFS_SOURCE=\"{}\"", archive.display());
    for wanted in ["CONFIG_EFI_STUB=y", &source_line] {
        assert!(
            lines.contains(&wanted),
            "the config has {wanted}:\n{config}"
        );
    }
    assert_eq!(
        fs::read_to_string(site.kbuild(DEMO).join(".config")).expect("the build's config"),
        config,
        "the published config is the one the kernel was built with"
    );
    let names = archive_names(&archive);
    for name in [
        "init",
        "bin/busybox",
        "etc/motd",
        "dev/console",
        "usr/bin/greet",
        "usr/bin/hello",
        "usr/lib/libgreet.so.1",
        "var/db/pkg/app-misc/greet-1.0/CONTENTS",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "the packed archive holds {name}: {names:?}"
        );
    }
    // The image, not the build root: no Portage, no Python, no compiler.
    for name in ["usr/bin/emerge", "usr/bin/python3", "usr/bin/gcc"] {
        assert!(
            !names.iter().any(|n| n == name),
            "the build root's {name} stays out of the image"
        );
    }

    // Right after, nothing has changed: every step is skipped and make does not run.
    let image_mtime = modified(&image);
    let log = site.kbuild(DEMO).join("build.log");
    let log_len = file_len(&log);
    let started = Instant::now();
    let second = site.cli.ok(["build", DEMO]);
    let second_seconds = started.elapsed().as_secs_f64();
    let ran = steps(&second.stderr);
    for step in ["root", "commands", "image", "pack", "kernel"] {
        assert!(
            ran.iter().any(|(verb, s)| s == step && verb == "skip"),
            "the second build skips {step}: {}",
            second.describe()
        );
    }
    // `workdir` is not a step with inputs: it reports itself as run every time.
    let not_skipped: Vec<&(String, String)> = ran
        .iter()
        .filter(|(verb, step)| verb != "skip" && step != "workdir")
        .collect();
    assert!(
        not_skipped.is_empty(),
        "the second build runs nothing: {}",
        second.describe()
    );
    assert_eq!(
        second.stdout.trim_end(),
        image.to_str().expect("a UTF-8 workdir")
    );
    assert_eq!(modified(&image), image_mtime, "the image was not rewritten");
    assert_eq!(file_len(&log), log_len, "make did not run");

    // The marker and the line after it come from programs Portage built in the build root.
    let hello = "hello from a program Portage built";
    let (booted, boot_seconds) = boot(site, &image, hello, 512);
    let booted = booted.expect_code(0);
    for line in [MARKER, hello] {
        assert!(
            boot_log(&image).contains(line),
            "the console transcript shows {line:?}: {}",
            booted.describe()
        );
    }
    eprintln!(
        "timing: first build {:.0} s, second build {second_seconds:.1} s (all skipped), \
         boot to the marker {boot_seconds:.0} s",
        first.seconds
    );
}

#[test]
fn initramfs_only_change_is_a_relink() {
    let _demo = demo_system();
    let site = site();
    let first = first_build();
    let kbuild = site.kbuild(DEMO);
    let before = object_mtimes(&kbuild);
    for object in ["init/main.o", "kernel/fork.o", "usr/initramfs_data.o"] {
        assert!(before.contains_key(Path::new(object)), "{object} was built");
    }
    let log = kbuild.join("build.log");
    let log_len = file_len(&log) as usize;

    let motd = format!(
        "motd changed by the relink test at {}\n",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos()
    );
    fs::write(site.motd(), &motd).expect("change the overlay's motd");
    let (relinked, seconds) = {
        let _heavy = heavy_work();
        let started = Instant::now();
        let run = site.cli.ok(["build", DEMO]);
        (run, started.elapsed().as_secs_f64())
    };
    assert_eq!(
        verb_of(&relinked, "root"),
        "skip",
        "{}",
        relinked.describe()
    );
    assert_eq!(verb_of(&relinked, "pack"), "run", "{}", relinked.describe());
    assert_eq!(
        verb_of(&relinked, "kernel"),
        "run",
        "{}",
        relinked.describe()
    );

    let after = object_mtimes(&kbuild);
    let changed: Vec<&PathBuf> = after
        .iter()
        .filter(|(object, mtime)| before.get(*object) != Some(*mtime))
        .map(|(object, _)| object)
        .collect();
    assert!(
        changed.contains(&&PathBuf::from("usr/initramfs_data.o")),
        "the initramfs was embedded again: changed {changed:?}"
    );
    for object in ["init/main.o", "kernel/fork.o", "mm/memory.o", "fs/exec.o"] {
        assert_eq!(
            after.get(Path::new(object)),
            before.get(Path::new(object)),
            "{object} was not compiled again"
        );
    }
    let recompiled: Vec<&&PathBuf> = changed
        .iter()
        .filter(|object| !remade_by_a_relink(object))
        .collect();
    assert!(
        recompiled.is_empty(),
        "only usr/ and the link changed, yet these objects were made again: {recompiled:?}"
    );
    let log_text = fs::read(&log).expect("the build log");
    let this_run = String::from_utf8_lossy(&log_text[log_len.min(log_text.len())..]);
    let compiled_now = compiled(&this_run);
    let stray: Vec<&&str> = compiled_now
        .iter()
        .filter(|object| !remade_by_a_relink(Path::new(object)))
        .collect();
    assert!(
        stray.is_empty(),
        "the build log shows compiles outside usr/ and the link: {stray:?}\n{this_run}"
    );

    let (booted, boot_seconds) = boot(site, &site.image(DEMO), motd.trim_end(), 512);
    booted.expect_code(0);
    eprintln!(
        "timing: first build {:.0} s, relink after an initramfs-only change {seconds:.0} s \
         ({} objects remade: {}; compiled: {}), boot to the new motd {boot_seconds:.0} s",
        first.seconds,
        changed.len(),
        changed
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        compiled_now.join(" ")
    );
}

#[test]
fn kconfig_drop_of_efi_without_acpi_is_named() {
    let site = site();
    // A real archive to embed, though the build stops before it is used.
    let scratch = site.top.join(NO_ACPI);
    fs::create_dir_all(scratch.join("tree")).expect("a scratch directory");
    fs::write(scratch.join("tree/init"), "#!/bin/sh\n").expect("an init");
    let archive = scratch.join("initramfs.cpio.gz");
    run_tool(Command::new("sh").arg("-c").arg(format!(
        "cd '{}' && find . | cpio --quiet -o -H newc | gzip -n > '{}'",
        scratch.join("tree").display(),
        archive.display()
    )))
    .expect("cpio and gzip make an archive");

    let (run, seconds) = {
        let _heavy = heavy_work();
        let started = Instant::now();
        let run = site.cli.run([
            OsStr::new("kernel"),
            OsStr::new("build"),
            OsStr::new(DEMO),
            OsStr::new("--system"),
            OsStr::new(NO_ACPI),
            OsStr::new("--host"),
            OsStr::new("--initramfs"),
            archive.as_os_str(),
        ]);
        (run, started.elapsed().as_secs_f64())
    };
    let run = run.expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr
            .lines()
            .any(|line| line.contains("CONFIG_EFI ") && line.contains("ACPI")),
        "a line names CONFIG_EFI and the ACPI it depends on: {}",
        run.describe()
    );
    assert!(
        !site.image(NO_ACPI).exists(),
        "no image is published: {}",
        run.describe()
    );
    let kbuild = site.kbuild(NO_ACPI);
    let config = fs::read_to_string(kbuild.join(".config")).expect("olddefconfig wrote a config");
    assert!(
        config.contains("# CONFIG_EFI is not set") || !config.contains("CONFIG_EFI=y"),
        "olddefconfig dropped EFI:\n{config}"
    );
    assert!(
        !kbuild.join("vmlinux").exists() && !kbuild.join("init/main.o").exists(),
        "the kernel itself was not built"
    );
    eprintln!("timing: the failing build without ACPI took {seconds:.0} s");
}

/// A Debian bookworm minbase root as a tarball, made by debootstrap on first use and kept in
/// target/ between runs (delete it to make it again).
fn debian_minbase_tarball() -> Result<PathBuf> {
    let target = target_dir();
    let tarball = target.join("test-debian-minbase.tar");
    let lock = fs::File::create(target.join("test-debian-minbase.lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .context("lock the debootstrap cache")?;
    if tarball.is_file() {
        return Ok(tarball);
    }
    let tree = target.join("test-debian-minbase.tree");
    remove_tree(&tree)?;
    let sweep = SweepGuard::new(&tree);
    let started = Instant::now();
    run_tool(
        Command::new("debootstrap")
            .arg("--variant=minbase")
            .arg("bookworm")
            .arg(&tree)
            .arg(DEBIAN_MIRROR),
    )
    .context("debootstrap (apt-get install debootstrap)")?;
    sweep.close().context("debootstrap left mounts")?;
    let partial = target.join("test-debian-minbase.tar.partial");
    gnu_tar([
        OsStr::new("--xattrs"),
        OsStr::new("--numeric-owner"),
        OsStr::new("-cpf"),
        partial.as_os_str(),
        OsStr::new("-C"),
        tree.as_os_str(),
        OsStr::new("."),
    ])?;
    fs::rename(&partial, &tarball)?;
    remove_tree(&tree)?;
    eprintln!(
        "timing: debootstrap of the Debian root (cached from now on): {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(tarball)
}

#[test]
fn chroot_built_kernel_boots() {
    let site = site();
    let cli = &site.cli;
    let tarball = debian_minbase_tarball().unwrap_or_else(|e| panic!("{e:#}"));
    let started = Instant::now();
    cli.ok([
        OsStr::new("stage"),
        OsStr::new("import"),
        tarball.as_os_str(),
        OsStr::new("--name"),
        OsStr::new(DEBIAN),
    ]);
    cli.ok(["root", "create", DEBIAN, "--stage", DEBIAN]);
    let root = cli.volume_path("root", DEBIAN);
    let sweep = SweepGuard::new(&root);
    let import_seconds = started.elapsed().as_secs_f64();

    // The toolchain is the root's own: minbase has none, apt installs it inside the root.
    let before = cli.run(["root", "run", DEBIAN, "--", "sh", "-c", "command -v gcc"]);
    assert_ne!(
        before.code(),
        Some(0),
        "minbase has no gcc: {}",
        before.describe()
    );
    let started = Instant::now();
    cli.ok(["root", "run", DEBIAN, "--", "apt-get", "update"]);
    let mut install = vec![
        "root",
        "run",
        DEBIAN,
        "--",
        "apt-get",
        "install",
        "-y",
        "--no-install-recommends",
    ];
    install.extend(DEBIAN_TOOLCHAIN);
    cli.ok(install);
    let apt_seconds = started.elapsed().as_secs_f64();
    let gcc = cli.ok(["root", "run", DEBIAN, "--", "gcc", "--version"]);
    let gcc = gcc.stdout.lines().next().expect("gcc --version").to_owned();
    let debian_version = fs::read_to_string(root.join("etc/debian_version"))
        .expect("a Debian root")
        .trim()
        .to_owned();

    // Killed while make runs in the root: nothing stays mounted in the root (the kernel's
    // binds exist only in make's namespace) and nothing keeps running there.
    {
        let _heavy = heavy_work();
        kill_build_in_its_kernel_step(site, DEBIAN);
    }
    wait_until(
        "the killed build leaves nothing in the root",
        Duration::from_secs(60),
        || mounts_below(&root).is_empty() && processes_rooted_in(&root).is_empty(),
    );

    let (built, build_seconds) = {
        let _heavy = heavy_work();
        let started = Instant::now();
        let run = cli.run(["build", DEBIAN]);
        (run, started.elapsed().as_secs_f64())
    };
    assert!(built.status.success(), "{}", built.describe());
    assert_eq!(verb_of(&built, "root"), "skip", "{}", built.describe());
    // The killed build packed already.
    assert_eq!(verb_of(&built, "pack"), "skip", "{}", built.describe());
    assert_eq!(verb_of(&built, "kernel"), "run", "{}", built.describe());
    sweep
        .close()
        .expect("`build` leaves nothing mounted in the root");

    // make ran inside the root: it compiled the sources where `kernel mount` binds them, found
    // the initramfs where only the root has it, and configured with the root's gcc.
    let kbuild = site.kbuild(DEBIAN);
    let config = fs::read_to_string(kbuild.join(".config")).expect("the build's config");
    let lines: Vec<&str> = config.lines().collect();
    for wanted in [
        format!("CONFIG_CC_VERSION_TEXT=\"{gcc}\""),
        "CONFIG_INITRAMFS_SOURCE=\"/usr/src/initramfs/initramfs.cpio.gz\"".to_owned(),
        "CONFIG_EFI_STUB=y".to_owned(),
    ] {
        assert!(
            lines.contains(&wanted.as_str()),
            "the config has {wanted}:\n{config}"
        );
    }
    assert!(
        !Path::new("/usr/src/initramfs").exists(),
        "the host has no /usr/src/initramfs, so only a make in the root could read the archive there"
    );
    let main_cmd = fs::read_to_string(kbuild.join("init/.main.o.cmd")).expect("kbuild's record");
    assert!(
        main_cmd.contains("/usr/src/linux/init/main.c"),
        "init/main.o was compiled from the root's /usr/src/linux: {main_cmd}"
    );

    let image = site.image(DEBIAN);
    let (booted, boot_seconds) = boot(
        site,
        &image,
        &format!("{DEBIAN_MARKER} {debian_version}"),
        1536,
    );
    booted.expect_code(0);
    eprintln!(
        "timing: Debian stage import and root create {import_seconds:.0} s, apt toolchain \
         {apt_seconds:.0} s, kernel build in the root {build_seconds:.0} s (initramfs {} MiB, \
         image {} MiB), boot to the marker {boot_seconds:.0} s",
        file_len(&site.initramfs(DEBIAN)) >> 20,
        file_len(&image) >> 20
    );

    // Nothing has changed since: the plan skips every step, as after a build on the host.
    let plan = cli.ok(["build", DEBIAN, "--pretend"]);
    let again: Vec<(String, String)> = steps(&plan.stdout)
        .into_iter()
        .filter(|(verb, step)| verb != "skip" && step != "workdir")
        .collect();
    assert!(
        again.is_empty(),
        "right after a build in the root nothing is left to do, yet the plan runs {again:?}: {}",
        plan.describe()
    );
}
