//! Helpers for the end-to-end tests, which drive the `autogentoo` binary the way a user or a
//! script does: a throw-away workdir that runs it, a stage tree holding every kind of entry a
//! stage3 tarball holds, GNU tar to pack it and to extract the reference it is compared with,
//! and children that are always stopped by their PID.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _, Result};
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};
use tempfile::TempDir;

#[path = "support/postgres.rs"]
pub mod postgres;

/// The binary under test: `AUTOGENTOO_BIN`, else the workspace's debug build.
pub fn binary() -> PathBuf {
    let path = match std::env::var_os("AUTOGENTOO_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/autogentoo"),
    };
    assert!(
        path.is_file(),
        "{} is missing: build it first: cargo build -p autogentoo-cli",
        path.display()
    );
    path
}

/// These tests make device nodes, chown files and set file capabilities, as a stage import does.
pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the end-to-end tests make device nodes, chown files and set file capabilities: run them \
         as root (`cargo xtask test` does)"
    );
}

/// The binary with no autogentoo settings from the environment and no input, so that
/// nothing on the host changes what a test sees.
pub fn isolated_binary() -> Command {
    let mut command = Command::new(binary());
    for var in [
        "AUTOGENTOO_BACKEND",
        "AUTOGENTOO_CONFIG",
        "AUTOGENTOO_WORKDIR",
        "AUTOGENTOO_LOG",
        "AUTOGENTOO_PLUGIN_PATH",
        "AUTOGENTOO_DATABASE_URL",
        "AUTOGENTOO_SERVER",
        "AUTOGENTOO_CA",
        "AUTOGENTOO_TOKEN_FILE",
    ] {
        command.env_remove(var);
    }
    command.stdin(Stdio::null());
    command
}

/// Runs `command`, which was given `args` last, and returns what it did, shown as `shown`
/// followed by the arguments.
fn run_shown(mut command: Command, shown: &str, args: &[OsString]) -> Run {
    let shown = std::iter::once(shown.to_owned())
        .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary().display()));
    Run::new(shown, output)
}

/// What one run of the binary did.
pub struct Run {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn new(command: String, output: Output) -> Self {
        Self {
            command,
            status: output.status,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Panics unless the run exited with `code`, showing what it printed.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(self.code(), Some(code), "exit code of {}", self.describe());
        self
    }

    /// stdout parsed as one JSON document.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.describe()))
    }

    /// The command and everything it printed, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}` ({})\n--- stdout\n{}--- stderr\n{}---",
            self.command, self.status, self.stdout, self.stderr
        )
    }

    /// Panics unless stderr is one `error:` line, optionally followed by `  caused by:` lines,
    /// and nothing else (no usage text, no panic, no backtrace).
    #[track_caller]
    pub fn expect_one_error(&self) {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            lines.first().is_some_and(|l| l.starts_with("error: ")),
            "stderr starts with `error:`: {}",
            self.describe()
        );
        assert!(
            lines[1..].iter().all(|l| l.starts_with("  caused by: ")),
            "one error, one line per cause: {}",
            self.describe()
        );
    }
}

/// A fresh workdir in a temporary directory, removed on drop, with a scratch directory beside
/// it for tarballs and trees.
pub struct Workdir {
    tmp: TempDir,
    path: PathBuf,
}

impl Workdir {
    /// An initialised workdir (`autogentoo workdir init` has run).
    pub fn new() -> Self {
        let workdir = Self::uninitialised();
        workdir.ok(["workdir", "init"]);
        workdir
    }

    /// A workdir path where nothing has been created yet.
    pub fn uninitialised() -> Self {
        require_root();
        let tmp = tempfile::Builder::new()
            .prefix("autogentoo-e2e.")
            .tempdir()
            .expect("a temporary directory");
        let path = tmp.path().join("work");
        fs::create_dir(tmp.path().join("scratch")).expect("a scratch directory");
        Self { tmp, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary directory holding the workdir and the scratch directory.
    pub fn top(&self) -> &Path {
        self.tmp.path()
    }

    /// A directory for sources and references, outside the workdir.
    pub fn scratch(&self) -> PathBuf {
        self.tmp.path().join("scratch")
    }

    /// The binary with `--workdir` set and no autogentoo settings from the environment.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = isolated_binary();
        command.arg("--workdir").arg(&self.path).args(args);
        command
    }

    /// Runs the binary with `args` and returns what it did, whatever the outcome.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        run_shown(self.command(&args), "autogentoo", &args)
    }

    /// Runs the binary and panics unless it succeeds.
    #[track_caller]
    pub fn ok<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let run = self.run(args);
        assert!(run.status.success(), "expected success: {}", run.describe());
        run
    }

    /// `autogentoo stage import SOURCE --name NAME`, which must succeed; returns the stage's path
    /// as `stage path` prints it.
    #[track_caller]
    pub fn import(&self, source: &Path, name: &str) -> PathBuf {
        let run = self.ok([
            OsStr::new("stage"),
            OsStr::new("import"),
            source.as_os_str(),
            OsStr::new("--name"),
            OsStr::new(name),
        ]);
        let path = self.stage_path(name);
        assert_eq!(
            run.stdout.trim_end(),
            path.to_str().expect("a UTF-8 workdir"),
            "import prints the stage's path"
        );
        path
    }

    /// The directory `autogentoo stage path NAME` prints.
    #[track_caller]
    pub fn stage_path(&self, name: &str) -> PathBuf {
        PathBuf::from(self.ok(["stage", "path", name]).stdout.trim_end())
    }

    /// The directory `autogentoo root path NAME` prints.
    #[track_caller]
    pub fn root_path(&self, name: &str) -> PathBuf {
        PathBuf::from(self.ok(["root", "path", name]).stdout.trim_end())
    }

    /// The names `stage list --json` shows.
    #[track_caller]
    pub fn stage_names(&self) -> Vec<String> {
        self.names("stage")
    }

    /// The names `root list --json` shows.
    #[track_caller]
    pub fn root_names(&self) -> Vec<String> {
        self.names("root")
    }

    #[track_caller]
    fn names(&self, kind: &str) -> Vec<String> {
        let run = self.ok([kind, "list", "--json"]);
        let list = run.json();
        let list = list
            .as_array()
            .unwrap_or_else(|| panic!("a JSON array: {}", run.describe()));
        list.iter()
            .map(|v| {
                v["id"]["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("id.name in {v}"))
                    .to_owned()
            })
            .collect()
    }

    /// `WORKDIR/stages`.
    pub fn stages_dir(&self) -> PathBuf {
        self.path.join("stages")
    }

    /// Where the dir backend fills volumes before they become visible.
    pub fn pending_dir(&self) -> PathBuf {
        self.path.join(".autogentoo/pending")
    }

    /// What is in the pending directory now, sorted.
    pub fn pending(&self) -> Vec<PathBuf> {
        list_dir(&self.pending_dir())
    }

    /// Panics unless a failed import left nothing: no stage listed, nothing in `stages/`, nothing
    /// pending.
    #[track_caller]
    pub fn assert_no_stage_left(&self) {
        let listed = self.ok(["stage", "list"]);
        assert_eq!(listed.stdout, "", "`stage list` prints nothing");
        assert_eq!(
            list_dir(&self.stages_dir()),
            Vec::<PathBuf>::new(),
            "nothing in stages/"
        );
        assert_eq!(self.pending(), Vec::<PathBuf>::new(), "nothing pending");
    }
}

impl Default for Workdir {
    fn default() -> Self {
        Self::new()
    }
}

/// The entries of a directory, sorted; empty if it does not exist.
pub fn list_dir(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.expect("a directory entry").path())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("cannot list {}: {e}", dir.display()),
    };
    paths.sort();
    paths
}

/// Every path under `dir` (not following symlinks) whose last component is `name`.
pub fn find_named(dir: &Path, name: &OsStr) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(dir) = todo.pop() {
        for path in list_dir(&dir) {
            if path.file_name() == Some(name) {
                found.push(path.clone());
            }
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                todo.push(path);
            }
        }
    }
    found
}

/// Polls `done` every 20 ms until it holds; panics naming `what` after `timeout`.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process that is killed (by its PID) and reaped if the test ends without waiting
/// for it.
pub struct Spawned {
    child: Option<Child>,
    command: String,
}

impl Spawned {
    /// Starts `command` with stdout and stderr captured.
    pub fn start(mut command: Command) -> Self {
        let shown = format!("{command:?}");
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {shown}: {e}"));
        Self {
            child: Some(child),
            command: shown,
        }
    }

