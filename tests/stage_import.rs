//! `autogentoo stage import` as a user runs it: every compression a Gentoo mirror serves, the
//! result compared entry by entry with what GNU tar extracts; corrupt downloads, DIGESTS checks,
//! hostile tarballs and interrupted imports leave nothing behind.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use autogentoo_core::testkit::assert_same_tree;
use autogentoo_tests::{
    archive_listing, check_rich_tree, extract_reference, find_named, gnu_tar, list_dir, noise,
    wait_until, Compression, RichStage, Run, Spawned, Tmpfs, Workdir,
};
use rustix::fs::{Mode, OFlags, CWD};
use rustix::process::Signal;
use tar::{EntryType, Header};

/// How long a child may take to react; generous for a loaded debug build.
const PATIENCE: Duration = Duration::from_secs(60);

#[test]
fn xz_stage3_lands_exactly_as_gnu_tar_extracts_it() -> Result<()> {
    let workdir = Workdir::new();
    let stage = RichStage::build(&workdir.scratch(), Compression::Xz)?;
    let listing = archive_listing(&stage.archive)?;
    assert!(
        listing.contains("security.capability") && listing.contains("user.autogentoo.origin"),
        "the tarball holds both xattrs:\n{listing}"
    );
    // The reference holds everything the comparison below must cover, and GNU tar lost nothing.
    check_rich_tree(&stage.reference).context("GNU tar's reference extraction")?;
    assert_same_tree(&stage.tree, &stage.reference);

    let path = workdir.import(&stage.archive, "gentoo");
    assert_eq!(path, workdir.stages_dir().join("gentoo"));
    assert_same_tree(&stage.reference, &path);
    check_rich_tree(&path).context("the imported stage")?;
    assert_eq!(workdir.stage_names(), ["gentoo"]);
    assert_eq!(workdir.pending(), Vec::<PathBuf>::new(), "nothing pending");
    Ok(())
}

fn import_equals_reference(compression: Compression) -> Result<()> {
    let workdir = Workdir::new();
    let stage = RichStage::build(&workdir.scratch(), compression)?;
    check_rich_tree(&stage.reference)?;
    let path = workdir.import(&stage.archive, "gentoo");
    assert_same_tree(&stage.reference, &path);
    Ok(())
}

#[test]
fn plain_tar_import_equals_gnu_tar_extraction() -> Result<()> {
    import_equals_reference(Compression::None)
}

#[test]
fn gzip_import_equals_gnu_tar_extraction() -> Result<()> {
    import_equals_reference(Compression::Gzip)
}

#[test]
fn bzip2_import_equals_gnu_tar_extraction() -> Result<()> {
    import_equals_reference(Compression::Bzip2)
}

#[test]
fn zstd_import_equals_gnu_tar_extraction() -> Result<()> {
    import_equals_reference(Compression::Zstd)
}

#[test]
fn format_is_recognised_by_content_not_name() -> Result<()> {
    let workdir = Workdir::new();
    let stage = RichStage::build(&workdir.scratch(), Compression::Zstd)?;
    let misnamed = workdir.scratch().join("stage3-latest.tar.gz");
    fs::copy(&stage.archive, &misnamed)?;
    let path = workdir.import(&misnamed, "gentoo");
    assert_same_tree(&stage.reference, &path);
    Ok(())
}

#[test]
fn directory_import_equals_the_source_tree() -> Result<()> {
    let workdir = Workdir::new();
    let tree = workdir.scratch().join("tree");
    autogentoo_tests::build_rich_tree(&tree)?;
    let path = workdir.import(&tree, "from-dir");
    assert_same_tree(&tree, &path);
    check_rich_tree(&path)?;
    Ok(())
}

#[test]
fn truncated_tarball_is_refused_and_leaves_nothing() -> Result<()> {
    let workdir = Workdir::new();
    let stage = RichStage::build(&workdir.scratch(), Compression::Xz)?;
    let bytes = fs::read(&stage.archive)?;
    let cut = workdir.scratch().join("stage3-cut.tar.xz");
    fs::write(&cut, &bytes[..bytes.len() / 2])?;

    let run = workdir
        .run([
            OsStr::new("stage"),
            OsStr::new("import"),
            cut.as_os_str(),
            OsStr::new("--name"),
            OsStr::new("cut"),
        ])
        .expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr.contains("truncated") || run.stderr.contains("corrupt"),
        "says the tarball is truncated or corrupt: {}",
        run.describe()
    );
    assert!(
        run.stderr.contains(cut.to_str().unwrap()),
        "names the file: {}",
        run.describe()
    );
    workdir.assert_no_stage_left();
    Ok(())
}

/// A DIGESTS file as Gentoo publishes it beside a stage tarball.
fn digests_file(path: &Path, file_name: &str, sha512: &str) -> Result<()> {
    let blake2b = "b2".repeat(64);
    let text = format!(
        "# BLAKE2B HASH\n{blake2b}  {file_name}\n# SHA512 HASH\n{sha512}  {file_name}\n\
         # BLAKE2B HASH\n{blake2b}  {file_name}.CONTENTS.gz\n# SHA512 HASH\n{blake2b}  {file_name}.CONTENTS.gz\n"
    );
    fs::write(path, text).with_context(|| format!("write {}", path.display()))
}

fn sha512sum(path: &Path) -> Result<String> {
    let output = Command::new("sha512sum")
        .arg(path)
        .output()
        .context("run sha512sum")?;
    anyhow::ensure!(output.status.success(), "sha512sum failed");
    let text = String::from_utf8(output.stdout)?;
    Ok(text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned())
}

#[test]
fn digests_mismatch_is_refused_and_leaves_nothing() -> Result<()> {
    let workdir = Workdir::new();
    let stage = RichStage::build(&workdir.scratch(), Compression::Xz)?;
    let actual = sha512sum(&stage.archive)?;
    let wrong = "deadbeef".repeat(16);
    let digests = workdir.scratch().join("stage.tar.xz.DIGESTS");
    digests_file(&digests, "stage.tar.xz", &wrong)?;

    let run = workdir
        .run([
            OsStr::new("stage"),
            OsStr::new("import"),
            stage.archive.as_os_str(),
            OsStr::new("--name"),
            OsStr::new("gentoo"),
            OsStr::new("--digests"),
            digests.as_os_str(),
        ])
        .expect_code(1);
    run.expect_one_error();
    let names_both = run.stderr.contains(&wrong) && run.stderr.contains(&actual);
    let says_mismatch = run.stderr.contains("mismatch") || run.stderr.contains("does not match");
    assert!(
        names_both || says_mismatch,
        "reports the mismatch: {}",
        run.describe()
    );
    workdir.assert_no_stage_left();
    Ok(())
}

#[test]
fn matching_digests_are_recorded_as_a_property() -> Result<()> {
    let workdir = Workdir::new();
    let stage = RichStage::build(&workdir.scratch(), Compression::Xz)?;
    let actual = sha512sum(&stage.archive)?;
    let digests = workdir.scratch().join("stage.tar.xz.DIGESTS");
    digests_file(&digests, "stage.tar.xz", &actual.to_uppercase())?;

    workdir.ok([
        OsStr::new("stage"),
        OsStr::new("import"),
        stage.archive.as_os_str(),
        OsStr::new("--name"),
        OsStr::new("gentoo"),
        OsStr::new("--digests"),
        digests.as_os_str(),
    ]);
    let list = workdir.ok(["stage", "list", "--json"]).json();
    assert_eq!(list[0]["id"]["name"], "gentoo", "{list}");
    assert_eq!(list[0]["properties"]["sha512"], actual.as_str(), "{list}");
    assert_same_tree(&stage.reference, &workdir.stage_path("gentoo"));
    Ok(())
}

