//! `autogentoo --backend btrfs` from end to end, as an operator runs it, on a scratch btrfs:
//! init, import a stage tarball made by GNU tar, create a root, snapshot, roll back, pack and
//! remove, checking what each step left on disk and that nothing is left at the end.

mod support;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _, Result};
use autogentoo_tests::{isolated_binary, run_tool as run, ScratchBtrfs};

/// Runs the binary on `workdir` with the btrfs backend and an empty site config; it must
/// succeed. Returns its stdout.
fn autogentoo<I, S>(workdir: &Path, config: &Path, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = isolated_binary();
    command
        .arg("--backend")
        .arg("btrfs")
        .arg("--workdir")
        .arg(workdir)
        .arg("--config")
        .arg(config)
        .args(args);
    run(&mut command)
}

/// A small stage tree: an executable `/init`, a setuid program, a symlink, a config file.
fn build_stage_tree(tree: &Path) -> Result<()> {
    for dir in ["bin", "etc", "usr/bin"] {
        fs::create_dir_all(tree.join(dir))?;
    }
    fs::write(tree.join("init"), "#!/bin/sh\necho booted\n")?;
    fs::set_permissions(tree.join("init"), fs::Permissions::from_mode(0o755))?;
    fs::write(tree.join("usr/bin/su"), "not really su\n")?;
    fs::set_permissions(tree.join("usr/bin/su"), fs::Permissions::from_mode(0o4755))?;
    symlink("../usr/bin/su", tree.join("bin/su"))?;
    fs::write(tree.join("etc/hostname"), "stage\n")?;
    Ok(())
}

#[test]
fn the_whole_root_life_cycle_on_btrfs() -> Result<()> {
    let scratch = ScratchBtrfs::new()?;
    let files = tempfile::tempdir()?;
    let tree = files.path().join("tree");
    build_stage_tree(&tree)?;
    let tarball = files.path().join("stage3.tar");
    run(Command::new("tar")
        .arg("--numeric-owner")
        .arg("-cf")
        .arg(&tarball)
        .arg("-C")
        .arg(&tree)
        .arg("."))?;
    let tarball_arg = tarball.to_str().context("a UTF-8 temporary path")?;
    let config = files.path().join("autogentoo.toml");
    fs::write(&config, "")?;
    let workdir = scratch.path().join("work");
    let ag = |args: &[&str]| autogentoo(&workdir, &config, args);

    ag(&["workdir", "init"])?;
    let status = ag(&["workdir", "status"])?;
    ensure!(
        status.contains("btrfs"),
        "status names the backend: {status}"
    );
    ensure!(
        status.contains("cheap clones"),
        "status lists the capabilities: {status}"
    );

    ag(&["stage", "import", tarball_arg, "--name", "base"])?;
    let stage = PathBuf::from(ag(&["stage", "path", "base"])?.trim());
    ensure!(stage == workdir.join("stages/base"), "{}", stage.display());
    let su = fs::symlink_metadata(stage.join("usr/bin/su"))?;
    ensure!(su.mode() & 0o7777 == 0o4755, "setuid kept: {:o}", su.mode());
    ensure!(fs::read_link(stage.join("bin/su"))? == Path::new("../usr/bin/su"));

    ag(&["root", "create", "web", "--stage", "base"])?;
    let web = PathBuf::from(ag(&["root", "path", "web"])?.trim());
    ensure!(fs::metadata(&web)?.ino() == 256, "the root is a subvolume");
    fs::write(web.join("etc/hostname"), "web\n")?;
    ag(&["root", "snapshot", "web", "configured"])?;
    fs::write(web.join("etc/hostname"), "broken\n")?;
    fs::remove_file(web.join("init"))?;
    fs::write(web.join("etc/junk"), "junk\n")?;
    ag(&["root", "rollback", "web", "configured"])?;
    ensure!(fs::read_to_string(web.join("etc/hostname"))? == "web\n");
    ensure!(web.join("init").is_file(), "rollback restored /init");
    ensure!(
        !web.join("etc/junk").exists(),
        "rollback dropped the new file"
    );
    ensure!(
        fs::read_to_string(stage.join("etc/hostname"))? == "stage\n",
        "the stage is untouched"
    );

    let archive = PathBuf::from(ag(&["root", "pack", "web"])?.trim());
    ensure!(
        archive == workdir.join("out/web/initramfs.cpio.gz"),
        "{}",
        archive.display()
    );
    let bytes = fs::read(&archive).with_context(|| archive.display().to_string())?;
    ensure!(bytes.starts_with(&[0x1f, 0x8b]), "a gzip archive");
    let listing = run(Command::new("sh").arg("-c").arg(format!(
        "gzip -dc '{}' | cpio -it --quiet",
        archive.display()
    )))?;
    for entry in ["init", "usr/bin/su", "bin/su", "etc/hostname"] {
        ensure!(
            listing.lines().any(|line| line == entry),
            "{entry} in the archive:\n{listing}"
        );
    }

    ag(&["root", "remove", "web"])?;
    ag(&["stage", "remove", "base"])?;
    ensure!(!web.exists() && !stage.exists());
    let listing = run(Command::new("btrfs")
        .args(["subvolume", "list"])
        .arg(scratch.path()))?;
    let mut subvolumes: Vec<&str> = listing
        .lines()
        .filter_map(|line| line.split_once(" path ").map(|(_, path)| path))
        .collect();
    subvolumes.sort();
    ensure!(
        subvolumes == ["work/cache/binpkgs", "work/cache/distfiles"],
        "only the caches `workdir init` made are left:\n{listing}"
    );
    scratch.close()
}
