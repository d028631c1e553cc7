//! Hostile input, faults and rough edges, as a careless or hostile user meets them: outputs that
//! are not files, `internal-init` run by hand, files that never end, an `/init` the kernel could
//! not run, a full disk while packing, names too long to read, inputs missing only at the last
//! step, commands that cannot run in a root, the output conventions scripts rely on, config
//! paths out of the site, and plugins others could change. Each is refused with one clear line
//! and leaves nothing behind; each test fails without the refusal it checks.

use std::ffi::OsStr;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{symlink, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context as _, Result};
use autogentoo_tests::busybox_stage::{INIT, MARKER_FILE};
use autogentoo_tests::{
    binary, build_busybox_stage, is_mount_point, list_dir, noise, plugin_library, MountedWorkdir,
    Run, Spawned, Tmpfs, Workdir,
};
use rustix::fs::{FileType, Mode, CWD};

const STAGE: &str = "busybox";
const ROOT: &str = "web";

/// A workdir with the busybox stage imported and root `web` cloned from it.
fn with_root() -> Result<Workdir> {
    let wd = Workdir::new();
    let tree = wd.scratch().join("stage");
    build_busybox_stage(&tree, false)?;
    wd.import(&tree, STAGE);
    wd.ok(["root", "create", ROOT, "--stage", STAGE]);
    Ok(wd)
}

fn mknod(path: &Path, file_type: FileType, dev: u64) {
    rustix::fs::mknodat(CWD, path, file_type, Mode::from_raw_mode(0o666), dev)
        .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

/// The type of what is at `path`, not following a symlink.
fn kind_of(path: &Path) -> &'static str {
    match fs::symlink_metadata(path) {
        Err(_) => "nothing",
        Ok(m) if m.file_type().is_symlink() => "symlink",
        Ok(m) if m.file_type().is_char_device() => "char device",
        Ok(m) if m.file_type().is_fifo() => "fifo",
        Ok(m) if m.file_type().is_socket() => "socket",
        Ok(m) if m.is_dir() => "directory",
        Ok(_) => "file",
    }
}

#[track_caller]
fn refused(run: Run, says: &[&str]) -> Run {
    let run = run.expect_code(1);
    run.expect_one_error();
    for text in says {
        assert!(
            run.stderr.contains(text),
            "says {text:?}: {}",
            run.describe()
        );
    }
    run
}

