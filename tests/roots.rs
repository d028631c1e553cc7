//! Build roots as a user works with them: cloned from an imported stage, changed freely without
//! touching the stage, snapshotted and rolled back, removed, and listed for scripts.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use autogentoo_core::testkit::{assert_same_tree, tree_diff};
use autogentoo_tests::{build_small_tree, rich, Compression, RichStage, Workdir};
use rustix::fs::XattrFlags;

/// What a build in a root does to it: new, rewritten (in place, through one name of a hardlink
/// group), removed, re-permissioned and re-owned files, changed xattrs. Returns the paths
/// changed.
fn change_everything(root: &Path) -> Result<Vec<&'static str>> {
    let at = |rel: &str| root.join(rel);
    fs::write(at("etc/new.conf"), "added in the root\n")?;
    // In place, not replaced: a root sharing inodes with its stage would change the stage too.
    let mut cc = OpenOptions::new()
        .write(true)
        .open(at(rich::HARDLINKS[1]))?;
    cc.write_all(b"PATCHED")?;
    let mut big = OpenOptions::new().write(true).open(at(rich::BIG_FILE))?;
    big.seek(SeekFrom::Start(100_000))?;
    big.write_all(b"PATCHED")?;
    OpenOptions::new()
        .append(true)
        .open(at(rich::PLAIN_FILE))?
        .write_all(b"builder:x:1000:1000::/home/builder:/bin/bash\n")?;
    fs::remove_file(at(rich::SETUID_FILE))?;
    fs::remove_file(at(rich::CHAR_DEV))?;
    fs::remove_dir(at("var/empty"))?;
    fs::remove_dir_all(at("home/builder/notes"))?;
    fs::set_permissions(at("etc/shadow"), fs::Permissions::from_mode(0o600))?;
    fs::set_permissions(at(rich::SETGID_DIR), fs::Permissions::from_mode(0o755))?;
    lchown(at(rich::OTHER_FILE), Some(0), Some(0))?;
    lchown(
        at(rich::ABS_SYMLINK.0),
        Some(rich::OTHER_ID),
        Some(rich::OTHER_ID),
    )?;
    rustix::fs::setxattr(
        at(rich::USER_XATTR_FILE),
        rich::USER_XATTR,
        b"changed in the root",
        XattrFlags::empty(),
    )?;
    rustix::fs::removexattr(at(rich::CAP_FILE), "security.capability")?;
    Ok(vec![
        "etc/new.conf",
        rich::HARDLINKS[0],
        rich::HARDLINKS[1],
        rich::HARDLINKS[2],
        rich::BIG_FILE,
        rich::PLAIN_FILE,
        rich::SETUID_FILE,
        rich::CHAR_DEV,
        "var/empty",
        "home/builder/notes",
        "etc/shadow",
        rich::SETGID_DIR,
        rich::OTHER_FILE,
        rich::ABS_SYMLINK.0,
        rich::USER_XATTR_FILE,
        rich::CAP_FILE,
    ])
}

/// Panics unless `root` differs from `reference` at each of `changed`.
#[track_caller]
fn assert_changed(reference: &Path, root: &Path, changed: &[&str]) {
    let diffs = tree_diff(reference, root);
    for path in changed {
        assert!(
            diffs.iter().any(|d| d.starts_with(&format!("{path}: "))),
            "the change to {path} is missing from the root; differences:\n{}",
            diffs.join("\n")
        );
    }
}

/// A workdir with the rich stage imported as `gentoo`.
fn workdir_with_stage() -> Result<(Workdir, RichStage)> {
    let workdir = Workdir::new();
    let stage = RichStage::build(&workdir.scratch(), Compression::Xz)?;
    workdir.import(&stage.archive, "gentoo");
    Ok((workdir, stage))
}

