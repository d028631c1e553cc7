//! Running a command inside a root, the way `chroot` by hand never could: in a private mount
//! namespace and a new PID namespace, so that nothing stays mounted and nothing keeps running
//! once it exits — also when autogentoo itself is killed with SIGKILL.
//!
//! The caller (single-threaded: `unshare(CLONE_NEWNS)` refuses threaded processes) calls
//! [`enter_namespaces`], mounts the root's plan in its now-private namespace, and starts an init
//! with [`spawn_init`]. That init is PID 1 of the new namespace: it mounts a procfs of its own,
//! pivots into the root, runs the command, reaps orphans and exits with the command's status
//! ([`init_main`]). When PID 1 exits the kernel kills everything else in the namespace; when the
//! caller dies, its death signal kills PID 1; when the last process of the mount namespace is
//! gone, its mounts — loop devices included — go with it.

use std::ffi::{OsStr, OsString};
use std::io::{Read as _, Write as _};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use rustix::thread::UnshareFlags;

use crate::chroot::root_mounts;
use crate::storage::{io_err, StorageError};

/// The PATH inside roots: Gentoo's default for root.
pub const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment a command inside a root starts with: nothing of the caller's but `TERM`,
/// plus the site's build settings.
pub fn clean_environment(makeopts: &str, extra: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("PATH".to_owned(), ROOT_PATH.to_owned()),
        ("HOME".to_owned(), "/root".to_owned()),
        ("USER".to_owned(), "root".to_owned()),
        ("MAKEOPTS".to_owned(), makeopts.to_owned()),
    ];
    if let Ok(term) = std::env::var("TERM") {
        env.push(("TERM".to_owned(), term));
    }
    for (key, value) in extra {
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), value.clone()));
    }
    env
}

/// Moves this process into a new mount namespace, makes every mount in it private (so nothing
/// we mount reaches the host), and arranges that its next child starts a new PID namespace.
pub fn enter_namespaces() -> Result<(), StorageError> {
    // SAFETY: neither flag unshares the file descriptor table, and the caller is single-threaded
    // (the kernel refuses CLONE_NEWNS otherwise, with EINVAL, which we report).
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS | UnshareFlags::NEWPID) }.map_err(
        |e| {
            if e == Errno::PERM {
                StorageError::MissingPrerequisite {
                    what: "permission to create namespaces".into(),
                    hint: "run as root".into(),
                }
            } else {
                io_err("create namespaces for", "/proc/self")(e.into())
            }
        },
    )?;
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| io_err("make the mounts private in", "/")(e.into()))
}

/// Makes `command`'s process die with this one (SIGKILL when we exit or are killed), so that no
/// child of ours — a `root run`, a `make`, a QEMU — goes on working for a process that is gone.
pub fn tie_to_us(command: &mut Command) -> Result<(), StorageError> {
    // A child in another PID namespace sees getppid() == 0 whatever happens; a pidfd tells
    // whether we died before the death signal was armed.
    let parent = rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty())
        .map_err(|e| io_err("watch", "/proc/self")(e.into()))?;
    // SAFETY: the closure makes only async-signal-safe system calls.
    unsafe {
        command.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            let mut watch = [PollFd::new(&parent, PollFlags::IN)];
            let now = Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            if rustix::event::poll(&mut watch, Some(&now))? > 0 {
                return Err(std::io::Error::other("the parent exited"));
            }
            Ok(())
        });
    }
    Ok(())
}

/// The mount namespace this process is in, to hand to [`spawn_init`]: read it before
/// [`enter_namespaces`], so the init can tell the caller's namespace from its own.
pub fn mount_namespace() -> Result<u64, StorageError> {
    let path = "/proc/self/ns/mnt";
    let st = rustix::fs::stat(path).map_err(|e| io_err("inspect", path)(e.into()))?;
    Ok(st.st_ino)
}

/// Starts `init` (this program again, in its init role) as PID 1 of the new PID namespace, set
/// to die with us, and hands it `spec` through the handshake: a pipe only this process holds,
/// whose descriptor the init gets as `--handshake-fd N`. `caller_namespace` is
/// [`mount_namespace`] as it was before [`enter_namespaces`].
pub fn spawn_init(
    mut init: Command,
    spec: &InitSpec,
    caller_namespace: u64,
) -> Result<Child, StorageError> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| io_err("create the handshake pipe in", "/proc/self")(e.into()))?;
    let handshake = read.as_raw_fd();
    init.arg("--handshake-fd").arg(handshake.to_string());
    tie_to_us(&mut init)?;
    // SAFETY: the closure makes one async-signal-safe system call on a descriptor that stays
    // open in the parent until the child has started.
    unsafe {
        init.pre_exec(move || {
            // The read end, and only it, outlives the exec.
            let fd = BorrowedFd::borrow_raw(handshake);
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            Ok(())
        });
    }
    let child = init
        .spawn()
        .map_err(io_err("start the init for", "/proc/self/exe"))?;
    drop(read);
    // The init reads the handshake whole before it does anything; if it died first, its exit
    // status tells why, so a broken pipe here is not the error to report.
    let _ = std::fs::File::from(write).write_all(&spec.encode(caller_namespace));
    Ok(child)
}