/// Case 1: every command writing a file the user names refuses a target that is not a regular
/// file (a device node, a fifo, a socket, a directory, a symlink to one of those or to nothing)
/// before any work, and leaves it as it was; a regular file, or a symlink to one, is written.
#[test]
fn outputs_that_are_not_files_are_refused_before_any_work() -> Result<()> {
    let wd = with_root()?;
    let targets = wd.scratch().join("targets");
    fs::create_dir(&targets)?;
    let device = targets.join("null");
    mknod(
        &device,
        FileType::CharacterDevice,
        rustix::fs::makedev(1, 3),
    );
    let fifo = targets.join("fifo");
    mknod(&fifo, FileType::Fifo, 0);
    let socket = targets.join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket)?;
    let directory = targets.join("dir");
    fs::create_dir(&directory)?;
    let to_device = targets.join("to-null");
    symlink(&device, &to_device)?;
    let dangling = targets.join("dangling");
    symlink(targets.join("nowhere"), &dangling)?;
    let before = list_dir(&targets);
    for (target, kind, says) in [
        (&device, "char device", "a character device"),
        (&fifo, "fifo", "a fifo"),
        (&socket, "socket", "a socket"),
        (&directory, "directory", "a directory"),
        (&to_device, "symlink", "a symlink to"),
        (&dangling, "symlink", "does not exist"),
    ] {
        let run = wd.run([
            OsStr::new("root"),
            OsStr::new("pack"),
            OsStr::new(ROOT),
            OsStr::new("-o"),
            target.as_os_str(),
        ]);
        refused(run, &[&target.display().to_string(), says]);
        assert_eq!(
            kind_of(target),
            kind,
            "{} is left as it was",
            target.display()
        );
        assert_eq!(list_dir(&targets), before, "nothing new beside the targets");
    }
    assert_eq!(kind_of(&device), "char device");
    assert_eq!(list_dir(&directory), Vec::<PathBuf>::new());

    // A symlink to a regular file is replaced by the archive, never written through: the file
    // it leads to is left as it was.
    let real = targets.join("elsewhere.cpio.gz");
    fs::write(&real, "old")?;
    let current = targets.join("current.cpio.gz");
    symlink(&real, &current)?;
    wd.ok([
        OsStr::new("root"),
        OsStr::new("pack"),
        OsStr::new(ROOT),
        OsStr::new("-o"),
        current.as_os_str(),
    ]);
    assert_eq!(kind_of(&current), "file");
    assert_eq!(fs::read(&real)?, b"old", "the link's target is untouched");
    ensure!(
        fs::metadata(&current)?.len() > 1000,
        "the archive replaced the link"
    );

    // repo pack: an image name taken by a fifo, with --force too.
    let repos = wd.path().join("repos");
    let taken = repos.join("taken.sqfs");
    mknod(&taken, FileType::Fifo, 0);
    let tree = wd.scratch().join("stage/etc");
    for force in [false, true] {
        let mut args = vec![
            OsStr::new("repo"),
            OsStr::new("pack"),
            OsStr::new("--dir"),
            tree.as_os_str(),
            OsStr::new("--name"),
            OsStr::new("taken"),
        ];
        if force {
            args.push(OsStr::new("--force"));
        }
        refused(wd.run(args), &["taken.sqfs", "a fifo"]);
        assert_eq!(kind_of(&taken), "fifo");
        assert_eq!(
            list_dir(&repos),
            std::slice::from_ref(&taken),
            "nothing else in repos/"
        );
    }

    // kernel config --write: a symlink to a device is read as nothing but a file.
    let config = targets.join(".config");
    symlink(&device, &config)?;
    refused(
        wd.run([
            OsStr::new("kernel"),
            OsStr::new("config"),
            config.as_os_str(),
            OsStr::new("--write"),
        ]),
        &["a character device"],
    );
    assert_eq!(kind_of(&device), "char device");

    // kernel boot: its log beside the image is checked before QEMU starts.
    let image = targets.join("image.efi");
    fs::write(&image, b"MZ not really an image")?;
    let log = targets.join("image.efi.boot.log");
    mknod(&log, FileType::Fifo, 0);
    refused(
        wd.run([
            OsStr::new("kernel"),
            OsStr::new("boot"),
            image.as_os_str(),
            OsStr::new("--timeout"),
            OsStr::new("5"),
        ]),
        &["image.efi.boot.log", "a fifo"],
    );
    assert_eq!(kind_of(&log), "fifo");

    // kernel build: an output that cannot be a file is refused before make runs.
    let site = site_with_kernel(&wd, "")?;
    let out = wd.path().join("out").join(ROOT);
    wd.ok(["--config", site.to_str().unwrap(), "root", "pack", ROOT]);
    let efi = out.join(format!("{ROOT}.efi"));
    fs::create_dir(&efi)?;
    refused(
        wd.run(["--config", site.to_str().unwrap(), "kernel", "build", ROOT]),
        &[&efi.display().to_string(), "a directory"],
    );
    let kbuild = wd.path().join("kbuild").join(ROOT);
    ensure!(
        !kbuild.join("build.log").exists(),
        "make never ran: {:?}",
        list_dir(&kbuild)
    );
    Ok(())
}

/// A site config with system `web` on the busybox stage, built on the host from a kernel
/// volume `src` (a tree with a Makefile and a Kconfig, enough to be found), plus `extra`.
fn site_with_kernel(wd: &Workdir, extra: &str) -> Result<PathBuf> {
    let source = wd.scratch().join("linux");
    if !source.exists() {
        fs::create_dir(&source)?;
        fs::write(source.join("Makefile"), "all:\n\tfalse\n")?;
        fs::write(source.join("Kconfig"), "")?;
        wd.ok([
            OsStr::new("kernel"),
            OsStr::new("import"),
            source.as_os_str(),
            OsStr::new("--name"),
            OsStr::new("src"),
        ]);
    }
    let site = wd.scratch().join("site");
    fs::create_dir_all(&site)?;
    let config = site.join("autogentoo.toml");
    fs::write(
        &config,
        format!(
            "[systems.{ROOT}]\nstage = \"{STAGE}\"\nkernel = \"src\"\nkernel_build = \"host\"\n{extra}"
        ),
    )?;
    Ok(config)
}

