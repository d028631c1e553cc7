//! `cargo xtask test`: formatting, lints, then every test tier.
//!
//! Tiers: *unit* (pure logic, no root) and *real* (root, real filesystems, real GNU tools, a
//! zfs-fuse daemon, btrfs and SquashFS through loop devices). On the project's machines and in
//! CI every tier runs; `--unit` is for a quick local loop.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::host::{self, cargo};

/// What the real tier drives: GNU tar, cpio and the compressors, xattr and capability tools,
/// busybox for test roots, SquashFS tools, btrfs and ZFS, kernel sources with what building
/// them takes, QEMU and OVMF to boot the result, debootstrap for a root with a toolchain, and
/// the shells and man that load the completion scripts and render the manual pages, and
/// PostgreSQL (its programs: the build database's tests run private clusters), and the farm's
/// network tools.
const PACKAGES: &[&str] = &[
    "tar",
    "cpio",
    "xz-utils",
    "zstd",
    "bzip2",
    "gzip",
    "attr",
    "libcap2-bin",
    "busybox-static",
    "squashfs-tools",
    "btrfs-progs",
    "zfs-fuse",
    "linux-source",
    "make",
    "gcc",
    "bc",
    "flex",
    "bison",
    "libelf-dev",
    "libssl-dev",
    "qemu-system-x86",
    "ovmf",
    "debootstrap",
    // The Portage stand-in stage (scripts/portage-stage) fetches Portage's sources with pip.
    "python3-pip",
    "sbsigntool",
    "systemd-boot-efi",
    "openssl",
    "bash",
    "zsh",
    "fish",
    "man-db",
    "groff-base",
    "postgresql",
    // Other architectures (tests/arch.rs): qemu-user's handlers for roots of arm64, the cross
    // compiler for its kernel, and the machine and firmware that boot it.
    "qemu-user-static",
    "gcc-aarch64-linux-gnu",
    "qemu-system-arm",
    "qemu-efi-aarch64",
    // The farm (tests/farm.rs): its hosts in network namespaces joined by veth pairs and a
    // bridge, and curl to call the API as a host or a person would.
    "iproute2",
    "curl",
];

pub fn run(unit_only: bool) -> Result<()> {
    host::run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    if unit_only {
        return host::run(cargo().args(["test", "--workspace", "--lib"]));
    }
    if !host::is_root() {
        bail!("the real tier mounts, makes device nodes and sets file capabilities: run `cargo xtask test` as root (or `cargo xtask test --unit`)");
    }
    host::ensure_packages(PACKAGES)?;
    host::ensure_foreign_arch("arm64")?;
    host::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    host::run(cargo().args(["build", "--package", "autogentoo-cli"]))?;
    let bin = host::target_dir().join("debug/autogentoo");
    // The ZFS tests start a zfs-fuse daemon when none runs and leave its PID here; it is
    // stopped once every test binary is done, pass or fail.
    let pidfile = host::target_dir().join("zfs-fuse.pid");
    let _ = std::fs::remove_file(&pidfile);
    let result = host::run(
        cargo()
            .args(["test", "--workspace"])
            .env("AUTOGENTOO_BIN", bin)
            .env("AUTOGENTOO_ZFS_FUSE_PIDFILE", &pidfile),
    );
    stop_daemon(&pidfile);
    result
}

/// Stops the zfs-fuse daemon the tests started, by its PID.
fn stop_daemon(pidfile: &std::path::Path) {
    let Some(pid) = std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    let alive = || rustix::process::test_kill_process(pid).is_ok();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    if alive() {
        eprintln!(
            "zfs-fuse (PID {}) did not stop on SIGTERM; killing it",
            pid.as_raw_nonzero()
        );
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
    }
    let _ = std::fs::remove_file(pidfile);
}