/// What [`init_main`] runs: handed over through the handshake, never on the command line.
#[derive(Debug, PartialEq, Eq)]
pub struct InitSpec {
    pub root: PathBuf,
    pub command: Vec<OsString>,
}

/// The first line of a handshake, with its version.
const HANDSHAKE: &[u8] = b"autogentoo-init 1\n";
/// The most a handshake may carry: a root path and a command line.
const HANDSHAKE_MAX: u64 = 4 << 20;

impl InitSpec {
    /// `autogentoo-init 1`, the caller's mount namespace, then the root and the command's
    /// arguments, each ended by a NUL.
    fn encode(&self, caller_namespace: u64) -> Vec<u8> {
        let mut out = HANDSHAKE.to_vec();
        out.extend_from_slice(format!("{caller_namespace}\n").as_bytes());
        out.extend_from_slice(self.root.as_os_str().as_bytes());
        out.push(0);
        for arg in &self.command {
            out.extend_from_slice(arg.as_bytes());
            out.push(0);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<(u64, Self)> {
        let rest = bytes.strip_prefix(HANDSHAKE)?;
        let newline = rest.iter().position(|&b| b == b'\n')?;
        let namespace = std::str::from_utf8(&rest[..newline]).ok()?.parse().ok()?;
        let fields = rest[newline + 1..].strip_suffix(&[0])?;
        let mut fields = fields.split(|&b| b == 0);
        let root = PathBuf::from(OsStr::from_bytes(fields.next()?));
        let command: Vec<OsString> = fields.map(|f| OsStr::from_bytes(f).to_owned()).collect();
        if !root.is_absolute() || command.is_empty() {
            return None;
        }
        Some((namespace, Self { root, command }))
    }
}

/// Why the init did not run the command, or could not.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("internal-init runs only as the init that `autogentoo root run` and `root shell` start ({reason}), never by hand; use `autogentoo root run ROOT -- COMMAND`")]
    NotStartedByUs { reason: &'static str },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{}: command not found inside the root", Path::new(.program).display())]
    CommandNotFound { program: OsString },
    #[error("{}: cannot be run inside the root: {source}", Path::new(.program).display())]
    CommandNotExecutable {
        program: OsString,
        #[source]
        source: std::io::Error,
    },
}

impl InitError {
    /// The shell's convention for a command that could not be run: 127 when it is not there,
    /// 126 when it cannot be executed; 1 for our own errors.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::CommandNotFound { .. } => 127,
            Self::CommandNotExecutable { .. } => 126,
            _ => 1,
        }
    }
}

/// Checks that this process is the init [`spawn_init`] started, before anything is touched, and
/// reads what to run from the handshake at `handshake_fd`. Being PID 1 of a new PID namespace
/// and the child of this very program are what a shell cannot fake; the rest — a pipe, the
/// caller's mount namespace it names differing from ours, `/` not shared — catches a parent of
/// ours that forgot to enter the namespaces, and a handshake that is not ours.
pub fn accept_handshake(handshake_fd: i32) -> Result<InitSpec, InitError> {
    let refuse = |reason| InitError::NotStartedByUs { reason };
    if rustix::process::getpid().as_raw_nonzero().get() != 1 {
        return Err(refuse("it is not PID 1 of a new PID namespace"));
    }
    // /proc is still the caller's procfs here, where our parent has a number.
    let parent = parent_pid().ok_or_else(|| refuse("its parent cannot be found"))?;
    let same_program = match (
        rustix::fs::stat(format!("/proc/{parent}/exe").as_str()),
        rustix::fs::stat("/proc/self/exe"),
    ) {
        (Ok(theirs), Ok(ours)) => (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino),
        _ => false,
    };
    if !same_program {
        return Err(refuse("its parent is not autogentoo"));
    }
    if handshake_fd < 0 {
        return Err(refuse("there is no handshake"));
    }
    // SAFETY: the descriptor was handed to this process to own; nothing else here uses it.
    let fd = unsafe { OwnedFd::from_raw_fd(handshake_fd) };
    let is_pipe = rustix::fs::fstat(&fd)
        .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Fifo);
    if !is_pipe {
        return Err(refuse("the handshake is not a pipe"));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(HANDSHAKE_MAX)
        .read_to_end(&mut bytes)
        .map_err(|_| refuse("the handshake cannot be read"))?;
    let (caller, spec) =
        InitSpec::decode(&bytes).ok_or_else(|| refuse("the handshake is malformed"))?;
    if mount_namespace()? == caller {
        return Err(refuse("it shares its caller's mount namespace"));
    }
    let mounts =
        crate::chroot::mountinfo::read().map_err(io_err("read", "/proc/self/mountinfo"))?;
    if mounts.iter().any(|m| m.point == Path::new("/") && m.shared) {
        return Err(refuse("its mount namespace is not private"));
    }
    Ok(spec)
}

