//! Building an EFI-stub kernel with the initramfs embedded, out of tree: the sources (a sealed
//! kernel volume) are only read, and each system keeps its own build directory, so a rebuild
//! after only the initramfs changed is a relink.
//!
//! The config starts from `allnoconfig` with the site's fragments (the system's kernel config,
//! then the hardware overlays' fragments, in order) and what the pipeline needs (see
//! [`crate::kernel::kconfig`]); after `make olddefconfig` it is checked again, since Kconfig silently
//! drops an option whose dependencies are unmet. `make` runs on the host or inside the root
//! (its toolchain): [`Kbuild`] is the built-in [`KernelBuilder`] for either place, and
//! [`build`] with a [`Make`] of one's own is there for builders that plugins write.

use std::ffi::OsString;
use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use rustix::fs::{FileType, Mode, OFlags};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::arch::Arch;
use crate::chroot::root_mounts;
use crate::files::bounded_read::{self, Limit, ReadError};
use crate::files::in_root::RootDir;
use crate::files::output_file::{self, OutputError, OutputFile};
use crate::kernel::kconfig::{self, Requirements};
use crate::kernel::{self, KernelBuilder, KernelBuilderCapabilities, KernelJob};
use crate::storage::{io_err, StorageError};

/// kbuild, on the host or inside the root: the built-in kernel builders.
pub struct Kbuild {
    place: Place,
}

enum Place {
    Host,
    /// Inside the root through `PROGRAM… root run ROOT -- make …`, PROGRAM being this program
    /// with its global options.
    Root {
        program: Vec<OsString>,
    },
}

impl Kbuild {
    /// The name of the builder that uses the host's toolchain.
    pub const HOST: &'static str = "host";
    /// The name of the builder that uses the root's toolchain.
    pub const ROOT: &'static str = "root";

    /// Builds with the host's `make` and compiler.
    pub fn host() -> Self {
        Self { place: Place::Host }
    }

    /// Builds inside the root with its toolchain; `program` is this program and the global
    /// options it needs to find the root again (`/proc/self/exe --workdir …`).
    pub fn in_root(program: Vec<OsString>) -> Self {
        Self {
            place: Place::Root { program },
        }
    }
}

impl KernelBuilder for Kbuild {
    fn name(&self) -> &str {
        match self.place {
            Place::Host => Self::HOST,
            Place::Root { .. } => Self::ROOT,
        }
    }

    fn capabilities(&self) -> KernelBuilderCapabilities {
        KernelBuilderCapabilities {
            uses_root: matches!(self.place, Place::Root { .. }),
            links_initramfs: true,
        }
    }

    fn build(&self, job: &KernelJob) -> Result<KernelReport, KernelError> {
        if !job.initramfs.is_file() {
            return Err(KernelError::NoInitramfs(job.initramfs.to_owned()));
        }
        fs::create_dir_all(job.build_dir).map_err(io_err("create", job.build_dir))?;
        let log = job.build_dir.join("build.log");
        let host;
        let in_root;
        let (make, seen_initramfs): (&dyn Make, PathBuf) = match &self.place {
            Place::Host => {
                host = HostMake {
                    source: job.source.to_owned(),
                    build_dir: job.build_dir.to_owned(),
                    log,
                    cross: cross_args(job.arch)?,
                };
                (&host, job.initramfs.to_owned())
            }
            Place::Root { program } => {
                // Bound for each make in its own namespace, never in ours: a killed build leaves
                // nothing mounted in the root.
                let initramfs_dir = job.initramfs.parent().unwrap_or(Path::new("/"));
                in_root = RootMake {
                    program: program.clone(),
                    root: job.root.to_owned(),
                    binds: [job.source, job.build_dir, initramfs_dir].map(Path::to_owned),
                    log,
                };
                let file_name = job.initramfs.file_name().unwrap_or_default();
                let seen = Path::new("/")
                    .join(root_mounts::INITRAMFS_TARGET)
                    .join(file_name);
                (&in_root, seen)
            }
        };
        let requirements = Requirements::new(Some(&seen_initramfs), job.compression, job.cmdline)?
            .for_arch(job.arch);
        build(&KernelBuildRequest {
            source: job.source,
            build_dir: job.build_dir,
            fragments: job.fragments,
            requirements: &requirements,
            arch: job.arch,
            jobs: job.jobs,
            make,
            out_dir: job.out_dir,
            name: job.system,
            inputs: job.inputs,
        })
    }
}

