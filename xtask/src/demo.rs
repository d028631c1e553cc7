//! `cargo xtask demo`: the main job on a fresh machine. It builds autogentoo, makes a small stage
//! tarball from Debian's busybox-static (a real stage3 is not to be had offline), imports
//! Debian's linux-source as the kernel, runs the standard pipeline (`autogentoo build demo`) on
//! the example site with the dir backend, and boots the resulting EFI image in QEMU/OVMF until
//! the demo's /init prints its marker.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::host::{self, cargo};

/// The stage's busybox, the kernel sources and what building them on the host takes, and the
/// virtual machine that boots the result.
const PACKAGES: &[&str] = &[
    "busybox-static",
    "tar",
    "gzip",
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
];

/// Debian's kernel sources, as the linux-source package installs them.
const KERNEL_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

/// The busybox applets the demo stage links, enough for a shell session and an /init.
const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "echo", "ls", "mkdir", "mount", "umount", "uname", "poweroff", "reboot",
    "sleep", "ps",
];

/// The line the demo's /init prints; later steps boot the image and look for it.
pub const MARKER: &str = "autogentoo-demo: init reached";

pub fn run() -> Result<()> {
    host::ensure_packages(PACKAGES)?;
    host::run(cargo().args(["build", "--release", "--package", "autogentoo-cli"]))?;
    let bin = host::target_dir().join("release/autogentoo");
    let demo = host::target_dir().join("demo");
    let workdir = demo.join("workdir");
    let tarball = make_stage_tarball(&demo)?;
    let config = host::workspace().join("config/autogentoo.toml");

    let ag = |args: &[&str]| {
        let mut cmd = Command::new(&bin);
        cmd.arg("--config")
            .arg(&config)
            .arg("--backend")
            .arg("dir")
            .arg("--workdir")
            .arg(&workdir);
        cmd.args(args);
        cmd
    };
    host::run(&mut ag(&["workdir", "init"]))?;
    // Re-runnable: a previous demo's root and stage make way for fresh ones.
    if ag(&["root", "path", "demo"]).output()?.status.success() {
        host::run(&mut ag(&["root", "remove", "demo"]))?;
    }
    if ag(&["stage", "path", "demo"]).output()?.status.success() {
        host::run(&mut ag(&["stage", "remove", "demo"]))?;
    }
    host::run(&mut ag(&[
        "stage",
        "import",
        tarball.to_str().context("utf-8 path")?,
        "--name",
        "demo",
    ]))?;
    if !ag(&["kernel", "path", "linux-6.1"])
        .output()?
        .status
        .success()
    {
        host::run(&mut ag(&[
            "kernel",
            "import",
            KERNEL_TARBALL,
            "--name",
            "linux-6.1",
        ]))?;
    }
    host::run(&mut ag(&["build", "demo"]))?;
    let image = workdir.join("out/demo/demo.efi");
    host::run(&mut ag(&[
        "-v",
        "kernel",
        "boot",
        image.to_str().context("utf-8 path")?,
        "--expect",
        MARKER,
    ]))?;
    eprintln!("demo image booted: {}", image.display());
    Ok(())
}

/// A busybox stage with a root's usual directories, a console node and an /init that prints
/// [`MARKER`], packed the way Gentoo packs stage3 tarballs.
fn make_stage_tarball(demo: &Path) -> Result<PathBuf> {
    let tree = demo.join("stage-tree");
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("cannot remove {}", tree.display()))?;
    }
    for dir in [
        "bin",
        "sbin",
        "etc",
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
        "usr/bin",
        "usr/sbin",
        "var/tmp",
        "var/cache/distfiles",
        "var/cache/binpkgs",
        "var/db/repos/gentoo",
    ] {
        fs::create_dir_all(tree.join(dir))?;
    }
    fs::copy("/bin/busybox", tree.join("bin/busybox"))
        .context("cannot copy /bin/busybox (busybox-static)")?;
    for applet in APPLETS {
        symlink("busybox", tree.join("bin").join(applet))?;
    }
    fs::write(tree.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    fs::write(tree.join("etc/group"), "root:x:0:\n")?;
    fs::write(
        tree.join("etc/os-release"),
        "NAME=\"autogentoo demo\"\nID=autogentoo-demo\n",
    )?;
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
    fs::set_permissions(tree.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    for (name, major, minor) in [("console", 5, 1), ("null", 1, 3)] {
        let node = tree.join("dev").join(name);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &node,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            rustix::fs::makedev(major, minor),
        )
        .with_context(|| format!("cannot make {} (run as root)", node.display()))?;
    }
    let tarball = demo.join("stage3-demo.tar.gz");
    host::run(
        Command::new("tar")
            .args(["--xattrs", "--numeric-owner", "-czpf"])
            .arg(&tarball)
            .arg("-C")
            .arg(&tree)
            .arg("."),
    )?;
    Ok(tarball)
}