/// A tar header for `kind` with ordinary metadata and no name yet.
fn header(kind: EntryType, size: u64, mode: u32) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(1_700_000_000);
    header.set_uid(0);
    header.set_gid(0);
    header
}

/// A small tarball, `etc/` and `etc/hostname`, then what `extra` appends: a hostile entry comes
/// after the stage has started to fill.
fn small_tarball(
    path: &Path,
    extra: impl FnOnce(&mut tar::Builder<Vec<u8>>) -> Result<()>,
) -> Result<()> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_data(
        &mut header(EntryType::Directory, 0, 0o755),
        "etc/",
        std::io::empty(),
    )?;
    let hostname = b"gentoo\n";
    builder.append_data(
        &mut header(EntryType::Regular, hostname.len() as u64, 0o644),
        "etc/hostname",
        &hostname[..],
    )?;
    extra(&mut builder)?;
    fs::write(path, builder.into_inner()?).with_context(|| format!("write {}", path.display()))
}

fn import_args<'a>(source: &'a Path, name: &'a str) -> [&'a OsStr; 5] {
    [
        OsStr::new("stage"),
        OsStr::new("import"),
        source.as_os_str(),
        OsStr::new("--name"),
        OsStr::new(name),
    ]
}

#[test]
fn absolute_symlink_cannot_carry_writes_out_of_the_stage() -> Result<()> {
    let workdir = Workdir::new();
    let host = tempfile::Builder::new()
        .prefix("autogentoo-e2e-host.")
        .tempdir()?;
    let payload = b"written through a symlink\n";
    let in_stage = host.path().strip_prefix("/")?.to_owned();
    // The link's target does not exist inside the stage: it is made there, as a chroot sees it.
    let tarball = workdir.scratch().join("escape.tar");
    small_tarball(&tarball, |b| {
        b.append_link(
            &mut header(EntryType::Symlink, 0, 0o777),
            "escape",
            host.path(),
        )?;
        b.append_data(
            &mut header(EntryType::Regular, payload.len() as u64, 0o644),
            "escape/pwned",
            &payload[..],
        )?;
        Ok(())
    })?;
    let run = workdir.run(import_args(&tarball, "escape"));
    assert_eq!(
        list_dir(host.path()),
        Vec::<PathBuf>::new(),
        "nothing written on the host: {}",
        run.describe()
    );
    let run = run.expect_code(0);
    let stage = workdir.stage_path("escape");
    assert_eq!(
        fs::read_link(stage.join("escape"))?,
        host.path(),
        "the symlink is kept as it was"
    );
    let inside = stage.join(&in_stage).join("pwned");
    assert_eq!(
        fs::read(&inside).with_context(|| format!(
            "{} in the stage ({})",
            inside.display(),
            run.describe()
        ))?,
        payload,
        "the file lands where the symlink points inside the stage"
    );
    Ok(())
}

#[test]
fn entry_climbing_out_with_dotdot_is_refused() -> Result<()> {
    let workdir = Workdir::new();
    let tarball = workdir.scratch().join("dotdot.tar");
    let payload = b"outside\n";
    small_tarball(&tarball, |b| {
        let mut evil = header(EntryType::Regular, payload.len() as u64, 0o644);
        // The tar crate refuses to write `..` in a name; a hostile tarball is not so polite.
        let raw = b"../evil";
        evil.as_old_mut().name[..raw.len()].copy_from_slice(raw);
        evil.set_cksum();
        b.append(&evil, &payload[..])?;
        Ok(())
    })?;

    let run = workdir.run(import_args(&tarball, "dotdot")).expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr.contains("../evil"),
        "names the entry: {}",
        run.describe()
    );
    assert_eq!(
        find_named(workdir.top(), OsStr::new("evil")),
        Vec::<PathBuf>::new(),
        "nothing written outside"
    );
    workdir.assert_no_stage_left();
    Ok(())
}

#[test]
fn hardlink_to_a_host_file_is_refused() -> Result<()> {
    let workdir = Workdir::new();
    let tarball = workdir.scratch().join("hardlink.tar");
    small_tarball(&tarball, |b| {
        b.append_link(
            &mut header(EntryType::Link, 0, 0o644),
            "etc/stolen-passwd",
            "../../etc/passwd",
        )?;
        Ok(())
    })?;
    let links_before = fs::metadata("/etc/passwd")?.nlink();

    let run = workdir
        .run(import_args(&tarball, "hardlink"))
        .expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr.contains("stolen-passwd"),
        "names the entry: {}",
        run.describe()
    );
    assert_eq!(
        fs::metadata("/etc/passwd")?.nlink(),
        links_before,
        "no new link to the host's /etc/passwd"
    );
    workdir.assert_no_stage_left();
    Ok(())
}

/// A plain tarball of four 4 MiB files that do not compress.
fn big_tarball() -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for i in 0..4 {
        let data = noise(4 << 20, 100 + i);
        builder.append_data(
            &mut header(EntryType::Regular, data.len() as u64, 0o644),
            format!("big{i}"),
            &data[..],
        )?;
    }
    Ok(builder.into_inner()?)
}

/// Opens the fifo for writing once the import has opened it for reading.
fn open_writer(fifo: &Path, import: &mut Spawned) -> File {
    let start = Instant::now();
    loop {
        // Non-blocking: fails with ENXIO until there is a reader, so a failed import cannot hang us.
        let nonblocking = OFlags::NONBLOCK.bits() as i32;
        match OpenOptions::new()
            .write(true)
            .custom_flags(nonblocking)
            .open(fifo)
        {
            Ok(file) => {
                rustix::fs::fcntl_setfl(&file, OFlags::empty())
                    .expect("make the fifo writer blocking");
                return file;
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NXIO.raw_os_error()) => {}
            Err(e) => panic!("cannot open {}: {e}", fifo.display()),
        }
        if import.has_exited() {
            panic!(
                "the import exited before reading the fifo: {}",
                import.wait(PATIENCE).describe()
            );
        }
        assert!(
            start.elapsed() < PATIENCE,
            "the import did not open the fifo"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `data` into `writer` on a thread and waits for it: if the import stops reading, the
/// test fails on the timeout, and killing the import ends the write with EPIPE.
fn write_into_fifo(mut writer: File, data: Vec<u8>) -> (File, std::io::Result<()>) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let written = writer.write_all(&data);
        let _ = tx.send((writer, written));
    });
    rx.recv_timeout(PATIENCE)
        .expect("the import keeps reading the fifo")
}

/// An import from a fifo that has read part of its tarball and waits for the rest.
struct StalledImport {
    import: Spawned,
    writer: File,
    rest: Vec<u8>,
}

