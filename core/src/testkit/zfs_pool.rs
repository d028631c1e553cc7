//! Real ZFS for tests: a zfs-fuse daemon started when none runs, and file-backed pools that
//! are destroyed when their guard drops, also when a test panics.
//!
//! The daemon outlives one test process (many test binaries share it); its PID goes to the file
//! named by `AUTOGENTOO_ZFS_FUSE_PIDFILE` (default in the temporary directory), and
//! `cargo xtask test` stops it by that PID when the suite is done.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustix::fs::FlockOperation;

/// Where the PID of a daemon we started is written.
pub fn pidfile() -> PathBuf {
    std::env::var_os("AUTOGENTOO_ZFS_FUSE_PIDFILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("autogentoo-zfs-fuse.pid"))
}

fn zfs_answers() -> bool {
    Command::new("zfs")
        .args(["list", "-H", "-o", "name"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure a ZFS daemon answers, starting zfs-fuse if none does.
pub fn ensure_daemon() {
    if zfs_answers() {
        return;
    }
    // One process starts it; the others wait on the lock and then find it answering.
    let lock_path = std::env::temp_dir().join("autogentoo-zfs-fuse.lock");
    let lock = File::create(&lock_path).expect("create the zfs-fuse start lock");
    rustix::fs::flock(&lock, FlockOperation::LockExclusive).expect("lock");
    if zfs_answers() {
        return;
    }
    // zfs-fuse refuses to start while its pidfile exists, and leaves it behind when stopped.
    let stale = std::fs::read_to_string(pidfile())
        .ok()
        .and_then(|pid| pid.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
        .is_none_or(|pid| rustix::process::test_kill_process(pid).is_err());
    if stale {
        let _ = std::fs::remove_file(pidfile());
    }
    // zfs-fuse daemonizes itself and writes its PID where we ask.
    let started = Command::new("zfs-fuse")
        .arg("--pidfile")
        .arg(pidfile())
        .arg("--no-kstat-mount")
        .stdin(Stdio::null())
        .status()
        .expect("start zfs-fuse (install the zfs-fuse package: cargo xtask test does)");
    assert!(started.success(), "zfs-fuse did not start");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !zfs_answers() {
        assert!(
            Instant::now() < deadline,
            "zfs-fuse did not answer within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A file-backed pool mounted at `mountpoint`; its root dataset is the workdir dataset.
/// One pool exists at a time per test process: zfs-fuse 0.7 has been seen to wedge a pool
/// ("pool is busy" for good) when several are worked on at once.
pub struct Pool {
    pub name: String,
    pub mountpoint: PathBuf,
    dir: tempfile::TempDir,
    _turn: MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

impl Pool {
    /// A new pool of `size_mb` MiB (sparse) in a temporary directory.
    pub fn new(size_mb: u64) -> Self {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        // A test that panicked while holding its turn poisons nothing we depend on.
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        ensure_daemon();
        let dir = tempfile::Builder::new()
            .prefix("autogentoo-zfs.")
            .tempdir()
            .expect("a temporary directory");
        let image = dir.path().join("pool.img");
        File::create(&image)
            .and_then(|f| f.set_len(size_mb << 20))
            .expect("create the pool image");
        let name = format!(
            "agt{}x{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mountpoint = dir.path().join("mnt");
        let status = Command::new("zpool")
            // Not in the daemon's pool cache: a test pool must not come back after a restart.
            .args(["create", "-o", "cachefile=none", "-m"])
            .arg(&mountpoint)
            .arg(&name)
            .arg(&image)
            .stderr(Stdio::null())
            .status()
            .expect("run zpool");
        assert!(status.success(), "zpool create {name} failed");
        Self {
            name,
            mountpoint,
            dir,
            _turn: turn,
        }
    }

    /// The directory holding the image (and the mountpoint).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let destroyed = Command::new("zpool")
            .args(["destroy", "-f", &self.name])
            .status()
            .is_ok_and(|s| s.success());
        if !destroyed {
            eprintln!("could not destroy the test pool {}", self.name);
        }
    }
}
