//! The shared conformance suite on the `overlay` backend as the program sees it: the plugin
//! library loaded by the host's loader, its backend opened through the registry's factory, and
//! every call crossing the plugin boundary. Needs root (it mounts overlays).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use autogentoo_core::chroot::mountinfo;
use autogentoo_core::registry::StorageSettings;
use autogentoo_core::storage::{SnapshotId, Storage, VolumeId, VolumeKind};
use autogentoo_core::testkit::conformance::Fixture;
use autogentoo_plugin_api::host::{self, LoadedPlugin};

/// The plugin library, built now if it is not up to date.
fn library() -> PathBuf {
    autogentoo_core::testkit::cdylib::build_cdylib(
        env!("CARGO_PKG_NAME"),
        Path::new(env!("CARGO_MANIFEST_DIR")),
    )
}

fn plugin() -> &'static LoadedPlugin {
    static PLUGIN: OnceLock<LoadedPlugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let path = library();
        host::load(&path).unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
    })
}

/// Unmounts the overlays left in a store's directory before it is removed.
struct Unmount(tempfile::TempDir);

impl Drop for Unmount {
    fn drop(&mut self) {
        for mount in mountinfo::mounts_under(self.0.path()).unwrap_or_default() {
            if let Err(e) =
                rustix::mount::unmount(&mount.point, rustix::mount::UnmountFlags::DETACH)
            {
                eprintln!("cannot unmount {}: {e}", mount.point.display());
            }
        }
    }
}

fn fresh_store() -> Fixture {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let open = plugin().storage_factory("overlay");
    let settings = StorageSettings {
        workdir: tmp.path().to_owned(),
        dataset: None,
    };
    open(&settings).expect("open").init().expect("init");
    // Reopen so the capabilities are probed on the initialised workdir, as the CLI does.
    let storage = open(&settings).expect("reopen");
    Fixture {
        storage,
        guard: Box::new(Unmount(tmp)),
    }
}

#[test]
fn the_plugin_says_what_it_is() {
    let plugin = plugin();
    assert_eq!(plugin.name, "overlay");
    assert_eq!(plugin.storage_backends, ["overlay"]);
    assert!(!plugin.pipeline_hooks);
    assert_eq!(plugin.api, autogentoo_plugin_api::API_VERSION);
}

fn vol(kind: VolumeKind, name: &str) -> VolumeId {
    VolumeId::new(kind, name).unwrap()
}

fn snap(volume: &VolumeId, name: &str) -> SnapshotId {
    SnapshotId::new(volume.clone(), name).unwrap()
}

fn read(storage: &dyn Storage, id: &VolumeId, file: &str) -> Option<String> {
    fs::read_to_string(storage.path(id).unwrap().join(file)).ok()
}

/// A sealed stage holding `a` = "1" and `b` = "1", and a root cloned from it.
fn stage_and_root(storage: &dyn Storage) -> (VolumeId, VolumeId) {
    let stage = vol(VolumeKind::Stage, "st");
    let dir = storage.create(&stage).unwrap().path;
    fs::write(dir.join("a"), "1").unwrap();
    fs::write(dir.join("b"), "1").unwrap();
    storage.seal(&stage, "imported").unwrap();
    let root = vol(VolumeKind::Root, "r");
    storage
        .clone_snapshot(&snap(&stage, "imported"), &root)
        .unwrap();
    (stage, root)
}

#[test]
fn clones_are_overlay_mounts() {
    let fixture = fresh_store();
    let storage = &*fixture.storage;
    assert!(storage.capabilities().cheap_clone);
    let (_, root) = stage_and_root(storage);
    let path = storage.path(&root).unwrap();
    let mounts = mountinfo::read().unwrap();
    let mount = mounts
        .iter()
        .find(|m| m.point == path)
        .expect("the clone is mounted at its path");
    assert_eq!(mount.fstype, "overlay");
    storage.destroy(&root).unwrap();
    assert!(
        !mountinfo::is_mount_point(&path).unwrap(),
        "unmounted with the volume"
    );
}

#[test]
fn a_rolled_back_clone_is_its_snapshot_again() {
    let fixture = fresh_store();
    let storage = &*fixture.storage;
    let (_, root) = stage_and_root(storage);
    let path = storage.path(&root).unwrap();
    fs::write(path.join("a"), "2").unwrap();
    fs::remove_file(path.join("b")).unwrap();
    fs::write(path.join("c"), "2").unwrap();
    storage.snapshot(&snap(&root, "s1")).unwrap();
    fs::write(path.join("a"), "3").unwrap();
    fs::write(path.join("b"), "3").unwrap();
    fs::write(path.join("d"), "3").unwrap();
    storage.rollback(&snap(&root, "s1")).unwrap();
    assert_eq!(read(storage, &root, "a").as_deref(), Some("2"));
    assert_eq!(read(storage, &root, "b"), None, "the deletion is back");
    assert_eq!(read(storage, &root, "c").as_deref(), Some("2"));
    assert_eq!(read(storage, &root, "d"), None);
    assert!(mountinfo::is_mount_point(&path).unwrap(), "mounted again");
    fs::write(path.join("e"), "writable").unwrap();
}

#[test]
fn a_clone_of_a_clones_snapshot_stacks_the_layers() {
    let fixture = fresh_store();
    let storage = &*fixture.storage;
    let (stage, root) = stage_and_root(storage);
    let path = storage.path(&root).unwrap();
    fs::write(path.join("a"), "2").unwrap();
    fs::remove_file(path.join("b")).unwrap();
    storage.snapshot(&snap(&root, "s1")).unwrap();
    let grandchild = vol(VolumeKind::Root, "g");
    storage
        .clone_snapshot(&snap(&root, "s1"), &grandchild)
        .unwrap();
    assert_eq!(read(storage, &grandchild, "a").as_deref(), Some("2"));
    assert_eq!(
        read(storage, &grandchild, "b"),
        None,
        "a deletion in a layer hides the stage's file"
    );
    fs::write(storage.path(&grandchild).unwrap().join("a"), "g").unwrap();
    assert_eq!(read(storage, &root, "a").as_deref(), Some("2"));
    assert_eq!(read(storage, &stage, "a").as_deref(), Some("1"));
    storage.destroy(&grandchild).unwrap();
    storage.destroy_snapshot(&snap(&root, "s1")).unwrap();
    storage.destroy(&root).unwrap();
    storage.destroy(&stage).unwrap();
}

autogentoo_core::storage_conformance!(fresh_store);