/// Starts `stage import FIFO --name x`, writes the first 6 MiB of a 16 MiB plain tarball into
/// the fifo and waits until the import has written files into its pending volume.
fn stalled_import(workdir: &Workdir) -> Result<StalledImport> {
    let fifo = workdir.scratch().join("stage.fifo");
    rustix::fs::mkfifoat(CWD, &fifo, Mode::from_raw_mode(0o600))?;
    let mut tarball = big_tarball()?;
    let rest = tarball.split_off(6 << 20);
    let mut import = Spawned::start(workdir.command(import_args(&fifo, "x")));
    let writer = open_writer(&fifo, &mut import);
    let (writer, written) = write_into_fifo(writer, tarball);
    written.context("write into the fifo")?;

    let pending = workdir.pending_dir();
    wait_until(
        "the import has written files into a pending volume",
        PATIENCE,
        || {
            list_dir(&pending)
                .iter()
                .any(|p| p.is_dir() && !list_dir(p).is_empty())
        },
    );
    assert!(
        !import.has_exited(),
        "the import waits for the rest of the tarball"
    );
    Ok(StalledImport {
        import,
        writer,
        rest,
    })
}

#[test]
fn interrupted_import_leaves_nothing() -> Result<()> {
    let workdir = Workdir::new();
    let StalledImport {
        mut import, writer, ..
    } = stalled_import(&workdir)?;
    import.signal(Signal::INT);
    drop(writer);
    let run = import.wait(PATIENCE);
    assert!(
        !run.status.success(),
        "an interrupted import fails: {}",
        run.describe()
    );
    workdir.assert_no_stage_left();
    Ok(())
}

#[test]
fn interrupted_import_says_so_while_the_source_flows() -> Result<()> {
    let workdir = Workdir::new();
    let StalledImport {
        mut import,
        writer,
        rest,
    } = stalled_import(&workdir)?;
    import.signal(Signal::INT);
    // The rest of the tarball keeps coming, as from a file: the import must stop by itself and
    // not blame the source. The write fails with EPIPE once it has stopped.
    let (writer, _) = write_into_fifo(writer, rest);
    drop(writer);
    let run = import.wait(PATIENCE);
    assert!(
        !run.status.success(),
        "an interrupted import fails: {}",
        run.describe()
    );
    run.expect_one_error();
    assert!(
        run.stderr.contains("interrupted") && !run.stderr.contains("corrupt"),
        "says it was interrupted: {}",
        run.describe()
    );
    workdir.assert_no_stage_left();
    Ok(())
}

#[test]
fn killed_import_is_invisible_and_swept_by_the_next() -> Result<()> {
    let workdir = Workdir::new();
    let StalledImport {
        mut import, writer, ..
    } = stalled_import(&workdir)?;
    import.signal(Signal::KILL);
    let run = import.wait(PATIENCE);
    assert_eq!(
        run.status.signal(),
        Some(Signal::KILL.as_raw()),
        "{}",
        run.describe()
    );
    drop(writer);
    assert!(
        !workdir.pending().is_empty(),
        "a killed import cannot clean up after itself"
    );
    assert_eq!(
        workdir.ok(["stage", "list"]).stdout,
        "",
        "the unfinished stage is not listed"
    );
    assert_eq!(list_dir(&workdir.stages_dir()), Vec::<PathBuf>::new());

    let small = workdir.scratch().join("small.tar");
    small_tarball(&small, |_| Ok(()))?;
    let path = workdir.import(&small, "y");
    assert_eq!(fs::read(path.join("etc/hostname"))?, b"gentoo\n");
    assert_eq!(workdir.stage_names(), ["y"]);
    assert_eq!(
        workdir.pending(),
        Vec::<PathBuf>::new(),
        "the abandoned import was swept"
    );
    Ok(())
}

#[test]
fn short_sha512_line_in_digests_is_malformed_not_a_mismatch() -> Result<()> {
    let workdir = Workdir::new();
    let tarball = workdir.scratch().join("stage.tar");
    small_tarball(&tarball, |_| Ok(()))?;
    let digests = workdir.scratch().join("stage.tar.DIGESTS");
    // The SHA512 line (line 4) holds 60 of the tarball's 128 hex digits.
    digests_file(&digests, "stage.tar", &sha512sum(&tarball)?[..60])?;

    let run = workdir
        .run([
            OsStr::new("stage"),
            OsStr::new("import"),
            tarball.as_os_str(),
            OsStr::new("--name"),
            OsStr::new("gentoo"),
            OsStr::new("--digests"),
            digests.as_os_str(),
        ])
        .expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr
            .contains(&format!("{}:4: malformed", digests.display()))
            && run.stderr.contains("128 hex digits")
            && !run.stderr.contains("does not match"),
        "names the DIGESTS file, the line and what a SHA512 line looks like: {}",
        run.describe()
    );
    workdir.assert_no_stage_left();
    Ok(())
}

#[test]
fn hardlink_to_a_missing_target_names_the_entry_and_the_target() -> Result<()> {
    let workdir = Workdir::new();
    // A target missing from a directory that exists, and one whose directory is missing too.
    for (name, link, target) in [
        ("same-dir", "etc/hostname-link", "etc/missing"),
        ("no-dir", "usr/bin/sh", "bin/busybox"),
    ] {
        let tarball = workdir.scratch().join(format!("{name}.tar"));
        small_tarball(&tarball, |b| {
            b.append_link(&mut header(EntryType::Link, 0, 0o755), link, target)?;
            Ok(())
        })?;
        let run = workdir.run(import_args(&tarball, name)).expect_code(1);
        run.expect_one_error();
        line_with(
            &run,
            &[
                tarball.to_str().unwrap(),
                &format!("entry '{link}'"),
                &format!("hardlink to '{target}'"),
            ],
        );
        assert!(
            !run.stderr.contains(".autogentoo") && !run.stderr.contains("pending"),
            "no internal path: {}",
            run.describe()
        );
        workdir.assert_no_stage_left();
    }
    Ok(())
}

/// The line of stderr that holds all of `parts`: a cause is told whole, on one line.
#[track_caller]
fn line_with<'a>(run: &'a Run, parts: &[&str]) -> &'a str {
    run.stderr
        .lines()
        .find(|line| parts.iter().all(|part| line.contains(part)))
        .unwrap_or_else(|| panic!("no line holds all of {parts:?}: {}", run.describe()))
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The forms in which GNU tar writes a sparse file.
#[derive(Clone, Copy, Debug)]
enum SparseFormat {
    OldGnu,
    Pax0_0,
    Pax0_1,
    Pax1_0,
}

impl SparseFormat {
    fn tar_args(self) -> &'static [&'static str] {
        match self {
            Self::OldGnu => &["--format=gnu"],
            Self::Pax0_0 => &["--format=posix", "--sparse-version=0.0"],
            Self::Pax0_1 => &["--format=posix", "--sparse-version=0.1"],
            Self::Pax1_0 => &["--format=posix", "--sparse-version=1.0"],
        }
    }

    /// Whether `archive` holds a sparse member in this form, so a test knows GNU tar wrote
    /// what it is about.
    fn is_in(self, archive: &[u8]) -> bool {
        let contains = |needle: &[u8]| archive.windows(needle.len()).any(|w| w == needle);
        match self {
            Self::OldGnu => archive.chunks(512).any(|block| {
                block.len() == 512 && &block[257..265] == b"ustar  \0" && block[156] == b'S'
            }),
            Self::Pax0_0 => contains(b" GNU.sparse.offset="),
            Self::Pax0_1 => contains(b" GNU.sparse.map="),
            Self::Pax1_0 => contains(b" GNU.sparse.major=1\n"),
        }
    }
}