#[test]
fn root_is_writable_and_independent_of_its_stage() -> Result<()> {
    let (workdir, stage) = workdir_with_stage()?;
    let created = workdir.ok(["root", "create", "build1", "--stage", "gentoo"]);
    let root = workdir.root_path("build1");
    assert_eq!(root, workdir.path().join("roots/build1"));
    assert_eq!(
        created.stdout.trim_end(),
        root.to_str().unwrap(),
        "create prints the root's path"
    );
    assert_same_tree(&stage.reference, &root);

    let changed = change_everything(&root)?;
    assert_changed(&stage.reference, &root, &changed);
    assert_same_tree(&stage.reference, &workdir.stage_path("gentoo"));

    workdir.ok(["root", "create", "build2", "--stage", "gentoo"]);
    assert_same_tree(&stage.reference, &workdir.root_path("build2"));
    assert_eq!(workdir.root_names(), ["build1", "build2"]);
    Ok(())
}

#[test]
fn rollback_restores_the_snapshot() -> Result<()> {
    let (workdir, stage) = workdir_with_stage()?;
    workdir.ok(["root", "create", "build", "--stage", "gentoo"]);
    let root = workdir.root_path("build");
    let snapshot = workdir.ok(["root", "snapshot", "build", "before"]);
    assert_eq!(snapshot.stdout.trim_end(), "before");

    let changed = change_everything(&root)?;
    workdir.ok(["root", "snapshot", "build", "after"]);
    fs::write(root.join("etc/later.conf"), "after the second snapshot\n")?;
    assert_changed(&stage.reference, &root, &changed);

    workdir.ok(["root", "rollback", "build", "before"]);
    assert_eq!(workdir.root_path("build"), root);
    assert_same_tree(&stage.reference, &root);

    // Newer snapshots go with the rollback; the one rolled back to stays.
    let gone = workdir
        .run(["root", "rollback", "build", "after"])
        .expect_code(1);
    gone.expect_one_error();
    assert!(
        gone.stderr.contains("after"),
        "names the snapshot: {}",
        gone.describe()
    );
    change_everything(&root)?;
    workdir.ok(["root", "rollback", "build", "before"]);
    assert_same_tree(&stage.reference, &root);
    Ok(())
}

/// A workdir with a small stage `gentoo` imported from a directory.
fn workdir_with_small_stage() -> Result<Workdir> {
    let workdir = Workdir::new();
    let tree = workdir.scratch().join("small");
    build_small_tree(&tree)?;
    workdir.import(&tree, "gentoo");
    Ok(workdir)
}

#[test]
fn stage_with_roots_is_removed_only_recursively() -> Result<()> {
    let workdir = workdir_with_small_stage()?;
    workdir.ok(["root", "create", "r1", "--stage", "gentoo"]);
    workdir.ok(["root", "create", "r2", "--stage", "gentoo"]);

    let refused = workdir.run(["stage", "remove", "gentoo"]).expect_code(1);
    refused.expect_one_error();
    assert!(
        refused.stderr.contains("r1") && refused.stderr.contains("r2"),
        "names the roots: {}",
        refused.describe()
    );
    assert_eq!(workdir.stage_names(), ["gentoo"]);
    assert_eq!(workdir.root_names(), ["r1", "r2"]);
    assert!(workdir.stage_path("gentoo").join("etc/hostname").is_file());

    workdir.ok(["stage", "remove", "--recursive", "gentoo"]);
    assert_eq!(workdir.stage_names(), Vec::<String>::new());
    assert_eq!(workdir.root_names(), Vec::<String>::new());
    for kind in ["stages", "roots"] {
        let dir = workdir.path().join(kind);
        assert_eq!(
            autogentoo_tests::list_dir(&dir),
            Vec::<PathBuf>::new(),
            "{kind}/ is empty"
        );
    }
    Ok(())
}