/// Runs `make` in the kernel source tree with `O=` the build directory, as the runner sees
/// them, appending its output to the build log.
pub trait Make {
    /// The build directory as `make` sees it (a path inside the root for in-root builds).
    fn build_dir(&self) -> PathBuf;
    /// Runs `make ARGS…`; an unsuccessful exit is an error naming the target and the log.
    fn make(&self, args: &[String]) -> Result<(), KernelError>;
}

/// Why a kernel build failed.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Config(#[from] kconfig::KconfigError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error(transparent)]
    Unreadable(#[from] ReadError),
    #[error("`make {target}` failed ({status}); see {}", .log.display())]
    Make {
        target: String,
        status: String,
        log: PathBuf,
    },
    #[error("autogentoo builds no kernels for the architecture '{0}' (the kernel's ARCH); it knows x86, arm64, arm, riscv and powerpc")]
    UnknownArch(String),
    #[error("{gcc} is missing, so no kernel for {arch} can be built on this host; apt-get install gcc-{}", gcc.trim_end_matches("-gcc"))]
    NoCrossCompiler { arch: &'static str, gcc: String },
    #[error("{}: no kernel source tree (a directory with Makefile and Kconfig) in it", .0.display())]
    NoSource(PathBuf),
    #[error("{} does not exist; pack the root first (`autogentoo root pack ROOT`)", .0.display())]
    NoInitramfs(PathBuf),
    /// A plugin's builder failed; its message, causes included.
    #[error("{0}")]
    Failed(String),
}

/// What to build.
pub struct KernelBuildRequest<'a> {
    /// The kernel source tree on the host.
    pub source: &'a Path,
    /// The build directory on the host (kept between builds).
    pub build_dir: &'a Path,
    /// Config fragments, in order (later ones win).
    pub fragments: &'a [PathBuf],
    pub requirements: &'a Requirements,
    /// The kernel's name for the architecture (`x86` for x86_64).
    pub arch: &'a str,
    pub jobs: u32,
    pub make: &'a dyn Make,
    /// Where the results go: `NAME.efi`, `NAME.config`, `NAME.System.map`, `NAME.manifest.json`.
    pub out_dir: &'a Path,
    pub name: &'a str,
    /// Hashes of the inputs, recorded in the manifest (initramfs, kernel volume, …).
    pub inputs: &'a [(String, String)],
}

/// What a build produced.
#[derive(Debug, Serialize)]
pub struct KernelReport {
    pub image: PathBuf,
    pub config: PathBuf,
    pub system_map: PathBuf,
    pub manifest: PathBuf,
    pub sha256: String,
    /// The config changes the pipeline made to the merged fragments.
    pub config_changes: Vec<String>,
}

#[derive(Serialize)]
struct Manifest<'a> {
    image: String,
    sha256: &'a str,
    config_sha256: String,
    inputs: &'a [(String, String)],
}

/// The kernel source tree in a volume: the volume itself, or its only directory (tarballs of
/// kernel sources hold one top directory).
pub fn find_source(volume: &Path) -> Result<PathBuf, KernelError> {
    let is_tree = |p: &Path| p.join("Makefile").is_file() && p.join("Kconfig").is_file();
    if is_tree(volume) {
        return Ok(volume.to_owned());
    }
    let entries: Vec<PathBuf> = fs::read_dir(volume)
        .map_err(io_err("read", volume))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    match entries.as_slice() {
        [only] if is_tree(only) => Ok(only.clone()),
        _ => Err(KernelError::NoSource(volume.to_owned())),
    }
}

