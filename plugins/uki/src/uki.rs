//! The `uki` kernel builder: a Unified Kernel Image, systemd's EFI stub with the kernel, the
//! initramfs, the command line and an os-release added as PE sections. The stub starts the
//! kernel from `.linux` with `.initrd` as its initramfs, so the kernel is built without one;
//! after an initramfs-only change the image is reassembled from the kernel already built, with
//! no compiling or linking.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use autogentoo_core::files::bounded_read::{self, Limit};
use autogentoo_core::files::output_file::{self, OutputFile};
use autogentoo_core::kernel::kconfig::{self, Requirements};
use autogentoo_core::kernel::kernel_build::{
    build, cross_args, sha256_file, HostMake, KernelBuildRequest, KernelError, KernelReport,
};
use autogentoo_core::kernel::{KernelBuilder, KernelBuilderCapabilities, KernelJob};
use autogentoo_core::storage::io_err;

use crate::pe_layout::{self, Section};
use crate::tool::{OBJCOPY, OBJDUMP};

/// Builds a UKI with kbuild on the host and systemd's stub.
///
/// Beyond the [`KernelBuilder`] contract:
///
/// - `SYSTEM.efi` is [`Uki::STUB`] with the sections `.osrel` (`ID=autogentoo`), `.cmdline`
///   (left out when the command line is empty), `.linux` (the bzImage) and `.initrd` (the
///   initramfs, as it is), each placed after the stub's sections and the one before;
/// - the kernel has no initramfs and no command line built in, and the decompressor of the
///   initramfs's compression; it is rebuilt only when its inputs changed (the fragments, the
///   requirements, the source tree's path, the architecture), otherwise the last one is reused;
/// - the manifest also names the builder (`"builder": "uki"`) and the bzImage's SHA256
///   (`kernel_sha256`), which stays the same across initramfs-only changes;
/// - a missing stub is an error saying to install systemd-boot-efi, checked before anything is
///   built, as is a missing `objdump` (binutils).
pub struct Uki {
    stub: PathBuf,
}

impl Uki {
    pub const NAME: &'static str = "uki";
    /// systemd-boot's EFI stub for x86-64, where Debian's systemd-boot-efi and Gentoo's
    /// systemd-boot install it.
    pub const STUB: &'static str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";

    /// The builder, with the stub at [`Uki::STUB`].
    pub fn new() -> Self {
        Self {
            stub: PathBuf::from(Self::STUB),
        }
    }
}

impl KernelBuilder for Uki {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn capabilities(&self) -> KernelBuilderCapabilities {
        KernelBuilderCapabilities {
            uses_root: false,
            links_initramfs: false,
        }
    }

    fn build(&self, job: &KernelJob) -> Result<KernelReport, KernelError> {
        if !job.initramfs.is_file() {
            return Err(KernelError::NoInitramfs(job.initramfs.to_owned()));
        }
        let stub = self.stub.as_path();
        if !stub.is_file() {
            return Err(KernelError::Failed(format!(
                "{} does not exist: install systemd-boot-efi (systemd's EFI stub, \
                 apt-get install systemd-boot-efi)",
                stub.display()
            )));
        }
        let stub_end = stub_end(stub)?;
        let dir = BuildDir(job.build_dir.to_owned());
        fs::create_dir_all(&dir.0).map_err(io_err("create", &dir.0))?;
        let kernel = kernel(job, &dir)?;
        publish(job, &dir, stub, stub_end, &kernel)
    }
}

/// The builder's directory for one system, kept between builds:
///
/// ```text
/// BUILD_DIR/
///   build.log          every make run, appended
///   kbuild/            kbuild's output tree (`make O=`), with its .config
///   kernel/            the last kernel built: SYSTEM.efi (the bzImage), SYSTEM.config,
///                      SYSTEM.System.map, SYSTEM.manifest.json
///   kernel.inputs      what kernel/ was built from; written once it is complete
///   .uki.*             the os-release and command line while an image is assembled
/// ```
struct BuildDir(PathBuf);

impl BuildDir {
    fn log(&self) -> PathBuf {
        self.0.join("build.log")
    }

