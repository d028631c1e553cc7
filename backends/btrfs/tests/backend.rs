//! What the btrfs backend promises beyond the shared suite, checked on a real btrfs with
//! btrfs-progs as the independent witness: the workdir must be on btrfs; clones and snapshots
//! are btrfs snapshots of their origin; sealed stages and snapshots refuse writes with `EROFS`;
//! removing volumes leaves no subvolume behind; trees the dir backend made are still usable.

mod support;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _, Result};
use autogentoo_core::registry::StorageSettings;
use autogentoo_core::storage::{SnapshotId, Storage, StorageError, VolumeId, VolumeKind};
use autogentoo_tests::{run_tool as run, ScratchBtrfs};
use rustix::mount::{MountFlags, UnmountFlags};
use support::store_in;

/// `BTRFS_FIRST_FREE_OBJECTID`: the inode number of a subvolume's top directory.
const SUBVOLUME_ROOT_INO: u64 = 256;

fn stage(name: &str) -> VolumeId {
    VolumeId::new(VolumeKind::Stage, name).expect("a valid name")
}

fn root(name: &str) -> VolumeId {
    VolumeId::new(VolumeKind::Root, name).expect("a valid name")
}

fn snap(volume: &VolumeId, name: &str) -> SnapshotId {
    SnapshotId::new(volume.clone(), name).expect("a valid name")
}

/// A sealed stage holding `files` small files spread over directories of 100.
fn sealed_stage(storage: &dyn Storage, name: &str, files: usize) -> Result<VolumeId> {
    let id = stage(name);
    let pending = storage.create_pending(&id)?;
    for i in 0..files {
        let dir = pending.path.join(format!("d{}", i / 100));
        if i % 100 == 0 {
            fs::create_dir(&dir)?;
        }
        fs::write(dir.join(format!("f{i}")), format!("file {i}\n"))?;
    }
    storage.commit(pending)?;
    storage.seal(&id, "imported")?;
    Ok(id)
}

/// `btrfs subvolume show PATH` as its `Key: value` lines.
fn subvolume_show(path: &Path) -> Result<HashMap<String, String>> {
    let out = run(Command::new("btrfs").args(["subvolume", "show"]).arg(path))?;
    Ok(out
        .lines()
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect())
}

/// The paths of every subvolume on the filesystem mounted at `top`, relative to it.
fn subvolumes(top: &Path) -> Result<Vec<String>> {
    let out = run(Command::new("btrfs").args(["subvolume", "list"]).arg(top))?;
    Ok(out
        .lines()
        .filter_map(|line| line.split_once(" path "))
        .map(|(_, path)| path.to_owned())
        .collect())
}

fn assert_erofs(result: std::io::Result<impl std::fmt::Debug>, what: &str) {
    match result {
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(rustix::io::Errno::ROFS.raw_os_error()),
            "{what}: expected EROFS, got {e}"
        ),
        Ok(v) => panic!("{what}: expected EROFS, but it succeeded ({v:?})"),
    }
}

/// Every kind of write into `dir` (holding the file `existing`) fails with `EROFS`.
fn assert_refuses_writes(dir: &Path, existing: &str) {
    let file = dir.join(existing);
    assert_erofs(fs::write(dir.join("new"), "x"), "creating a file");
    assert_erofs(
        fs::OpenOptions::new().append(true).open(&file),
        "opening a file for writing",
    );
    assert_erofs(fs::remove_file(&file), "removing a file");
    assert_erofs(fs::create_dir(dir.join("newdir")), "making a directory");
    assert_erofs(
        fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)),
        "changing a mode",
    );
}

/// A tmpfs mounted on a temporary directory, unmounted (by its path) when dropped.
struct Tmpfs {
    tmp: Option<tempfile::TempDir>,
}

impl Tmpfs {
    fn new() -> Result<Self> {
        let tmp = tempfile::tempdir()?;
        rustix::mount::mount("tmpfs", tmp.path(), "tmpfs", MountFlags::empty(), None)
            .with_context(|| format!("cannot mount a tmpfs on {}", tmp.path().display()))?;
        Ok(Self { tmp: Some(tmp) })
    }

    fn path(&self) -> &Path {
        self.tmp.as_ref().expect("present").path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let tmp = self.tmp.take().expect("present");
        match rustix::mount::unmount(tmp.path(), UnmountFlags::NOFOLLOW) {
            Ok(()) => drop(tmp),
            Err(e) => {
                eprintln!("cannot unmount the tmpfs on {}: {e}", tmp.path().display());
                let _ = tmp.keep();
            }
        }
    }
}