/// Configures and builds; see the module documentation.
///
/// The build directory is bound read-write into the root for the `root` builder (and by `kernel
/// mount`), so whatever runs in the root can put anything there: everything read from it is
/// resolved inside it, as the root sees it, and everything written to it replaces what is there
/// rather than following it.
pub fn build(request: &KernelBuildRequest) -> Result<KernelReport, KernelError> {
    let build_dir = request.build_dir;
    // An output that cannot be written is refused before minutes of make.
    for output in kernel::outputs(request.out_dir, request.name) {
        output_file::check_target(&output)?;
    }
    fs::create_dir_all(build_dir).map_err(io_err("create", build_dir))?;
    let tree = RootDir::open(build_dir)?;

    // 1. allnoconfig with the fragments and what we need, when the fragments changed.
    let mut fragments = Vec::new();
    for path in request.fragments {
        fragments.push(kconfig::Config::load(path)?);
    }
    fragments.push(request.requirements.as_fragment());
    let merged = kconfig::merge(&fragments).to_string();
    let fragment_path = build_dir.join(FRAGMENT);
    let previous = bounded_read::read_in(&tree, Path::new(FRAGMENT), Limit::KERNEL_CONFIG).ok();
    let configured =
        bounded_read::open_regular_in(&tree, Path::new(CONFIG), "kernel config").is_ok();
    if previous.as_deref() != Some(merged.as_bytes()) || !configured {
        output_file::write(&fragment_path, merged.as_bytes())?;
        let seen = request.make.build_dir().join(FRAGMENT);
        request.make.make(&[
            format!("KCONFIG_ALLCONFIG={}", seen.display()),
            "allnoconfig".to_owned(),
        ])?;
    }

    // 2. What the pipeline needs, then olddefconfig, then check nothing was dropped.
    let mut config = kconfig::Config::load_in(&tree, Path::new(CONFIG))?;
    let changes = kconfig::apply(&mut config, request.requirements);
    if !changes.is_empty() {
        config.save(&build_dir.join(CONFIG))?;
    }
    request.make.make(&["olddefconfig".to_owned()])?;
    let config = kconfig::Config::load_in(&tree, Path::new(CONFIG))?;
    kconfig::verify_after_olddefconfig(
        &config,
        request.requirements,
        request.source,
        request.arch,
    )?;

    // 3. The image: after an initramfs-only change, make relinks.
    let target = Arch::of_kernel(request.arch)
        .ok_or_else(|| KernelError::UnknownArch(request.arch.to_owned()))?
        .kernel_image();
    make_image(request.make, build_dir, request.jobs, target)?;

    // 4. The results, as outputs; the old manifest goes first and the new one comes last, so
    // that a manifest never describes files that are not the ones beside it.
    fs::create_dir_all(request.out_dir).map_err(io_err("create", request.out_dir))?;
    let [image, config_out, map_out, manifest_out] = kernel::outputs(request.out_dir, request.name);
    output_file::retract(&manifest_out)?;
    let built = PathBuf::from(format!("arch/{}/boot/{target}", request.arch));
    let sha256 = publish_copy(&tree, &built, &image)?;
    let config_sha256 = publish_copy(&tree, Path::new(CONFIG), &config_out)?;
    publish_copy(&tree, Path::new("System.map"), &map_out)?;
    let manifest = Manifest {
        image: image
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: &sha256,
        config_sha256,
        inputs: request.inputs,
    };
    let text = serde_json::to_vec_pretty(&manifest).expect("the manifest serialises");
    output_file::write(&manifest_out, &text)?;
    Ok(KernelReport {
        image,
        config: config_out,
        system_map: map_out,
        manifest: manifest_out,
        sha256,
        config_changes: changes.iter().map(ToString::to_string).collect(),
    })
}

/// `make TARGET` in the build directory, marked unfinished while it runs. A make that was killed
/// (the build was, or the host went down) can leave an object written in part but newer than its
/// source, which the next make takes as built and fails on: when a make after an unfinished one
/// fails, the tree is cleaned (`make clean` keeps `.config`) and built once more.
fn make_image(
    make: &dyn Make,
    build_dir: &Path,
    jobs: u32,
    target: &str,
) -> Result<(), KernelError> {
    let marker = build_dir.join(UNFINISHED);
    let interrupted = fs::symlink_metadata(&marker).is_ok();
    output_file::write(
        &marker,
        b"a make of the image started here and has not ended\n",
    )?;
    let image = [format!("-j{}", jobs.max(1)), target.to_owned()];
    match make.make(&image) {
        Err(KernelError::Make { .. }) if interrupted => {
            tracing::warn!(
                "make {target} failed after an interrupted one in {}; cleaning the tree and building it again",
                build_dir.display()
            );
            make.make(&["clean".to_owned()])?;
            make.make(&image)?;
        }
        result => result?,
    }
    fs::remove_file(&marker).map_err(io_err("remove", &marker))?;
    Ok(())
}