/// The kernel build directory is bound read-write into the root (`kernel mount`, the `root`
/// builder), so a root can plant anything there. Planted symlinks must not make the host side
/// of a build write a host file (`.config.old` saved through a link), append to one
/// (`build.log`), or copy one out (a `bzImage` that is a link to a host file), and a planted
/// setuid config must not come back setuid. Here the test plants them where a root would, and
/// a make stand-in plays kbuild.
#[test]
fn a_root_cannot_turn_the_kernel_build_directory_against_the_host() -> Result<()> {
    let wd = with_root()?;
    let source = wd.scratch().join("kbuild-stand-in");
    fs::create_dir_all(source.join("arch/x86"))?;
    fs::write(source.join("Kconfig"), "")?;
    fs::write(source.join("arch/x86/Kconfig"), "")?;
    fs::write(
        source.join("Makefile"),
        "allnoconfig:\n\techo CONFIG_EXPERT=y > $(O)/.config\n\tchmod 6777 $(O)/.config\n\
         olddefconfig:\n\ttrue\n\
         bzImage:\n\tmkdir -p $(O)/arch/x86/boot\n\
         \tln -sf /etc/hostname $(O)/arch/x86/boot/bzImage\n\tcp /dev/null $(O)/System.map\n",
    )?;
    wd.ok([
        OsStr::new("kernel"),
        OsStr::new("import"),
        source.as_os_str(),
        OsStr::new("--name"),
        OsStr::new("stand-in"),
    ]);
    let site = wd.scratch().join("site");
    fs::create_dir_all(&site)?;
    let config = site.join("autogentoo.toml");
    fs::write(
        &config,
        format!("[systems.{ROOT}]\nstage = \"{STAGE}\"\nkernel = \"stand-in\"\nkernel_build = \"host\"\n"),
    )?;
    let config = config.to_str().unwrap();
    wd.ok(["--config", config, "root", "pack", ROOT]);

    // What a root planted: links to host files where the build writes and appends.
    let victims = wd.scratch().join("host");
    fs::create_dir(&victims)?;
    let kbuild = wd.path().join("kbuild").join(ROOT);
    fs::create_dir_all(&kbuild)?;
    for (planted, victim) in [(".config.old", "cron-job"), ("build.log", "passwd")] {
        fs::write(victims.join(victim), "the host's\n")?;
        symlink(victims.join(victim), kbuild.join(planted))?;
    }

    // The log is appended to only if it is a regular file.
    let log = kbuild.join("build.log");
    refused(
        wd.run(["--config", config, "kernel", "build", ROOT]),
        &[&log.display().to_string(), "a symlink, not a regular file"],
    );
    fs::remove_file(&log)?;
    // The config is saved aside over the link, and the image is not the host file.
    let run = wd.run(["--config", config, "kernel", "build", ROOT]);
    let run = refused(run, &["bzImage"]);
    for victim in ["cron-job", "passwd"] {
        assert_eq!(
            fs::read_to_string(victims.join(victim))?,
            "the host's\n",
            "{victim} is untouched: {}",
            run.describe()
        );
    }
    assert!(
        fs::symlink_metadata(kbuild.join(".config.old"))?.is_file(),
        "the planted link was replaced, not followed"
    );
    let mode = fs::metadata(kbuild.join(".config"))?.permissions().mode();
    assert_eq!(mode & 0o7000, 0, "the saved config is not setuid: {mode:o}");
    let image = wd.path().join("out").join(ROOT).join(format!("{ROOT}.efi"));
    ensure!(!image.exists(), "no host file was copied out as the image");
    Ok(())
}