    /// Its stderr, for a caller that reads it while it runs (`wait` then returns none).
    pub fn take_stderr(&mut self) -> std::process::ChildStderr {
        self.child
            .as_mut()
            .and_then(|c| c.stderr.take())
            .expect("stderr is piped and not taken yet")
    }

    /// Its stdout, for a caller that reads it while it runs (`wait` then returns none).
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .expect("stdout is piped and not taken yet")
    }

    pub fn pid(&self) -> rustix::process::Pid {
        let id = self.child.as_ref().expect("running").id();
        rustix::process::Pid::from_raw(id as i32).expect("a valid PID")
    }

    /// Whether it has exited (without reaping it: `wait` still reports how).
    pub fn has_exited(&mut self) -> bool {
        let child = self.child.as_mut().expect("running");
        // `try_wait` reaps it, and std keeps the status for `wait`.
        child.try_wait().expect("try_wait").is_some()
    }

    pub fn signal(&self, signal: rustix::process::Signal) {
        rustix::process::kill_process(self.pid(), signal)
            .unwrap_or_else(|e| panic!("cannot signal {}: {e}", self.command));
    }

    /// Waits up to `timeout` for it to exit and returns what it printed.
    #[track_caller]
    pub fn wait(&mut self, timeout: Duration) -> Run {
        wait_until(&format!("{} exits", self.command), timeout, || {
            self.has_exited()
        });
        let mut child = self.child.take().expect("running");
        let status = child.wait().expect("wait");
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            out.read_to_end(&mut stdout).expect("read stdout");
        }
        if let Some(mut err) = child.stderr.take() {
            err.read_to_end(&mut stderr).expect("read stderr");
        }
        Run::new(
            self.command.clone(),
            Output {
                status,
                stdout,
                stderr,
            },
        )
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` signals this child's PID, never a name.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How GNU tar compresses an archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

impl Compression {
    /// The file name suffix Gentoo mirrors use.
    pub fn extension(self) -> &'static str {
        match self {
            Self::None => "tar",
            Self::Gzip => "tar.gz",
            Self::Bzip2 => "tar.bz2",
            Self::Xz => "tar.xz",
            Self::Zstd => "tar.zst",
        }
    }

    fn tar_flag(self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Gzip => Some("--gzip"),
            Self::Bzip2 => Some("--bzip2"),
            Self::Xz => Some("--xz"),
            Self::Zstd => Some("--zstd"),
        }
    }
}

/// Runs GNU tar with `args`, which must succeed; returns its stdout.
pub fn gnu_tar<I, S>(args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let output = Command::new("tar")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run GNU tar (apt-get install tar)")?;
    ensure!(
        output.status.success(),
        "tar {:?} failed ({}): {}",
        args,
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Packs `tree` as a stage3 tarball is packed: pax headers with xattrs, numeric owners.
/// On create GNU tar stores every xattr, `security.capability` included.
pub fn pack(tree: &Path, archive: &Path, compression: Compression) -> Result<()> {
    let mut args: Vec<&OsStr> = vec![
        OsStr::new("--create"),
        OsStr::new("--xattrs"),
        OsStr::new("--numeric-owner"),
        OsStr::new("--preserve-permissions"),
    ];
    args.extend(compression.tar_flag().map(OsStr::new));
    args.extend([
        OsStr::new("--file"),
        archive.as_os_str(),
        OsStr::new("-C"),
        tree.as_os_str(),
        OsStr::new("."),
    ]);
    gnu_tar(args).map(drop)
}

/// Extracts `archive` into a new directory `dest` as the Gentoo handbook says to:
/// `tar --xattrs --xattrs-include='*' --numeric-owner -xpf`.
pub fn extract_reference(archive: &Path, dest: &Path) -> Result<()> {
    fs::create_dir(dest).with_context(|| format!("create {}", dest.display()))?;
    gnu_tar([
        OsStr::new("--extract"),
        OsStr::new("--xattrs"),
        OsStr::new("--xattrs-include=*"),
        OsStr::new("--numeric-owner"),
        OsStr::new("--preserve-permissions"),
        OsStr::new("--file"),
        archive.as_os_str(),
        OsStr::new("-C"),
        dest.as_os_str(),
    ])
    .map(drop)
}

/// Unpacks a gzip newc archive (an initramfs of ours) with GNU cpio into `dest`.
pub fn unpack_initramfs(archive: &Path, dest: &Path) -> Result<()> {
    fs::create_dir_all(dest)?;
    run_tool(
        Command::new("sh")
            .arg("-c")
            .arg("gzip -dc \"$1\" | (cd \"$2\" && cpio -idm --quiet)")
            .arg("sh")
            .arg(archive)
            .arg(dest),
    )
    .context("cannot unpack the initramfs (apt-get install cpio gzip)")?;
    Ok(())
}

/// GNU tar's verbose listing, with every xattr name shown.
pub fn archive_listing(archive: &Path) -> Result<String> {
    gnu_tar([
        OsStr::new("--list"),
        OsStr::new("--xattrs"),
        OsStr::new("--xattrs-include=*"),
        OsStr::new("-vv"),
        OsStr::new("--file"),
        archive.as_os_str(),
    ])
}

/// Paths of the rich tree that carry something special, for checks and for changes.
pub mod rich {
    /// The owner of the entries that do not belong to root (Gentoo's `portage` is 250:250).
    pub const OTHER_ID: u32 = 250;
    /// A file capability (`setcap cap_net_raw+ep`).
    pub const CAP_FILE: &str = "usr/bin/ping";
    /// A `user.*` xattr.
    pub const USER_XATTR_FILE: &str = "etc/motd";
    pub const USER_XATTR: &str = "user.autogentoo.origin";
    pub const USER_XATTR_VALUE: &[u8] = b"stage3 test fixture";
    /// Mode 4755.
    pub const SETUID_FILE: &str = "usr/bin/su";
    /// A setgid directory, mode 2775, group 250.
    pub const SETGID_DIR: &str = "var/mail";
    /// `c 1 3`.
    pub const CHAR_DEV: &str = "dev/null";
    /// `b 7 0`.
    pub const BLOCK_DEV: &str = "dev/loop0";
    pub const FIFO: &str = "run/initctl";
    /// Three names of one inode.
    pub const HARDLINKS: [&str; 3] = [
        "usr/bin/gcc",
        "usr/bin/cc",
        "usr/bin/x86_64-pc-linux-gnu-gcc",
    ];
    /// An absolute symlink and its target.
    pub const ABS_SYMLINK: (&str, &str) = ("etc/passwd-link", "/etc/passwd");
    /// A relative symlink and its target.
    pub const REL_SYMLINK: (&str, &str) = ("usr/lib/libbig.so", "libbig.so.1");
    /// A directory and a file owned by 250:250.
    pub const OTHER_DIR: &str = "home/builder";
    pub const OTHER_FILE: &str = "home/builder/.bashrc";
    /// A name that is not UTF-8 (Latin-1 "café").
    pub const NON_UTF8_NAME: &[u8] = b"srv/caf\xe9";
    pub const DEEP_FILE: &str = "usr/share/a/b/c/d/e/deep";
    /// A file large enough that half of the compressed tarball stops inside it.
    pub const BIG_FILE: &str = "usr/lib/libbig.so.1";
    pub const PLAIN_FILE: &str = "etc/passwd";
}

/// `len` bytes that do not compress, the same for the same `seed`.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn chown(path: &Path, id: u32) -> Result<()> {
    lchown(path, Some(id), Some(id)).with_context(|| format!("chown {id} {}", path.display()))
}

fn write(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    fs::write(path, content).with_context(|| format!("write {}", path.display()))?;
    set_mode(path, mode)
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("mkdir {}", path.display()))?;
    set_mode(path, mode)
}

fn mknod(path: &Path, file_type: FileType, mode: u32, major: u32, minor: u32) -> Result<()> {
    let dev = rustix::fs::makedev(major, minor);
    rustix::fs::mknodat(CWD, path, file_type, Mode::from_raw_mode(mode), dev)
        .with_context(|| format!("mknod {}", path.display()))?;
    set_mode(path, mode)
}

fn symlink(target: &str, path: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, path)
        .with_context(|| format!("symlink {} -> {target}", path.display()))
}

/// Builds, in the new directory `root`, a small stage tree holding every kind of entry and
/// metadata a stage3 tarball holds (see [`rich`]), with a different sub-second mtime on every
/// entry.
pub fn build_rich_tree(root: &Path) -> Result<()> {
    use rich::*;
    mkdir(root, 0o755)?;
    let at = |rel: &str| root.join(rel);
    for (dir, mode) in [
        ("dev", 0o755),
        ("etc", 0o755),
        ("home", 0o755),
        ("run", 0o755),
        ("srv", 0o755),
        ("usr/bin", 0o755),
        ("usr/lib", 0o755),
        ("usr/share/a/b/c/d/e", 0o755),
        ("var/lib/portage", 0o755),
        ("var/empty", 0o700),
        ("root", 0o700),
    ] {
        mkdir(&at(dir), mode)?;
    }
    symlink("usr/bin", &at("bin"))?;

    write(
        &at(PLAIN_FILE),
        b"root:x:0:0:root:/root:/bin/bash\nportage:x:250:250::/var/lib/portage/home:/bin/false\n",
        0o644,
    )?;
    write(&at("etc/shadow"), b"root:*:10770:0:::::\n", 0o640)?;
    write(&at("etc/empty.conf"), b"", 0o644)?;
    write(&at(USER_XATTR_FILE), b"This is a test stage.\n", 0o644)?;
    rustix::fs::setxattr(
        at(USER_XATTR_FILE),
        USER_XATTR,
        USER_XATTR_VALUE,
        XattrFlags::empty(),
    )
    .context("set a user xattr (does the filesystem under the temp dir hold xattrs?)")?;
    symlink(ABS_SYMLINK.1, &at(ABS_SYMLINK.0))?;
    symlink("/proc/self/mounts", &at("etc/mtab"))?;

    mknod(&at(CHAR_DEV), FileType::CharacterDevice, 0o666, 1, 3)?;
    mknod(&at(BLOCK_DEV), FileType::BlockDevice, 0o660, 7, 0)?;
    lchown(at(BLOCK_DEV), Some(0), Some(6)).context("chown dev/loop0")?;
    mknod(&at(FIFO), FileType::Fifo, 0o600, 0, 0)?;

    write(&at(SETUID_FILE), b"#!/bin/sh\necho su\n", 0o755)?;
    set_mode(&at(SETUID_FILE), 0o4755)?;
    write(&at(CAP_FILE), b"#!/bin/sh\necho ping\n", 0o755)?;
    // After every chown and chmod of the file: chown clears capabilities.
    let setcap = Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(at(CAP_FILE))
        .output()
        .context("cannot run setcap (apt-get install libcap2-bin)")?;
    ensure!(
        setcap.status.success(),
        "setcap failed: {}",
        String::from_utf8_lossy(&setcap.stderr)
    );
    write(&at(HARDLINKS[0]), b"\x7fELF pretend compiler\n", 0o755)?;
    for name in &HARDLINKS[1..] {
        fs::hard_link(at(HARDLINKS[0]), at(name)).with_context(|| format!("link {name}"))?;
    }
    write(&at(BIG_FILE), &noise(384 * 1024, 1), 0o755)?;
    symlink(REL_SYMLINK.1, &at(REL_SYMLINK.0))?;
    write(&at(DEEP_FILE), b"deep\n", 0o644)?;

    mkdir(&at(SETGID_DIR), 0o775)?;
    lchown(at(SETGID_DIR), Some(0), Some(OTHER_ID)).context("chown var/mail")?;
    set_mode(&at(SETGID_DIR), 0o2775)?;
    write(&at("var/lib/portage/world"), b"app-editors/vim\n", 0o644)?;

    mkdir(&at(OTHER_DIR), 0o750)?;
    mkdir(&at("home/builder/notes"), 0o755)?;
    write(&at(OTHER_FILE), b"export PS1='$ '\n", 0o644)?;
    write(&at("home/builder/notes/todo"), b"build\n", 0o600)?;
    symlink(".bashrc", &at("home/builder/.profile"))?;
    for rel in [
        OTHER_DIR,
        "home/builder/notes",
        OTHER_FILE,
        "home/builder/notes/todo",
        "home/builder/.profile",
    ] {
        chown(&at(rel), OTHER_ID)?;
    }

    let latin1 = root.join(OsStr::from_bytes(NON_UTF8_NAME));
    write(&latin1, b"caf\xe9\n", 0o644)?;

    let mut counter = 0;
    set_times(root, &mut counter)
}

/// Gives every entry below and including `path` its own mtime with nanoseconds, children before
/// their directory (creating an entry changes the directory's mtime).
fn set_times(path: &Path, counter: &mut i64) -> Result<()> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if meta.is_dir() {
        for child in list_dir(path) {
            set_times(&child, counter)?;
        }
    }
    *counter += 1;
    let time = Timespec {
        tv_sec: 1_700_000_000 + *counter * 3_607,
        tv_nsec: 100_000_000 + *counter * 7_654_321,
    };
    let times = Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)
        .with_context(|| format!("set the times of {}", path.display()))
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let len = rustix::fs::lgetxattr_query(path, name).ok()?;
    let mut value = vec![0; len];
    let len = rustix::fs::lgetxattr(path, name, &mut value).ok()?;
    value.truncate(len);
    Some(value)
}

/// Checks that `root` holds what [`build_rich_tree`] put there that is easy to lose: the
/// capability and user xattrs, setuid and setgid bits, devices, the fifo, the hardlink group,
/// both symlinks, the other owner, the non-UTF-8 name, nanosecond mtimes. Used on the GNU tar
/// reference to show that the comparison with it covers all of them.
pub fn check_rich_tree(root: &Path) -> Result<()> {
    use rich::*;
    let at = |rel: &str| root.join(rel);
    let meta = |rel: &str| {
        fs::symlink_metadata(at(rel))
            .with_context(|| format!("{rel} is missing in {}", root.display()))
    };

    let cap = xattr(&at(CAP_FILE), "security.capability");
    ensure!(
        cap.as_ref().is_some_and(|v| !v.is_empty()),
        "{CAP_FILE} has no security.capability"
    );
    ensure!(
        xattr(&at(USER_XATTR_FILE), USER_XATTR).as_deref() == Some(USER_XATTR_VALUE),
        "{USER_XATTR_FILE} lacks {USER_XATTR}"
    );
    ensure!(
        meta(SETUID_FILE)?.mode() & 0o7777 == 0o4755,
        "{SETUID_FILE} is not 4755"
    );
    let setgid = meta(SETGID_DIR)?;
    ensure!(
        setgid.is_dir() && setgid.mode() & 0o7777 == 0o2775 && setgid.gid() == OTHER_ID,
        "{SETGID_DIR} is not a 2775 directory of group {OTHER_ID}"
    );
    let char_dev = meta(CHAR_DEV)?;
    ensure!(
        FileType::from_raw_mode(char_dev.mode()) == FileType::CharacterDevice
            && char_dev.rdev() == rustix::fs::makedev(1, 3),
        "{CHAR_DEV} is not c 1 3"
    );
    let block_dev = meta(BLOCK_DEV)?;
    ensure!(
        FileType::from_raw_mode(block_dev.mode()) == FileType::BlockDevice
            && block_dev.rdev() == rustix::fs::makedev(7, 0),
        "{BLOCK_DEV} is not b 7 0"
    );
    ensure!(
        FileType::from_raw_mode(meta(FIFO)?.mode()) == FileType::Fifo,
        "{FIFO} is not a fifo"
    );
    let first = meta(HARDLINKS[0])?;
    ensure!(
        first.nlink() == 3,
        "{} has {} links",
        HARDLINKS[0],
        first.nlink()
    );
    for name in HARDLINKS {
        ensure!(
            meta(name)?.ino() == first.ino(),
            "{name} is not linked to {}",
            HARDLINKS[0]
        );
    }
    for (link, target) in [ABS_SYMLINK, REL_SYMLINK] {
        let found = fs::read_link(at(link)).with_context(|| format!("readlink {link}"))?;
        ensure!(found == Path::new(target), "{link} -> {}", found.display());
    }
    for rel in [OTHER_DIR, OTHER_FILE] {
        let m = meta(rel)?;
        ensure!(
            m.uid() == OTHER_ID && m.gid() == OTHER_ID,
            "{rel} is owned by {}:{}",
            m.uid(),
            m.gid()
        );
    }
    let latin1 = root.join(OsStr::from_bytes(NON_UTF8_NAME));
    ensure!(
        fs::symlink_metadata(&latin1).is_ok(),
        "the non-UTF-8 name is missing"
    );
    ensure!(meta(DEEP_FILE)?.is_file(), "{DEEP_FILE} is missing");
    for rel in [DEEP_FILE, ABS_SYMLINK.0, SETGID_DIR] {
        if meta(rel)?.mtime_nsec() == 0 {
            bail!("{rel} has no sub-second mtime");
        }
    }
    Ok(())
}

/// A rich tree, its tarball and GNU tar's extraction of that tarball, in `dir`:
/// `dir/tree`, `dir/stage.EXT`, `dir/ref`.
pub struct RichStage {
    pub tree: PathBuf,
    pub archive: PathBuf,
    pub reference: PathBuf,
}

impl RichStage {
    pub fn build(dir: &Path, compression: Compression) -> Result<Self> {
        let tree = dir.join("tree");
        build_rich_tree(&tree)?;
        let archive = dir.join(format!("stage.{}", compression.extension()));
        pack(&tree, &archive, compression)?;
        let reference = dir.join("ref");
        extract_reference(&archive, &reference)?;
        Ok(Self {
            tree,
            archive,
            reference,
        })
    }
}

/// Builds a minimal stage tree in the new directory `root`, for tests about volumes rather than
/// their contents.
pub fn build_small_tree(root: &Path) -> Result<()> {
    mkdir(&root.join("etc"), 0o755)?;
    mkdir(&root.join("usr/bin"), 0o755)?;
    write(&root.join("etc/hostname"), b"gentoo\n", 0o644)?;
    write(
        &root.join("etc/os-release"),
        b"NAME=Gentoo\nID=gentoo\n",
        0o644,
    )?;
    symlink("usr/bin", &root.join("bin"))
}

/// One line of `/proc/self/mountinfo`, parsed here rather than by the code under test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u64,
    pub parent: u64,
    /// The directory of its filesystem that is mounted: the source of a bind mount.
    pub fs_root: PathBuf,
    pub point: PathBuf,
    /// The per-mount options: `rw` or `ro`, `nosuid`, …
    pub options: String,
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    pub fn is_read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// Parses mountinfo text: `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE …`.
pub fn parse_mountinfo(text: impl AsRef<[u8]>) -> Vec<MountEntry> {
    text.as_ref()
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let separator = fields.iter().position(|f| *f == b"-")?;
            let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
            let path = |f: &[u8]| PathBuf::from(OsStr::from_bytes(&unescape_mountinfo(f)));
            Some(MountEntry {
                id: text(fields.first()?).parse().ok()?,
                parent: text(fields.get(1)?).parse().ok()?,
                fs_root: path(fields.get(3)?),
                point: path(fields.get(4)?),
                options: text(fields.get(5)?),
                fstype: text(fields.get(separator + 1)?),
                source: text(&unescape_mountinfo(fields.get(separator + 2)?)),
            })
        })
        .collect()
}

/// Undoes the kernel's `\ooo` escapes of spaces, tabs, newlines and backslashes.
fn unescape_mountinfo(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

/// Every mount of this process's mount namespace (the host's, for the tests), in kernel order.
pub fn mountinfo() -> Vec<MountEntry> {
    parse_mountinfo(fs::read("/proc/self/mountinfo").expect("read /proc/self/mountinfo"))
}

/// The mounts strictly below `dir`, in kernel order.
pub fn mounts_below(dir: &Path) -> Vec<MountEntry> {
    mountinfo()
        .into_iter()
        .filter(|m| m.point.starts_with(dir) && m.point != dir)
        .collect()
}

/// Whether something is mounted exactly on `path`.
pub fn is_mount_point(path: &Path) -> bool {
    mountinfo().iter().any(|m| m.point == path)
}

/// The attached loop devices and their backing files, from `/sys/block/loop*/loop/backing_file`.
pub fn loop_devices() -> Vec<(PathBuf, PathBuf)> {
    list_dir(Path::new("/sys/block"))
        .into_iter()
        .filter_map(|dir| {
            let name = dir.file_name()?.to_str()?.to_owned();
            let backing = fs::read_to_string(dir.join("loop/backing_file")).ok()?;
            name.starts_with("loop").then(|| {
                (
                    PathBuf::from(format!("/dev/{name}")),
                    PathBuf::from(backing.trim_end_matches('\n')),
                )
            })
        })
        .collect()
}

/// The loop devices backed by `image`.
pub fn loop_devices_on(image: &Path) -> Vec<PathBuf> {
    loop_devices()
        .into_iter()
        .filter(|(_, backing)| backing == image)
        .map(|(device, _)| device)
        .collect()
}

/// A process seen in `/proc`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub command: String,
    /// Where `/proc/PID/root` leads (its chroot), as the host sees it.
    pub root: PathBuf,
    /// The (device, inode) of its root directory: a process that pivoted into a root in its
    /// own mount namespace shows "/" as its root path, but the directory is the same.
    pub root_id: (u64, u64),
    pub cwd: PathBuf,
}

/// Every live process we can inspect (zombies have no root and are left out).
pub fn processes() -> Vec<ProcessInfo> {
    list_dir(Path::new("/proc"))
        .into_iter()
        .filter_map(|dir| {
            let pid: u32 = dir.file_name()?.to_str()?.parse().ok()?;
            Some(ProcessInfo {
                pid,
                command: fs::read_to_string(dir.join("comm"))
                    .ok()?
                    .trim_end()
                    .to_owned(),
                root: fs::read_link(dir.join("root")).ok()?,
                root_id: fs::metadata(dir.join("root"))
                    .map(|m| (m.dev(), m.ino()))
                    .ok()?,
                cwd: fs::read_link(dir.join("cwd")).ok()?,
            })
        })
        .filter(|p| p.pid != std::process::id())
        .collect()
}

/// The processes chrooted (or pivoted) into `dir` or below it.
pub fn processes_rooted_in(dir: &Path) -> Vec<ProcessInfo> {
    let id = fs::metadata(dir).map(|m| (m.dev(), m.ino())).ok();
    processes()
        .into_iter()
        .filter(|p| p.root.starts_with(dir) || Some(p.root_id) == id)
        .collect()
}

/// A workdir whose roots the test mounts. Mounts, loop devices and processes below its
/// temporary directory are undone before that directory is removed, also when the test fails:
/// removing a tree with `/dev` bound into it would remove the host's device nodes.
pub struct MountedWorkdir {
    workdir: Option<Workdir>,
}

impl MountedWorkdir {
    /// An initialised workdir.
    pub fn new() -> Self {
        Self {
            workdir: Some(Workdir::new()),
        }
    }

    /// Checks that the test left nothing mounted, attached or running below the workdir, undoes
    /// whatever it did leave, and removes the workdir. An error lists what was left.
    pub fn close(mut self) -> Result<()> {
        let workdir = self.workdir.take().expect("not closed yet");
        let left = leftovers(workdir.top());
        let stuck = clean_up(&workdir);
        dispose(workdir, &stuck);
        ensure!(left.is_empty(), "the test left behind: {}", left.join("; "));
        ensure!(stuck.is_empty(), "cannot undo: {}", stuck.join("; "));
        Ok(())
    }
}

impl Default for MountedWorkdir {
    fn default() -> Self {
        Self::new()
    }
}

impl std::ops::Deref for MountedWorkdir {
    type Target = Workdir;

    fn deref(&self) -> &Workdir {
        self.workdir.as_ref().expect("not closed yet")
    }
}

impl Drop for MountedWorkdir {
    fn drop(&mut self) {
        if let Some(workdir) = self.workdir.take() {
            let left = leftovers(workdir.top());
            if !left.is_empty() {
                eprintln!("cleaning up after the test: {}", left.join("; "));
            }
            let stuck = clean_up(&workdir);
            dispose(workdir, &stuck);
        }
    }
}

/// Removes the workdir, unless something is still mounted in it: then it is left on disk,
/// since removing it would reach into the mounts.
fn dispose(workdir: Workdir, stuck: &[String]) {
    if mounts_below(workdir.top()).is_empty() {
        drop(workdir);
    } else {
        eprintln!(
            "leaving {} on disk, still mounted: {}",
            workdir.top().display(),
            stuck.join("; ")
        );
        std::mem::forget(workdir);
    }
}

/// Mounts, loop devices and processes below `top`, described; empty when nothing is left.
pub fn leftovers(top: &Path) -> Vec<String> {
    let mut left: Vec<String> = mounts_below(top)
        .iter()
        .map(|m| format!("mount {} ({})", m.point.display(), m.fstype))
        .collect();
    left.extend(
        loop_devices()
            .iter()
            .filter(|(_, backing)| backing.starts_with(top))
            .map(|(device, backing)| {
                format!("loop device {} on {}", device.display(), backing.display())
            }),
    );
    left.extend(
        processes()
            .iter()
            .filter(|p| p.root.starts_with(top) || p.cwd.starts_with(top))
            .map(|p| format!("process {} ({})", p.pid, p.command)),
    );
    left
}

/// Undoes what is below the workdir, each thing by its PID, path or device: processes chrooted
/// or working there are killed (first: once their mount is detached, `/proc` no longer shows
/// where they are), every root gets `root umount --lazy`, what is still mounted is made a slave
/// (an unmount must not travel back to the host's `/dev`) and detached deepest first, and loop
/// devices on images there are detached. Returns what could not be undone.
fn clean_up(workdir: &Workdir) -> Vec<String> {
    let top = workdir.top();
    let using = |p: &ProcessInfo| p.root.starts_with(top) || p.cwd.starts_with(top);
    for process in processes().iter().filter(|p| using(p)) {
        if let Some(pid) = rustix::process::Pid::from_raw(process.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    let start = Instant::now();
    while processes().iter().any(using) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for root in list_dir(&workdir.path().join("roots")) {
        if let Some(name) = root.file_name().and_then(OsStr::to_str) {
            if !mounts_below(&root).is_empty() {
                workdir.run(["root", "umount", "--lazy", name]);
            }
        }
    }
    for _ in 0..8 {
        let mut mounts = mounts_below(top);
        if mounts.is_empty() {
            break;
        }
        for mount in &mounts {
            let _ = rustix::mount::mount_change(
                &mount.point,
                rustix::mount::MountPropagationFlags::DOWNSTREAM,
            );
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.point.components().count()));
        for mount in &mounts {
            let _ = rustix::mount::unmount(
                &mount.point,
                rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW,
            );
        }
    }
    let start = Instant::now();
    loop {
        let devices: Vec<PathBuf> = loop_devices()
            .into_iter()
            .filter(|(_, backing)| backing.starts_with(top))
            .map(|(device, _)| device)
            .collect();
        if devices.is_empty() || start.elapsed() > Duration::from_secs(5) {
            break;
        }
        for device in devices {
            let _ = Command::new("losetup")
                .arg("--detach")
                .arg(&device)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    leftovers(top)
}

/// The busybox applets linked in a busybox root.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "sh", "ls", "cat", "sleep", "mount", "umount", "ps", "echo", "mkdir", "env", "kill", "true",
    "false", "test", "id", "grep", "touch", "readlink",
];

/// Builds, in the new directory `root`, a tiny root that can run commands: Debian's static
/// busybox (`apt-get install busybox-static`) with its applets linked in `bin/`, and the
/// directories a root is mounted on.
pub fn build_busybox_tree(root: &Path) -> Result<()> {
    let busybox = Path::new("/bin/busybox");
    ensure!(
        busybox.is_file(),
        "{} is missing: apt-get install busybox-static",
        busybox.display()
    );
    build_busybox_tree_of(root, busybox)
}

/// Debian's static busybox for arm64 (`busybox-static:arm64`), fetched once with `apt-get
/// download` (the arm64 architecture added to dpkg, as `cargo xtask test` does) and kept in
/// `target/test-cache/`.
pub fn arm64_busybox() -> Result<PathBuf> {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-cache");
    let busybox = cache.join("busybox-arm64");
    if busybox.is_file() {
        return Ok(busybox);
    }
    fs::create_dir_all(&cache)?;
    let scratch = tempfile::tempdir_in(&cache)?;
    run_tool(
        Command::new("apt-get")
            .args(["download", "busybox-static:arm64"])
            .current_dir(scratch.path()),
    )
    .context("dpkg --add-architecture arm64 && apt-get update")?;
    let deb = fs::read_dir(scratch.path())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    run_tool(
        Command::new("dpkg-deb")
            .arg("-x")
            .arg(&deb)
            .arg(scratch.path().join("x")),
    )?;
    // Renamed into place whole: a test that waits for it never sees half a file.
    fs::rename(scratch.path().join("x/bin/busybox"), &busybox)?;
    Ok(busybox)
}