/// A file of `size` bytes holding noise at each `(offset, length)` and holes elsewhere.
fn sparse_file(path: &Path, size: u64, runs: &[(u64, usize)], seed: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    fs::create_dir_all(path.parent().expect("a parent"))?;
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    file.set_len(size)?;
    for (i, (offset, len)) in runs.iter().enumerate() {
        file.write_all_at(&noise(*len, seed + i as u64), *offset)?;
    }
    Ok(())
}

fn set_mtime(path: &Path, sec: i64, nsec: i64) -> Result<()> {
    let time = rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    };
    let times = rustix::fs::Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(CWD, path, &times, rustix::fs::AtFlags::empty())
        .with_context(|| format!("set the times of {}", path.display()))
}

/// Sparse files as a stage may hold them (disk images, databases): one with data at its start,
/// in its middle (not on a block boundary) and at its end, one that ends in a hole; an owner,
/// modes, sub-second mtimes and an xattr that must come through too.
fn build_sparse_tree(root: &Path) -> Result<()> {
    let dir = root.join("var/lib/images");
    let disk = dir.join("disk.img");
    let size = 3 * GIB + 777;
    sparse_file(
        &disk,
        size,
        &[(0, 70_000), (GIB + 12_345, 50_000), (size - 30_000, 30_000)],
        1,
    )?;
    rustix::fs::setxattr(
        &disk,
        "user.autogentoo.origin",
        b"sparse fixture",
        rustix::fs::XattrFlags::empty(),
    )?;
    let db = dir.join("tail-hole.db");
    sparse_file(&db, 2 * GIB, &[(8192, 4096), (GIB, 100_000)], 2)?;
    std::os::unix::fs::chown(&db, Some(250), Some(250))?;
    fs::set_permissions(&db, std::os::unix::fs::PermissionsExt::from_mode(0o640))?;
    set_mtime(&disk, 1_700_000_000, 123_456_789)?;
    set_mtime(&db, 1_600_000_000, 5)?;
    set_mtime(&dir, 1_650_000_000, 0)?;
    Ok(())
}

/// Archives `tree` with GNU tar, holes detected, in `format`.
fn sparse_archive(tree: &Path, archive: &Path, format: SparseFormat) -> Result<()> {
    let mut args: Vec<&OsStr> = [
        "--create",
        "--sparse",
        "--numeric-owner",
        "--preserve-permissions",
    ]
    .iter()
    .chain(format.tar_args())
    .map(OsStr::new)
    .collect();
    // Only pax headers carry xattrs; GNU tar refuses `--xattrs` with the old GNU format.
    if !matches!(format, SparseFormat::OldGnu) {
        args.push(OsStr::new("--xattrs"));
    }
    args.extend([
        OsStr::new("--file"),
        archive.as_os_str(),
        OsStr::new("-C"),
        tree.as_os_str(),
        OsStr::new("."),
    ]);
    gnu_tar(args)?;
    let bytes = fs::read(archive)?;
    anyhow::ensure!(
        format.is_in(&bytes),
        "GNU tar wrote no {format:?} sparse member into {}",
        archive.display()
    );
    Ok(())
}

/// Every path below `root`, relative, sorted; the root itself as "".
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for path in list_dir(&dir) {
            found.push(path.strip_prefix(root).expect("below the root").to_owned());
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                todo.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The byte ranges of `path` that hold data, as the filesystem reports them; holes are not read.
fn data_regions(path: &Path) -> Result<Vec<(u64, u64)>> {
    use rustix::fs::{seek, SeekFrom};
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let size = file.metadata()?.len();
    let mut regions = Vec::new();
    let mut at = 0;
    while at < size {
        let start = match seek(&file, SeekFrom::Data(at)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break,
            Err(e) => return Err(e).context(format!("SEEK_DATA in {}", path.display())),
        };
        let end = seek(&file, SeekFrom::Hole(start))?;
        regions.push((start, end));
        at = end;
    }
    Ok(regions)
}

/// Data regions of either file, merged.
fn union(a: Vec<(u64, u64)>, b: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = a.into_iter().chain(b).collect();
    all.sort();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in all {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn xattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut names = vec![0u8; rustix::fs::llistxattr_query(path).unwrap_or(0)];
    let len = rustix::fs::llistxattr(path, &mut names).unwrap_or(0);
    names[..len]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let name = OsStr::from_bytes(name);
            let mut value = vec![0u8; rustix::fs::lgetxattr_query(path, name).unwrap_or(0)];
            let n = rustix::fs::lgetxattr(path, name, &mut value).unwrap_or(0);
            value.truncate(n);
            (name.as_bytes().to_vec(), value)
        })
        .collect()
}