#[test]
fn root_remove_frees_the_name() -> Result<()> {
    let workdir = workdir_with_small_stage()?;
    workdir.ok(["root", "create", "build", "--stage", "gentoo"]);
    let root = workdir.root_path("build");
    fs::write(root.join("etc/marker"), "from the first root\n")?;

    workdir.ok(["root", "remove", "build"]);
    assert_eq!(workdir.root_names(), Vec::<String>::new());
    assert!(!root.exists(), "{} is gone", root.display());
    let missing = workdir.run(["root", "path", "build"]).expect_code(1);
    assert!(
        missing.stderr.contains("build"),
        "names the root: {}",
        missing.describe()
    );

    workdir.ok(["root", "create", "build", "--stage", "gentoo"]);
    assert!(
        !root.join("etc/marker").exists(),
        "the new root starts from the stage"
    );
    assert!(root.join("etc/hostname").is_file());
    Ok(())
}

#[test]
fn root_from_a_missing_stage_says_so() -> Result<()> {
    let workdir = workdir_with_small_stage()?;
    let run = workdir
        .run(["root", "create", "build", "--stage", "nosuch"])
        .expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr.contains("nosuch") && run.stderr.contains("does not exist"),
        "says the stage does not exist: {}",
        run.describe()
    );
    assert_eq!(workdir.root_names(), Vec::<String>::new());
    assert_eq!(
        autogentoo_tests::list_dir(&workdir.path().join("roots")),
        Vec::<PathBuf>::new()
    );
    Ok(())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

#[test]
fn json_listings_have_the_documented_fields() -> Result<()> {
    let before = now();
    let workdir = Workdir::new();
    let tree = workdir.scratch().join("small");
    build_small_tree(&tree)?;
    let stage_path = workdir.import(&tree, "gentoo");
    let created = workdir
        .ok(["--json", "root", "create", "build", "--stage", "gentoo"])
        .json();
    let after = now();
    assert_eq!(created["id"]["name"], "build", "{created}");

    let stages = workdir.ok(["stage", "list", "--json"]).json();
    let stage = &stages.as_array().context("a JSON array of stages")?[0];
    assert_eq!(stages.as_array().unwrap().len(), 1, "{stages}");
    assert_eq!(stage["id"]["name"], "gentoo", "{stage}");
    assert_eq!(stage["path"], stage_path.to_str().unwrap(), "{stage}");
    assert!(stage["origin"].is_null(), "{stage}");
    assert_eq!(stage["sealed"], true, "{stage}");
    let stage_created = stage["created"].as_i64().context("created is a number")?;
    assert!((before..=after).contains(&stage_created), "{stage}");
    assert_eq!(
        stage["properties"]["source"],
        tree.to_str().unwrap(),
        "{stage}"
    );

    let roots = workdir.ok(["root", "list", "--json"]).json();
    let root = &roots.as_array().context("a JSON array of roots")?[0];
    assert_eq!(roots.as_array().unwrap().len(), 1, "{roots}");
    assert_eq!(root["id"]["name"], "build", "{root}");
    assert_eq!(
        root["path"],
        workdir.root_path("build").to_str().unwrap(),
        "{root}"
    );
    assert_eq!(root["origin"]["volume"]["kind"], "stage", "{root}");
    assert_eq!(root["origin"]["volume"]["name"], "gentoo", "{root}");
    assert!(root["origin"]["name"].is_string(), "{root}");
    assert_eq!(root["sealed"], false, "{root}");
    let root_created = root["created"].as_i64().context("created is a number")?;
    assert!((before..=after).contains(&root_created), "{root}");
    assert!(root["properties"].is_object(), "{root}");

    let path = workdir.ok(["--json", "stage", "path", "gentoo"]).json();
    assert_eq!(path["path"], stage_path.to_str().unwrap());
    let plain = workdir.ok([OsStr::new("root"), OsStr::new("list")]);
    assert!(
        plain.stdout.starts_with("build\t"),
        "one line per root: {}",
        plain.describe()
    );
    Ok(())
}
