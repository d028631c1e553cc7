//! The `newc-xz` packer: the core's newc archive, compressed with `xz` the way the kernel's
//! decompressor reads it. xz makes the smallest initramfs of the formats the kernel unpacks,
//! which matters when it sits on a small EFI system partition inside a UKI.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use autogentoo_core::files::bounded_read::{self, Limit};
use autogentoo_core::files::output_file::{self, OutputFile};
use autogentoo_core::pack::initramfs::{self, manifest_path};
use autogentoo_core::pack::{PackError, PackReport, PackRequest, Packer, PackerCapabilities};
use autogentoo_core::site_config::Compression;
use autogentoo_core::storage::io_err;

use crate::tool::{ToolError, XZ};

/// The level when the site config sets none: xz's own default.
const DEFAULT_LEVEL: u32 = 6;

/// How often the wait on `xz` looks at the cancel flag.
const CANCEL_POLL: Duration = Duration::from_millis(20);

/// Packs with the core's packer, uncompressed, then compresses with `xz`.
///
/// Beyond the [`Packer`] contract:
///
/// - the archive is one xz stream of a single block with CRC32 checks and a 1 MiB dictionary:
///   the kernel's xz decoder takes CRC32 or no check, and only single-call (one block) input
///   for an initramfs;
/// - the level is the request's (0 to 9), 6 when unset;
/// - the manifest is the core packer's, describing the xz archive;
/// - a missing `xz` is an error saying to install xz-utils.
pub struct NewcXz;

impl NewcXz {
    pub const NAME: &'static str = "newc-xz";
}

impl Packer for NewcXz {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn capabilities(&self) -> PackerCapabilities {
        PackerCapabilities {
            compressions: vec![Compression::Xz],
            reproducible: true,
            manifest: true,
        }
    }

    fn pack(&self, request: &PackRequest) -> Result<PackReport, PackError> {
        (self as &dyn Packer).check(request.compression)?;
        let level = level(request.level)?;
        interrupted(request.cancel)?;
        let output = &request.output;
        let manifest_out = manifest_path(output);
        // Both are refused before anything is packed if they cannot be files.
        output_file::check_target(output)?;
        output_file::check_target(&manifest_out)?;

        // The uncompressed archive and the core's manifest of it, under hidden names beside the
        // output that a later run sweeps if this one is killed; the guards remove them.
        let cpio = Scratch(output_file::scratch_path(output, "cpio"));
        let cpio_manifest = Scratch(manifest_path(&cpio.0));
        let inner = initramfs::pack(&PackRequest {
            layers: request.layers.clone(),
            exclude: request.exclude.clone(),
            rdinit: request.rdinit.clone(),
            keep_site_owners: request.keep_site_owners,
            compression: Compression::None,
            level: None,
            source_date_epoch: request.source_date_epoch,
            threads: request.threads,
            output: cpio.0.clone(),
            progress: request.progress,
            cancel: request.cancel,
        })?;

        let archive = OutputFile::create(output)?;
        compress(&cpio.0, &archive, level, request.cancel)?;
        let (archive_bytes, sha256) = archive.digest()?;

        let mut manifest = OutputFile::create(&manifest_out)?;
        let text = describe_archive(&cpio_manifest.0, output, &sha256, &inner.sha256)?;
        manifest
            .write_all(&text)
            .map_err(io_err("write", &manifest_out))?;

        interrupted(request.cancel)?;
        // The old manifest goes first: it never describes an archive that is not beside it.
        output_file::retract(&manifest_out)?;
        archive.commit()?;
        manifest.commit()?;
        Ok(PackReport {
            archive: output.clone(),
            manifest: Some(manifest_out),
            sha256,
            compression: Compression::Xz,
            entries: inner.entries,
            cpio_bytes: inner.cpio_bytes,
            archive_bytes,
            dropped_xattrs: inner.dropped_xattrs,
        })
    }
}

