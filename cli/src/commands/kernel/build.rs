//! `autogentoo kernel build`, and the kernel step of `build SYSTEM`.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use autogentoo_core::kconfig::Requirements;
use autogentoo_core::kernel_build::{self, KernelError, KernelReport, Make};
use autogentoo_core::root_mounts::{self, mount_all};
use autogentoo_core::site_config::{Compression, KernelBuildPlace, SystemConfig};
use autogentoo_core::storage::{Storage, VolumeId, VolumeKind};
use clap::Args;

use crate::context::Context;
use crate::output;

/// Build a system's EFI-stub kernel with its packed initramfs embedded: `make olddefconfig` and
/// `make bzImage` out of tree, inside the root (its toolchain) or with --host on the host. The
/// config is allnoconfig plus the system's kernel config, its hardware overlays' fragments and
/// what the pipeline needs. Results go to WORKDIR/out/SYSTEM/: SYSTEM.efi, SYSTEM.config,
/// SYSTEM.System.map and a manifest; the build log is WORKDIR/kbuild/SYSTEM/build.log.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The root whose initramfs is embedded
    pub root: String,

    /// The system of the site config [default: the one whose root this is]
    #[arg(long)]
    pub system: Option<String>,

    /// The kernel volume [default: the system's `kernel`, or the only one]
    #[arg(long)]
    pub kernel: Option<String>,

    /// Build with the host's toolchain instead of the root's
    #[arg(long)]
    pub host: bool,

    /// The initramfs [default: WORKDIR/out/ROOT/initramfs.cpio.gz (or .zst, or plain)]
    #[arg(long, value_name = "FILE")]
    pub initramfs: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: BuildArgs) -> Result<()> {
    let (name, system) = system_of_root(ctx, args.system.as_deref(), &args.root)?;
    let compression = ctx.config.pack.compression;
    let initramfs = args
        .initramfs
        .unwrap_or_else(|| default_initramfs(ctx, &args.root, compression));
    let job = KernelJob {
        system_name: &name,
        system: &system,
        root: &args.root,
        kernel: args.kernel.as_deref(),
        place: if args.host {
            KernelBuildPlace::Host
        } else {
            KernelBuildPlace::Root
        },
        initramfs: &initramfs,
        compression,
    };
    let report = build_kernel(ctx, &job)?;
    if ctx.json {
        output::json(&report);
    } else {
        println!("{}", report.image.display());
    }
    Ok(())
}

/// Where `root pack` puts a root's initramfs by default.
pub fn default_initramfs(ctx: &Context, root: &str, compression: Compression) -> PathBuf {
    let file = match compression {
        Compression::Gzip => "initramfs.cpio.gz",
        Compression::Zstd => "initramfs.cpio.zst",
        Compression::None => "initramfs.cpio",
    };
    ctx.layout().out().join(root).join(file)
}

/// The system a root belongs to: named, or the only system of the site config using that root.
fn system_of_root(
    ctx: &Context,
    named: Option<&str>,
    root: &str,
) -> Result<(String, SystemConfig)> {
    if let Some(name) = named {
        return Ok((name.to_owned(), ctx.config.system(name)?.clone()));
    }
    let matching: Vec<(&String, &SystemConfig)> = ctx
        .config
        .systems
        .iter()
        .filter(|(name, s)| s.root_name(name) == root)
        .collect();
    match matching.as_slice() {
        [(name, system)] => Ok(((*name).clone(), (*system).clone())),
        [] => bail!("no system of the site config uses root '{root}'; pass --system or --config"),
        _ => bail!("several systems use root '{root}'; pass --system"),
    }
}

/// One kernel build: for `kernel build` and for the pipeline.
pub struct KernelJob<'a> {
    pub system_name: &'a str,
    pub system: &'a SystemConfig,
    pub root: &'a str,
    pub kernel: Option<&'a str>,
    pub place: KernelBuildPlace,
    pub initramfs: &'a Path,
    pub compression: Compression,
}

/// The kernel volume: named, the system's, or the only one there is.
pub fn kernel_volume(storage: &dyn Storage, named: Option<&str>) -> Result<VolumeId> {
    if let Some(name) = named {
        return Ok(VolumeId::new(VolumeKind::Kernel, name)?);
    }
    let kernels = storage.list(VolumeKind::Kernel)?;
    match kernels.as_slice() {
        [only] => Ok(only.id.clone()),
        [] => {
            bail!("no kernel sources imported; run `autogentoo kernel import SOURCE --name NAME`")
        }
        _ => bail!("several kernel volumes; name one with --kernel or the system's `kernel`"),
    }
}

/// The config fragments of a system, in order: its kernel config, then a `NAME.kconfig` beside
/// each overlay directory that has one (`overlays/hardware/qemu-x86_64.kconfig`).
pub fn fragments(ctx: &Context, system: &SystemConfig) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    if let Some(path) = &system.kernel_config {
        out.push(path.clone());
    }
    for overlay in &system.overlays {
        let dir = ctx.config.overlay_dir(overlay)?;
        let mut fragment = dir.clone().into_os_string();
        fragment.push(".kconfig");
        let fragment = PathBuf::from(fragment);
        if fragment.is_file() {
            out.push(fragment);
        }
    }
    Ok(out)
}

