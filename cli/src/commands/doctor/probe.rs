//! Looking at the host without changing it: programs in PATH, headers, filesystems the kernel
//! has, namespaces a child process may enter, and what `zfs` answers.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use rustix::thread::UnshareFlags;

/// How long a program we ask (`zfs`) may take before it counts as not answering: a wedged
/// zfs-fuse daemon would otherwise hang the doctor.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(20);

/// The executable `name` in the directories of PATH, as a shell would find it.
pub fn program(name: &str) -> Option<PathBuf> {
    program_in(name, &std::env::var_os("PATH")?)
}

/// The executable `name` in the directories of `path` (a PATH value).
fn program_in(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The C header `name` (like `openssl/opensslv.h`) where the host's compiler looks by default.
pub fn header(name: &str) -> Option<PathBuf> {
    ["/usr/include", "/usr/local/include"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// Whether `path` is a character device (like `/dev/loop-control`).
pub fn char_device(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

/// How the kernel offers the filesystem `name`: registered (`/proc/filesystems`), or as a
/// module it loads on the first mount (`modules.dep` of the running kernel). `module` is the
/// module's file name without `.ko`, which differs for overlayfs (`overlay`).
pub fn filesystem(name: &str, module: &str) -> Result<String, String> {
    let registered = fs::read_to_string("/proc/filesystems")
        .map_err(|e| format!("cannot read /proc/filesystems: {e}"))?;
    if registered
        .lines()
        .any(|line| line.split_whitespace().last() == Some(name))
    {
        return Ok(format!("{name} in /proc/filesystems"));
    }
    let release = rustix::system::uname();
    let release = release.release().to_string_lossy();
    let deps = Path::new("/lib/modules")
        .join(&*release)
        .join("modules.dep");
    let wanted = format!("/{module}.ko");
    let as_module = fs::read_to_string(&deps).is_ok_and(|text| {
        text.lines().any(|line| {
            line.split(':')
                .next()
                .is_some_and(|file| file.contains(&wanted))
        })
    });
    if as_module {
        Ok(format!(
            "the module {module} of kernel {release}, loaded at the first mount"
        ))
    } else {
        Err(format!(
            "{name} is neither in /proc/filesystems nor a module of kernel {release}"
        ))
    }
}

/// Where binfmt_misc is mounted, if it is.
pub fn binfmt_misc() -> io::Result<Option<PathBuf>> {
    Ok(autogentoo_core::chroot::mountinfo::read()?
        .into_iter()
        .find(|mount| mount.fstype == "binfmt_misc")
        .map(|mount| mount.point))
}

/// Whether a child process may enter new namespaces of the kinds in `flags`. A child does the
/// `unshare`, so this process stays where it is; the child then runs this program's
/// `--version`, which needs nothing else.
pub fn namespaces(flags: UnshareFlags) -> Result<(), String> {
    let mut child = Command::new("/proc/self/exe");
    child
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and makes one system call;
    // neither flag we pass unshares the file descriptor table.
    unsafe {
        child.pre_exec(move || rustix::thread::unshare_unsafe(flags).map_err(io::Error::from));
    }
    match child.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("the child in the new namespaces failed ({status})")),
        Err(e) => Err(format!("unshare refused: {e}")),
    }
}

/// Runs `program args…` and returns its stdout, or why it gave none: it could not start, it
/// failed (with the last line it printed on stderr), or it did not answer in time (it is then
/// killed).
pub fn answer(program: &Path, args: &[&str]) -> Result<String, String> {
    answer_within(program, args, ANSWER_TIMEOUT)
}

fn answer_within(program: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let shown = format!(
        "`{} {}`",
        program
            .file_name()
            .unwrap_or(OsStr::new("?"))
            .to_string_lossy(),
        args.join(" ")
    );
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let started = match Started::of(&child) {
        Ok(started) => started,
        Err(e) => {
            // Nothing has waited for it yet, so its PID is still its own.
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("cannot watch {shown}: {e}"));
        }
    };
    let (done, outcome) = mpsc::channel();
    // A thread owns the wait so that a pipe filling up cannot stall it while we time it.
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match outcome.recv_timeout(timeout) {
        Ok(Ok(output)) if output.status.success() => {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        }
        Ok(Ok(output)) => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let said = stderr
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            Err(format!("{shown} failed ({}): {said}", output.status))
        }
        Ok(Err(e)) => Err(format!("{shown}: {e}")),
        Err(_) => {
            // The waiter may have reaped it just now: then this reaches nobody.
            let _ = started.kill();
            Err(format!(
                "{shown} did not answer within {} s",
                timeout.as_secs()
            ))
        }
    }
}

