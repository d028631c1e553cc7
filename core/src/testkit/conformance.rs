//! The backend conformance suite: one function per bullet of the [`Storage`] contract.
//!
//! A backend runs the whole suite from its test file with
//! `autogentoo_core::storage_conformance!(fresh_store);`, where `fresh_store()` returns a
//! [`Fixture`] holding a new, initialised, empty store (and whatever must be torn down after it).

use std::any::Any;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use crate::storage::{SnapshotId, Storage, StorageError, VolumeId, VolumeKind};
use crate::testkit::tree_diff;

/// A fresh store for one case. Fields drop in order: the store first, then the guard that
/// tears down what the store lives on (a loop device, a pool, a temporary directory).
pub struct Fixture {
    pub storage: Box<dyn Storage>,
    pub guard: Box<dyn Any>,
}

/// Expands to one `#[test]` per conformance case, each on a store made by `$fresh()`.
#[macro_export]
macro_rules! storage_conformance {
    ($fresh:expr) => {
        $crate::storage_conformance!(@cases $fresh;
            init_is_idempotent,
            create_lists_an_empty_volume,
            create_of_a_taken_name_is_already_exists,
            kinds_are_separate_namespaces,
            invalid_names_are_refused,
            pending_is_invisible_until_commit,
            pending_of_a_taken_name_is_already_exists,
            commit_after_the_name_was_taken_discards,
            commit_sealed_appears_sealed_with_its_properties,
            commit_sealed_of_a_taken_name_is_already_exists,
            discard_leaves_nothing,
            sweep_keeps_pending_volumes_of_live_processes,
            snapshot_keeps_contents,
            snapshot_name_taken_is_already_exists,
            snapshot_of_a_missing_volume_is_not_found,
            seal_makes_a_read_only_volume_with_a_snapshot,
            clone_has_the_snapshot_contents_and_origin,
            clone_is_independent_of_its_origin,
            clone_keeps_special_files_and_metadata,
            clone_of_a_missing_snapshot_is_not_found,
            clone_to_a_taken_name_is_already_exists,
            rollback_discards_changes,
            rollback_destroys_newer_snapshots,
            rollback_is_refused_when_a_newer_snapshot_has_clones,
            rollback_of_a_sealed_volume_is_refused,
            destroy_is_refused_while_clones_exist,
            destroy_of_a_missing_volume_is_not_found,
            destroy_frees_the_name,
            destroy_snapshot_is_refused_while_clones_exist,
            destroy_of_a_seal_snapshot_is_refused,
            list_is_sorted_by_name,
            get_of_a_missing_volume_is_not_found,
            properties_round_trip);
    };
    (@cases $fresh:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let fixture: $crate::testkit::conformance::Fixture = ($fresh)();
                $crate::testkit::conformance::$case(&*fixture.storage);
            }
        )*
    };
}

fn vol(kind: VolumeKind, name: &str) -> VolumeId {
    VolumeId::new(kind, name).expect("test names are valid")
}

fn snap(volume: &VolumeId, name: &str) -> SnapshotId {
    SnapshotId::new(volume.clone(), name).expect("test names are valid")
}