/// `cmp` over `len` bytes at `offset` of both files.
fn cmp_range(a: &Path, b: &Path, offset: u64, len: u64) -> Result<()> {
    let output = Command::new("cmp")
        .arg(format!("--ignore-initial={offset}:{offset}"))
        .arg(format!("--bytes={len}"))
        .arg(a)
        .arg(b)
        .output()
        .context("run cmp")?;
    anyhow::ensure!(
        output.status.success(),
        "{} and {} differ in {offset}..{}: {}{}",
        a.display(),
        b.display(),
        offset + len,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Compares a tree of sparse files with GNU tar's extraction without reading a hole: names,
/// types, sizes, modes, owners, mtimes and xattrs; contents with `cmp` over every region where
/// either file has data (elsewhere both are holes, so zeros); and the disk each file costs.
fn assert_same_sparse_tree(reference: &Path, imported: &Path) -> Result<()> {
    let paths = walk(reference);
    assert_eq!(paths, walk(imported), "the same names");
    for rel in &paths {
        assert!(
            !rel.iter()
                .any(|c| c.as_bytes().starts_with(b"GNUSparseFile.")),
            "a placeholder name reached the tree: {}",
            rel.display()
        );
        let (a, b) = (reference.join(rel), imported.join(rel));
        let (ma, mb) = (fs::symlink_metadata(&a)?, fs::symlink_metadata(&b)?);
        let facts = |m: &fs::Metadata| (m.mode(), m.uid(), m.gid(), m.mtime(), m.mtime_nsec());
        assert_eq!(
            facts(&ma),
            facts(&mb),
            "{}: (mode, uid, gid, mtime, ns)",
            rel.display()
        );
        assert_eq!(xattrs(&a), xattrs(&b), "{}: xattrs", rel.display());
        if !ma.is_file() {
            continue;
        }
        assert_eq!(ma.len(), mb.len(), "{}: size", rel.display());
        for (start, end) in union(data_regions(&a)?, data_regions(&b)?) {
            cmp_range(&a, &b, start, end - start)?;
        }
        let (used_a, used_b) = (ma.blocks() * 512, mb.blocks() * 512);
        assert!(
            used_b <= used_a + 256 * 1024 && used_b < 4 * MIB,
            "{}: {used_b} bytes on disk for {} of data (GNU tar: {used_a}), apparent size {}",
            rel.display(),
            data_regions(&b)?.iter().map(|(s, e)| e - s).sum::<u64>(),
            mb.len()
        );
    }
    Ok(())
}

fn sparse_import_equals_gnu_tar(format: SparseFormat) -> Result<()> {
    let workdir = Workdir::new();
    let tree = workdir.scratch().join("tree");
    build_sparse_tree(&tree)?;
    let archive = workdir.scratch().join("sparse.tar");
    sparse_archive(&tree, &archive, format)?;
    let reference = workdir.scratch().join("reference");
    // GNU tar restores holes on extraction whatever the options (--sparse is for creation).
    extract_reference(&archive, &reference)?;

    let stage = workdir.import(&archive, "sparse");
    assert_same_sparse_tree(&reference, &stage)
}

#[test]
fn old_gnu_sparse_import_equals_gnu_tar_extraction() -> Result<()> {
    sparse_import_equals_gnu_tar(SparseFormat::OldGnu)
}

#[test]
fn pax_0_0_sparse_import_equals_gnu_tar_extraction() -> Result<()> {
    sparse_import_equals_gnu_tar(SparseFormat::Pax0_0)
}

#[test]
fn pax_0_1_sparse_import_equals_gnu_tar_extraction() -> Result<()> {
    sparse_import_equals_gnu_tar(SparseFormat::Pax0_1)
}

#[test]
fn pax_1_0_sparse_import_equals_gnu_tar_extraction() -> Result<()> {
    sparse_import_equals_gnu_tar(SparseFormat::Pax1_0)
}

#[test]
fn terabyte_sparse_member_costs_only_its_data() -> Result<()> {
    use std::os::unix::fs::FileExt;
    let workdir = Workdir::new();
    let tree = workdir.scratch().join("tree");
    let source = tree.join("var/lib/images/huge.img");
    let size = 1 << 40;
    let runs = [(0, 5000), ((1 << 39) + 4321, 3000), (size - 2000, 2000)];
    sparse_file(&source, size, &runs, 7)?;
    // PAX first: an extractor that writes holes out fails it at once, before the old GNU
    // member would make it fill the disk.
    for (format, name) in [
        (SparseFormat::Pax1_0, "tib-pax"),
        (SparseFormat::OldGnu, "tib-gnu"),
    ] {
        let archive = workdir.scratch().join(format!("{name}.tar"));
        sparse_archive(&tree, &archive, format)?;
        let stage = workdir.import(&archive, name);
        let imported = stage.join("var/lib/images/huge.img");
        let meta = fs::metadata(&imported)
            .with_context(|| format!("{format:?}: the imported {}", imported.display()))?;
        assert_eq!(meta.len(), size, "{format:?}: the apparent size");
        assert!(
            meta.blocks() * 512 < MIB,
            "{format:?}: {} bytes on disk",
            meta.blocks() * 512
        );
        let regions = data_regions(&imported)?;
        let file = File::open(&imported)?;
        for (i, (offset, len)) in runs.iter().enumerate() {
            assert!(
                regions
                    .iter()
                    .any(|(s, e)| *s <= *offset && offset + *len as u64 <= *e),
                "{format:?}: the data at {offset} is in a data region: {regions:?}"
            );
            let mut data = vec![0u8; *len];
            file.read_exact_at(&mut data, *offset)?;
            assert!(
                data == noise(*len, 7 + i as u64),
                "{format:?}: the data at {offset}"
            );
        }
        let data: u64 = regions.iter().map(|(s, e)| e - s).sum();
        assert!(data < MIB, "{format:?}: {data} bytes of data regions");
    }
    Ok(())
}

/// An old GNU sparse member written with the tar crate's header types, whose runs are
/// whatever the test says (GNU tar writes only good maps).
fn old_gnu_sparse_tarball(path: &Path, name: &str, size: u64, runs: &[(u64, u64)]) -> Result<()> {
    let stored: u64 = runs.iter().map(|(_, len)| len).sum();
    let mut sparse = header(EntryType::GNUSparse, stored, 0o644);
    sparse.set_path(name)?;
    let gnu = sparse.as_gnu_mut().expect("a GNU header");
    gnu.set_real_size(size);
    for (slot, (offset, len)) in gnu.sparse.iter_mut().zip(runs) {
        slot.set_offset(*offset);
        slot.set_length(*len);
    }
    sparse.set_cksum();
    small_tarball(path, |b| {
        b.append(&sparse, &noise(stored as usize, 3)[..])?;
        Ok(())
    })
}

#[test]
fn corrupt_sparse_maps_are_refused_and_leave_nothing() -> Result<()> {
    let workdir = Workdir::new();
    let overlapping = workdir.scratch().join("overlapping.tar");
    old_gnu_sparse_tarball(
        &overlapping,
        "var/lib/overlap.img",
        MIB,
        &[(4096, 1024), (4608, 1024)],
    )?;
    // GNU tar's own PAX 1.0 map, edited so that its last run lies past the file's end.
    let tree = workdir.scratch().join("tree");
    sparse_file(&tree.join("var/lib/past.img"), MIB, &[(8192, 4096)], 5)?;
    let good = workdir.scratch().join("good.tar");
    sparse_archive(&tree, &good, SparseFormat::Pax1_0)?;
    let mut bytes = fs::read(&good)?;
    let (map_end, edited) = (&b"\n1048576\n0\n"[..], &b"\n2048576\n0\n"[..]);
    let at: Vec<usize> = bytes
        .windows(map_end.len())
        .enumerate()
        .filter(|(_, w)| *w == map_end)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(at.len(), 1, "the map's last run is found once");
    bytes[at[0]..at[0] + edited.len()].copy_from_slice(edited);
    let past_end = workdir.scratch().join("past-end.tar");
    fs::write(&past_end, bytes)?;

    for (tarball, entry, says) in [
        (&overlapping, "var/lib/overlap.img", "overlap"),
        (&past_end, "./var/lib/past.img", "past the file's size"),
    ] {
        let run = workdir.run(import_args(tarball, "bad")).expect_code(1);
        run.expect_one_error();
        line_with(
            &run,
            &[
                tarball.to_str().unwrap(),
                &format!("entry '{entry}'"),
                "sparse",
                says,
            ],
        );
        workdir.assert_no_stage_left();
    }
    Ok(())
}

#[test]
fn sparse_member_real_name_is_checked_like_any_other() -> Result<()> {
    let workdir = Workdir::new();
    let tarball = workdir.scratch().join("climb.tar");
    small_tarball(&tarball, |b| {
        // A PAX 1.0 member as GNU tar writes one, but whose real name climbs out.
        let mut data = b"1\n0\n5\n".to_vec();
        data.resize(512, 0);
        data.extend_from_slice(b"sneak");
        b.append_pax_extensions([
            ("GNU.sparse.major", &b"1"[..]),
            ("GNU.sparse.minor", b"0"),
            ("GNU.sparse.name", b"../../escape.img"),
            ("GNU.sparse.realsize", b"1000"),
        ])?;
        b.append_data(
            &mut header(EntryType::Regular, data.len() as u64, 0o644),
            "GNUSparseFile.1/escape.img",
            &data[..],
        )?;
        Ok(())
    })?;

    let run = workdir.run(import_args(&tarball, "climb")).expect_code(1);
    run.expect_one_error();
    line_with(
        &run,
        &[
            tarball.to_str().unwrap(),
            "entry '../../escape.img'",
            "climbs out",
        ],
    );
    assert_eq!(
        find_named(workdir.top(), OsStr::new("escape.img")),
        Vec::<PathBuf>::new(),
        "nothing written outside"
    );
    workdir.assert_no_stage_left();
    Ok(())
}

fn available_bytes(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail * st.f_frsize)
}

#[test]
fn full_disk_is_one_line_and_leaves_nothing() -> Result<()> {
    let workdir = Workdir::uninitialised();
    let tmpfs = Tmpfs::mount(workdir.path(), 16 * MIB)?;
    workdir.ok(["workdir", "init"]);
    // 24 MiB of data in a 1 GiB sparse file: the holes would fit, the data does not.
    let tree = workdir.scratch().join("tree");
    let half = 12 * MIB as usize;
    sparse_file(
        &tree.join("var/lib/images/big.img"),
        GIB,
        &[(0, half), (GIB / 2, half)],
        9,
    )?;
    let archive = workdir.scratch().join("big.tar");
    sparse_archive(&tree, &archive, SparseFormat::OldGnu)?;
    let free = available_bytes(workdir.path())?;

    let run = workdir.run(import_args(&archive, "full")).expect_code(1);
    run.expect_one_error();
    line_with(
        &run,
        &[
            "stage 'full'",
            &format!("tmpfs filesystem at {}", workdir.path().display()),
            &format!("{:.1} MiB free", free as f64 / MIB as f64),
        ],
    );
    assert!(
        !run.stderr.contains(".autogentoo"),
        "no internal path: {}",
        run.describe()
    );
    workdir.assert_no_stage_left();
    assert_eq!(
        available_bytes(workdir.path())?,
        free,
        "nothing of the import is left on the filesystem"
    );
    tmpfs.close()
}

// ---------------------------------------------------------------------------------------------
// Hostile numbers, maps and names; pax global headers; DIGESTS on the bytes extracted.

/// The most runs a sparse map may list (16 MiB of 16-byte runs).
const MAX_RUNS: u64 = 1 << 20;

/// Runs the binary with its data segment (heap and anonymous mappings) capped at `bytes`: an
/// allocation past it fails, and Rust aborts the process on a failed allocation.
fn run_with_memory_limit(workdir: &Workdir, args: &[&OsStr], bytes: u64) -> Run {
    use std::os::unix::process::CommandExt;
    let mut command = workdir.command(args);
    // SAFETY: setrlimit is a plain system call, safe between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let limit = rustix::process::Rlimit {
                current: Some(bytes),
                maximum: Some(bytes),
            };
            rustix::process::setrlimit(rustix::process::Resource::Data, limit)
                .map_err(std::io::Error::from)
        });
    }
    let output = command.output().expect("run the binary");
    Run {
        command: format!("autogentoo {args:?} with {} MiB of data", bytes / MIB),
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Compresses `path` with the zstd command into `PATH.zst`.
fn zstd(path: &Path) -> Result<PathBuf> {
    let status = Command::new("zstd")
        .args(["-q", "-1", "-f"])
        .arg(path)
        .status()
        .context("run zstd (apt-get install zstd)")?;
    anyhow::ensure!(status.success(), "zstd {} failed", path.display());
    let mut zst = path.as_os_str().to_owned();
    zst.push(".zst");
    Ok(PathBuf::from(zst))
}

/// An old GNU sparse member whose header claims 1 TiB of data and whose map lists `runs`
/// one-byte runs, most of them in extension blocks; the archive ends with the map.
fn old_gnu_map_bomb(runs: u64) -> Result<Vec<u8>> {
    let mut sparse = header(EntryType::GNUSparse, 1 << 40, 0o644);
    sparse.set_path("var/lib/bomb.img")?;
    let gnu = sparse.as_gnu_mut().expect("a GNU header");
    gnu.set_real_size(2 * runs + 1);
    for (i, slot) in gnu.sparse.iter_mut().enumerate() {
        slot.set_offset(2 * i as u64);
        slot.set_length(1);
    }
    gnu.set_is_extended(true);
    sparse.set_cksum();
    let mut out = sparse.as_bytes().to_vec();
    let mut next = 4u64;
    while next < runs {
        let mut ext = tar::GnuExtSparseHeader::new();
        for slot in ext.sparse_mut() {
            if next < runs {
                slot.set_offset(2 * next);
                slot.set_length(1);
                next += 1;
            }
        }
        ext.set_is_extended(next < runs);
        out.extend_from_slice(ext.as_bytes());
    }
    Ok(out)
}

/// A PAX 1.0 sparse member whose header claims 1 TiB of data and whose map, in that data,
/// lists `runs` one-byte runs; the archive ends with the map.
fn pax_1_0_map_bomb(runs: u64) -> Result<Vec<u8>> {
    let mut map = format!("{runs}\n").into_bytes();
    for i in 0..runs {
        map.extend_from_slice(format!("{}\n1\n", 2 * i).as_bytes());
    }
    let mut builder = tar::Builder::new(Vec::new());
    let realsize = (2 * runs + 1).to_string();
    builder.append_pax_extensions([
        ("GNU.sparse.major", &b"1"[..]),
        ("GNU.sparse.minor", b"0"),
        ("GNU.sparse.name", b"var/lib/bomb.img"),
        ("GNU.sparse.realsize", realsize.as_bytes()),
    ])?;
    let mut member = header(EntryType::Regular, 1 << 40, 0o644);
    member.set_path("GNUSparseFile.1/bomb.img")?;
    member.set_cksum();
    // Not `into_inner`, which ends the archive.
    let mut out = builder.get_ref().clone();
    out.extend_from_slice(member.as_bytes());
    out.extend_from_slice(&map);
    Ok(out)
}

#[test]
fn sparse_map_bombs_are_refused_at_the_run_limit_in_bounded_memory() -> Result<()> {
    let workdir = Workdir::new();
    // Past the limit, and past what 64 MiB can hold as runs: without the limit the import
    // would fail its allocation (2.5 million runs are 40 MiB, and a vector doubles).
    let runs = 5 * MAX_RUNS / 2;
    for (name, archive) in [
        ("old-gnu", old_gnu_map_bomb(runs)?),
        ("pax-1.0", pax_1_0_map_bomb(runs)?),
    ] {
        let tar = workdir.scratch().join(format!("{name}.tar"));
        fs::write(&tar, &archive)?;
        let tarball = zstd(&tar)?;
        fs::remove_file(&tar)?;
        assert!(
            fs::metadata(&tarball)?.len() < archive.len() as u64 / 10,
            "{name}: a small tarball"
        );
        let started = Instant::now();
        let run =
            run_with_memory_limit(&workdir, &import_args(&tarball, name), 64 * MIB).expect_code(1);
        run.expect_one_error();
        line_with(
            &run,
            &[
                tarball.to_str().unwrap(),
                "entry 'var/lib/bomb.img'",
                &format!("more than {MAX_RUNS} runs"),
            ],
        );
        assert!(
            started.elapsed() < PATIENCE,
            "{name}: refused in {:?}",
            started.elapsed()
        );
        workdir.assert_no_stage_left();
    }
    Ok(())
}

/// A member to append: the records of its pax header (none, no header), its header, its data.
struct Appended {
    records: &'static [(&'static str, &'static [u8])],
    header: Header,
    data: &'static [u8],
}

/// A tarball holding `members` after a small stage's.
fn tarball_with(path: &Path, members: &[Appended]) -> Result<()> {
    small_tarball(path, |b| {
        for member in members {
            if !member.records.is_empty() {
                b.append_pax_extensions(member.records.iter().copied())?;
            }
            let mut header = member.header.clone();
            header.set_cksum();
            b.append(&header, member.data)?;
        }
        Ok(())
    })
}

#[test]
fn numbers_at_the_edge_of_their_range_are_refused_in_one_line() -> Result<()> {
    let workdir = Workdir::new();
    let named = |kind, name: &str, size| -> Result<Header> {
        let mut h = header(kind, size, 0o644);
        h.set_path(name)?;
        Ok(h)
    };
    let mut huge_uid = named(EntryType::Regular, "etc/shadow", 0)?;
    huge_uid.set_uid(1 << 32);
    // Each of these GNU tar refuses too ("out of off_t range", "out of uid_t range", …).
    let cases = [
        (
            // The size of a directory, whose data is skipped: with its padding it wraps to 0.
            "size",
            vec![
                Appended {
                    records: &[("size", b"18446744073709551615")],
                    header: named(EntryType::Directory, "var/", 0)?,
                    data: b"",
                },
                Appended {
                    records: &[],
                    header: named(EntryType::Regular, "var/after", 1)?,
                    data: b"x",
                },
            ],
            "entry 'var/' has the pax size '18446744073709551615'",
        ),
        (
            "mtime",
            vec![Appended {
                records: &[("mtime", b"-9223372036854775808.5")],
                header: named(EntryType::Regular, "etc/old", 0)?,
                data: b"",
            }],
            "entry 'etc/old' has the pax mtime '-9223372036854775808.5'",
        ),
        (
            // Read as a 32-bit number it would be root.
            "uid",
            vec![Appended {
                records: &[],
                header: huge_uid,
                data: b"",
            }],
            "entry 'etc/shadow' has the uid 4294967296",
        ),
    ];
    for (name, members, says) in cases {
        let tarball = workdir.scratch().join(format!("{name}.tar"));
        tarball_with(&tarball, &members)?;
        let reference = workdir.scratch().join(format!("{name}-reference"));
        assert!(
            extract_reference(&tarball, &reference).is_err(),
            "GNU tar refuses the {name} too"
        );
        let run = workdir.run(import_args(&tarball, name)).expect_code(1);
        run.expect_one_error();
        line_with(&run, &[tarball.to_str().unwrap(), says, "corrupt"]);
        workdir.assert_no_stage_left();
    }
    Ok(())
}

/// Runs git in `repo` with a fixed identity and dates, so the archive is the same every run.
fn git(repo: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "autogentoo tests")
        .env("GIT_AUTHOR_EMAIL", "tests@autogentoo.invalid")
        .env("GIT_COMMITTER_NAME", "autogentoo tests")
        .env("GIT_COMMITTER_EMAIL", "tests@autogentoo.invalid")
        .env("GIT_AUTHOR_DATE", "2024-01-02T03:04:05Z")
        .env("GIT_COMMITTER_DATE", "2024-01-02T03:04:05Z")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", repo)
        .status()
        .context("run git")?;
    anyhow::ensure!(status.success(), "git {args:?} failed");
    Ok(())
}