    fn kbuild(&self) -> PathBuf {
        self.0.join("kbuild")
    }

    fn kernel(&self) -> PathBuf {
        self.0.join("kernel")
    }

    fn stamp(&self) -> PathBuf {
        self.0.join("kernel.inputs")
    }
}

/// A built kernel, in the build directory.
struct Kernel {
    bzimage: PathBuf,
    config: PathBuf,
    system_map: PathBuf,
    /// The config changes of the kbuild run, when there was one.
    config_changes: Vec<String>,
}

/// The kernel for `job`: the one from the last build when its inputs are the same, otherwise a
/// new one from kbuild on the host.
fn kernel(job: &KernelJob, dir: &BuildDir) -> Result<Kernel, KernelError> {
    let requirements = Requirements::new(None, job.compression, None)?;
    let inputs = kernel_inputs(job.source, job.arch, job.fragments, &requirements)?;
    let staged = dir.kernel();
    let reused = Kernel {
        bzimage: staged.join(format!("{}.efi", job.system)),
        config: staged.join(format!("{}.config", job.system)),
        system_map: staged.join(format!("{}.System.map", job.system)),
        config_changes: Vec::new(),
    };
    let stamp = dir.stamp();
    let unchanged = bounded_read::read(&stamp, Limit::STATE)
        .is_ok_and(|previous| previous == inputs.as_bytes())
        && [&reused.bzimage, &reused.config, &reused.system_map]
            .iter()
            .all(|p| p.is_file());
    if unchanged {
        return Ok(reused);
    }
    // kernel/ is about to change: until the build is over, its files match no inputs.
    match fs::remove_file(&stamp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(io_err("remove", &stamp)(e).into())
        }
        _ => {}
    }
    let kbuild = dir.kbuild();
    let make = HostMake {
        source: job.source.to_owned(),
        build_dir: kbuild.clone(),
        log: dir.log(),
        cross: cross_args(job.arch)?,
    };
    let report = build(&KernelBuildRequest {
        source: job.source,
        build_dir: &kbuild,
        fragments: job.fragments,
        requirements: &requirements,
        arch: job.arch,
        jobs: job.jobs,
        make: &make,
        out_dir: &staged,
        name: job.system,
        inputs: job.inputs,
    })?;
    output_file::write(&stamp, inputs.as_bytes())?;
    Ok(Kernel {
        bzimage: report.image,
        config: report.config,
        system_map: report.system_map,
        config_changes: report.config_changes,
    })
}

/// What the kernel is built from, as text to compare with the last build's: the source tree
/// (its path and directory), the architecture, and the
/// config fragments merged with the requirements, as kbuild gets them. The initramfs and the
/// command line are not among them: they go into the image, not the kernel.
fn kernel_inputs(
    source: &Path,
    arch: &str,
    fragments: &[PathBuf],
    requirements: &Requirements,
) -> Result<String, KernelError> {
    let mut configs = Vec::with_capacity(fragments.len() + 1);
    for path in fragments {
        configs.push(kconfig::Config::load(path)?);
    }
    configs.push(requirements.as_fragment());
    // The directory's identity too: kernel sources imported again under the same name are at
    // the same path, but in a new directory.
    let identity = fs::metadata(source).map_err(io_err("read", source))?;
    Ok(format!(
        "source={} (inode {}, changed {}.{:09})\narch={arch}\n\n{}",
        source.display(),
        identity.ino(),
        identity.ctime(),
        identity.ctime_nsec(),
        kconfig::merge(&configs)
    ))
}

/// The address after the stub's last section, where the added sections may start.
fn stub_end(stub: &Path) -> Result<u64, KernelError> {
    let mut command = OBJDUMP.command();
    command.arg("-h").arg(stub);
    let output = OBJDUMP.output(command).map_err(|e| {
        KernelError::Failed(format!("reading the sections of {}: {e}", stub.display()))
    })?;
    let sections = pe_layout::parse_objdump(&String::from_utf8_lossy(&output.stdout));
    pe_layout::end_of(&sections).ok_or_else(|| {
        KernelError::Failed(format!(
            "`objdump -h {}` lists no sections; is it an EFI stub?",
            stub.display()
        ))
    })
}