/// Our parent's PID as the procfs at /proc counts it.
fn parent_pid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|pid| pid.trim().parse().ok())
        .filter(|&pid| pid > 0)
}

/// Makes `root` a mount point of its own (a recursive bind onto itself), so the init can
/// `pivot_root` into it. Call after [`enter_namespaces`] and before mounting the plan.
pub fn bind_root_onto_itself(root: &Path) -> Result<(), StorageError> {
    let fail = |op| move |e: Errno| io_err(op, root)(e.into());
    let flags = OpenTreeFlags::OPEN_TREE_CLONE
        | OpenTreeFlags::OPEN_TREE_CLOEXEC
        | OpenTreeFlags::AT_RECURSIVE;
    let tree = rustix::mount::open_tree(rustix::fs::CWD, root, flags).map_err(fail("bind"))?;
    let target = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail("open"))?;
    rustix::mount::move_mount(
        &tree,
        "",
        &target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(fail("bind onto itself"))
}

/// PID 1 of the new namespace, once [`accept_handshake`] has passed: procfs, pivot_root into
/// the root (the old root is detached, so this namespace holds no other mounts of the host — no
/// other root's loop device is kept alive by us), the command (with this process's environment),
/// reaping, and the command's exit status as ours (128 + signal when it was killed).
pub fn init_main(spec: &InitSpec) -> Result<i32, InitError> {
    root_mounts::mount_proc(&spec.root)?;
    let fail = |op| move |e: Errno| InitError::from(io_err(op, &spec.root)(e.into()));
    rustix::process::chdir(&spec.root).map_err(fail("enter"))?;
    // With both arguments ".", the old root ends up stacked on the new one, then goes.
    rustix::process::pivot_root(".", ".").map_err(fail("pivot_root into"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(fail("detach the old root from"))?;
    rustix::process::chdir("/").map_err(fail("enter"))?;
    let (program, args) = spec
        .command
        .split_first()
        .expect("a handshake always carries a command");
    let child = Command::new(program).args(args).spawn().map_err(|e| {
        let program = program.clone();
        if e.kind() == std::io::ErrorKind::NotFound {
            InitError::CommandNotFound { program }
        } else {
            InitError::CommandNotExecutable { program, source: e }
        }
    })?;
    let child_pid = child.id();
    loop {
        match rustix::process::wait(WaitOptions::empty()) {
            Ok(Some((pid, status)))
                if pid == Pid::from_raw(child_pid as i32).expect("a child's pid is positive") =>
            {
                return Ok(exit_code(ExitStatus::from_raw(status.as_raw())));
            }
            // An orphan reparented to us: reaped, nothing more.
            Ok(_) => continue,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(io_err("wait for", "the command")(e.into()).into()),
        }
    }
}

/// The shell's convention: the exit code, or 128 + the signal that ended the process.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_carries_the_spec_and_nothing_else_passes() {
        let spec = InitSpec {
            root: PathBuf::from("/var/lib/autogentoo/roots/web"),
            command: vec![
                OsString::from("sh"),
                OsString::from("-c"),
                OsString::from("a\nb"),
            ],
        };
        let bytes = spec.encode(4026531841);
        assert_eq!(InitSpec::decode(&bytes), Some((4026531841, spec)));
        assert_eq!(InitSpec::decode(b""), None);
        assert_eq!(
            InitSpec::decode(b"autogentoo-init 1\n12\nroot\0cmd\0"),
            None
        );
        assert_eq!(InitSpec::decode(b"autogentoo-init 1\n12\n/root\0"), None);
        assert_eq!(
            InitSpec::decode(b"autogentoo-init 2\n12\n/root\0cmd\0"),
            None
        );
    }

    #[test]
    fn a_process_that_is_not_pid_1_is_refused_before_anything_else() {
        let err = accept_handshake(-1).unwrap_err();
        assert!(
            err.to_string().contains("not PID 1 of a new PID namespace"),
            "{err}"
        );
    }
}