pub fn build_kernel(ctx: &Context, job: &KernelJob) -> Result<KernelReport> {
    let storage = ctx.storage()?;
    let layout = ctx.layout();
    let kernel = kernel_volume(&*storage, job.kernel.or(job.system.kernel.as_deref()))?;
    let volume = storage.get(&kernel)?;
    let source = kernel_build::find_source(&volume.path)?;
    if !job.initramfs.is_file() {
        bail!(
            "{} does not exist; pack the root first (`autogentoo root pack {}`)",
            job.initramfs.display(),
            job.root
        );
    }
    let build_dir = layout.kernel_builds().join(job.system_name);
    std::fs::create_dir_all(&build_dir)
        .with_context(|| format!("cannot create {}", build_dir.display()))?;
    let log = build_dir.join("build.log");
    let initramfs_dir = job.initramfs.parent().expect("a file has a directory");
    let file_name = job.initramfs.file_name().expect("a file has a name");

    let host = HostMake {
        source: source.clone(),
        build_dir: build_dir.clone(),
        log: log.clone(),
    };
    let in_root;
    let (make, seen_initramfs): (&dyn Make, PathBuf) = match job.place {
        KernelBuildPlace::Host => (&host, job.initramfs.to_owned()),
        KernelBuildPlace::Root => {
            let root = storage.path(&VolumeId::new(VolumeKind::Root, job.root)?)?;
            let plan = root_mounts::kernel_plan(&source, &build_dir, initramfs_dir);
            mount_all(&root, &plan)
                .with_context(|| format!("cannot mount the kernel into root '{}'", job.root))?;
            in_root = RootMake {
                command: ctx.reinvoke(),
                root: job.root.to_owned(),
                log: log.clone(),
            };
            let seen = Path::new("/")
                .join(root_mounts::INITRAMFS_TARGET)
                .join(file_name);
            (&in_root, seen)
        }
    };
    let requirements = Requirements::new(
        Some(&seen_initramfs),
        job.compression,
        job.system.cmdline.as_deref(),
    )?;
    let inputs = vec![
        (
            "initramfs_sha256".to_owned(),
            kernel_build::sha256_file(job.initramfs)?,
        ),
        (
            "kernel".to_owned(),
            format!("{} (created {})", kernel.name(), volume.created),
        ),
        (
            "built_in".to_owned(),
            format!("{:?}", job.place).to_lowercase(),
        ),
    ];
    let fragments = fragments(ctx, job.system)?;
    let jobs = ctx.config.build.jobs;
    let request = kernel_build::KernelBuildRequest {
        source: &source,
        build_dir: &build_dir,
        fragments: &fragments,
        requirements: &requirements,
        arch: "x86",
        jobs,
        make,
        out_dir: &layout.out().join(job.system_name),
        name: job.system_name,
        inputs: &inputs,
    };
    kernel_build::build(&request)
        .with_context(|| format!("cannot build the kernel of system '{}'", job.system_name))
}

/// `make` on the host, with the host's toolchain.
struct HostMake {
    source: PathBuf,
    build_dir: PathBuf,
    log: PathBuf,
}

impl Make for HostMake {
    fn build_dir(&self) -> PathBuf {
        self.build_dir.clone()
    }

    fn make(&self, args: &[String]) -> Result<(), KernelError> {
        let mut command = Command::new("make");
        command
            .arg("-C")
            .arg(&self.source)
            .arg(format!("O={}", self.build_dir.display()))
            .args(args);
        run_logged(command, &self.log, args)
    }
}

/// `make` inside the root (its toolchain), through `root run`: the sources, build directory and
/// initramfs are bound in by `kernel mount`.
struct RootMake {
    command: Command,
    root: String,
    log: PathBuf,
}

impl Make for RootMake {
    fn build_dir(&self) -> PathBuf {
        Path::new("/").join(root_mounts::KERNEL_BUILD_TARGET)
    }

    fn make(&self, args: &[String]) -> Result<(), KernelError> {
        let mut command = Command::new(self.command.get_program());
        command.args(self.command.get_args());
        command.args(["root", "run", &self.root, "--", "make", "-C"]);
        command.arg(Path::new("/").join(root_mounts::KERNEL_SOURCE_TARGET));
        command.arg(format!("O={}", self.build_dir().display()));
        command.args(args);
        run_logged(command, &self.log, args)
    }
}

/// Runs a command with its output appended to the build log.
fn run_logged(mut command: Command, log: &Path, args: &[String]) -> Result<(), KernelError> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(autogentoo_core::storage::io_err("open", log))?;
    let err = file
        .try_clone()
        .map_err(autogentoo_core::storage::io_err("open", log))?;
    tracing::info!("make {}", args.join(" "));
    let status = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .map_err(autogentoo_core::storage::io_err("run make for", log))?;
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
