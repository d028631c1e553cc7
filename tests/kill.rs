//! SIGKILL at any moment leaves nothing half-made. Each long command — `stage import`, `root
//! create` on dir, `root pack`, `repo pack`, and `build` in each of its steps — is killed at
//! several points of its run; after each kill no partial volume or file is visible, nothing is
//! mounted or attached below the workdir, no process runs in it, and the same command then
//! succeeds. The points are spread over the command's measured duration, or, for `build`, taken
//! when it announces a step on stderr.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use autogentoo_tests::{
    build_busybox_stage, kernel_source, leftovers, list_dir, noise, pack, processes_rooted_in,
    run_tool, Compression, MountedWorkdir, Run, Spawned, Workdir,
};

const STAGE: &str = "big";
const ROOT: &str = "web";
/// Kill points per command, spread over its run.
const POINTS: u32 = 4;
/// How long the kernel may take to tear down a killed command's namespaces, and a killed
/// make's compilers to finish the file they were on.
const SETTLE: Duration = Duration::from_secs(60);

/// What the kills did, for the summary each test prints.
#[derive(Default)]
struct Tally {
    kills: u32,
    finished_before_the_kill: u32,
    checks: u32,
}

impl Tally {
    /// Printed once every check has passed (a failed one ends the test first).
    fn report(&self, what: &str) {
        eprintln!(
            "kill test, {what}: {} kills sent, {} runs finished before their kill and were tried \
             again sooner, {} invariants checked, all held",
            self.kills, self.finished_before_the_kill, self.checks
        );
    }
}

/// A busybox stage with ~20 MB of files in ~600 entries, so that every command on it takes
/// long enough to be killed in the middle.
fn big_tree(dir: &Path) -> Result<PathBuf> {
    let tree = dir.join("big-tree");
    build_busybox_stage(&tree, false)?;
    for d in 0..20 {
        let sub = tree.join(format!("usr/share/data/{d:02}"));
        fs::create_dir_all(&sub)?;
        for f in 0..30 {
            let seed = (d * 30 + f) as u64;
            let len = 1024 + (seed as usize * 7919) % (64 << 10);
            // Half noise, half text: compressors have work of both kinds.
            let mut bytes = noise(len / 2, seed);
            bytes.extend(format!("line {seed}\n").repeat(len / 20).into_bytes());
            fs::write(sub.join(format!("{f:03}")), bytes)?;
        }
    }
    Ok(tree)
}

/// Runs `args` to the end and returns how long it took.
fn timed(wd: &Workdir, args: &[&OsStr]) -> Duration {
    let started = Instant::now();
    wd.ok(args);
    started.elapsed()
}

/// Starts `args`, kills it after `delay` unless it finished first; true if it was killed.
fn kill_after(wd: &Workdir, args: &[&OsStr], delay: Duration, tally: &mut Tally) -> bool {
    let mut child = Spawned::start(wd.command(args));
    std::thread::sleep(delay);
    if child.has_exited() {
        let run = child.wait(Duration::from_secs(1));
        assert!(run.status.success(), "{}", run.describe());
        tally.finished_before_the_kill += 1;
        return false;
    }
    child.signal(rustix::process::Signal::KILL);
    child.wait(Duration::from_secs(30));
    tally.kills += 1;
    true
}

/// Kills `args` at [`POINTS`] points spread over `whole` (its duration when left alone). Before
/// each run, `reset` puts back what the command starts from; after each, nothing may be left
/// running or mounted, `check` looks at what the run left (and removes a whole result, so that
/// the command can run again), and the same command must then succeed. A run that finishes
/// before its kill is tried again with half the delay, so that every point is a kill.
fn kill_at_points(
    wd: &Workdir,
    args: &[&OsStr],
    whole: Duration,
    tally: &mut Tally,
    reset: &dyn Fn() -> Result<()>,
    check: &dyn Fn(&mut Tally) -> Result<()>,
) -> Result<()> {
    for point in 1..=POINTS {
        let mut delay = whole * point / (POINTS + 1);
        loop {
            reset()?;
            let killed = kill_after(wd, args, delay, tally);
            nothing_running_or_mounted(wd, tally);
            check(tally)?;
            if killed {
                break;
            }
            ensure!(
                delay > Duration::from_millis(2),
                "{args:?} always finished before its kill"
            );
            delay /= 2;
        }
        wd.ok(args);
        tally.checks += 1;
    }
    Ok(())
}