/// Present in the build directory while a make of the image runs; see [`make_image`].
const UNFINISHED: &str = "autogentoo.unfinished";
/// The merged config fragments, in the build directory.
const FRAGMENT: &str = "autogentoo.fragment";
/// kbuild's config, in the build directory.
const CONFIG: &str = ".config";

/// Copies `inner` of the build directory (resolved inside it) to the output `to`, which appears
/// whole or not at all; returns the copy's SHA-256.
fn publish_copy(tree: &RootDir, inner: &Path, to: &Path) -> Result<String, KernelError> {
    let (mut source, _) = bounded_read::open_regular_in(tree, inner, "build result")?;
    let mut output = OutputFile::create(to)?;
    std::io::copy(&mut source, &mut output).map_err(io_err("copy into", to))?;
    let (_, sha256) = output.digest()?;
    output.commit()?;
    Ok(sha256)
}

/// SHA256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, StorageError> {
    let mut file = fs::File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_err("read", path))?;
    Ok(crate::files::digests::hex(&hasher.finalize()))
}

/// `make` on the host, with the host's toolchain, its output appended to `log`; it and every
/// process it starts end when the build does, also when the build is killed.
pub struct HostMake {
    pub source: PathBuf,
    pub build_dir: PathBuf,
    pub log: PathBuf,
    /// `ARCH=… CROSS_COMPILE=…` for a kernel of another architecture than the host's.
    pub cross: Vec<String>,
}

/// What make on the host needs to build a kernel for `arch` (the kernel's name): nothing for
/// the host's own, else `ARCH` and Debian's cross toolchain, which must be installed.
pub fn cross_args(arch: &str) -> Result<Vec<String>, KernelError> {
    let target = Arch::of_kernel(arch).ok_or_else(|| KernelError::UnknownArch(arch.to_owned()))?;
    if target.kernel == Arch::host().kernel {
        return Ok(Vec::new());
    }
    let gcc = format!("{}gcc", target.cross_prefix);
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(&gcc).is_file()));
    if !found {
        return Err(KernelError::NoCrossCompiler {
            arch: target.gentoo,
            gcc,
        });
    }
    Ok(vec![
        format!("ARCH={}", target.kernel),
        format!("CROSS_COMPILE={}", target.cross_prefix),
    ])
}

impl Make for HostMake {
    fn build_dir(&self) -> PathBuf {
        self.build_dir.clone()
    }

    fn make(&self, args: &[String]) -> Result<(), KernelError> {
        // make in a PID namespace of its own, as its PID 1, killed when `unshare` dies (which
        // dies with us): kbuild's sub-makes and compilers go with it, instead of building on for
        // minutes after a killed build, alongside the next one.
        let mut command = Command::new("unshare");
        command
            .args(["--pid", "--kill-child", "--", "make"])
            .arg("-C")
            .arg(&self.source)
            .arg(format!("O={}", self.build_dir.display()))
            .args(&self.cross)
            .args(args);
        run_logged(command, &self.log, args)
    }
}

/// `make` inside the root (its toolchain), through `root run`: the sources, build directory and
/// initramfs are bound in by [`root_mounts::kernel_plan`].
struct RootMake {
    program: Vec<OsString>,
    root: String,
    /// The kernel sources, the build directory and the initramfs directory, bound into the
    /// root for make (see [`root_mounts::kernel_plan`]).
    binds: [PathBuf; 3],
    log: PathBuf,
}

impl Make for RootMake {
    fn build_dir(&self) -> PathBuf {
        Path::new("/").join(root_mounts::KERNEL_BUILD_TARGET)
    }

    fn make(&self, args: &[String]) -> Result<(), KernelError> {
        let (program, options) = self
            .program
            .split_first()
            .expect("the program to run is named");
        let mut command = Command::new(program);
        command.args(options);
        command.args(["root", "run", &self.root, "--kernel"]);
        command.args(&self.binds);
        command.args(["--", "make", "-C"]);
        command.arg(Path::new("/").join(root_mounts::KERNEL_SOURCE_TARGET));
        command.arg(format!("O={}", self.build_dir().display()));
        command.args(args);
        run_logged(command, &self.log, args)
    }
}