#[test]
fn a_workdir_off_btrfs_is_refused_naming_its_filesystem() -> Result<()> {
    autogentoo_tests::require_root();
    let tmpfs = Tmpfs::new()?;
    // Not there yet: the filesystem is its nearest existing ancestor's.
    let workdir = tmpfs.path().join("work/deeper");
    let settings = StorageSettings {
        workdir: workdir.clone(),
        dataset: None,
    };
    let err = match autogentoo_backend_btrfs::open(&settings) {
        Err(err) => err,
        Ok(_) => panic!("the btrfs backend opened on a tmpfs"),
    };
    assert!(
        matches!(err, StorageError::MissingPrerequisite { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(!message.contains('\n'), "one line: {message}");
    let expected = [
        workdir.display().to_string(),
        format!("{} is on tmpfs", tmpfs.path().display()),
        "put the workdir on btrfs or use --backend dir".to_owned(),
    ];
    for part in expected {
        assert!(message.contains(&part), "'{part}' in: {message}");
    }
    ensure!(!workdir.exists(), "opening created the workdir");
    Ok(())
}

#[test]
fn a_clone_is_a_snapshot_of_its_stage_whatever_its_size() -> Result<()> {
    let scratch = ScratchBtrfs::new()?;
    let storage = store_in(&scratch)?;
    for (name, files) in [("small", 10), ("big", 10_000)] {
        let id = sealed_stage(&*storage, name, files)?;
        let clone = storage.clone_snapshot(&snap(&id, "imported"), &root(name))?;
        let stage_path = storage.path(&id)?;
        assert_eq!(fs::metadata(&clone.path)?.ino(), SUBVOLUME_ROOT_INO);
        let stage_info = subvolume_show(&stage_path)?;
        let clone_info = subvolume_show(&clone.path)?;
        assert_eq!(
            clone_info.get("Parent UUID"),
            stage_info.get("UUID"),
            "{name}: the clone is a snapshot of the stage\n{clone_info:?}\n{stage_info:?}"
        );
        assert_eq!(clone_info.get("Flags").map(String::as_str), Some("-"));
        assert_eq!(
            fs::read_to_string(
                clone
                    .path
                    .join(format!("d{}/f{}", (files - 1) / 100, files - 1))
            )?,
            format!("file {}\n", files - 1)
        );
        // The clone is writable and apart from the stage.
        fs::write(clone.path.join("d0/f0"), "changed")?;
        assert_eq!(fs::read_to_string(stage_path.join("d0/f0"))?, "file 0\n");
    }
    drop(storage);
    scratch.close()
}

#[test]
fn sealed_stages_and_snapshots_refuse_writes() -> Result<()> {
    let scratch = ScratchBtrfs::new()?;
    let storage = store_in(&scratch)?;
    let id = sealed_stage(&*storage, "base", 3)?;
    let stage_path = storage.path(&id)?;
    assert_eq!(
        subvolume_show(&stage_path)?
            .get("Flags")
            .map(String::as_str),
        Some("readonly")
    );
    assert_refuses_writes(&stage_path, "d0/f1");

    let web = root("web");
    storage.clone_snapshot(&snap(&id, "imported"), &web)?;
    storage.snapshot(&snap(&web, "before"))?;
    let snapshot_path = scratch
        .path()
        .join("work/.autogentoo/snapshots/root/web/before");
    let info = subvolume_show(&snapshot_path)?;
    assert_eq!(info.get("Flags").map(String::as_str), Some("readonly"));
    assert_eq!(
        info.get("Parent UUID"),
        subvolume_show(&storage.path(&web)?)?.get("UUID")
    );
    assert_refuses_writes(&snapshot_path, "d0/f1");
    drop(storage);
    scratch.close()
}

#[test]
fn removing_volumes_leaves_no_subvolume_behind() -> Result<()> {
    let scratch = ScratchBtrfs::new()?;
    let storage = store_in(&scratch)?;
    let id = sealed_stage(&*storage, "base", 3)?;
    let web = root("web");
    let web_path = storage.clone_snapshot(&snap(&id, "imported"), &web)?.path;
    storage.snapshot(&snap(&web, "one"))?;
    fs::write(web_path.join("d0/f0"), "changed")?;
    storage.snapshot(&snap(&web, "two"))?;
    storage.rollback(&snap(&web, "one"))?;
    assert_eq!(fs::read_to_string(web_path.join("d0/f0"))?, "file 0\n");
    // A subvolume made inside the root, as a container tool running there might.
    run(Command::new("btrfs")
        .args(["subvolume", "create"])
        .arg(web_path.join("d0/machines")))?;
    let mut left = subvolumes(scratch.path())?;
    left.sort();
    assert_eq!(
        left,
        [
            "work/.autogentoo/snapshots/root/web/one",
            "work/roots/web",
            "work/roots/web/d0/machines",
            "work/stages/base",
        ]
    );

    storage.destroy(&web)?;
    storage.destroy(&id)?;
    assert_eq!(subvolumes(scratch.path())?, Vec::<String>::new());
    let pending: Vec<PathBuf> = fs::read_dir(scratch.path().join("work/.autogentoo/pending"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    assert_eq!(pending, Vec::<PathBuf>::new());
    drop(storage);
    scratch.close()
}

#[test]
fn trees_the_dir_backend_made_are_copied_into_subvolumes() -> Result<()> {
    let scratch = ScratchBtrfs::new()?;
    let workdir = scratch.path().join("work");
    let dir = autogentoo_backend_dir::DirStorage::open(&workdir)?;
    dir.init()?;
    let id = sealed_stage(&dir, "base", 3)?;
    drop(dir);

    let storage = store_in(&scratch)?;
    assert_eq!(storage.backend_name(), "btrfs");
    let web = root("web");
    let web_path = storage.clone_snapshot(&snap(&id, "imported"), &web)?.path;
    assert_eq!(fs::metadata(&web_path)?.ino(), SUBVOLUME_ROOT_INO);
    assert_eq!(fs::read_to_string(web_path.join("d0/f2"))?, "file 2\n");
    storage.snapshot(&snap(&web, "one"))?;
    fs::write(web_path.join("d0/f2"), "changed")?;
    storage.rollback(&snap(&web, "one"))?;
    assert_eq!(fs::read_to_string(web_path.join("d0/f2"))?, "file 2\n");
    storage.destroy(&web)?;
    storage.destroy(&id)?;
    assert_eq!(subvolumes(scratch.path())?, Vec::<String>::new());
    drop(storage);
    scratch.close()
}