/// Nothing mounted or attached below the workdir, and no process rooted or working there
/// (waiting for the kernel to finish tearing down what the kill ended).
fn nothing_running_or_mounted(wd: &Workdir, tally: &mut Tally) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let mut left = leftovers(wd.top());
        left.extend(
            list_dir(&wd.path().join("roots"))
                .iter()
                .flat_map(|root| processes_rooted_in(root))
                .map(|p| format!("process {} ({}) in a root", p.pid, p.command)),
        );
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still there {SETTLE:?} after the kill: {}",
            left.join("; ")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    tally.checks += 3;
}

/// The entries of `dir`, hidden ones included, by name.
fn names_in(dir: &Path) -> Vec<String> {
    list_dir(dir)
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
        .collect()
}

/// Every entry below `dir` with its type, mode and size, sorted.
fn listing(dir: &Path) -> Result<Vec<String>> {
    let text = run_tool(Command::new("find").arg(dir).args([
        "-mindepth",
        "1",
        "-printf",
        "%P %y %m %s\\n",
    ]))?;
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    Ok(lines)
}

/// An archive is either absent or whole, its manifest with it and naming its SHA-256.
fn archive_whole_or_absent(archive: &Path, tally: &mut Tally) -> Result<bool> {
    let dir = archive.parent().expect("a directory");
    let name = archive.file_name().unwrap().to_str().unwrap();
    let manifest = dir.join(format!("{name}.manifest.json"));
    let names = names_in(dir);
    tally.checks += 1;
    if !archive.exists() {
        ensure!(
            names
                .iter()
                .all(|n| n != name && !n.starts_with(&format!(".{name}"))),
            "nothing of {name} in {}: {names:?}",
            dir.display()
        );
        return Ok(false);
    }
    ensure!(manifest.exists(), "{} has its manifest", archive.display());
    let text = fs::read_to_string(&manifest)?;
    let sha256 = run_tool(Command::new("sha256sum").arg(archive))?;
    let sha256 = sha256.split_whitespace().next().unwrap_or_default();
    ensure!(
        text.contains(sha256),
        "the manifest names the archive's SHA-256 {sha256}"
    );
    run_tool(Command::new("gzip").arg("-t").arg(archive))?;
    Ok(true)
}