/// A section to add to the stub, and the file that holds its contents.
struct Part<'a> {
    name: &'static str,
    contents: &'a Path,
}

/// Writes the stub with `parts` added to `output` (`objcopy` with `output` as its output), the
/// parts placed from `start` on, in order; returns where each went. An empty part is left out:
/// `objcopy` would drop it anyway, and the stub treats a missing `.cmdline` as an empty one.
fn assemble(
    stub: &Path,
    start: u64,
    parts: &[Part],
    output: &Path,
) -> Result<Vec<Section>, KernelError> {
    let mut sized = Vec::with_capacity(parts.len());
    for part in parts {
        let size = fs::metadata(part.contents)
            .map_err(io_err("inspect", part.contents))?
            .len();
        if size > 0 {
            sized.push((part, size));
        }
    }
    let sizes: Vec<u64> = sized.iter().map(|(_, size)| *size).collect();
    let placed: Vec<Section> = sized
        .iter()
        .zip(pe_layout::place(start, &sizes))
        .map(|((part, size), vma)| Section {
            name: part.name.to_owned(),
            size: *size,
            vma,
        })
        .collect();
    let mut command = OBJCOPY.command();
    for ((part, _), section) in sized.iter().zip(&placed) {
        command.args(section_args(section, part.contents));
    }
    command.arg(stub).arg(output);
    OBJCOPY
        .output(command)
        .map_err(|e| KernelError::Failed(format!("assembling {}: {e}", output.display())))?;
    Ok(placed)
}

/// `objcopy`'s arguments that add one section at its address, as initialised read-only data
/// (what binutils gives an added section by default, stated so no version can differ).
fn section_args(section: &Section, contents: &Path) -> Vec<OsString> {
    let name = &section.name;
    let mut add = OsString::from(format!("{name}="));
    add.push(contents);
    vec![
        "--add-section".into(),
        add,
        "--set-section-flags".into(),
        format!("{name}=data,readonly").into(),
        "--change-section-vma".into(),
        format!("{name}={:#x}", section.vma).into(),
    ]
}

/// The os-release the stub reads from `.osrel`, which boot loaders show in their menus.
fn os_release(system: &str) -> String {
    format!("NAME=autogentoo\nID=autogentoo\nPRETTY_NAME=\"autogentoo {system}\"\n")
}

/// Assembles the image in the build directory, then writes the results as outputs that appear
/// whole, the manifest last, as it describes the set.
fn publish(
    job: &KernelJob,
    dir: &BuildDir,
    stub: &Path,
    stub_end: u64,
    kernel: &Kernel,
) -> Result<KernelReport, KernelError> {
    let [image, config, system_map, manifest] = job.outputs();
    // Refused before objcopy runs, when one of them cannot be a file.
    for path in job.outputs() {
        output_file::check_target(&path)?;
    }
    let osrel = dir.0.join("uki.osrel");
    output_file::write(&osrel, os_release(job.system).as_bytes())?;
    let cmdline = dir.0.join("uki.cmdline");
    output_file::write(&cmdline, job.cmdline.unwrap_or_default().as_bytes())?;
    // objcopy writes a named file; it is made here, under a name each build reuses.
    let assembled = dir.0.join("uki.efi");
    assemble(
        stub,
        stub_end,
        &[
            Part {
                name: ".osrel",
                contents: &osrel,
            },
            Part {
                name: ".cmdline",
                contents: &cmdline,
            },
            Part {
                name: ".linux",
                contents: &kernel.bzimage,
            },
            Part {
                name: ".initrd",
                contents: job.initramfs,
            },
        ],
        &assembled,
    )?;
    let sha256 = sha256_file(&assembled)?;
    let described = serde_json::json!({
        "image": file_name(&image),
        "builder": Uki::NAME,
        "sha256": sha256,
        "config_sha256": sha256_file(&kernel.config)?,
        "kernel_sha256": sha256_file(&kernel.bzimage)?,
        "inputs": job.inputs,
    });
    let text = serde_json::to_vec_pretty(&described).expect("the manifest serialises");
    let mut outputs = Vec::new();
    for (from, to) in [
        (&assembled, &image),
        (&kernel.config, &config),
        (&kernel.system_map, &system_map),
    ] {
        outputs.push(copy_output(from, to)?);
    }
    let mut described = OutputFile::create(&manifest)?;
    described
        .write_all(&text)
        .map_err(io_err("write", &manifest))?;
    outputs.push(described);
    for output in outputs {
        output.commit()?;
    }
    Ok(KernelReport {
        image,
        config,
        system_map,
        manifest,
        sha256,
        config_changes: kernel.config_changes.clone(),
    })
}