#[test]
fn git_archive_tarball_imports_as_gnu_tar_extracts_it() -> Result<()> {
    let workdir = Workdir::new();
    // A kernel.org release tarball in small: `git archive` of a tree with a prefix.
    let repo = workdir.scratch().join("linux");
    fs::create_dir_all(repo.join("scripts"))?;
    fs::write(repo.join("Makefile"), "VERSION = 6\nPATCHLEVEL = 1\n")?;
    fs::write(repo.join("scripts/config"), "#!/bin/sh\necho config\n")?;
    fs::set_permissions(
        repo.join("scripts/config"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    std::os::unix::fs::symlink("scripts/config", repo.join("config"))?;
    git(&repo, &["init", "-q"])?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-q", "-m", "Linux 6.1"])?;
    let tarball = workdir.scratch().join("linux-6.1.tar");
    git(
        &repo,
        &[
            "archive",
            "--format=tar",
            "--prefix=linux-6.1/",
            "-o",
            tarball.to_str().unwrap(),
            "HEAD",
        ],
    )?;
    let bytes = fs::read(&tarball)?;
    assert_eq!(
        bytes[156], b'g',
        "git archive opens with a pax global header"
    );
    let reference = workdir.scratch().join("reference");
    extract_reference(&tarball, &reference)?;
    assert!(reference.join("linux-6.1/scripts/config").is_file());

    workdir.ok([
        OsStr::new("kernel"),
        OsStr::new("import"),
        tarball.as_os_str(),
        OsStr::new("--name"),
        OsStr::new("linux-6.1"),
    ]);
    let path = PathBuf::from(
        workdir
            .ok(["kernel", "path", "linux-6.1"])
            .stdout
            .trim_end(),
    );
    // `git archive` writes no entry for the top: its mtime is the extraction's.
    assert_same_tree(&reference.join("linux-6.1"), &path.join("linux-6.1"));
    assert_eq!(
        list_dir(&path),
        [path.join("linux-6.1")],
        "the global header is no file"
    );
    Ok(())
}

#[test]
fn global_header_records_apply_as_gnu_tar_applies_them() -> Result<()> {
    let workdir = Workdir::new();
    // Owners and times for every member after it, the member's own records first; a second
    // global header replaces the first whole; keys we do not use (comment) change nothing.
    let mut archive = tar::Builder::new(Vec::new());
    let global = |b: &mut tar::Builder<Vec<u8>>, records: &[(&str, &[u8])]| -> Result<()> {
        let mut data = Vec::new();
        for (key, value) in records {
            let body = key.len() + value.len() + 3;
            let mut len = body + 1;
            while len.to_string().len() + body != len {
                len += 1;
            }
            data.extend_from_slice(format!("{len} {key}=").as_bytes());
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let mut h = header(EntryType::XGlobalHeader, data.len() as u64, 0o644);
        h.set_path("pax_global_header")?;
        h.set_cksum();
        b.append(&h, &data[..])?;
        Ok(())
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, name: &str, records: &[(&str, &[u8])]| {
        if !records.is_empty() {
            b.append_pax_extensions(records.iter().copied())?;
        }
        let (kind, data) = if name.ends_with('/') {
            (EntryType::Directory, &b""[..])
        } else {
            (EntryType::Regular, &b"abc"[..])
        };
        let mut h = header(kind, data.len() as u64, 0o750);
        h.set_uid(5);
        h.set_gid(6);
        h.set_path(name)?;
        h.set_cksum();
        b.append(&h, data)?;
        anyhow::Ok(())
    };
    global(
        &mut archive,
        &[
            ("comment", b"0123456789abcdef"),
            ("uid", b"1234"),
            ("mtime", b"1234567890.5"),
        ],
    )?;
    file(&mut archive, "srv/", &[])?;
    file(&mut archive, "srv/a", &[])?;
    file(&mut archive, "srv/b", &[("mtime", b"99")])?;
    global(&mut archive, &[("gid", b"77")])?;
    file(&mut archive, "srv/c", &[])?;
    let tarball = workdir.scratch().join("global.tar");
    fs::write(&tarball, archive.into_inner()?)?;
    let reference = workdir.scratch().join("reference");
    extract_reference(&tarball, &reference)?;
    assert_eq!(
        fs::metadata(reference.join("srv/a"))?.uid(),
        1234,
        "GNU tar applies it"
    );

    let stage = workdir.import(&tarball, "global");
    // The tarball has no entry for the top: its mtime is the extraction's.
    assert_same_tree(&reference.join("srv"), &stage.join("srv"));
    Ok(())
}

/// Whether process `pid` has `path` open.
fn has_open(pid: rustix::process::Pid, path: &Path) -> bool {
    let fds = PathBuf::from(format!("/proc/{}/fd", pid.as_raw_nonzero()));
    fs::read_dir(fds).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == path))
    })
}

