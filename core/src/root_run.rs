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

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountPropagationFlags, MoveMountFlags, OpenTreeFlags, UnmountFlags};
use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use rustix::thread::UnshareFlags;

use crate::root_mounts;
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

/// Starts `init` (normally this program again, in its init role) as PID 1 of the new PID
/// namespace, set to die with us.
pub fn spawn_init(mut init: Command) -> Result<Child, StorageError> {
    // In the child, the parent lives outside its PID namespace, so getppid() says 0 whatever
    // happens; a pidfd tells whether the parent died before the death signal was armed.
    let parent = rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty())
        .map_err(|e| io_err("watch", "/proc/self")(e.into()))?;
    // SAFETY: the closure makes only async-signal-safe system calls.
    unsafe {
        init.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            let mut watch = [PollFd::new(&parent, PollFlags::IN)];
            if rustix::event::poll(
                &mut watch,
                Some(&Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                }),
            )? > 0
            {
                return Err(std::io::Error::other("the parent exited"));
            }
            Ok(())
        });
    }
    init.spawn()
        .map_err(io_err("start the init for", "/proc/self/exe"))
}

/// What [`init_main`] runs.
pub struct InitSpec {
    pub root: PathBuf,
    pub command: Vec<OsString>,
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

/// PID 1 of the new namespace: procfs, pivot_root into the root (the old root is detached, so
/// this namespace holds no other mounts of the host — no other root's loop device is kept
/// alive by us), the command (with this process's environment), reaping, and the command's exit
/// status as ours (128 + signal when it was killed).
pub fn init_main(spec: &InitSpec) -> Result<i32, StorageError> {
    root_mounts::mount_proc(&spec.root)?;
    let fail = |op| move |e: Errno| io_err(op, &spec.root)(e.into());
    rustix::process::chdir(&spec.root).map_err(fail("enter"))?;
    // With both arguments ".", the old root ends up stacked on the new one, then goes.
    rustix::process::pivot_root(".", ".").map_err(fail("pivot_root into"))?;
    rustix::mount::unmount(".", UnmountFlags::DETACH).map_err(fail("detach the old root from"))?;
    rustix::process::chdir("/").map_err(fail("enter"))?;
    let (program, args) = spec
        .command
        .split_first()
        .ok_or_else(|| StorageError::Unsupported {
            message: "no command to run".into(),
        })?;
    let child = Command::new(program).args(args).spawn().map_err(|e| {
        let shown = Path::new(program).display().to_string();
        io_err("run", format!("{} inside the root", shown))(e)
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
            Err(e) => return Err(io_err("wait for", "the command")(e.into())),
        }
    }
}

/// The shell's convention: the exit code, or 128 + the signal that ended the process.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}
