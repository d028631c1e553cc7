//! The packer conformance suite: one function per bullet of the [`Packer`] contract, each
//! reading the archive back with GNU cpio and the compressor's own tool.
//!
//! A packer runs the whole suite from its test file with
//! `autogentoo_core::packer_conformance!(make_packer);`, where `make_packer()` returns a
//! `Box<dyn Packer>` (built in, or loaded from a plugin library).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use tempfile::TempDir;

use crate::pack::{Layer, PackError, PackReport, PackRequest, Packer};
use crate::site_config::Compression;
use crate::stage_import::Silent;
use crate::testkit::tree_diff;

/// Expands to one `#[test]` per conformance case, each with a packer made by `$make()`.
#[macro_export]
macro_rules! packer_conformance {
    ($make:expr) => {
        $crate::packer_conformance!(@cases $make;
            gnu_cpio_extracts_the_merged_tree,
            a_later_layer_wins_and_directories_keep_the_first_owner,
            excluded_directories_are_kept_empty,
            dev_console_is_always_there,
            mtimes_are_clamped_to_the_epoch,
            a_tree_without_init_is_refused_and_nothing_is_left,
            a_non_executable_init_is_refused,
            an_init_symlink_is_followed_inside_the_tree,
            a_missing_layer_is_an_error_naming_it,
            an_unsupported_compression_is_refused_before_writing,
            every_compression_it_declares_reads_back,
            cancel_leaves_the_old_archive_alone,
            same_inputs_give_the_same_bytes,
            layers_are_only_read);
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                let packer: Box<dyn $crate::pack::Packer> = ($make)();
                $crate::testkit::packer_conformance::$case(&*packer);
            }
        )*
    };
}

/// Two layers in a temporary directory: a root and a site overlay.
struct Layers {
    dir: TempDir,
}