fn write(storage: &dyn Storage, id: &VolumeId, file: &str, text: &str) {
    let path = storage.path(id).unwrap().join(file);
    fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn read(storage: &dyn Storage, id: &VolumeId, file: &str) -> Option<String> {
    fs::read_to_string(storage.path(id).unwrap().join(file)).ok()
}

fn names(storage: &dyn Storage, kind: VolumeKind) -> Vec<String> {
    storage
        .list(kind)
        .unwrap()
        .into_iter()
        .map(|v| v.id.name().to_owned())
        .collect()
}

fn snapshot_names(storage: &dyn Storage, id: &VolumeId) -> Vec<String> {
    storage
        .snapshots(id)
        .unwrap()
        .into_iter()
        .map(|s| s.id.name().to_owned())
        .collect()
}

/// A volume `name` holding `a.txt` = "one", with snapshot `s1`.
fn volume_with_snapshot(
    storage: &dyn Storage,
    kind: VolumeKind,
    name: &str,
) -> (VolumeId, SnapshotId) {
    let id = vol(kind, name);
    storage.create(&id).unwrap();
    write(storage, &id, "a.txt", "one");
    let s1 = snap(&id, "s1");
    storage.snapshot(&s1).unwrap();
    (id, s1)
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StorageError>, mentions: &str) {
    match result {
        Err(err @ StorageError::NotFound(_)) => {
            assert!(
                err.to_string().contains(mentions),
                "'{err}' should name {mentions}"
            )
        }
        other => panic!("expected NotFound naming {mentions}, got {other:?}"),
    }
}

#[track_caller]
fn assert_exists<T: std::fmt::Debug>(result: Result<T, StorageError>) {
    assert!(
        matches!(result, Err(StorageError::AlreadyExists(_))),
        "expected AlreadyExists, got {result:?}"
    );
}

#[track_caller]
fn assert_dependants<T: std::fmt::Debug>(result: Result<T, StorageError>, expected: &[&VolumeId]) {
    match result {
        Err(err @ StorageError::HasDependants { .. }) => {
            let StorageError::HasDependants { dependants, .. } = &err else {
                unreachable!()
            };
            for id in expected {
                assert!(dependants.contains(id), "'{err}' should name {id}");
                assert!(
                    err.to_string().contains(id.name()),
                    "'{err}' should name {id}"
                );
            }
        }
        other => panic!("expected HasDependants, got {other:?}"),
    }
}

pub fn init_is_idempotent(storage: &dyn Storage) {
    let id = vol(VolumeKind::Root, "keep");
    storage.create(&id).unwrap();
    write(storage, &id, "f", "x");
    storage.init().unwrap();
    storage.init().unwrap();
    assert_eq!(read(storage, &id, "f").as_deref(), Some("x"));
}

pub fn create_lists_an_empty_volume(storage: &dyn Storage) {
    let id = vol(VolumeKind::Root, "r1");
    let volume = storage.create(&id).unwrap();
    assert_eq!(volume.id, id);
    assert!(volume.origin.is_none());
    assert!(!volume.sealed);
    assert!(volume.path.is_dir());
    assert_eq!(
        fs::read_dir(&volume.path).unwrap().count(),
        0,
        "a new volume is empty"
    );
    assert_eq!(names(storage, VolumeKind::Root), ["r1"]);
    assert_eq!(storage.get(&id).unwrap().path, volume.path);
    write(storage, &id, "f", "writable");
}

pub fn create_of_a_taken_name_is_already_exists(storage: &dyn Storage) {
    let id = vol(VolumeKind::Root, "r1");
    storage.create(&id).unwrap();
    write(storage, &id, "f", "x");
    assert_exists(storage.create(&id));
    assert_eq!(
        read(storage, &id, "f").as_deref(),
        Some("x"),
        "the existing volume is untouched"
    );
}

pub fn kinds_are_separate_namespaces(storage: &dyn Storage) {
    let stage = vol(VolumeKind::Stage, "same");
    let root = vol(VolumeKind::Root, "same");
    storage.create(&stage).unwrap();
    storage.create(&root).unwrap();
    write(storage, &root, "f", "root");
    assert_eq!(read(storage, &stage, "f"), None);
    assert_ne!(storage.path(&stage).unwrap(), storage.path(&root).unwrap());
}

pub fn invalid_names_are_refused(storage: &dyn Storage) {
    let long = "a".repeat(crate::names::MAX_LEN + 1);
    for bad in [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "/abs",
        ".hidden",
        "-x",
        long.as_str(),
    ] {
        let err = VolumeId::new(VolumeKind::Root, bad).expect_err(bad);
        assert!(
            matches!(err, StorageError::InvalidName { .. }),
            "{bad}: {err:?}"
        );
        let valid = vol(VolumeKind::Root, "ok");
        let err = SnapshotId::new(valid, bad).expect_err(bad);
        assert!(
            matches!(err, StorageError::InvalidName { .. }),
            "{bad}: {err:?}"
        );
    }
    assert!(names(storage, VolumeKind::Root).is_empty());
}

pub fn pending_is_invisible_until_commit(storage: &dyn Storage) {
    let id = vol(VolumeKind::Stage, "p");
    let pending = storage.create_pending(&id).unwrap();
    fs::write(pending.path.join("f"), "data").unwrap();
    assert!(names(storage, VolumeKind::Stage).is_empty());
    assert_not_found(storage.get(&id), "'p'");
    let volume = storage.commit(pending).unwrap();
    assert_eq!(names(storage, VolumeKind::Stage), ["p"]);
    assert_eq!(fs::read_to_string(volume.path.join("f")).unwrap(), "data");
}

pub fn pending_of_a_taken_name_is_already_exists(storage: &dyn Storage) {
    let id = vol(VolumeKind::Stage, "p");
    storage.create(&id).unwrap();
    assert_exists(storage.create_pending(&id));
}

pub fn commit_after_the_name_was_taken_discards(storage: &dyn Storage) {
    let id = vol(VolumeKind::Stage, "p");
    let pending = storage.create_pending(&id).unwrap();
    let pending_path = pending.path.clone();
    storage.create(&id).unwrap();
    write(storage, &id, "winner", "x");
    assert_exists(storage.commit(pending));
    assert!(!pending_path.exists(), "the pending volume is discarded");
    assert_eq!(read(storage, &id, "winner").as_deref(), Some("x"));
}

pub fn commit_sealed_appears_sealed_with_its_properties(storage: &dyn Storage) {
    let id = vol(VolumeKind::Stage, "p");
    let pending = storage.create_pending(&id).unwrap();
    fs::write(pending.path.join("f"), "data").unwrap();
    let properties = [("source".to_owned(), "/srv/stage3.tar.xz".to_owned())];
    let volume = storage
        .commit_sealed(pending, "imported", &properties)
        .unwrap();
    assert!(volume.sealed, "{volume:?}");
    assert_eq!(
        volume.properties.get("source").map(String::as_str),
        Some("/srv/stage3.tar.xz")
    );
    let listed = storage.get(&id).unwrap();
    assert!(listed.sealed);
    assert_eq!(listed.properties, volume.properties);
    assert_eq!(snapshot_names(storage, &id), ["imported"]);
    assert_eq!(fs::read_to_string(listed.path.join("f")).unwrap(), "data");
    let root = vol(VolumeKind::Root, "from-sealed");
    storage
        .clone_snapshot(&snap(&id, "imported"), &root)
        .unwrap();
    assert_eq!(read(storage, &root, "f").as_deref(), Some("data"));
}

pub fn commit_sealed_of_a_taken_name_is_already_exists(storage: &dyn Storage) {
    let id = vol(VolumeKind::Stage, "p");
    let pending = storage.create_pending(&id).unwrap();
    let pending_path = pending.path.clone();
    storage.create(&id).unwrap();
    write(storage, &id, "winner", "x");
    assert_exists(storage.commit_sealed(pending, "imported", &[]));
    assert!(!pending_path.exists(), "the pending volume is discarded");
    assert_eq!(read(storage, &id, "winner").as_deref(), Some("x"));
    assert!(
        !storage.get(&id).unwrap().sealed,
        "the winner is left as it was"
    );
}

pub fn discard_leaves_nothing(storage: &dyn Storage) {
    let id = vol(VolumeKind::Stage, "p");
    let pending = storage.create_pending(&id).unwrap();
    let path = pending.path.clone();
    fs::create_dir(path.join("sub")).unwrap();
    fs::write(path.join("sub/f"), "data").unwrap();
    storage.discard(pending).unwrap();
    assert!(!path.exists(), "{} is gone", path.display());
    assert!(names(storage, VolumeKind::Stage).is_empty());
    storage.create(&id).unwrap();
}

pub fn sweep_keeps_pending_volumes_of_live_processes(storage: &dyn Storage) {
    let id = vol(VolumeKind::Stage, "p");
    let pending = storage.create_pending(&id).unwrap();
    fs::write(pending.path.join("f"), "data").unwrap();
    assert_eq!(storage.sweep_abandoned().unwrap(), 0);
    assert!(pending.path.join("f").exists());
    storage.commit(pending).unwrap();
}

pub fn snapshot_keeps_contents(storage: &dyn Storage) {
    let (id, s1) = volume_with_snapshot(storage, VolumeKind::Root, "r");
    write(storage, &id, "a.txt", "two");
    write(storage, &id, "b.txt", "new");
    let copy = vol(VolumeKind::Root, "copy");
    storage.clone_snapshot(&s1, &copy).unwrap();
    assert_eq!(read(storage, &copy, "a.txt").as_deref(), Some("one"));
    assert_eq!(read(storage, &copy, "b.txt"), None);
    assert_eq!(snapshot_names(storage, &id), ["s1"]);
}

pub fn snapshot_name_taken_is_already_exists(storage: &dyn Storage) {
    let (_, s1) = volume_with_snapshot(storage, VolumeKind::Root, "r");
    assert_exists(storage.snapshot(&s1));
}

pub fn snapshot_of_a_missing_volume_is_not_found(storage: &dyn Storage) {
    let missing = vol(VolumeKind::Root, "ghost");
    assert_not_found(storage.snapshot(&snap(&missing, "s")), "'ghost'");
    assert_not_found(storage.snapshots(&missing), "'ghost'");
}

pub fn seal_makes_a_read_only_volume_with_a_snapshot(storage: &dyn Storage) {
    let id = vol(VolumeKind::Stage, "st");
    storage.create(&id).unwrap();
    write(storage, &id, "a.txt", "one");
    storage.seal(&id, "imported").unwrap();
    let volume = storage.get(&id).unwrap();
    assert!(volume.sealed);
    assert_eq!(snapshot_names(storage, &id), ["imported"]);
    assert_exists(storage.seal(&id, "imported"));
    if storage.capabilities().enforced_read_only {
        let err =
            fs::write(volume.path.join("new"), "x").expect_err("a sealed volume refuses writes");
        let refusals = [
            rustix::io::Errno::ROFS,
            rustix::io::Errno::PERM,
            rustix::io::Errno::ACCESS,
        ];
        assert!(
            refusals
                .iter()
                .any(|e| err.raw_os_error() == Some(e.raw_os_error())),
            "unexpected error writing into a sealed volume: {err}"
        );
    }
    let root = vol(VolumeKind::Root, "from-seal");
    storage
        .clone_snapshot(&snap(&id, "imported"), &root)
        .unwrap();
    assert_eq!(read(storage, &root, "a.txt").as_deref(), Some("one"));
}

pub fn clone_has_the_snapshot_contents_and_origin(storage: &dyn Storage) {
    let (_, s1) = volume_with_snapshot(storage, VolumeKind::Stage, "st");
    let root = vol(VolumeKind::Root, "r");
    let volume = storage.clone_snapshot(&s1, &root).unwrap();
    assert_eq!(volume.origin.as_ref(), Some(&s1));
    assert_eq!(storage.get(&root).unwrap().origin.as_ref(), Some(&s1));
    assert!(!volume.sealed);
    assert_eq!(read(storage, &root, "a.txt").as_deref(), Some("one"));
}

pub fn clone_is_independent_of_its_origin(storage: &dyn Storage) {
    let (origin, s1) = volume_with_snapshot(storage, VolumeKind::Root, "origin");
    let clone = vol(VolumeKind::Root, "clone");
    storage.clone_snapshot(&s1, &clone).unwrap();
    write(storage, &clone, "a.txt", "changed in clone");
    write(storage, &clone, "only-clone", "x");
    assert_eq!(read(storage, &origin, "a.txt").as_deref(), Some("one"));
    assert_eq!(read(storage, &origin, "only-clone"), None);
    write(storage, &origin, "a.txt", "changed in origin");
    assert_eq!(
        read(storage, &clone, "a.txt").as_deref(),
        Some("changed in clone")
    );
    let again = vol(VolumeKind::Root, "again");
    storage.clone_snapshot(&s1, &again).unwrap();
    assert_eq!(read(storage, &again, "a.txt").as_deref(), Some("one"));
}

pub fn clone_keeps_special_files_and_metadata(storage: &dyn Storage) {
    let caps = storage.capabilities();
    let id = vol(VolumeKind::Stage, "rich");
    storage.create(&id).unwrap();
    let dir = storage.path(&id).unwrap();
    fs::create_dir_all(dir.join("usr/bin")).unwrap();
    fs::write(dir.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
    rustix::fs::chown(
        dir.join("usr/bin/tool"),
        Some(rustix::fs::Uid::from_raw(250)),
        Some(rustix::fs::Gid::from_raw(250)),
    )
    .unwrap();
    fs::set_permissions(dir.join("usr/bin/tool"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(dir.join("usr/bin/tool"), dir.join("usr/bin/tool-link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("abs-link")).unwrap();
    std::os::unix::fs::symlink("usr/bin/tool", dir.join("rel-link")).unwrap();
    if caps.special_files {
        make_node(&dir.join("fifo"), rustix::fs::FileType::Fifo, 0);
        make_node(
            &dir.join("null"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::makedev(1, 3),
        );
        make_node(
            &dir.join("loop9"),
            rustix::fs::FileType::BlockDevice,
            rustix::fs::makedev(7, 9),
        );
    }
    if caps.xattrs {
        rustix::fs::setxattr(
            dir.join("usr/bin/tool"),
            "user.autogentoo",
            b"kept",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    storage.seal(&id, "imported").unwrap();
    let root = vol(VolumeKind::Root, "rich-root");
    let clone = storage
        .clone_snapshot(&snap(&id, "imported"), &root)
        .unwrap();
    let diff = tree_diff(&dir, &clone.path);
    assert!(
        diff.is_empty(),
        "the clone differs from its origin:\n{}",
        diff.join("\n")
    );
    if caps.special_files {
        assert!(fs::symlink_metadata(clone.path.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
    }
}

fn make_node(path: &Path, kind: rustix::fs::FileType, dev: rustix::fs::Dev) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        kind,
        rustix::fs::Mode::from_raw_mode(0o644),
        dev,
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e} (the suite runs as root)", path.display()));
}

pub fn clone_of_a_missing_snapshot_is_not_found(storage: &dyn Storage) {
    let (id, _) = volume_with_snapshot(storage, VolumeKind::Stage, "st");
    let root = vol(VolumeKind::Root, "r");
    assert_not_found(storage.clone_snapshot(&snap(&id, "nope"), &root), "nope");
    let ghost = vol(VolumeKind::Stage, "ghost");
    assert_not_found(storage.clone_snapshot(&snap(&ghost, "s1"), &root), "ghost");
    assert!(
        names(storage, VolumeKind::Root).is_empty(),
        "nothing half-made is left"
    );
}

pub fn clone_to_a_taken_name_is_already_exists(storage: &dyn Storage) {
    let (_, s1) = volume_with_snapshot(storage, VolumeKind::Stage, "st");
    let root = vol(VolumeKind::Root, "r");
    storage.create(&root).unwrap();
    write(storage, &root, "mine", "x");
    assert_exists(storage.clone_snapshot(&s1, &root));
    assert_eq!(read(storage, &root, "mine").as_deref(), Some("x"));
}

pub fn rollback_discards_changes(storage: &dyn Storage) {
    let (id, s1) = volume_with_snapshot(storage, VolumeKind::Root, "r");
    write(storage, &id, "a.txt", "two");
    write(storage, &id, "b.txt", "new");
    storage.rollback(&s1).unwrap();
    assert_eq!(read(storage, &id, "a.txt").as_deref(), Some("one"));
    assert_eq!(read(storage, &id, "b.txt"), None);
    assert_eq!(snapshot_names(storage, &id), ["s1"], "the snapshot remains");
    write(storage, &id, "a.txt", "writable after rollback");
}

pub fn rollback_destroys_newer_snapshots(storage: &dyn Storage) {
    let (id, s1) = volume_with_snapshot(storage, VolumeKind::Root, "r");
    write(storage, &id, "a.txt", "two");
    storage.snapshot(&snap(&id, "s2")).unwrap();
    storage.rollback(&s1).unwrap();
    assert_eq!(snapshot_names(storage, &id), ["s1"]);
    assert_eq!(read(storage, &id, "a.txt").as_deref(), Some("one"));
}

pub fn rollback_is_refused_when_a_newer_snapshot_has_clones(storage: &dyn Storage) {
    let (id, s1) = volume_with_snapshot(storage, VolumeKind::Root, "r");
    write(storage, &id, "a.txt", "two");
    let s2 = snap(&id, "s2");
    storage.snapshot(&s2).unwrap();
    let clone = vol(VolumeKind::Root, "child");
    storage.clone_snapshot(&s2, &clone).unwrap();
    write(storage, &id, "a.txt", "three");
    assert_dependants(storage.rollback(&s1), &[&clone]);
    assert_eq!(
        read(storage, &id, "a.txt").as_deref(),
        Some("three"),
        "nothing changed"
    );
    assert_eq!(snapshot_names(storage, &id), ["s1", "s2"]);
}

pub fn rollback_of_a_sealed_volume_is_refused(storage: &dyn Storage) {
    let id = vol(VolumeKind::Stage, "st");
    storage.create(&id).unwrap();
    storage.seal(&id, "imported").unwrap();
    let result = storage.rollback(&snap(&id, "imported"));
    assert!(
        matches!(result, Err(StorageError::ReadOnly(_))),
        "{result:?}"
    );
}

pub fn destroy_is_refused_while_clones_exist(storage: &dyn Storage) {
    let (id, s1) = volume_with_snapshot(storage, VolumeKind::Stage, "st");
    let a = vol(VolumeKind::Root, "a");
    let b = vol(VolumeKind::Root, "b");
    storage.clone_snapshot(&s1, &a).unwrap();
    storage.clone_snapshot(&s1, &b).unwrap();
    assert_dependants(storage.destroy(&id), &[&a, &b]);
    assert_eq!(read(storage, &id, "a.txt").as_deref(), Some("one"));
    let deps: Vec<VolumeId> = storage.dependants(&id).unwrap();
    assert_eq!(deps, [a.clone(), b.clone()]);
    storage.destroy(&a).unwrap();
    storage.destroy(&b).unwrap();
    storage.destroy(&id).unwrap();
}

pub fn destroy_of_a_missing_volume_is_not_found(storage: &dyn Storage) {
    assert_not_found(storage.destroy(&vol(VolumeKind::Root, "ghost")), "'ghost'");
}

pub fn destroy_frees_the_name(storage: &dyn Storage) {
    let (id, _) = volume_with_snapshot(storage, VolumeKind::Root, "r");
    let path = storage.path(&id).unwrap();
    storage.destroy(&id).unwrap();
    assert!(names(storage, VolumeKind::Root).is_empty());
    assert!(!path.exists() || fs::read_dir(&path).map(|d| d.count() == 0).unwrap_or(true));
    assert_not_found(storage.get(&id), "'r'");
    storage.create(&id).unwrap();
    assert!(
        storage.snapshots(&id).unwrap().is_empty(),
        "old snapshots went with the volume"
    );
    assert_eq!(read(storage, &id, "a.txt"), None);
}

pub fn destroy_snapshot_is_refused_while_clones_exist(storage: &dyn Storage) {
    let (id, s1) = volume_with_snapshot(storage, VolumeKind::Root, "r");
    let clone = vol(VolumeKind::Root, "c");
    storage.clone_snapshot(&s1, &clone).unwrap();
    assert_dependants(storage.destroy_snapshot(&s1), &[&clone]);
    storage.destroy(&clone).unwrap();
    storage.destroy_snapshot(&s1).unwrap();
    assert!(snapshot_names(storage, &id).is_empty());
    assert_not_found(storage.destroy_snapshot(&s1), "s1");
}

pub fn destroy_of_a_seal_snapshot_is_refused(storage: &dyn Storage) {
    let id = vol(VolumeKind::Stage, "st");
    storage.create(&id).unwrap();
    storage.seal(&id, "imported").unwrap();
    let result = storage.destroy_snapshot(&snap(&id, "imported"));
    assert!(
        matches!(result, Err(StorageError::ReadOnly(_))),
        "{result:?}"
    );
    storage.destroy(&id).unwrap();
}

pub fn list_is_sorted_by_name(storage: &dyn Storage) {
    for name in ["b", "c", "a"] {
        storage.create(&vol(VolumeKind::Root, name)).unwrap();
    }
    storage.create(&vol(VolumeKind::Stage, "s")).unwrap();
    assert_eq!(names(storage, VolumeKind::Root), ["a", "b", "c"]);
    assert_eq!(names(storage, VolumeKind::Stage), ["s"]);
    assert!(names(storage, VolumeKind::Kernel).is_empty());
}

pub fn get_of_a_missing_volume_is_not_found(storage: &dyn Storage) {
    assert_not_found(storage.get(&vol(VolumeKind::Kernel, "ghost")), "'ghost'");
}

pub fn properties_round_trip(storage: &dyn Storage) {
    let id = vol(VolumeKind::Stage, "st");
    storage.create(&id).unwrap();
    storage
        .set_property(&id, "source", "stage3-amd64.tar.xz")
        .unwrap();
    storage.set_property(&id, "sha512", "abc").unwrap();
    storage.set_property(&id, "sha512", "def").unwrap();
    let props = storage.get(&id).unwrap().properties;
    assert_eq!(
        props.get("source").map(String::as_str),
        Some("stage3-amd64.tar.xz")
    );
    assert_eq!(props.get("sha512").map(String::as_str), Some("def"));
    let listed = storage.list(VolumeKind::Stage).unwrap();
    assert_eq!(listed[0].properties, props);
    for (key, value) in [("Bad Key", "v"), ("", "v"), ("ok", "two\nlines")] {
        let result = storage.set_property(&id, key, value);
        assert!(
            matches!(result, Err(StorageError::InvalidProperty(_))),
            "{key:?}: {result:?}"
        );
    }
    assert_not_found(
        storage.set_property(&vol(VolumeKind::Stage, "ghost"), "k", "v"),
        "'ghost'",
    );
}