#[test]
fn kills_during_import_create_pack_and_repo_pack_leave_nothing_half_made() -> Result<()> {
    let wd = MountedWorkdir::new();
    let mut tally = Tally::default();
    let tree = big_tree(&wd.scratch())?;
    let tarball = wd.scratch().join("stage3-big.tar.gz");
    pack(&tree, &tarball, Compression::Gzip)?;
    let entries = run_tool(Command::new("tar").arg("-tzf").arg(&tarball))?
        .lines()
        .count();

    // stage import: after a kill, no stage, or a whole and sealed one; the next import sweeps
    // what the kill left pending.
    let import: Vec<&OsStr> = vec![
        OsStr::new("stage"),
        OsStr::new("import"),
        tarball.as_os_str(),
        OsStr::new("--name"),
        OsStr::new(STAGE),
    ];
    let no_stage = || -> Result<()> {
        if !wd.stage_names().is_empty() {
            wd.ok(["stage", "remove", STAGE]);
        }
        Ok(())
    };
    let stage_whole_or_absent = |tally: &mut Tally| -> Result<()> {
        tally.checks += 1;
        let listed = wd.ok(["stage", "list", "--json"]).json();
        match listed.as_array().map(Vec::as_slice) {
            Some([]) => ensure!(
                names_in(&wd.path().join("stages")).is_empty(),
                "no stage directory without a listed stage"
            ),
            Some([stage]) => {
                ensure!(stage["sealed"] == true, "a listed stage is sealed: {stage}");
                let path = PathBuf::from(stage["path"].as_str().unwrap_or_default());
                let found = run_tool(Command::new("find").arg(&path).arg("-mindepth").arg("1"))?
                    .lines()
                    .count();
                // tar lists ./ too.
                ensure!(
                    found + 1 == entries,
                    "the stage is whole: {found} of {entries}"
                );
                wd.ok(["stage", "remove", STAGE]);
            }
            _ => anyhow::bail!("one stage at most: {listed}"),
        }
        Ok(())
    };
    let whole = timed(&wd, &import);
    eprintln!("kill test: stage import takes {whole:?}");
    kill_at_points(
        &wd,
        &import,
        whole,
        &mut tally,
        &no_stage,
        &stage_whole_or_absent,
    )?;
    ensure!(
        wd.pending().is_empty(),
        "nothing pending after the last import"
    );
    tally.checks += 1;

    // root create on dir (a copy of the stage): no root, or a whole one.
    let create: Vec<&OsStr> = ["root", "create", ROOT, "--stage", STAGE]
        .iter()
        .map(OsStr::new)
        .collect();
    let no_root = || -> Result<()> {
        if !wd.root_names().is_empty() {
            wd.ok(["root", "remove", ROOT]);
        }
        Ok(())
    };
    let root_whole_or_absent = |tally: &mut Tally| -> Result<()> {
        tally.checks += 1;
        match wd.root_names().as_slice() {
            [] => ensure!(
                names_in(&wd.path().join("roots")).is_empty(),
                "no root directory without a listed root"
            ),
            [name] if name == ROOT => {
                ensure!(
                    listing(&wd.stage_path(STAGE))? == listing(&wd.root_path(ROOT))?,
                    "a listed root is whole"
                );
                wd.ok(["root", "remove", ROOT]);
            }
            other => anyhow::bail!("one root at most: {other:?}"),
        }
        Ok(())
    };
    let whole = timed(&wd, &create);
    eprintln!("kill test: root create takes {whole:?}");
    kill_at_points(
        &wd,
        &create,
        whole,
        &mut tally,
        &no_root,
        &root_whole_or_absent,
    )?;

    // root pack: no archive, or a whole one with its manifest; never a temporary beside it.
    let pack_args: Vec<&OsStr> = ["root", "pack", ROOT].iter().map(OsStr::new).collect();
    let out = wd.path().join("out").join(ROOT);
    let archive = out.join("initramfs.cpio.gz");
    let no_archive = || -> Result<()> {
        if out.exists() {
            fs::remove_dir_all(&out)?;
        }
        Ok(())
    };
    let whole = timed(&wd, &pack_args);
    eprintln!("kill test: root pack takes {whole:?}");
    kill_at_points(&wd, &pack_args, whole, &mut tally, &no_archive, &|tally| {
        archive_whole_or_absent(&archive, tally).map(drop)
    })?;
    assert_eq!(
        names_in(&out),
        ["initramfs.cpio.gz", "initramfs.cpio.gz.manifest.json"],
        "the archive and its manifest, nothing else"
    );
    tally.checks += 1;

    // repo pack: no image, or a whole one that unsquashfs reads. A repository holds no device
    // nodes: the stage's data files stand in for one.
    let data = tree.join("usr/share/data");
    let repo_args: Vec<&OsStr> = vec![
        OsStr::new("repo"),
        OsStr::new("pack"),
        OsStr::new("--dir"),
        data.as_os_str(),
        OsStr::new("--name"),
        OsStr::new("snap"),
    ];
    let repos = wd.path().join("repos");
    let image = repos.join("snap.sqfs");
    let no_image = || -> Result<()> {
        if image.exists() {
            fs::remove_file(&image)?;
        }
        Ok(())
    };
    let image_whole_or_absent = |tally: &mut Tally| -> Result<()> {
        tally.checks += 1;
        match names_in(&repos).as_slice() {
            [] => {}
            [name] if name == "snap.sqfs" => {
                run_tool(Command::new("unsquashfs").arg("-s").arg(&image))?;
                fs::remove_file(&image)?;
            }
            other => anyhow::bail!("a whole image or nothing in repos/: {other:?}"),
        }
        Ok(())
    };
    let whole = timed(&wd, &repo_args);
    eprintln!("kill test: repo pack takes {whole:?}");
    kill_at_points(
        &wd,
        &repo_args,
        whole,
        &mut tally,
        &no_image,
        &image_whole_or_absent,
    )?;
    assert_eq!(names_in(&repos), ["snap.sqfs"]);
    tally.checks += 1;

    ensure!(tally.kills >= 4 * POINTS, "every point was a kill");
    tally.report("stage import, root create, root pack, repo pack");
    wd.close()
}

/// `build` started with its stderr read line by line, to be killed once it announces a step.
struct Announcing {
    child: Spawned,
    lines: mpsc::Receiver<String>,
    /// What it printed so far, for a failure message.
    seen: Vec<String>,
}