/// A child we started, held by a pidfd taken before anything waited for it, so that it names
/// that process and no other. A PID is free for the next process once its owner has been
/// reaped — here by a thread of our own, at a moment we do not control — so a signal sent by
/// PID after a timeout could reach a stranger; one sent through the pidfd reaches the child,
/// or nobody once it is gone.
struct Started {
    pidfd: OwnedFd,
}

impl Started {
    /// Must be called while `child` is unreaped, as it is until someone waits for it.
    fn of(child: &Child) -> io::Result<Self> {
        let pid = rustix::process::Pid::from_child(child);
        let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
        Ok(Self { pidfd })
    }

    /// Kills the child; `ESRCH` when it has been reaped already.
    fn kill(&self) -> io::Result<()> {
        rustix::process::pidfd_send_signal(&self.pidfd, rustix::process::Signal::KILL)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn a_program_is_found_only_when_executable() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap();
        let tool = dir.path().join("tool");
        fs::write(&tool, "#!/bin/sh\n").unwrap();
        assert_eq!(program_in("tool", &path), None);
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(program_in("tool", &path), Some(tool));
        assert_eq!(program_in("other", &path), None);
    }

    /// A program that does not answer in time is killed, not left running.
    #[test]
    fn a_program_that_does_not_answer_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("echo $$ > {}; exec sleep 30", pid_file.display());
        let said = answer_within(
            Path::new("/bin/sh"),
            &["-c", &script],
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(said.contains("did not answer within 1 s"), "{said}");
        let pid = fs::read_to_string(&pid_file).unwrap();
        let alive = Path::new("/proc").join(pid.trim());
        // Gone once the waiter has reaped it, which follows the kill at once.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while alive.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !alive.exists(),
            "the program still runs as PID {}",
            pid.trim()
        );
    }

    /// Set in the copy of this test binary that runs inside a new PID namespace.
    const IN_NAMESPACE: &str = "AUTOGENTOO_TEST_IN_PID_NAMESPACE";

    /// A child's handle, once the child is reaped and its PID given to another process, does
    /// not reach that process. PIDs are made to repeat in a PID namespace of the test's own,
    /// where nothing else takes one: the test runs itself again there, as its first process,
    /// through util-linux's `unshare`.
    #[test]
    fn a_reaped_child_is_not_signalled_through_its_reused_pid() {
        if std::env::var_os(IN_NAMESPACE).is_none() {
            let name = "commands::doctor::probe::tests::\
                        a_reaped_child_is_not_signalled_through_its_reused_pid";
            let run = Command::new("unshare")
                .args(["--pid", "--fork", "--mount-proc"])
                .arg(std::env::current_exe().unwrap())
                .args([name, "--exact", "--test-threads=1", "--nocapture"])
                .env(IN_NAMESPACE, "1")
                .output()
                .expect("util-linux's unshare runs");
            let stdout = String::from_utf8_lossy(&run.stdout);
            let stderr = String::from_utf8_lossy(&run.stderr);
            assert!(
                run.status.success() && stdout.contains("1 passed"),
                "in a new PID namespace ({}):\n{stdout}\n{stderr}",
                run.status
            );
            return;
        }
        assert_eq!(
            std::process::id(),
            1,
            "the first process of its PID namespace"
        );
        let mut first = Command::new("/bin/true").spawn().unwrap();
        let started = Started::of(&first).unwrap();
        let pid = first.id();
        first.wait().unwrap();
        // The next process in this namespace gets the PID the first one had.
        fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let mut stranger = Command::new("/bin/sleep").arg("600").spawn().unwrap();
        assert_eq!(stranger.id(), pid, "the PID was given again");
        let sent = started.kill();
        // Ended with a signal of its own: a SIGKILL sent before it would have decided how the
        // stranger ends, whenever it got to run.
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&stranger),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let ended = stranger.wait().unwrap();
        assert_eq!(
            ended.signal(),
            Some(rustix::process::Signal::TERM.as_raw()),
            "the process that got the reaped child's PID was killed"
        );
        assert_eq!(
            sent.map_err(|e| e.raw_os_error()),
            Err(Some(rustix::io::Errno::SRCH.raw_os_error()))
        );
    }
}