/// [`build_busybox_tree`] with the `busybox` binary given (another architecture's).
pub fn build_busybox_tree_of(root: &Path, busybox: &Path) -> Result<()> {
    for dir in [
        "bin",
        "proc",
        "sys",
        "dev",
        "run",
        "etc",
        "root",
        "var/cache/distfiles",
        "var/cache/binpkgs",
        "var/db/repos/gentoo",
    ] {
        mkdir(&root.join(dir), 0o755)?;
    }
    mkdir(&root.join("tmp"), 0o1777)?;
    fs::copy(busybox, root.join("bin/busybox"))
        .with_context(|| format!("copy {}", busybox.display()))?;
    set_mode(&root.join("bin/busybox"), 0o755)?;
    for applet in BUSYBOX_APPLETS {
        symlink("busybox", &root.join("bin").join(applet))?;
    }
    write(
        &root.join("etc/passwd"),
        b"root:x:0:0:root:/root:/bin/sh\n",
        0o644,
    )?;
    write(&root.join("etc/hostname"), b"busybox\n", 0o644)
}

/// A small ebuild tree for a fake repository: `(path, contents)`.
pub const FAKE_EBUILDS: &[(&str, &str)] = &[
    ("profiles/repo_name", "gentoo\n"),
    ("metadata/layout.conf", "masters =\n"),
    (
        "sys-apps/hello/hello-1.0.ebuild",
        "EAPI=8\nDESCRIPTION=\"a test ebuild\"\nSLOT=0\nKEYWORDS=\"amd64\"\n",
    ),
    (
        "app-misc/marker/marker-2.ebuild",
        "EAPI=8\nDESCRIPTION=\"another\"\nSLOT=0\n",
    ),
];