/// Opens the build log for appending, creating it if missing. It sits in a build directory a
/// root can write to: a symlink there is not followed, and anything but a regular file (a fifo
/// that would block us, a device whose driver would act on the open) is refused unopened.
fn open_log(log: &Path) -> Result<fs::File, KernelError> {
    let fail = |e: rustix::io::Errno| KernelError::from(io_err("open", log)(e.into()));
    let append = OFlags::WRONLY | OFlags::APPEND | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(
        log,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(located) => {
            let st = rustix::fs::fstat(&located).map_err(fail)?;
            let file_type = FileType::from_raw_mode(st.st_mode);
            if file_type != FileType::RegularFile {
                let kind = crate::files::bounded_read::FileKind::of_raw(file_type);
                return Err(io_err("append to", log)(std::io::Error::other(format!(
                    "it is {kind}, not a regular file; remove it"
                )))
                .into());
            }
            let proc = format!("/proc/self/fd/{}", located.as_raw_fd());
            rustix::fs::open(proc.as_str(), append, Mode::empty()).map_err(fail)?
        }
        Err(rustix::io::Errno::NOENT) => rustix::fs::open(
            log,
            append | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
            Mode::from_raw_mode(0o644),
        )
        .map_err(fail)?,
        Err(e) => return Err(fail(e)),
    };
    Ok(fs::File::from(fd))
}

/// Runs a command with its output appended to the build log; a failure names the target and
/// the log.
fn run_logged(mut command: Command, log: &Path, args: &[String]) -> Result<(), KernelError> {
    let file = open_log(log)?;
    let err = file.try_clone().map_err(io_err("open", log))?;
    tracing::info!("make {}", args.join(" "));
    // make (or the `root run` around it) must not go on building for a build that was killed.
    crate::chroot::root_run::tie_to_us(&mut command)?;
    let status = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(io_err("run make for", log))?;
    if status.success() {
        Ok(())
    } else {
        Err(KernelError::Make {
            target: args.join(" "),
            status: status.to_string(),
            log: log.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A make that fails the image `fail_image` times, recording what it was asked to run.
    struct Scripted {
        dir: PathBuf,
        fail_image: RefCell<u32>,
        ran: RefCell<Vec<String>>,
    }

    impl Make for Scripted {
        fn build_dir(&self) -> PathBuf {
            self.dir.clone()
        }

        fn make(&self, args: &[String]) -> Result<(), KernelError> {
            let target = args.last().cloned().unwrap_or_default();
            self.ran.borrow_mut().push(target.clone());
            let mut fail = self.fail_image.borrow_mut();
            if target == "bzImage" && *fail > 0 {
                *fail -= 1;
                return Err(KernelError::Make {
                    target,
                    status: "exit status: 2".into(),
                    log: self.dir.join("build.log"),
                });
            }
            Ok(())
        }
    }

    fn scripted(dir: &Path, fail_image: u32) -> Scripted {
        Scripted {
            dir: dir.to_owned(),
            fail_image: RefCell::new(fail_image),
            ran: RefCell::new(Vec::new()),
        }
    }

    #[test]
    fn a_failed_make_after_an_interrupted_one_cleans_and_builds_again() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(UNFINISHED), "").unwrap();
        let make = scripted(dir.path(), 1);
        make_image(&make, dir.path(), 2, "bzImage").unwrap();
        assert_eq!(*make.ran.borrow(), ["bzImage", "clean", "bzImage"]);
        assert!(!dir.path().join(UNFINISHED).exists(), "the mark goes");
    }

    #[test]
    fn a_failed_make_after_a_finished_one_is_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let make = scripted(dir.path(), 1);
        let err = make_image(&make, dir.path(), 2, "bzImage").unwrap_err();
        assert!(matches!(err, KernelError::Make { .. }), "{err}");
        assert_eq!(*make.ran.borrow(), ["bzImage"]);
        assert!(
            dir.path().join(UNFINISHED).exists(),
            "the next build knows this one did not finish"
        );
    }

    #[test]
    fn a_second_failure_after_cleaning_is_the_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(UNFINISHED), "").unwrap();
        let make = scripted(dir.path(), 2);
        assert!(make_image(&make, dir.path(), 1, "bzImage").is_err());
        assert_eq!(*make.ran.borrow(), ["bzImage", "clean", "bzImage"]);
    }
}
