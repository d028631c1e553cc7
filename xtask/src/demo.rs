//! `cargo xtask demo`: the main job on a fresh machine. It builds autogentoo; imports the
//! Portage stand-in stage (scripts/portage-stage: Debian with the real Portage, since no Gentoo
//! stage3 can be downloaded here; built once, then cached) as the build root's stage and a
//! busybox tree as the image's base; packs the example ebuild repository and puts its distfiles
//! in the shared cache; imports Debian's linux-source as the kernel; runs the standard pipeline
//! (`autogentoo build demo`: emerge in the root, a slim image from the binary packages, the
//! initramfs, the kernel) on the example site with the dir backend; and boots the EFI image in
//! QEMU/OVMF until the Portage-built program the demo's /init runs prints the marker.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

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
    // The Portage stand-in stage: debootstrap, its tarball's compressor, pip for Portage's
    // sources.
    "debootstrap",
    "zstd",
    "python3-pip",
];

/// Debian's kernel sources, as the linux-source package installs them.
const KERNEL_TARBALL: &str = "/usr/src/linux-source-6.1.tar.xz";

/// The busybox applets the image's base links, enough for a shell session and an /init.
const APPLETS: &[&str] = &[
    "sh", "ash", "cat", "echo", "ls", "mkdir", "mount", "umount", "uname", "poweroff", "reboot",
    "sleep", "ps",
];

/// The line the demo's /init has the Portage-built `greet` print (config/overlays/boot/greet);
/// the boot looks for it.
pub const MARKER: &str = "autogentoo-demo: init reached";

pub fn run() -> Result<()> {
    host::ensure_packages(PACKAGES)?;
    host::run(cargo().args(["build", "--release", "--package", "autogentoo-cli"]))?;
    let bin = host::target_dir().join("release/autogentoo");
    let demo = host::target_dir().join("demo");
    let workdir = demo.join("workdir");
    let site = host::workspace().join("config");
    let busybox = make_stage_tarball(&demo)?;
    let portage = portage_stage()?;
    let config = site.join("autogentoo.toml");

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
    // Re-runnable: a previous demo's root and stages make way for fresh ones.
    if ag(&["root", "path", "demo"]).output()?.status.success() {
        host::run(&mut ag(&["root", "remove", "demo"]))?;
    }
    for (name, tarball) in [("portage", &portage), ("busybox", &busybox)] {
        if ag(&["stage", "path", name]).output()?.status.success() {
            host::run(&mut ag(&["stage", "remove", name]))?;
        }
        host::run(&mut ag(&[
            "stage",
            "import",
            tarball.to_str().context("utf-8 path")?,
            "--name",
            name,
        ]))?;
    }
    let repo = site.join("repo");
    host::run(&mut ag(&[
        "repo",
        "pack",
        "--dir",
        repo.to_str().context("utf-8 path")?,
        "--name",
        "example",
        "--force",
    ]))?;
    // The example packages' sources are the project's own: no mirror has them, so they go into
    // the shared distfiles cache, where emerge finds them as if fetched.
    let status = ag(&["workdir", "status", "--json"]).output()?;
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).context("`workdir status --json` output")?;
    let distfiles = status["caches"]["distfiles"]
        .as_str()
        .context("`workdir status` names no distfiles cache")?;
    host::run(Command::new(host::workspace().join("scripts/example-distfiles")).arg(distfiles))?;
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

/// The Portage stand-in stage's tarball, built by scripts/portage-stage on the first run and
/// taken from its cache after.
fn portage_stage() -> Result<PathBuf> {
    let script = host::workspace().join("scripts/portage-stage");
    eprintln!("+ {}", script.display());
    let output = Command::new(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    let path = String::from_utf8(output.stdout).context("the stage's path is not UTF-8")?;
    Ok(PathBuf::from(path.trim()))
}

/// A busybox tree with a root's usual directories and a console node, packed as a stage
/// tarball: the base of the demo's image (its /init comes from the site's boot/greet overlay).
fn make_stage_tarball(demo: &Path) -> Result<PathBuf> {
    let tree = demo.join("stage-tree");
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("cannot remove {}", tree.display()))?;
    }
    for dir in [
        "bin", "sbin", "etc", "dev", "proc", "sys", "run", "tmp", "root", "usr/bin", "usr/sbin",
        "var/tmp",
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