/// Packs [`FAKE_EBUILDS`], written to the new directory `tree`, into the SquashFS `image` with
/// `mksquashfs` (`apt-get install squashfs-tools`).
pub fn make_repo_image(tree: &Path, image: &Path) -> Result<()> {
    for (rel, contents) in FAKE_EBUILDS {
        let path = tree.join(rel);
        mkdir(path.parent().expect("a parent"), 0o755)?;
        write(&path, contents.as_bytes(), 0o644)?;
    }
    let output = Command::new("mksquashfs")
        .arg(tree)
        .arg(image)
        .args(["-noappend", "-quiet", "-no-progress"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run mksquashfs (apt-get install squashfs-tools)")?;
    ensure!(
        output.status.success(),
        "mksquashfs failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Reading newc cpio archives (the initramfs format) with the tests' own code, for what an
/// extraction by GNU cpio does not show: every header field, the mtimes of directories and
/// symlinks, and how hardlinks are laid out.
pub mod newc {
    use anyhow::{bail, ensure, Context as _, Result};

    /// One header of the archive, with its name (without the NUL).
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Entry {
        pub name: Vec<u8>,
        pub ino: u32,
        /// Type and permission bits, as `st_mode`.
        pub mode: u32,
        pub uid: u32,
        pub gid: u32,
        pub nlink: u32,
        pub mtime: u32,
        pub size: u32,
        pub rdev_major: u32,
        pub rdev_minor: u32,
    }

    const MAGIC: &[u8] = b"070701";
    const HEADER_LEN: usize = 110;
    const TRAILER: &[u8] = b"TRAILER!!!";

    fn align4(offset: usize) -> usize {
        offset.div_ceil(4) * 4
    }

    /// The entries of an uncompressed newc archive in archive order, without the trailer. An
    /// error for a bad magic, a truncated entry, a missing trailer, or anything but zero
    /// padding after it.
    pub fn parse(data: &[u8]) -> Result<Vec<Entry>> {
        let mut entries = Vec::new();
        let mut at = 0;
        loop {
            let header = data
                .get(at..at + HEADER_LEN)
                .with_context(|| format!("truncated header at byte {at}"))?;
            ensure!(
                &header[..6] == MAGIC,
                "no newc magic at byte {at}: {:?}",
                header[..6].escape_ascii().to_string()
            );
            let mut fields = [0u32; 13];
            for (i, field) in fields.iter_mut().enumerate() {
                let hex = &header[6 + 8 * i..14 + 8 * i];
                let text = std::str::from_utf8(hex).context("a header field is not ASCII")?;
                *field = u32::from_str_radix(text, 16)
                    .with_context(|| format!("header field {i} at byte {at} is not hex: {text}"))?;
            }
            let namesize = fields[11] as usize;
            ensure!(namesize > 0, "an empty name at byte {at}");
            let name_at = at + HEADER_LEN;
            let name = data
                .get(name_at..name_at + namesize)
                .with_context(|| format!("truncated name at byte {name_at}"))?;
            ensure!(
                name.last() == Some(&0),
                "the name at byte {name_at} has no NUL"
            );
            let name = name[..namesize - 1].to_vec();
            let size = fields[6];
            let data_at = align4(name_at + namesize);
            ensure!(
                data.len() >= data_at + size as usize,
                "truncated data of {}",
                name.escape_ascii()
            );
            at = align4(data_at + size as usize);
            if name == TRAILER {
                if data[at.min(data.len())..].iter().any(|&b| b != 0) {
                    bail!("bytes other than padding after the trailer, at byte {at}");
                }
                return Ok(entries);
            }
            entries.push(Entry {
                name,
                ino: fields[0],
                mode: fields[1],
                uid: fields[2],
                gid: fields[3],
                nlink: fields[4],
                mtime: fields[5],
                size,
                rdev_major: fields[9],
                rdev_minor: fields[10],
            });
        }
    }
}

// Helpers for tests/backends.rs: the binary on a chosen backend, scratch btrfs and ZFS, and
// sweeping what a failed test left mounted.

/// The binary driven with one backend over one workdir, as an operator's script runs it:
/// `--backend`, `--workdir` and `--config` on every call. The site configuration is empty, so
/// that nothing on the host (`/etc/autogentoo`, `AUTOGENTOO_*`) changes what it does.
pub struct BackendCli {
    backend: String,
    workdir: PathBuf,
    config: PathBuf,
}

impl BackendCli {
    /// Writes the empty site configuration `config`; its directory is the site directory.
    pub fn new(backend: &str, workdir: &Path, config: &Path) -> Result<Self> {
        fs::write(config, "").with_context(|| format!("write {}", config.display()))?;
        Ok(Self {
            backend: backend.to_owned(),
            workdir: workdir.to_owned(),
            config: config.to_owned(),
        })
    }

    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// Runs the binary with `args` and returns what it did, whatever the outcome.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut command = isolated_binary();
        command
            .arg("--backend")
            .arg(&self.backend)
            .arg("--workdir")
            .arg(&self.workdir)
            .arg("--config")
            .arg(&self.config)
            .args(&args);
        run_shown(
            command,
            &format!("autogentoo --backend {}", self.backend),
            &args,
        )
    }

    /// Runs the binary and panics unless it succeeds.
    #[track_caller]
    pub fn ok<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let run = self.run(args);
        assert!(run.status.success(), "expected success: {}", run.describe());
        run
    }

    /// The directory `autogentoo KIND path NAME` prints (`kind` is `stage` or `root`).
    #[track_caller]
    pub fn volume_path(&self, kind: &str, name: &str) -> PathBuf {
        PathBuf::from(self.ok([kind, "path", name]).stdout.trim_end())
    }

    /// The names `autogentoo KIND list --json` shows.
    #[track_caller]
    pub fn names(&self, kind: &str) -> Vec<String> {
        let run = self.ok([kind, "list", "--json"]);
        let list = run.json();
        let list = list
            .as_array()
            .unwrap_or_else(|| panic!("a JSON array: {}", run.describe()));
        list.iter()
            .map(|v| {
                v["id"]["name"]
                    .as_str()
                    .unwrap_or_else(|| panic!("id.name in {v}"))
                    .to_owned()
            })
            .collect()
    }
}

/// The type of the filesystem holding `path`, from the kernel's mount table (the deepest
/// mount point above it).
pub fn filesystem_of(path: &Path) -> Option<String> {
    let path = fs::canonicalize(path).ok()?;
    mountinfo()
        .into_iter()
        .filter(|m| path.starts_with(&m.point))
        .max_by_key(|m| m.point.components().count())
        .map(|m| m.fstype)
}

/// Undoes what a test may have left below `dir`, each thing by its PID or path: processes
/// chrooted or working there are killed, then the mounts there that `keep` does not accept
/// are made slaves (an unmount must not travel back to the host's `/dev`) and detached,
/// deepest first. Returns what was there, described; empty when nothing was.
pub fn sweep_below(dir: &Path, keep: &dyn Fn(&MountEntry) -> bool) -> Vec<String> {
    let using = |p: &ProcessInfo| p.root.starts_with(dir) || p.cwd.starts_with(dir);
    let strays =
        || -> Vec<MountEntry> { mounts_below(dir).into_iter().filter(|m| !keep(m)).collect() };
    let mut found: Vec<String> = processes()
        .iter()
        .filter(|p| using(p))
        .map(|p| format!("process {} ({})", p.pid, p.command))
        .collect();
    found.extend(
        strays()
            .iter()
            .map(|m| format!("mount {} ({})", m.point.display(), m.fstype)),
    );
    for process in processes().iter().filter(|p| using(p)) {
        if let Some(pid) = rustix::process::Pid::from_raw(process.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
    let start = Instant::now();
    while processes().iter().any(using) && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..8 {
        let mut mounts = strays();
        if mounts.is_empty() {
            break;
        }
        for mount in &mounts {
            let _ = rustix::mount::mount_change(
                &mount.point,
                rustix::mount::MountPropagationFlags::DOWNSTREAM,
            );
        }
        mounts.sort_by_key(|m| std::cmp::Reverse(m.point.components().count()));
        for mount in &mounts {
            let _ = rustix::mount::unmount(
                &mount.point,
                rustix::mount::UnmountFlags::DETACH | rustix::mount::UnmountFlags::NOFOLLOW,
            );
        }
    }
    found
}

/// Sweeps a directory ([`sweep_below`]) before whatever owns it is removed, also when the
/// test fails: removing a tree with the host's `/dev` bound into it would remove the host's
/// device nodes.
pub struct SweepGuard {
    dir: Option<PathBuf>,
    keep: Box<dyn Fn(&MountEntry) -> bool>,
}

impl SweepGuard {
    /// Sweeps every mount below `dir`.
    pub fn new(dir: &Path) -> Self {
        Self::keeping(dir, |_| false)
    }

    /// Sweeps the mounts below `dir` that `keep` does not accept (a ZFS pool's datasets are
    /// mounted below its mountpoint).
    pub fn keeping(dir: &Path, keep: impl Fn(&MountEntry) -> bool + 'static) -> Self {
        Self {
            dir: Some(dir.to_owned()),
            keep: Box::new(keep),
        }
    }

    /// Sweeps now; an error lists what the test left below the directory.
    pub fn close(mut self) -> Result<()> {
        let dir = self.dir.take().expect("not closed yet");
        let left = sweep_below(&dir, &*self.keep);
        ensure!(
            left.is_empty(),
            "left below {}: {}",
            dir.display(),
            left.join("; ")
        );
        Ok(())
    }
}

impl Drop for SweepGuard {
    fn drop(&mut self) {
        if let Some(dir) = self.dir.take() {
            let left = sweep_below(&dir, &*self.keep);
            if !left.is_empty() {
                eprintln!("cleaned up below {}: {}", dir.display(), left.join("; "));
            }
        }
    }
}

/// Runs a command, returning its stdout; a failure carries its stderr.
pub fn run_tool(command: &mut Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A scratch btrfs for one test: a sparse image made by `mkfs.btrfs` in a temporary directory,
/// attached by `losetup --find --show` and mounted there. [`ScratchBtrfs::close`] (or, when the
/// test fails, drop) sweeps what is below the mount, unmounts it, detaches that loop device (by
/// its exact path, after checking it still holds our image) and removes the image.
pub struct ScratchBtrfs {
    tmp: Option<TempDir>,
    image: PathBuf,
    mount_point: PathBuf,
    device: Option<PathBuf>,
    mounted: bool,
}

impl ScratchBtrfs {
    /// Big enough for mkfs.btrfs's minimum with room for a busybox stage; sparse.
    const IMAGE_SIZE: u64 = 512 << 20;

    pub fn new() -> Result<Self> {
        require_root();
        let tmp = tempfile::Builder::new()
            .prefix("autogentoo-btrfs.")
            .tempdir()
            .context("cannot make a temporary directory")?;
        // From here on, drop undoes whatever was done.
        let mut scratch = Self {
            image: tmp.path().join("btrfs.img"),
            mount_point: tmp.path().join("mnt"),
            tmp: Some(tmp),
            device: None,
            mounted: false,
        };
        fs::File::create(&scratch.image)
            .and_then(|image| image.set_len(Self::IMAGE_SIZE))
            .with_context(|| format!("cannot create {}", scratch.image.display()))?;
        run_tool(Command::new("mkfs.btrfs").arg("-q").arg(&scratch.image))
            .context("apt-get install btrfs-progs")?;
        let device = run_tool(
            Command::new("losetup")
                .args(["--find", "--show"])
                .arg(&scratch.image),
        )?;
        let device = PathBuf::from(device.trim());
        scratch.device = Some(device.clone());
        fs::create_dir(&scratch.mount_point)?;
        run_tool(
            Command::new("mount")
                .args(["-t", "btrfs"])
                .arg(&device)
                .arg(&scratch.mount_point),
        )?;
        scratch.mounted = true;
        Ok(scratch)
    }

    /// The top of the mounted filesystem.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// The loop device holding the image.
    pub fn device(&self) -> &Path {
        self.device.as_deref().expect("attached")
    }

    /// Tears everything down; an error says what was left below the mount or could not be
    /// undone.
    pub fn close(mut self) -> Result<()> {
        let left = if self.mounted {
            sweep_below(&self.mount_point, &|_| false)
        } else {
            Vec::new()
        };
        self.tear_down()?;
        ensure!(
            left.is_empty(),
            "the test left below the btrfs: {}",
            left.join("; ")
        );
        Ok(())
    }

    fn tear_down(&mut self) -> Result<()> {
        if self.mounted {
            sweep_below(&self.mount_point, &|_| false);
            unmount_patiently(&self.mount_point)?;
            self.mounted = false;
        }
        if let Some(device) = &self.device {
            detach_loop_device(device, &self.image)?;
            self.device = None;
        }
        if let Some(tmp) = self.tmp.take() {
            tmp.close().context("cannot remove the scratch directory")?;
        }
        Ok(())
    }
}

impl Drop for ScratchBtrfs {
    fn drop(&mut self) {
        if let Err(e) = self.tear_down() {
            eprintln!(
                "cannot tear down the scratch btrfs on {}: {e:#}",
                self.mount_point.display()
            );
            if self.mounted || self.device.is_some() {
                // Removing the directory would reach into the mount: leave it on disk.
                if let Some(tmp) = self.tmp.take() {
                    let _ = tmp.keep();
                }
            }
        }
    }
}

/// Unmounts `mount_point`, waiting out a short-lived busy state (a `root run` elsewhere holds a
/// copy of every host mount while it runs), else detaching it lazily.
fn unmount_patiently(mount_point: &Path) -> Result<()> {
    for _ in 0..50 {
        match rustix::mount::unmount(mount_point, rustix::mount::UnmountFlags::NOFOLLOW) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::BUSY) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => bail!("cannot unmount {}: {e}", mount_point.display()),
        }
    }
    rustix::mount::unmount(
        mount_point,
        rustix::mount::UnmountFlags::NOFOLLOW | rustix::mount::UnmountFlags::DETACH,
    )
    .with_context(|| format!("cannot unmount {}", mount_point.display()))
}

/// Detaches `device`, but only while it still holds `image`: once free, the number may be
/// another test's.
fn detach_loop_device(device: &Path, image: &Path) -> Result<()> {
    if !loop_devices_on(image).iter().any(|d| d == device) {
        return Ok(());
    }
    run_tool(Command::new("losetup").arg("--detach").arg(device)).map(drop)
}

/// A use of the ZFS daemon for the length of a test. A use starts zfs-fuse when no ZFS answers
/// (through `autogentoo_core::testkit::zfs_pool::ensure_daemon`, which `Pool::new` calls too).
/// When the last use in this process ends, a zfs-fuse that appeared while the tests used ZFS
/// is stopped by its PID, unless a pool (another process's) still lives on it; a daemon that
/// ran before is left alone.
pub struct ZfsDaemon(());

struct ZfsUsers {
    count: usize,
    /// The zfs-fuse the pidfile named when the first use began, if it ran.
    found: Option<i32>,
}

static ZFS_USERS: std::sync::Mutex<ZfsUsers> = std::sync::Mutex::new(ZfsUsers {
    count: 0,
    found: None,
});

fn zfs_users() -> std::sync::MutexGuard<'static, ZfsUsers> {
    ZFS_USERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn zfs_answers() -> bool {
    Command::new("zfs")
        .args(["list", "-H", "-o", "name"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The PID the zfs-fuse pidfile names.
fn pidfile_pid() -> Option<i32> {
    let pidfile = autogentoo_core::testkit::zfs_pool::pidfile();
    fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// The PID of the zfs-fuse daemon the pidfile names, if that one runs.
fn zfs_fuse_pid() -> Option<i32> {
    let pid = pidfile_pid()?;
    let command = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    (command.trim_end() == "zfs-fuse").then_some(pid)
}

/// zfs-fuse refuses to start while its pidfile exists, and leaves the file behind when it is
/// stopped: a pidfile naming no running zfs-fuse is removed, under the lock that
/// `ensure_daemon` starts the daemon under (so never while another process starts one).
fn remove_stale_pidfile() {
    let lock_path = std::env::temp_dir().join("autogentoo-zfs-fuse.lock");
    let Ok(lock) = fs::File::create(&lock_path) else {
        return;
    };
    if rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).is_ok()
        && pidfile_pid().is_some()
        && zfs_fuse_pid().is_none()
    {
        let _ = fs::remove_file(autogentoo_core::testkit::zfs_pool::pidfile());
    }
}

impl ZfsDaemon {
    pub fn acquire() -> Self {
        require_root();
        let mut users = zfs_users();
        if users.count == 0 {
            users.found = zfs_fuse_pid();
        }
        if !zfs_answers() {
            remove_stale_pidfile();
            autogentoo_core::testkit::zfs_pool::ensure_daemon();
        }
        users.count += 1;
        Self(())
    }
}

impl Drop for ZfsDaemon {
    fn drop(&mut self) {
        let mut users = zfs_users();
        users.count -= 1;
        if users.count > 0 {
            return;
        }
        let Some(pid) = zfs_fuse_pid().filter(|pid| Some(*pid) != users.found) else {
            return;
        };
        let pools = Command::new("zpool")
            .args(["list", "-H", "-o", "name"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        match pools {
            Ok(out) if out.status.success() && out.stdout.is_empty() => {}
            _ => {
                eprintln!("leaving zfs-fuse (PID {pid}) running: pools live on it");
                return;
            }
        }
        stop_daemon(pid);
    }
}

/// Stops the zfs-fuse daemon `pid` (not our child: it daemonized) with SIGTERM, then SIGKILL
/// if it has not exited after 30 s, and removes the pidfile it leaves.
fn stop_daemon(pid: i32) {
    let Some(process) = rustix::process::Pid::from_raw(pid) else {
        return;
    };
    let alive = || {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim()
                .starts_with('Z')
        })
    };
    let _ = rustix::process::kill_process(process, rustix::process::Signal::TERM);
    let start = Instant::now();
    while alive() {
        if start.elapsed() > Duration::from_secs(30) {
            eprintln!("zfs-fuse (PID {pid}) ignored SIGTERM for 30 s: killing it");
            let _ = rustix::process::kill_process(process, rustix::process::Signal::KILL);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if pidfile_pid() == Some(pid) {
        let _ = fs::remove_file(autogentoo_core::testkit::zfs_pool::pidfile());
    }
}

/// What [`build_busybox_stage`] puts in a stage besides Debian's busybox and its applets.
pub mod busybox_stage {
    /// An executable script that prints [`INIT_MARKER`].
    pub const INIT: &str = "init";
    pub const INIT_MARKER: &str = "autogentoo init ran";
    /// A file whose contents tell where a command runs.
    pub const MARKER_FILE: &str = "etc/marker";
    pub const MARKER: &str = "from the stage\n";
    /// Mode 4755.
    pub const SETUID_FILE: &str = "usr/bin/suid-tool";
    /// Two names of one inode.
    pub const HARDLINKS: [&str; 2] = ["usr/bin/tool", "usr/bin/tool-alias"];
    /// `c 1 3`.
    pub const CHAR_DEV: &str = "dev/null";
    pub const FIFO: &str = "run/initctl";
    /// `cap_net_raw+ep`, only in a stage for a backend that keeps xattrs.
    pub const CAP_FILE: &str = "usr/bin/ping";
}

/// Builds, in the new directory `root`, a busybox stage ([`build_busybox_tree`]) holding what
/// [`busybox_stage`] lists: an executable `/init`, a setuid file, a hardlink pair, a device
/// node, a fifo, and with `file_capability` a file with `security.capability`.
pub fn build_busybox_stage(root: &Path, file_capability: bool) -> Result<()> {
    use busybox_stage::*;
    build_busybox_tree(root)?;
    mkdir(&root.join("usr/bin"), 0o755)?;
    write(
        &root.join(INIT),
        format!("#!/bin/sh\necho '{INIT_MARKER}'\n").as_bytes(),
        0o755,
    )?;
    write(&root.join(MARKER_FILE), MARKER.as_bytes(), 0o644)?;
    write(&root.join(SETUID_FILE), b"#!/bin/sh\nid -u\n", 0o755)?;
    set_mode(&root.join(SETUID_FILE), 0o4755)?;
    write(&root.join(HARDLINKS[0]), b"#!/bin/sh\necho tool\n", 0o755)?;
    fs::hard_link(root.join(HARDLINKS[0]), root.join(HARDLINKS[1]))
        .with_context(|| format!("link {}", HARDLINKS[1]))?;
    mknod(&root.join(CHAR_DEV), FileType::CharacterDevice, 0o666, 1, 3)?;
    mknod(&root.join(FIFO), FileType::Fifo, 0o600, 0, 0)?;
    if file_capability {
        write(&root.join(CAP_FILE), b"#!/bin/sh\necho ping\n", 0o755)?;
        setcap("cap_net_raw+ep", &root.join(CAP_FILE))?;
    }
    Ok(())
}

/// Systems of the busybox stage that stop at their initramfs, quick to build: `quick`, whose
/// second command prints a line for the log, and `fails`, whose second command prints and
/// fails.
pub const QUICK_SYSTEMS: &str = r#"
[systems.quick]
stage = "busybox"
kernel_build = "none"
commands = ["echo built > /etc/built", "echo a line for the log"]

[systems.fails]
stage = "busybox"
kernel_build = "none"
commands = ["echo ran first", "echo about to fail; exit 3"]
"#;

/// An initialised workdir with the busybox stage imported as `busybox`.
pub fn busybox_workdir() -> Result<Workdir> {
    let workdir = Workdir::new();
    let stage = workdir.scratch().join("stage");
    build_busybox_stage(&stage, false)?;
    workdir.import(&stage, "busybox");
    Ok(workdir)
}

/// `setcap CAPS PATH` (after every chown and chmod of the file: they clear capabilities).
pub fn setcap(caps: &str, path: &Path) -> Result<()> {
    run_tool(Command::new("setcap").arg(caps).arg(path))
        .context("apt-get install libcap2-bin")
        .map(drop)
}

// Helpers for the kernel tests: a kernel source tree to read, and kbuild run out of tree.

/// Debian's Linux source tarball (`apt-get install linux-source-6.1`).
pub const KERNEL_SOURCE_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

/// A Linux source tree for the kernel tests, which only read it (kbuild writes to `O=`
/// directories): `AUTOGENTOO_KERNEL_SOURCE` if set, else [`KERNEL_SOURCE_TARBALL`] extracted
/// once into `target/test-kernel-source/`. The extraction holds a lock, since several test
/// binaries may ask at once, and the tree is renamed into place only when complete.
pub fn kernel_source() -> PathBuf {
    if let Some(dir) = std::env::var_os("AUTOGENTOO_KERNEL_SOURCE") {
        let dir = PathBuf::from(dir);
        assert!(
            dir.join("Kconfig").is_file() && dir.join("Makefile").is_file(),
            "AUTOGENTOO_KERNEL_SOURCE={} is not a kernel source tree",
            dir.display()
        );
        return dir;
    }
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-kernel-source");
    extract_kernel_source(&cache).unwrap_or_else(|e| {
        panic!(
            "cannot extract {KERNEL_SOURCE_TARBALL} into {}: {e:#}",
            cache.display()
        )
    })
}

fn extract_kernel_source(cache: &Path) -> Result<PathBuf> {
    fs::create_dir_all(cache).context("create the cache directory")?;
    let cache = fs::canonicalize(cache).context("resolve the cache directory")?;
    let tree = cache.join("linux-source-6.1");
    let lock = fs::File::create(cache.join(".lock")).context("create the lock file")?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .context("lock the cache")?;
    if tree.is_dir() {
        return Ok(tree);
    }
    ensure!(
        Path::new(KERNEL_SOURCE_TARBALL).is_file(),
        "{KERNEL_SOURCE_TARBALL} is missing: apt-get install linux-source-6.1"
    );
    let staging = cache.join(".extracting");
    if staging.exists() {
        fs::remove_dir_all(&staging).context("remove an interrupted extraction")?;
    }
    fs::create_dir(&staging).context("create the staging directory")?;
    gnu_tar([
        OsStr::new("--no-same-owner"),
        OsStr::new("-xf"),
        OsStr::new(KERNEL_SOURCE_TARBALL),
        OsStr::new("-C"),
        staging.as_os_str(),
    ])?;
    fs::rename(staging.join("linux-source-6.1"), &tree).context("rename the tree into place")?;
    fs::remove_dir(&staging).context("remove the staging directory")?;
    Ok(tree)
}

/// Runs `make -s -C SOURCE O=BUILD ARGS…` (configuration targets such as `allnoconfig` and
/// `olddefconfig`); an error shows what make printed.
pub fn kernel_make(source: &Path, build: &Path, args: &[&str]) -> Result<()> {
    let output = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(source)
        .arg(format!("O={}", build.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run make (apt-get install make gcc flex bison bc)")?;
    ensure!(
        output.status.success(),
        "make {args:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

impl BackendCli {
    /// The binary driven with one backend over one workdir and an existing site configuration
    /// `config`, which is left as it is (its directory is the site directory).
    pub fn with_site_config(backend: &str, workdir: &Path, config: &Path) -> Self {
        Self {
            backend: backend.to_owned(),
            workdir: workdir.to_owned(),
            config: config.to_owned(),
        }
    }
}

// Helpers for the plugin tests: plugin libraries built by cargo, and runs of the binary with
// an environment of their own.

/// The cdylib of the workspace's plugin package `package`, built now if it is not up to date:
/// no test depends on it, so `cargo test -p autogentoo-tests` alone would not build it.
pub fn plugin_library(package: &str) -> PathBuf {
    autogentoo_core::testkit::cdylib::build_cdylib(package, Path::new(env!("CARGO_MANIFEST_DIR")))
}

impl Run {
    /// Runs `command` (the binary, set up by the caller) and returns what it did.
    pub fn of(mut command: Command) -> Self {
        let shown = format!("{command:?}");
        let output = command
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
        Self::new(shown, output)
    }
}

/// A tmpfs of `bytes` mounted for one test (a small or a full disk): unmounted by
/// [`Tmpfs::close`], or detached by its path, with a failure logged, when dropped on an error
/// path.
pub struct Tmpfs {
    point: PathBuf,
    mounted: bool,
}

impl Tmpfs {
    pub fn mount(point: &Path, bytes: u64) -> Result<Self> {
        fs::create_dir_all(point)?;
        let options = std::ffi::CString::new(format!("size={bytes}"))?;
        rustix::mount::mount(
            "tmpfs",
            point,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            options.as_c_str(),
        )
        .with_context(|| format!("mount a tmpfs on {}", point.display()))?;
        Ok(Self {
            point: point.to_owned(),
            mounted: true,
        })
    }

    pub fn close(mut self) -> Result<()> {
        self.mounted = false;
        rustix::mount::unmount(&self.point, rustix::mount::UnmountFlags::empty())
            .with_context(|| format!("unmount {}", self.point.display()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = rustix::mount::unmount(&self.point, rustix::mount::UnmountFlags::DETACH)
            {
                eprintln!("cannot unmount the tmpfs at {}: {e}", self.point.display());
            }
        }
    }
}

/// The Portage stand-in stage's tarball (Debian with the real Portage: no Gentoo stage3 can be
/// downloaded here), made by the project's `scripts/portage-stage` on the first call on a
/// machine and taken from its cache after; one call per test process.
pub fn portage_stage() -> PathBuf {
    static STAGE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    STAGE
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/portage-stage");
            let path = run_tool(&mut Command::new(&script)).unwrap_or_else(|e| {
                panic!("cannot make the Portage stage: {e:#}");
            });
            PathBuf::from(path.trim())
        })
        .clone()
}

/// The Portage stand-in stage for `arch` (`scripts/portage-stage --arch ARCH`): for another
/// architecture than the host's, made through qemu-user, which needs its binfmt_misc handler
/// registered first (the caller runs a command in a root of that arch with `build.binfmt =
/// "register"`).
pub fn portage_stage_for(arch: &str) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/portage-stage");
    let path = run_tool(Command::new(&script).args(["--arch", arch])).unwrap_or_else(|e| {
        panic!("cannot make the {arch} Portage stage: {e:#}");
    });
    PathBuf::from(path.trim())
}

/// The example ebuild repository and the script that makes its distfiles.
pub fn example_repo() -> (PathBuf, PathBuf) {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    (
        top.join("config/repo"),
        top.join("scripts/example-distfiles"),
    )
}