impl Announcing {
    fn start(wd: &Workdir, args: &[OsString]) -> Self {
        let mut command = wd.command(args);
        command.stderr(Stdio::piped());
        let mut child = Spawned::start(command);
        let stderr = child.take_stderr();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for the line announcing that `step` runs; false if the build ended first.
    fn wait_for_step(&mut self, step: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let announced = line.starts_with(&format!("run  {step} "));
                    self.seen.push(line);
                    if announced {
                        return true;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
        panic!("build did not reach its {step} step within 10 minutes");
    }
}

#[test]
fn kills_in_each_step_of_build_leave_nothing_half_made() -> Result<()> {
    let wd = MountedWorkdir::new();
    let mut tally = Tally::default();
    let tree = big_tree(&wd.scratch())?;
    wd.import(&tree, STAGE);
    wd.ok([
        OsStr::new("kernel"),
        OsStr::new("import"),
        kernel_source().as_os_str(),
        OsStr::new("--name"),
        OsStr::new("linux"),
    ]);
    let site = wd.scratch().join("site");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    fs::create_dir_all(site.join("kernel"))?;
    fs::copy(
        example.join("kernel/qemu-x86_64.kconfig"),
        site.join("kernel/qemu-x86_64.kconfig"),
    )?;
    // The command writes 40 files of 1 MiB, slowly enough to be caught in the middle.
    let config = site.join("autogentoo.toml");
    fs::write(
        &config,
        format!(
            "[systems.{ROOT}]\nstage = \"{STAGE}\"\nkernel = \"linux\"\nkernel_build = \"host\"\n\
             kernel_config = \"kernel/qemu-x86_64.kconfig\"\ncmdline = \"console=ttyS0\"\n\
             commands = [\"i=0; while test $i -lt 40; do /bin/busybox head -c 1048576 /dev/urandom > /var/tmp/f$i; i=$((i + 1)); done\"]\n"
        ),
    )?;
    let args: Vec<OsString> = ["--config", config.to_str().unwrap(), "build", ROOT]
        .iter()
        .map(OsString::from)
        .collect();
    let out = wd.path().join("out").join(ROOT);
    let image = out.join(format!("{ROOT}.efi"));
    // After each step is announced: a moment in, and (but for the kernel) later in it.
    for (step, delays) in [
        ("root", &[50, 400][..]),
        ("commands", &[200, 1500][..]),
        ("pack", &[100, 800][..]),
        ("kernel", &[20_000][..]),
    ] {
        for &delay in delays {
            // What makes the step run again: the root goes for the root step and the commands
            // (a new root reruns them), the archive for the pack, the image for the kernel.
            match step {
                "root" | "commands" if !wd.root_names().is_empty() => {
                    wd.ok(["root", "remove", ROOT]);
                }
                "pack" if out.join("initramfs.cpio.gz").exists() => {
                    fs::remove_file(out.join("initramfs.cpio.gz"))?;
                }
                "kernel" if image.exists() => fs::remove_file(&image)?,
                _ => {}
            }
            let mut build = Announcing::start(&wd, &args);
            if !build.wait_for_step(step) {
                let run = build.child.wait(Duration::from_secs(30));
                anyhow::bail!(
                    "build ended before its {step} step: {}\n{}",
                    run.describe(),
                    build.seen.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(delay));
            if build.child.has_exited() {
                tally.finished_before_the_kill += 1;
            } else {
                build.child.signal(rustix::process::Signal::KILL);
                build.child.wait(Duration::from_secs(30));
                tally.kills += 1;
            }
            nothing_running_or_mounted(&wd, &mut tally);
            tally.checks += 1;
            match wd.root_names().as_slice() {
                [] => ensure!(
                    names_in(&wd.path().join("roots")).is_empty(),
                    "no root directory"
                ),
                [name] if name == ROOT => {}
                other => anyhow::bail!("one root at most: {other:?}"),
            }
            archive_whole_or_absent(&out.join("initramfs.cpio.gz"), &mut tally)?;
            tally.checks += 1;
            let names = names_in(&out);
            ensure!(
                names.iter().all(|n| !n.starts_with('.')),
                "nothing hidden in {}: {names:?}",
                out.display()
            );
            if image.exists() {
                let manifest = fs::read_to_string(out.join(format!("{ROOT}.manifest.json")))?;
                let sha256 = run_tool(Command::new("sha256sum").arg(&image))?;
                ensure!(
                    manifest.contains(sha256.split_whitespace().next().unwrap_or("-")),
                    "an image beside its manifest is the one it describes"
                );
            }
        }
    }
    ensure!(
        tally.kills >= 6,
        "the build was killed in its steps: {} kills",
        tally.kills
    );
    let finished = Run::of(wd.command(&args));
    assert!(
        finished.status.success(),
        "the build then succeeds: {}\n{}",
        finished.describe(),
        kernel_log_tail(wd.path())
    );
    ensure!(image.exists(), "{} is built", image.display());
    nothing_running_or_mounted(&wd, &mut tally);
    tally.report("build, in its root, commands, pack and kernel steps");
    wd.close()
}

/// The last lines of the kernel's build log, for a failure's message: the temporary workdir is
/// gone by the time anyone reads it.
fn kernel_log_tail(workdir: &Path) -> String {
    let log = workdir.join("kbuild").join(ROOT).join("build.log");
    let text = fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!("--- {}\n{tail}", log.display())
}