/// A copy of `from` as the output `to`, committed by the caller.
fn copy_output(from: &Path, to: &Path) -> Result<OutputFile, KernelError> {
    let mut source = fs::File::open(from).map_err(io_err("open", from))?;
    let mut output = OutputFile::create(to)?;
    io::copy(&mut source, &mut output).map_err(io_err("copy into", to))?;
    Ok(output)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use autogentoo_core::site_config::Compression;

    use super::*;

    #[test]
    fn the_stub_sections_end_where_objdump_says() {
        let end = stub_end(Path::new(Uki::STUB)).unwrap();
        assert!(end > 0x1000, "{end:#x}");
    }

    #[test]
    fn assembles_the_four_sections_after_the_stub() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            fs::write(&path, bytes).unwrap();
            path
        };
        let osrel = write("osrel", os_release("web").as_bytes());
        let cmdline = write("cmdline", b"console=ttyS0 rdinit=/init");
        // Not a kernel: objcopy copies the bytes and does not look inside.
        let bzimage = write("bzImage", &vec![0x5a; 300_001]);
        let initrd = write("initramfs.cpio.xz", &vec![0xa5; 70_000]);
        let output = dir.path().join("web.efi");
        let stub = Path::new(Uki::STUB);
        let start = stub_end(stub).unwrap();
        let parts = [
            Part {
                name: ".osrel",
                contents: &osrel,
            },
            Part {
                name: ".cmdline",
                contents: &cmdline,
            },
            Part {
                name: ".linux",
                contents: &bzimage,
            },
            Part {
                name: ".initrd",
                contents: &initrd,
            },
        ];
        let placed = assemble(stub, start, &parts, &output).unwrap();

        let listing = Command::new("objdump")
            .arg("-h")
            .arg(&output)
            .output()
            .unwrap();
        assert!(listing.status.success());
        let sections = pe_layout::parse_objdump(&String::from_utf8_lossy(&listing.stdout));
        let added: Vec<&Section> = sections
            .iter()
            .filter(|s| [".osrel", ".cmdline", ".linux", ".initrd"].contains(&s.name.as_str()))
            .collect();
        let names: Vec<&str> = added.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".osrel", ".cmdline", ".linux", ".initrd"]);
        assert_eq!(
            added.iter().map(|s| s.size).collect::<Vec<_>>(),
            [os_release("web").len() as u64, 26, 300_001, 70_000]
        );
        assert_eq!(
            added.iter().map(|s| (*s).clone()).collect::<Vec<_>>(),
            placed,
            "objdump shows what was placed"
        );
        assert!(added[0].vma >= start, "after the stub's sections");
        for pair in added.windows(2) {
            assert!(pair[0].end() <= pair[1].vma, "{pair:?} overlap");
        }
        for section in &added {
            assert_eq!(section.vma % pe_layout::SECTION_ALIGN, 0);
        }
        let stub_sections = sections.iter().filter(|s| !added.contains(s));
        assert!(stub_sections.clone().count() > 0);
        assert!(stub_sections
            .map(Section::end)
            .all(|end| end <= added[0].vma));

        // The sections hold the files, byte for byte.
        let linux = dir.path().join("linux.out");
        let copied = Command::new("objcopy")
            .arg("-O")
            .arg("binary")
            .arg("--only-section=.linux")
            .arg(&output)
            .arg(&linux)
            .status()
            .unwrap();
        assert!(copied.success());
        assert_eq!(fs::read(&linux).unwrap(), fs::read(&bzimage).unwrap());
    }

    #[test]
    fn an_empty_command_line_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("cmdline");
        fs::write(&empty, "").unwrap();
        let initrd = dir.path().join("initrd");
        fs::write(&initrd, "initrd").unwrap();
        let stub = Path::new(Uki::STUB);
        let placed = assemble(
            stub,
            stub_end(stub).unwrap(),
            &[
                Part {
                    name: ".cmdline",
                    contents: &empty,
                },
                Part {
                    name: ".initrd",
                    contents: &initrd,
                },
            ],
            &dir.path().join("out.efi"),
        )
        .unwrap();
        let names: Vec<&str> = placed.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, [".initrd"]);
    }

    #[test]
    fn objcopy_adds_each_section_at_its_address() {
        let section = Section {
            name: ".linux".into(),
            size: 10,
            vma: 0x1c000,
        };
        let args = section_args(&section, Path::new("/b/kernel/web.efi"));
        assert_eq!(
            args,
            [
                "--add-section",
                ".linux=/b/kernel/web.efi",
                "--set-section-flags",
                ".linux=data,readonly",
                "--change-section-vma",
                ".linux=0x1c000",
            ]
        );
    }

    #[test]
    fn kernel_inputs_follow_the_fragments_and_not_the_initramfs() {
        let dir = tempfile::tempdir().unwrap();
        let fragment = dir.path().join("kernel.config");
        fs::write(&fragment, "CONFIG_VIRTIO_BLK=y\n").unwrap();
        let fragments = [fragment.clone()];
        let requirements = Requirements::new(None, Compression::Xz, None).unwrap();
        let (old, new) = (dir.path().join("6.1"), dir.path().join("6.6"));
        fs::create_dir(&old).unwrap();
        fs::create_dir(&new).unwrap();
        let inputs =
            |source: &Path| kernel_inputs(source, "x86", &fragments, &requirements).unwrap();
        let first = inputs(&old);
        assert_eq!(first, inputs(&old));
        assert!(first.contains("CONFIG_VIRTIO_BLK=y"), "{first}");
        assert!(first.contains("CONFIG_RD_XZ=y"), "{first}");
        assert!(!first.contains("INITRAMFS_SOURCE"), "{first}");
        assert!(!first.contains("CONFIG_CMDLINE"), "{first}");
        assert_ne!(first, inputs(&new));
        fs::write(&fragment, "CONFIG_VIRTIO_BLK=m\n").unwrap();
        assert_ne!(first, inputs(&old));
        fs::write(&fragment, "CONFIG_VIRTIO_BLK=y\n").unwrap();
        fs::remove_dir(&old).unwrap();
        fs::create_dir(&old).unwrap();
        assert_ne!(
            first,
            inputs(&old),
            "sources imported again are new sources"
        );
    }

    #[test]
    fn a_missing_initramfs_or_stub_is_refused_before_anything_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let build_dir = dir.path().join("build");
        let initramfs = dir.path().join("initramfs.cpio.xz");
        let job = KernelJob {
            system: "web",
            root: "web",
            root_path: dir.path(),
            source: dir.path(),
            build_dir: &build_dir,
            fragments: &[],
            initramfs: &initramfs,
            compression: Compression::Xz,
            cmdline: None,
            arch: "x86",
            jobs: 1,
            out_dir: dir.path(),
            inputs: &[],
        };
        let builder: Box<dyn KernelBuilder> = Box::new(Uki::new());
        match builder.build(&job).unwrap_err() {
            KernelError::NoInitramfs(path) => assert_eq!(path, initramfs),
            other => panic!("{other:?}"),
        }
        assert!(!build_dir.exists());

        // With the initramfs there but no stub: an error saying what to install, and still
        // nothing built or written.
        fs::write(&initramfs, b"not looked at").unwrap();
        let out_dir = dir.path().join("out");
        let job = KernelJob {
            out_dir: &out_dir,
            ..job
        };
        let without_stub = Uki {
            stub: dir.path().join("no-such.efi.stub"),
        };
        match without_stub.build(&job).unwrap_err() {
            KernelError::Failed(message) => {
                assert!(message.contains("install systemd-boot-efi"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        assert!(!build_dir.exists() && !out_dir.exists());
    }
}