impl Layers {
    /// root: `init` (0755), `etc/motd`, `etc/hostname`, `etc/data` (0640, 1000:1000),
    /// `etc/link -> motd`, `bin/a` + `bin/b` hardlinked, `var/cache/distfiles/big` (excluded),
    /// directory `srv` 0700 owned 1000:1000. site: `etc/motd` replaced, `etc/site.conf` added,
    /// `srv` again with mode 0755.
    fn new() -> Self {
        let dir = TempDir::new().expect("a temporary directory");
        let root = dir.path().join("root");
        let site = dir.path().join("site");
        for d in ["etc", "bin", "var/cache/distfiles", "srv"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for d in ["etc", "srv"] {
            fs::create_dir_all(site.join(d)).unwrap();
        }
        write_mode(&root.join("init"), "#!/bin/sh\necho init\n", 0o755);
        write_mode(&root.join("etc/motd"), "from the root\n", 0o644);
        write_mode(&root.join("etc/hostname"), "box\n", 0o644);
        write_mode(&root.join("etc/data"), "owned\n", 0o640);
        std::os::unix::fs::chown(root.join("etc/data"), Some(1000), Some(1000)).unwrap();
        std::os::unix::fs::symlink("motd", root.join("etc/link")).unwrap();
        write_mode(&root.join("bin/a"), "hardlinked\n", 0o755);
        fs::hard_link(root.join("bin/a"), root.join("bin/b")).unwrap();
        write_mode(&root.join("var/cache/distfiles/big"), "left out\n", 0o644);
        fs::set_permissions(root.join("srv"), fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::chown(root.join("srv"), Some(1000), Some(1000)).unwrap();
        write_mode(&site.join("etc/motd"), "from the site\n", 0o644);
        write_mode(&site.join("etc/site.conf"), "site=1\n", 0o600);
        fs::set_permissions(site.join("srv"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(dir.path().join("out")).unwrap();
        Self { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn layers(&self) -> Vec<Layer> {
        vec![
            Layer {
                name: "root:test".into(),
                path: self.root(),
                site: false,
            },
            Layer {
                name: "site".into(),
                path: self.dir.path().join("site"),
                site: true,
            },
        ]
    }

    /// Packs with the packer's first compression unless told otherwise.
    fn pack(
        &self,
        packer: &dyn Packer,
        edit: impl FnOnce(&mut PackRequest),
    ) -> Result<PackReport, PackError> {
        self.pack_with(packer, &AtomicBool::new(false), edit)
    }

    fn pack_with(
        &self,
        packer: &dyn Packer,
        cancel: &AtomicBool,
        edit: impl FnOnce(&mut PackRequest),
    ) -> Result<PackReport, PackError> {
        let mut request = PackRequest {
            layers: self.layers(),
            exclude: vec![PathBuf::from("var/cache/distfiles")],
            rdinit: "/init".into(),
            keep_site_owners: false,
            compression: first_compression(packer),
            level: None,
            source_date_epoch: None,
            threads: 2,
            output: self.out_dir().join("initramfs.cpio"),
            progress: &Silent,
            cancel,
        };
        edit(&mut request);
        packer.pack(&request)
    }

    /// The names in the output directory, sorted.
    fn outputs(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.out_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn first_compression(packer: &dyn Packer) -> Compression {
    *packer
        .capabilities()
        .compressions
        .first()
        .expect("a packer writes at least one compression")
}

/// Extracts an archive with the compressor's tool and GNU cpio, as root keeps owners.
fn extract(archive: &Path, compression: Compression) -> TempDir {
    let into = TempDir::new().unwrap();
    let decompress = match compression {
        Compression::Gzip => "gzip -dc",
        Compression::Zstd => "zstd -qdc",
        Compression::Xz => "xz -dc",
        Compression::None => "cat",
    };
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{decompress} < \"$1\" | cpio -idm --quiet --no-absolute-filenames"
        ))
        .arg("sh")
        .arg(archive)
        .current_dir(into.path())
        .status()
        .expect("sh runs");
    assert!(status.success(), "{decompress} | cpio -idm failed");
    into
}

fn packed(packer: &dyn Packer, layers: &Layers) -> (PackReport, TempDir) {
    let report = layers.pack(packer, |_| {}).expect("the pack succeeds");
    let tree = extract(&report.archive, report.compression);
    (report, tree)
}

pub fn gnu_cpio_extracts_the_merged_tree(packer: &dyn Packer) {
    let layers = Layers::new();
    let (report, tree) = packed(packer, &layers);
    let t = tree.path();
    assert_eq!(report.archive, layers.out_dir().join("initramfs.cpio"));
    assert_eq!(fs::read_to_string(t.join("etc/hostname")).unwrap(), "box\n");
    assert_eq!(
        fs::read_to_string(t.join("etc/site.conf")).unwrap(),
        "site=1\n"
    );
    let data = fs::metadata(t.join("etc/data")).unwrap();
    assert_eq!(
        (data.uid(), data.gid(), data.mode() & 0o7777),
        (1000, 1000, 0o640)
    );
    let site = fs::metadata(t.join("etc/site.conf")).unwrap();
    assert_eq!(
        (site.uid(), site.mode() & 0o7777),
        (0, 0o600),
        "site files are root's"
    );
    assert_eq!(
        fs::read_link(t.join("etc/link")).unwrap(),
        PathBuf::from("motd")
    );
    let (a, b) = (
        fs::metadata(t.join("bin/a")).unwrap(),
        fs::metadata(t.join("bin/b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "bin/a and bin/b stay hardlinked");
    assert_eq!(fs::read_to_string(t.join("bin/b")).unwrap(), "hardlinked\n");
    let source = fs::metadata(layers.root().join("etc/hostname")).unwrap();
    let copy = fs::metadata(t.join("etc/hostname")).unwrap();
    assert_eq!(copy.mtime(), source.mtime(), "mtimes are kept");
    assert_eq!(
        report.archive_bytes,
        fs::metadata(&report.archive).unwrap().len()
    );
}

pub fn a_later_layer_wins_and_directories_keep_the_first_owner(packer: &dyn Packer) {
    let layers = Layers::new();
    let (_, tree) = packed(packer, &layers);
    let t = tree.path();
    assert_eq!(
        fs::read_to_string(t.join("etc/motd")).unwrap(),
        "from the site\n"
    );
    let srv = fs::metadata(t.join("srv")).unwrap();
    assert_eq!(
        (srv.uid(), srv.mode() & 0o7777),
        (1000, 0o700),
        "srv keeps the root layer's owner and mode"
    );
}

pub fn excluded_directories_are_kept_empty(packer: &dyn Packer) {
    let layers = Layers::new();
    let (_, tree) = packed(packer, &layers);
    let distfiles = tree.path().join("var/cache/distfiles");
    assert!(distfiles.is_dir(), "the excluded directory stays");
    assert_eq!(fs::read_dir(&distfiles).unwrap().count(), 0, "and is empty");
}

pub fn dev_console_is_always_there(packer: &dyn Packer) {
    let layers = Layers::new();
    let report = layers.pack(packer, |_| {}).unwrap();
    let listing = list(&report);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with('c') && l.ends_with(" dev/console")),
        "no character device dev/console in:\n{listing}"
    );
}

/// `cpio -tv` of an archive.
fn list(report: &PackReport) -> String {
    let decompress = match report.compression {
        Compression::Gzip => "gzip -dc",
        Compression::Zstd => "zstd -qdc",
        Compression::Xz => "xz -dc",
        Compression::None => "cat",
    };
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("{decompress} < \"$1\" | cpio -tv --quiet"))
        .arg("sh")
        .arg(&report.archive)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn mtimes_are_clamped_to_the_epoch(packer: &dyn Packer) {
    let layers = Layers::new();
    let report = layers
        .pack(packer, |r| r.source_date_epoch = Some(1_000_000_000))
        .unwrap();
    let tree = extract(&report.archive, report.compression);
    let motd = fs::metadata(tree.path().join("etc/motd")).unwrap();
    assert_eq!(motd.mtime(), 1_000_000_000);
}

pub fn a_tree_without_init_is_refused_and_nothing_is_left(packer: &dyn Packer) {
    let layers = Layers::new();
    fs::remove_file(layers.root().join("init")).unwrap();
    let err = layers.pack(packer, |_| {}).unwrap_err();
    assert!(err.to_string().contains("/init"), "{err}");
    assert_eq!(layers.outputs(), Vec::<String>::new());
}

pub fn a_non_executable_init_is_refused(packer: &dyn Packer) {
    let layers = Layers::new();
    fs::set_permissions(
        layers.root().join("init"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let err = layers.pack(packer, |_| {}).unwrap_err();
    assert!(err.to_string().contains("not executable"), "{err}");
    assert_eq!(layers.outputs(), Vec::<String>::new());
}

pub fn an_init_symlink_is_followed_inside_the_tree(packer: &dyn Packer) {
    let layers = Layers::new();
    let init = layers.root().join("init");
    fs::rename(&init, layers.root().join("etc/real-init")).unwrap();
    std::os::unix::fs::symlink("/etc/real-init", &init).unwrap();
    let report = layers.pack(packer, |_| {}).unwrap();
    let tree = extract(&report.archive, report.compression);
    assert_eq!(
        fs::read_link(tree.path().join("init")).unwrap(),
        Path::new("/etc/real-init")
    );
    fs::remove_file(&report.archive).unwrap();
    if let Some(manifest) = &report.manifest {
        fs::remove_file(manifest).unwrap();
    }

    // The kernel resolves an absolute target in the image, not on the host: /etc/passwd
    // exists on every host, and must not count.
    fs::remove_file(&init).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &init).unwrap();
    let err = layers.pack(packer, |_| {}).unwrap_err();
    assert!(err.to_string().contains("/etc/passwd"), "{err}");
    assert_eq!(layers.outputs(), Vec::<String>::new());

    fs::set_permissions(
        layers.root().join("etc/real-init"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    fs::remove_file(&init).unwrap();
    std::os::unix::fs::symlink("etc/real-init", &init).unwrap();
    let err = layers.pack(packer, |_| {}).unwrap_err();
    assert!(err.to_string().contains("not executable"), "{err}");
    assert_eq!(layers.outputs(), Vec::<String>::new());
}

pub fn a_missing_layer_is_an_error_naming_it(packer: &dyn Packer) {
    let layers = Layers::new();
    let missing = layers.dir.path().join("no-such-overlay");
    let err = layers
        .pack(packer, |r| {
            r.layers.push(Layer {
                name: "missing".into(),
                path: missing.clone(),
                site: true,
            })
        })
        .unwrap_err();
    assert!(
        err.to_string().contains("no-such-overlay"),
        "the error names the layer: {err}"
    );
    assert_eq!(layers.outputs(), Vec::<String>::new());
}

pub fn an_unsupported_compression_is_refused_before_writing(packer: &dyn Packer) {
    let supported = packer.capabilities().compressions;
    let all = [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Xz,
        Compression::None,
    ];
    let layers = Layers::new();
    for compression in all.into_iter().filter(|c| !supported.contains(c)) {
        let err = layers
            .pack(packer, |r| r.compression = compression)
            .unwrap_err();
        assert!(
            err.to_string().contains(&compression.to_string()),
            "the error names {compression}: {err}"
        );
        assert_eq!(layers.outputs(), Vec::<String>::new());
    }
}

pub fn every_compression_it_declares_reads_back(packer: &dyn Packer) {
    let layers = Layers::new();
    for compression in packer.capabilities().compressions {
        let report = layers
            .pack(packer, |r| r.compression = compression)
            .unwrap_or_else(|e| panic!("{compression}: {e}"));
        assert_eq!(report.compression, compression);
        let tree = extract(&report.archive, compression);
        assert_eq!(
            fs::read_to_string(tree.path().join("etc/motd")).unwrap(),
            "from the site\n",
            "{compression}"
        );
    }
}

pub fn cancel_leaves_the_old_archive_alone(packer: &dyn Packer) {
    let layers = Layers::new();
    let output = layers.out_dir().join("initramfs.cpio");
    fs::write(&output, "the old archive").unwrap();
    let cancel = AtomicBool::new(true);
    let err = layers
        .pack_with(packer, &cancel, |_| {})
        .expect_err("a cancelled pack fails");
    assert!(matches!(err, PackError::Interrupted), "{err}");
    assert_eq!(fs::read_to_string(&output).unwrap(), "the old archive");
    assert_eq!(layers.outputs(), vec!["initramfs.cpio".to_owned()]);
}

pub fn same_inputs_give_the_same_bytes(packer: &dyn Packer) {
    if !packer.capabilities().reproducible {
        return;
    }
    let layers = Layers::new();
    let first = layers.pack(packer, |_| {}).unwrap();
    let bytes = fs::read(&first.archive).unwrap();
    let second = layers
        .pack(packer, |r| r.output = r.output.with_file_name("again.cpio"))
        .unwrap();
    assert_eq!(bytes, fs::read(&second.archive).unwrap());
    assert_eq!(first.sha256, second.sha256);
}

pub fn layers_are_only_read(packer: &dyn Packer) {
    let layers = Layers::new();
    let before = TempDir::new().unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(layers.root())
        .arg(before.path().join("root"))
        .status()
        .unwrap();
    assert!(status.success());
    layers.pack(packer, |_| {}).unwrap();
    let diff = tree_diff(&before.path().join("root"), &layers.root());
    assert!(diff.is_empty(), "the root layer changed: {diff:?}");
}