/// Case 3: `internal-init` run by hand — as before, with a root on its command line, or as PID
/// 1 of a namespace someone else made, with a forged handshake — refuses and mounts nothing.
#[test]
fn internal_init_refuses_to_run_by_hand_and_mounts_nothing() -> Result<()> {
    let wd = Workdir::uninitialised();
    let root = wd.scratch().join("root");
    fs::create_dir_all(root.join("proc"))?;
    let forged = format!("autogentoo-init 1\n1\n{}\0/bin/true\0", root.display());

    let by_hand = Run::of({
        let mut command = Command::new(binary());
        command
            .args(["internal-init", "--root"])
            .arg(&root)
            .args(["--", "/bin/true"]);
        command
    });
    assert_ne!(by_hand.code(), Some(0), "{}", by_hand.describe());
    nothing_mounted_in(&root)?;
    for unshare in [&["--pid", "--fork"][..], &["--pid", "--fork", "--mount"]] {
        let mut command = Command::new("unshare");
        command
            .args(unshare)
            .arg(binary())
            .args(["internal-init", "--handshake-fd", "0"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().context("run unshare (util-linux)")?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(forged.as_bytes())?;
        let output = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{unshare:?}: {stderr}");
        assert!(stderr.contains("never by hand"), "{unshare:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    }
    nothing_mounted_in(&root)
}

/// Fails if something is mounted at `root/proc`, after unmounting it (by its path), so that
/// the test leaves nothing behind either way.
fn nothing_mounted_in(root: &Path) -> Result<()> {
    let proc = root.join("proc");
    let leaked = is_mount_point(&proc);
    if leaked {
        let _ = Command::new("umount").arg("--lazy").arg(&proc).status();
    }
    ensure!(!leaked, "nothing is mounted at {}", proc.display());
    Ok(())
}

/// Case 5: files read whole must be regular and below a limit: `/dev/zero`, a fifo nobody
/// writes and a file too large are each one line naming them, at once.
#[test]
fn files_that_never_end_are_refused_naming_them() -> Result<()> {
    let wd = Workdir::new();
    let fifo = wd.scratch().join("fifo.toml");
    mknod(&fifo, FileType::Fifo, 0);
    let huge = wd.scratch().join("huge.toml");
    fs::File::create(&huge)?.set_len(64 << 20)?;
    let tarball = wd.scratch().join("stage3.tar");
    fs::write(&tarball, vec![0u8; 10240])?;
    let cases: Vec<(Vec<&OsStr>, String, &str)> = vec![
        (
            vec![
                OsStr::new("--config"),
                OsStr::new("/dev/zero"),
                OsStr::new("root"),
                OsStr::new("list"),
            ],
            "/dev/zero".into(),
            "a character device",
        ),
        (
            vec![
                OsStr::new("--config"),
                fifo.as_os_str(),
                OsStr::new("root"),
                OsStr::new("list"),
            ],
            fifo.display().to_string(),
            "a fifo",
        ),
        (
            vec![
                OsStr::new("--config"),
                huge.as_os_str(),
                OsStr::new("root"),
                OsStr::new("list"),
            ],
            huge.display().to_string(),
            "larger than",
        ),
        (
            vec![
                OsStr::new("stage"),
                OsStr::new("import"),
                tarball.as_os_str(),
                OsStr::new("--name"),
                OsStr::new("s"),
                OsStr::new("--digests"),
                OsStr::new("/dev/zero"),
            ],
            "/dev/zero".into(),
            "a character device",
        ),
        (
            vec![
                OsStr::new("kernel"),
                OsStr::new("config"),
                OsStr::new("/dev/zero"),
            ],
            "/dev/zero".into(),
            "a character device",
        ),
    ];
    for (args, names, says) in cases {
        let mut run = Spawned::start(wd.command(&args));
        let run = run.wait(Duration::from_secs(60));
        refused(run, &[&names, says]);
    }
    wd.assert_no_stage_left();
    Ok(())
}

/// Case 7: `/init` is followed through symlinks inside the packed tree, as the kernel would: a
/// link to nothing, or to a file that cannot run, is refused; a link to busybox packs.
#[test]
fn an_init_the_kernel_could_not_run_is_refused() -> Result<()> {
    let wd = with_root()?;
    let root = wd.root_path(ROOT);
    let init = root.join(INIT);
    let out = wd.path().join("out").join(ROOT);
    let pack = || wd.run(["root", "pack", ROOT]);
    for (target, says) in [
        ("/bin/missing", "/bin/missing"),
        ("bin/../etc/hostname", "not executable"),
        ("/init", "more than 40 symlinks"),
    ] {
        fs::remove_file(&init)?;
        symlink(target, &init)?;
        refused(pack(), &["/init", says]);
        assert_eq!(
            list_dir(&out),
            Vec::<PathBuf>::new(),
            "no archive for {target}"
        );
    }
    fs::remove_file(&init)?;
    symlink("/bin/busybox", &init)?;
    pack().expect_code(0);
    Ok(())
}

/// Case 8: a full disk while packing names the archive being written, not a file of the root,
/// and leaves nothing on the full disk.
#[test]
fn a_full_disk_while_packing_names_the_archive() -> Result<()> {
    let wd = with_root()?;
    let root = wd.root_path(ROOT);
    fs::write(root.join("etc/big"), noise(2 << 20, 7))?;
    let small = wd.scratch().join("small");
    let disk = Tmpfs::mount(&small, 512 << 10)?;
    let archive = small.join("web.cpio");
    let run = refused(
        wd.run([
            OsStr::new("root"),
            OsStr::new("pack"),
            OsStr::new(ROOT),
            OsStr::new("--compression"),
            OsStr::new("none"),
            OsStr::new("-o"),
            archive.as_os_str(),
        ]),
        &[&archive.display().to_string(), "No space left"],
    );
    assert!(
        !run.stderr.contains("etc/big"),
        "the root's file is not blamed: {}",
        run.describe()
    );
    assert_eq!(
        list_dir(&small),
        Vec::<PathBuf>::new(),
        "nothing left on the full disk"
    );
    disk.close()
}

/// Case 8: a 5,000-character entry name is shortened in the middle for people (one line of
/// readable length) and kept whole under `--json`.
#[test]
fn long_names_are_shortened_for_people_and_whole_for_scripts() -> Result<()> {
    let wd = Workdir::new();
    let name: String = (0..25)
        .map(|i| format!("{i:02}{}/", "x".repeat(197)))
        .collect();
    let name = format!("{name}tool");
    assert!(name.len() > 5000);
    let tarball = wd.scratch().join("stage3-long.tar");
    {
        let mut builder = tar::Builder::new(fs::File::create(&tarball)?);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Link);
        header.set_size(0);
        header.set_mode(0o755);
        builder.append_link(&mut header, &name, "never/archived")?;
        builder.finish()?;
    }
    let import = |json: bool| {
        let mut args = vec![
            OsStr::new("stage"),
            OsStr::new("import"),
            tarball.as_os_str(),
            OsStr::new("--name"),
            OsStr::new("long"),
        ];
        if json {
            args.push(OsStr::new("--json"));
        }
        wd.run(args).expect_code(1)
    };
    let human = import(false);
    human.expect_one_error();
    for line in human.stderr.lines() {
        assert!(line.len() < 700, "{} bytes: {line}", line.len());
    }
    assert!(human.stderr.contains("more]"), "{}", human.describe());
    let script = import(true);
    assert_eq!(script.stdout, "");
    let error: serde_json::Value =
        serde_json::from_str(script.stderr.trim()).context("stderr is one JSON object")?;
    assert_eq!(error["exit_code"], 1, "{error:#}");
    let whole = std::iter::once(&error["error"])
        .chain(error["causes"].as_array().into_iter().flatten())
        .any(|text| text.as_str().is_some_and(|t| t.contains(&name)));
    assert!(whole, "the whole name is in the JSON: {error:#}");
    wd.assert_no_stage_left();
    Ok(())
}

/// Case 8: `build` checks every input before its first step: a kernel that is not imported, an
/// overlay that is not there, a builder nobody provides — no root is cloned, nothing packed.
#[test]
fn build_checks_every_input_before_its_first_step() -> Result<()> {
    let wd = Workdir::new();
    let tree = wd.scratch().join("stage");
    build_busybox_stage(&tree, false)?;
    wd.import(&tree, STAGE);
    let site = site_with_kernel(&wd, "")?;
    let site_dir = site.parent().unwrap().to_owned();
    for (system, says) in [
        ("kernel = \"nope\"\n", "kernel import SOURCE --name nope"),
        ("overlays = [\"hardware/absent\"]\n", "hardware/absent"),
        (
            "kernel_build = \"distcc\"\n",
            "unknown kernel builder 'distcc'",
        ),
    ] {
        let text = format!(
            "[systems.x]\nstage = \"{STAGE}\"\n{}{system}",
            if system.starts_with("kernel =") {
                ""
            } else {
                "kernel = \"src\"\n"
            }
        );
        fs::write(site_dir.join("autogentoo.toml"), text)?;
        refused(
            wd.run(["--config", site.to_str().unwrap(), "build", "x"]),
            &[says],
        );
        assert_eq!(wd.root_names(), Vec::<String>::new(), "no root was cloned");
        assert_eq!(
            list_dir(&wd.path().join("out")),
            Vec::<PathBuf>::new(),
            "nothing packed"
        );
    }
    Ok(())
}

/// Case 9: a command `root run` cannot start exits as a shell's would — 127 when it is not
/// there, 126 when it cannot be executed — with one line saying so; the help says it too.
#[test]
fn root_run_exits_127_and_126_as_a_shell_does() -> Result<()> {
    let wd = with_root()?;
    let missing = wd.run(["root", "run", ROOT, "--", "/no/such/command"]);
    assert_eq!(missing.code(), Some(127), "{}", missing.describe());
    assert!(
        missing.stderr.contains("command not found"),
        "{}",
        missing.describe()
    );
    let not_executable = wd.run(["root", "run", ROOT, "--", &format!("/{MARKER_FILE}")]);
    assert_eq!(
        not_executable.code(),
        Some(126),
        "{}",
        not_executable.describe()
    );
    let help = wd.ok(["root", "run", "--help"]);
    assert!(
        help.stdout.contains("127") && help.stdout.contains("126"),
        "{}",
        help.describe()
    );
    Ok(())
}

/// Case 10: what scripts rely on. No colour codes on a stderr that is not a terminal; `-q`
/// means quiet; under `--json` success is one JSON document on stdout — also for `remove` and
/// `rollback` — and failure one JSON object on stderr, usage errors included.
#[test]
fn output_conventions_hold_for_scripts() -> Result<()> {
    let wd = MountedWorkdir::new();
    let tree = wd.scratch().join("stage");
    build_busybox_stage(&tree, false)?;
    wd.import(&tree, STAGE);
    wd.ok(["root", "create", ROOT, "--stage", STAGE]);

    // A warning (no repository image to mount) is printed without escape codes.
    let mounted = wd.ok(["root", "mount", ROOT]);
    assert!(mounted.stderr.contains("WARN"), "{}", mounted.describe());
    assert!(
        !mounted.stderr.contains('\x1b'),
        "no colours: {:?}",
        mounted.stderr
    );
    let again = wd.ok(["-q", "root", "mount", ROOT]);
    assert_eq!(again.stderr, "", "-q prints nothing: {}", again.describe());
    wd.ok(["root", "umount", ROOT]);

    let failed = wd.run(["root", "remove", "nope", "--json"]).expect_code(1);
    assert_eq!(failed.stdout, "");
    let error: serde_json::Value = serde_json::from_str(failed.stderr.trim())
        .with_context(|| format!("one JSON object on stderr: {}", failed.describe()))?;
    assert_eq!(error["exit_code"], 1);
    assert!(
        error["error"].as_str().is_some_and(|e| e.contains("nope")),
        "{error:#}"
    );
    assert!(error["causes"].is_array(), "{error:#}");
    let usage = wd.run(["root", "remov", "x", "--json"]).expect_code(2);
    let error: serde_json::Value = serde_json::from_str(usage.stderr.trim())
        .with_context(|| format!("a usage error too: {}", usage.describe()))?;
    assert_eq!(error["exit_code"], 2);

    wd.ok(["root", "snapshot", ROOT, "fresh"]);
    let rolled = wd.ok(["root", "rollback", ROOT, "fresh", "--json"]).json();
    assert_eq!(rolled["snapshot"], "fresh", "{rolled:#}");
    let removed = wd.ok(["root", "remove", ROOT, "--json"]).json();
    assert_eq!(removed["removed"][0]["name"], ROOT, "{removed:#}");
    let removed = wd.ok(["stage", "remove", STAGE, "--json"]).json();
    assert_eq!(removed["removed"][0]["kind"], "stage", "{removed:#}");
    wd.close()
}

/// Case 11: a kernel config named by the site config must be a regular file inside the site
/// directory: `/etc/shadow` and `../../../etc/passwd` are refused at load, naming file, line
/// and key.
#[test]
fn config_paths_stay_inside_the_site() -> Result<()> {
    let wd = Workdir::new();
    let site = wd.scratch().join("site");
    fs::create_dir_all(&site)?;
    let config = site.join("autogentoo.toml");
    for path in ["/etc/shadow", "../../../etc/passwd"] {
        fs::write(
            &config,
            format!("[systems.{ROOT}]\nstage = \"{STAGE}\"\nkernel_config = \"{path}\"\n"),
        )?;
        refused(
            wd.run(["--config", config.to_str().unwrap(), "root", "list"]),
            &[
                &format!("{}:3: systems.{ROOT}.kernel_config", config.display()),
                path,
            ],
        );
    }
    Ok(())
}

/// Case 12: a plugin file or directory others could change is never opened — its constructor
/// would run with our privileges before any check — and the warning names it and its mode.
/// So is one in a directory of root's below a directory others could write to (they could put
/// another directory in its place), unless that one is sticky, as `/tmp` is. In a directory
/// only root can write to, the same library is opened (its constructor leaves its mark), which
/// shows the mark tells.
#[test]
fn plugins_others_could_change_are_never_opened() -> Result<()> {
    let wd = Workdir::new();
    let library = plugin_library("autogentoo-plugin-test-constructor");
    let mark = wd.scratch().join("mark");
    let dir = wd.scratch().join("plugins");
    fs::create_dir(&dir)?;
    let copy = dir.join("libconstructor.so");
    fs::copy(&library, &copy)?;
    let list_in = |dir: &Path| {
        let mut command = wd.command(["plugin", "list", "--json"]);
        command
            .env("AUTOGENTOO_PLUGIN_PATH", dir)
            .env("AUTOGENTOO_TEST_CONSTRUCTOR_MARK", &mark);
        Run::of(command)
    };
    let list = || list_in(&dir);
    for (dir_mode, file_mode, blamed, mode) in [
        (0o777, 0o755, &dir, "0777"),
        (0o755, 0o666, &copy, "0666"),
        (0o775, 0o755, &dir, "0775"),
    ] {
        fs::set_permissions(&dir, fs::Permissions::from_mode(dir_mode))?;
        fs::set_permissions(&copy, fs::Permissions::from_mode(file_mode))?;
        let run = list();
        assert!(run.status.success(), "{}", run.describe());
        ensure!(
            !mark.exists(),
            "the library was opened with {dir_mode:o}/{file_mode:o}"
        );
        let failures = run.json()["failures"].to_string();
        assert!(
            failures.contains(&blamed.display().to_string()) && failures.contains(mode),
            "names {} and {mode}: {failures}",
            blamed.display()
        );
    }
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))?;
    let run = list();
    assert!(run.status.success(), "{}", run.describe());
    ensure!(
        mark.exists(),
        "in a directory of root's, the library is opened"
    );
    fs::remove_file(&mark)?;

    // The same directory and library of root's, below a directory everyone may write to.
    let above = wd.scratch().join("open");
    let below = above.join("plugins");
    fs::create_dir_all(&below)?;
    fs::copy(&library, below.join("libconstructor.so"))?;
    fs::set_permissions(&above, fs::Permissions::from_mode(0o777))?;
    let run = list_in(&below);
    assert!(run.status.success(), "{}", run.describe());
    ensure!(
        !mark.exists(),
        "the library was opened below a directory everyone may write to"
    );
    let failures = run.json()["failures"].to_string();
    let blamed = format!("the directory {} above it", above.display());
    assert!(
        failures.contains(&below.display().to_string())
            && failures.contains(&blamed)
            && failures.contains("0777"),
        "names {}, {blamed} and 0777: {failures}",
        below.display()
    );
    fs::set_permissions(&above, fs::Permissions::from_mode(0o1777))?;
    let run = list_in(&below);
    assert!(run.status.success(), "{}", run.describe());
    ensure!(
        mark.exists(),
        "below a sticky directory, the library is opened: {}",
        run.describe()
    );
    Ok(())
}
