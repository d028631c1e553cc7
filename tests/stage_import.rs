//! `autogentoo stage import` as a user runs it: every compression a Gentoo mirror serves, the
//! result compared entry by entry with what GNU tar extracts; corrupt downloads, DIGESTS checks,
//! hostile tarballs and interrupted imports leave nothing behind.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use autogentoo_core::testkit::assert_same_tree;
use autogentoo_tests::{
    archive_listing, check_rich_tree, find_named, list_dir, noise, wait_until, Compression,
    RichStage, Spawned, Workdir,
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