/// The request's level, checked against what xz takes.
fn level(requested: Option<u32>) -> Result<u32, PackError> {
    let level = requested.unwrap_or(DEFAULT_LEVEL);
    let levels = Compression::Xz.levels().expect("xz has levels");
    if levels.contains(&level) {
        Ok(level)
    } else {
        Err(PackError::Failed(format!(
            "xz level {level} is outside {}-{}: set pack.level",
            levels.start(),
            levels.end()
        )))
    }
}

fn interrupted(cancel: &AtomicBool) -> Result<(), PackError> {
    if cancel.load(Ordering::Relaxed) {
        Err(PackError::Interrupted)
    } else {
        Ok(())
    }
}

/// An intermediate file, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        // Best effort: its name is one the next writer in that directory sweeps.
        let _ = fs::remove_file(&self.0);
    }
}

/// Compresses `input` into `output` with `xz`, stopping it when `cancel` is set.
fn compress(
    input: &Path,
    output: &OutputFile,
    level: u32,
    cancel: &AtomicBool,
) -> Result<(), PackError> {
    let stdin = File::open(input).map_err(io_err("open", input))?;
    let stdout = output
        .file()
        .try_clone()
        .map_err(io_err("open", output.path()))?;
    let mut child = XZ
        .command()
        .args(xz_args(level))
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| XZ.spawn_error(e))?;
    // Read stderr as it comes, so that a chatty xz cannot fill the pipe and stall.
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let reader = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut text);
        text
    });
    let status: ExitStatus = loop {
        if cancel.load(Ordering::Relaxed) {
            // Killing an already exited child fails harmlessly; either way it is reaped.
            let _ = child.kill();
            let _ = child.wait();
            let _ = reader.join();
            return Err(PackError::Interrupted);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => thread::sleep(CANCEL_POLL),
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ToolError::Spawn { tool: XZ, source }.into());
            }
        }
    };
    let stderr = reader.join().unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(XZ.failure(status, &stderr).into())
    }
}

/// `xz`'s arguments: compress stdin to stdout in the format the kernel's decoder reads.
fn xz_args(level: u32) -> Vec<String> {
    vec![
        "--format=xz".to_owned(),
        "--check=crc32".to_owned(),
        format!("--lzma2=preset={level},dict=1MiB"),
        // One thread writes one block; multi-threaded xz splits the stream into blocks.
        "-T1".to_owned(),
        "-c".to_owned(),
    ]
}