/// Imports from a fifo that gives `first` to the first reader and `then` to any reader after
/// it, as a file replaced between two reads would. `first` must be larger than a pipe's
/// buffer: once it is written, the import holds the fifo open, reading.
fn import_changing_fifo(
    workdir: &Workdir,
    digests: &Path,
    first: Vec<u8>,
    then: &[u8],
) -> Result<Run> {
    let fifo = workdir.scratch().join("stage.tar");
    rustix::fs::mkfifoat(CWD, &fifo, Mode::from_raw_mode(0o600))?;
    let mut args = import_args(&fifo, "changing").to_vec();
    args.extend([OsStr::new("--digests"), digests.as_os_str()]);
    let mut import = Spawned::start(workdir.command(&args));
    let writer = open_writer(&fifo, &mut import);
    let (writer, written) = write_into_fifo(writer, first);
    written.context("write the first tarball")?;
    assert!(has_open(import.pid(), &fifo), "the import reads the fifo");
    drop(writer);
    let started = Instant::now();
    while !import.has_exited() {
        assert!(started.elapsed() < PATIENCE, "the import ends");
        // A new writer only once the first reader has let go, so that it sees its end: an
        // import that opens the fifo again (and waits in `open` for a writer) gets `then`.
        if !has_open(import.pid(), &fifo) {
            let nonblocking = OFlags::NONBLOCK.bits() as i32;
            if let Ok(mut again) = OpenOptions::new()
                .write(true)
                .custom_flags(nonblocking)
                .open(&fifo)
            {
                rustix::fs::fcntl_setfl(&again, OFlags::empty())?;
                // The reader may stop early (a refused tarball): a broken pipe is its choice.
                let _ = again.write_all(then);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(import.wait(PATIENCE))
}

#[test]
fn digests_are_checked_on_the_bytes_that_are_extracted() -> Result<()> {
    let workdir = Workdir::new();
    // Each larger than a pipe's buffer (see `import_changing_fifo`).
    let image = noise(MIB as usize, 12);
    let listed = workdir.scratch().join("listed.tar");
    small_tarball(&listed, |b| {
        b.append_data(
            &mut header(EntryType::Regular, MIB, 0o644),
            "etc/image",
            &image[..],
        )?;
        Ok(())
    })?;
    let other = workdir.scratch().join("other.tar");
    small_tarball(&other, |b| {
        b.append_data(
            &mut header(EntryType::Regular, MIB, 0o644),
            "etc/image",
            &image[..],
        )?;
        b.append_data(
            &mut header(EntryType::Regular, 5, 0o4755),
            "usr/bin/not-listed",
            &b"evil\n"[..],
        )?;
        Ok(())
    })?;
    let listed_sha512 = sha512sum(&listed)?;
    let digests = workdir.scratch().join("stage.tar.DIGESTS");
    digests_file(&digests, "stage.tar", &listed_sha512)?;

    // The listed bytes first: what is imported is what was checked, never what a second read
    // of the source would give.
    let run = import_changing_fifo(&workdir, &digests, fs::read(&listed)?, &fs::read(&other)?)?
        .expect_code(0);
    let stage = workdir.stage_path("changing");
    assert!(
        !stage.join("usr/bin/not-listed").exists(),
        "the stage holds only the checked tarball: {}",
        run.describe()
    );
    let reference = workdir.scratch().join("reference");
    extract_reference(&listed, &reference)?;
    // The tarball has no entry for the top: its mtime is the extraction's.
    assert_same_tree(&reference.join("etc"), &stage.join("etc"));
    let list = workdir.ok(["stage", "list", "--json"]).json();
    assert_eq!(list[0]["properties"]["sha512"], listed_sha512.as_str());
    workdir.ok(["stage", "remove", "changing"]);

    // Other bytes first: extracted, found not to match, discarded.
    fs::remove_file(workdir.scratch().join("stage.tar"))?;
    let run = import_changing_fifo(&workdir, &digests, fs::read(&other)?, &fs::read(&listed)?)?
        .expect_code(1);
    run.expect_one_error();
    line_with(
        &run,
        &["does not match", &listed_sha512, &sha512sum(&other)?],
    );
    workdir.assert_no_stage_left();
    Ok(())
}

#[test]
fn digests_cover_the_bytes_after_the_end_of_the_archive() -> Result<()> {
    let workdir = Workdir::new();
    let tarball = workdir.scratch().join("stage.tar");
    small_tarball(&tarball, |_| Ok(()))?;
    // GNU tar ignores what follows the two zero blocks; the DIGESTS line covers the file.
    let mut bytes = fs::read(&tarball)?;
    bytes.extend(noise(3 * MIB as usize, 11));
    fs::write(&tarball, &bytes)?;
    let sha512 = sha512sum(&tarball)?;
    let digests = workdir.scratch().join("stage.tar.DIGESTS");
    digests_file(&digests, "stage.tar", &sha512)?;
    let mut args = import_args(&tarball, "trailing").to_vec();
    args.extend([OsStr::new("--digests"), digests.as_os_str()]);
    workdir.ok(&args);
    let list = workdir.ok(["stage", "list", "--json"]).json();
    assert_eq!(list[0]["properties"]["sha512"], sha512.as_str());
    Ok(())
}

#[test]
fn names_from_the_archive_reach_messages_escaped() -> Result<()> {
    let workdir = Workdir::new();
    let tarball = workdir.scratch().join("escapes.tar");
    // A name that would paint the terminal red and print a fake second error, long enough for
    // the human rendering to shorten it; and `..` so that it is refused.
    let long = "x".repeat(300);
    let name = format!("usr/\x1b[31mred\x1b[0m\nerror: all is well/{long}/../../../evil");
    small_tarball(&tarball, |b| {
        // A GNU long name, as GNU tar writes one; the tar crate would refuse the `..`.
        let mut long_name = name.clone().into_bytes();
        long_name.push(0);
        let mut gnu_long = header(EntryType::GNULongName, long_name.len() as u64, 0o644);
        gnu_long.set_path("././@LongLink")?;
        gnu_long.set_cksum();
        b.append(&gnu_long, &long_name[..])?;
        let mut evil = header(EntryType::Regular, 0, 0o644);
        evil.set_path("placeholder")?;
        evil.set_cksum();
        b.append(&evil, &b""[..])?;
        Ok(())
    })?;
    let escaped = format!("usr/\\033[31mred\\033[0m\\nerror: all is well/{long}/../../../evil");

    let run = workdir.run(import_args(&tarball, "escapes")).expect_code(1);
    run.expect_one_error();
    assert!(
        !run.stderr.contains('\x1b') && run.stderr.lines().count() <= 2,
        "no escape byte, no extra line: {}",
        run.describe()
    );
    line_with(
        &run,
        &[
            "usr/\\033[31mred\\033[0m\\nerror: all is well/",
            "climbs out",
        ],
    );

    let mut args = vec![OsStr::new("--json")];
    args.extend(import_args(&tarball, "escapes"));
    let run = workdir.run(&args).expect_code(1);
    assert!(!run.stderr.contains('\x1b'), "{}", run.describe());
    let document: serde_json::Value = serde_json::from_str(run.stderr.trim_end())
        .with_context(|| format!("one JSON error document: {}", run.describe()))?;
    let text = std::iter::once(&document["error"])
        .chain(document["causes"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains(&format!("entry '{escaped}'")),
        "the whole name, escaped: {text}"
    );
    workdir.assert_no_stage_left();
    Ok(())
}
