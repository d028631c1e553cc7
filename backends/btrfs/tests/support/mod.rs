//! A scratch btrfs for one test: a sparse image made by `mkfs.btrfs` in a temporary directory,
//! attached to a loop device by `losetup` and mounted there. The guard unmounts it and detaches
//! that device (by its exact path, after checking it still holds our image) also when the test
//! panics, then removes the image.

#![allow(dead_code)] // Each test file uses its own part of this module.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use autogentoo_core::registry::StorageSettings;
use autogentoo_core::storage::Storage;
use rustix::io::Errno;
use rustix::mount::UnmountFlags;
use tempfile::TempDir;

/// Big enough for mkfs.btrfs's minimum with room for the tests; sparse, so it costs what is
/// written.
const IMAGE_SIZE: u64 = 512 << 20;

/// A mounted scratch btrfs, torn down on [`ScratchBtrfs::close`] or drop.
pub struct ScratchBtrfs {
    tmp: Option<TempDir>,
    image: PathBuf,
    mount_point: PathBuf,
    device: Option<PathBuf>,
    mounted: bool,
}

impl ScratchBtrfs {
    pub fn new() -> Result<Self> {
        require_root();
        let tmp = tempfile::Builder::new()
            .prefix("autogentoo-btrfs-")
            .tempdir()
            .context("cannot make a temporary directory")?;
        let mut scratch = Self {
            image: tmp.path().join("btrfs.img"),
            mount_point: tmp.path().join("mnt"),
            tmp: Some(tmp),
            device: None,
            mounted: false,
        };
        let image = fs::File::create(&scratch.image)
            .with_context(|| format!("cannot create {}", scratch.image.display()))?;
        image.set_len(IMAGE_SIZE)?;
        drop(image);
        run(Command::new("mkfs.btrfs").arg("-q").arg(&scratch.image))?;
        let device = run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&scratch.image))?;
        scratch.device = Some(PathBuf::from(device.trim()));
        fs::create_dir(&scratch.mount_point)?;
        run(Command::new("mount")
            .args(["-t", "btrfs"])
            .arg(scratch.device.as_ref().expect("attached"))
            .arg(&scratch.mount_point))?;
        scratch.mounted = true;
        Ok(scratch)
    }

    /// The top of the mounted filesystem.
    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Unmounts, detaches and removes everything, reporting what failed.
    pub fn close(mut self) -> Result<()> {
        self.tear_down()
    }

    fn tear_down(&mut self) -> Result<()> {
        if self.mounted {
            unmount(&self.mount_point)?;
            self.mounted = false;
        }
        if let Some(device) = &self.device {
            detach(device, &self.image)?;
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

/// Unmounts `mount_point`, waiting out a short-lived busy state, else detaching it lazily.
fn unmount(mount_point: &Path) -> Result<()> {
    for _ in 0..50 {
        match rustix::mount::unmount(mount_point, UnmountFlags::NOFOLLOW) {
            Ok(()) => return Ok(()),
            Err(Errno::BUSY) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => bail!("cannot unmount {}: {e}", mount_point.display()),
        }
    }
    rustix::mount::unmount(mount_point, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)
        .with_context(|| format!("cannot unmount {}", mount_point.display()))
}

/// Detaches `device`, but only while it still holds `image`: once free, the number may be
/// another test's.
fn detach(device: &Path, image: &Path) -> Result<()> {
    let name = device
        .file_name()
        .context("a loop device has a name")?
        .to_string_lossy()
        .into_owned();
    let backing = fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"));
    match backing {
        Ok(backing) if Path::new(backing.trim()) == image => {}
        _ => return Ok(()),
    }
    run(Command::new("losetup").arg("--detach").arg(device)).map(drop)
}

/// Runs a command, returning its stdout; a failure carries its stderr.
pub fn run(command: &mut Command) -> Result<String> {
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

pub fn require_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the btrfs tests make loop devices and mount filesystems: run them as root"
    );
}

/// The btrfs backend on a workdir inside `scratch`, initialised and reopened (as the CLI does,
/// so that capabilities are probed on the initialised workdir).
pub fn store_in(scratch: &ScratchBtrfs) -> Result<Box<dyn Storage>> {
    let settings = StorageSettings {
        workdir: scratch.path().join("work"),
        dataset: None,
    };
    autogentoo_backend_btrfs::open(&settings)?.init()?;
    Ok(autogentoo_backend_btrfs::open(&settings)?)
}