/// The core packer's manifest (which layer supplied each entry), rewritten to describe the xz
/// archive at `output` rather than the uncompressed one it was written for.
fn describe_archive(
    cpio_manifest: &Path,
    output: &Path,
    sha256: &str,
    cpio_sha256: &str,
) -> Result<Vec<u8>, PackError> {
    let text = bounded_read::read(cpio_manifest, Limit::STATE)
        .map_err(|e| PackError::Failed(e.to_string()))?;
    let mut manifest: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
        PackError::Failed(format!(
            "the core packer's manifest {} is not JSON: {e}",
            cpio_manifest.display()
        ))
    })?;
    let Some(fields) = manifest.as_object_mut() else {
        return Err(PackError::Failed(format!(
            "the core packer's manifest {} is not a JSON object",
            cpio_manifest.display()
        )));
    };
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    fields.insert("archive".into(), name.into());
    fields.insert("sha256".into(), sha256.into());
    fields.insert("compression".into(), Compression::Xz.to_string().into());
    fields.insert("cpio_sha256".into(), cpio_sha256.into());
    fields.insert("packer".into(), NewcXz::NAME.into());
    Ok(serde_json::to_vec_pretty(&manifest).expect("a JSON value serialises"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;
    use std::process::Command;

    use autogentoo_core::kernel::kernel_build::sha256_file;
    use autogentoo_core::pack::Layer;
    use autogentoo_core::stage_import::Silent;

    use super::*;

    /// A small root: an executable /init, a file, a symlink, a directory.
    fn tree() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        fs::write(p.join("init"), "#!/bin/sh\nexec /bin/sh\n").unwrap();
        fs::set_permissions(p.join("init"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(p.join("etc")).unwrap();
        fs::write(p.join("etc/motd"), "hello from newc-xz\n".repeat(100)).unwrap();
        std::os::unix::fs::symlink("motd", p.join("etc/motd.link")).unwrap();
        fs::create_dir(p.join("proc")).unwrap();
        root
    }

    fn request<'a>(
        root: &Path,
        output: PathBuf,
        compression: Compression,
        cancel: &'a AtomicBool,
    ) -> PackRequest<'a> {
        PackRequest {
            layers: vec![Layer {
                name: "root:test".into(),
                path: root.to_owned(),
                site: false,
            }],
            exclude: Vec::new(),
            rdinit: "/init".into(),
            keep_site_owners: false,
            compression,
            level: None,
            source_date_epoch: Some(1_700_000_000),
            threads: 1,
            output,
            progress: &Silent,
            cancel,
        }
    }

    fn packer() -> Box<dyn Packer> {
        Box::new(NewcXz)
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn run(command: &mut Command) -> std::process::Output {
        let output = command.output().unwrap();
        assert!(
            output.status.success(),
            "{command:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    #[test]
    fn packs_an_xz_archive_the_kernel_can_read_and_cpio_extracts() {
        let root = tree();
        let out = tempfile::tempdir().unwrap();
        let output = out.path().join("initramfs.cpio.xz");
        let cancel = AtomicBool::new(false);
        let report = packer()
            .pack(&request(
                root.path(),
                output.clone(),
                Compression::Xz,
                &cancel,
            ))
            .unwrap();
        assert_eq!(report.archive, output);
        assert_eq!(report.compression, Compression::Xz);
        assert_eq!(report.archive_bytes, fs::metadata(&output).unwrap().len());
        assert_eq!(report.sha256, sha256_file(&output).unwrap());
        assert!(report.cpio_bytes > report.archive_bytes);
        assert!(report.entries >= 6, "{report:?}");
        assert_eq!(
            names(out.path()),
            ["initramfs.cpio.xz", "initramfs.cpio.xz.manifest.json"]
        );
        assert_eq!(
            fs::metadata(&output).unwrap().permissions().mode() & 0o777,
            0o644
        );

        run(Command::new("xz").arg("-t").arg(&output));
        // One stream of one block, CRC32-checked: what the kernel's decoder accepts.
        let list = run(Command::new("xz").args(["--robot", "--list"]).arg(&output));
        let list = String::from_utf8(list.stdout).unwrap();
        let file = list.lines().find(|l| l.starts_with("file\t")).unwrap();
        let fields: Vec<&str> = file.split('\t').collect();
        assert_eq!(
            (fields[1], fields[2], fields[6]),
            ("1", "1", "CRC32"),
            "{list}"
        );

        let extracted = tempfile::tempdir().unwrap();
        let script = format!(
            "xz -dc '{}' | cpio -idm --quiet --no-absolute-filenames",
            output.display()
        );
        run(Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(extracted.path()));
        let x = extracted.path();
        assert_eq!(
            fs::read(x.join("etc/motd")).unwrap(),
            fs::read(root.path().join("etc/motd")).unwrap()
        );
        assert_eq!(
            fs::read_link(x.join("etc/motd.link")).unwrap(),
            Path::new("motd")
        );
        assert_eq!(
            fs::metadata(x.join("init")).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert!(x.join("proc").is_dir());
        assert!(x.join("dev/console").exists());

        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(report.manifest.unwrap()).unwrap()).unwrap();
        assert_eq!(manifest["archive"], "initramfs.cpio.xz");
        assert_eq!(manifest["sha256"], report.sha256.as_str());
        assert_eq!(manifest["compression"], "xz");
        assert!(manifest["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["path"] == "/etc/motd" && e["layer"] == "root:test"));
    }

    #[test]
    fn the_same_tree_packs_to_the_same_bytes() {
        let root = tree();
        let out = tempfile::tempdir().unwrap();
        let cancel = AtomicBool::new(false);
        let first = out.path().join("a.cpio.xz");
        let second = out.path().join("b.cpio.xz");
        for output in [&first, &second] {
            packer()
                .pack(&request(
                    root.path(),
                    output.clone(),
                    Compression::Xz,
                    &cancel,
                ))
                .unwrap();
        }
        assert_eq!(fs::read(&first).unwrap(), fs::read(&second).unwrap());
    }

    #[test]
    fn refuses_other_compressions_before_writing() {
        let root = tree();
        let out = tempfile::tempdir().unwrap();
        let output = out.path().join("sub/initramfs.cpio.gz");
        let cancel = AtomicBool::new(false);
        let error = packer()
            .pack(&request(root.path(), output, Compression::Gzip, &cancel))
            .unwrap_err();
        match error {
            PackError::Unsupported {
                packer,
                compression,
                supported,
            } => {
                assert_eq!(packer, NewcXz::NAME);
                assert_eq!(compression, Compression::Gzip);
                assert_eq!(supported, [Compression::Xz]);
            }
            other => panic!("{other:?}"),
        }
        assert!(names(out.path()).is_empty());
    }

    #[test]
    fn a_tree_without_init_leaves_nothing_and_keeps_the_old_archive() {
        let root = tree();
        fs::remove_file(root.path().join("init")).unwrap();
        let out = tempfile::tempdir().unwrap();
        let output = out.path().join("initramfs.cpio.xz");
        fs::write(&output, "the previous archive").unwrap();
        let cancel = AtomicBool::new(false);
        let error = packer()
            .pack(&request(
                root.path(),
                output.clone(),
                Compression::Xz,
                &cancel,
            ))
            .unwrap_err();
        assert!(matches!(error, PackError::NoInit { .. }), "{error:?}");
        assert_eq!(names(out.path()), ["initramfs.cpio.xz"]);
        assert_eq!(fs::read(&output).unwrap(), b"the previous archive");
    }

    #[test]
    fn a_cancelled_pack_is_interrupted_and_leaves_nothing() {
        let root = tree();
        let out = tempfile::tempdir().unwrap();
        let cancel = AtomicBool::new(true);
        let error = packer()
            .pack(&request(
                root.path(),
                out.path().join("initramfs.cpio.xz"),
                Compression::Xz,
                &cancel,
            ))
            .unwrap_err();
        assert!(matches!(error, PackError::Interrupted), "{error:?}");
        assert!(names(out.path()).is_empty());
    }

    #[test]
    fn cancelling_stops_xz_and_removes_its_output() {
        // Incompressible input keeps xz busy long enough to be stopped.
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input");
        let mut bytes = vec![0u8; 32 << 20];
        let mut file = File::open("/dev/urandom").unwrap();
        std::io::Read::read_exact(&mut file, &mut bytes).unwrap();
        fs::write(&input, &bytes).unwrap();
        let output = OutputFile::create(&dir.path().join("input.xz")).unwrap();
        let cancel = AtomicBool::new(false);
        let started = std::time::Instant::now();
        let error = thread::scope(|scope| {
            scope.spawn(|| {
                thread::sleep(Duration::from_millis(200));
                cancel.store(true, Ordering::Relaxed);
            });
            compress(&input, &output, 9, &cancel).unwrap_err()
        });
        assert!(matches!(error, PackError::Interrupted), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(output);
        assert_eq!(names(dir.path()), ["input"]);
    }

    #[test]
    fn levels_outside_xz_range_are_refused() {
        assert_eq!(level(None).unwrap(), 6);
        assert_eq!(level(Some(0)).unwrap(), 0);
        assert_eq!(level(Some(9)).unwrap(), 9);
        let error = level(Some(10)).unwrap_err();
        assert!(error.to_string().contains("0-9"), "{error}");
    }
}
