//! A system's kernel build: for the pipeline's kernel step and for `kernel build`.

use std::path::Path;

use autogentoo_core::arch::Arch;
use autogentoo_core::chroot::root_mounts::umount_all;
use autogentoo_core::kernel::kernel_build::{self, KernelReport};
use autogentoo_core::kernel::{KernelBuilder, KernelJob};
use autogentoo_core::site_config::{Compression, SiteConfig, SystemConfig};
use autogentoo_core::storage::workdir::Layout;
use autogentoo_core::storage::{Storage, StorageError, VolumeId, VolumeKind};

use crate::{PipelineError, ResultExt as _};

/// One kernel build.
pub struct KernelStep<'a> {
    pub config: &'a SiteConfig,
    pub storage: &'a dyn Storage,
    pub layout: &'a Layout,
    pub system_name: &'a str,
    pub system: &'a SystemConfig,
    pub root: &'a str,
    /// The kernel volume [default: the system's `kernel`, or the only one].
    pub kernel: Option<&'a str>,
    pub builder: &'a dyn KernelBuilder,
    pub initramfs: &'a Path,
    pub compression: Compression,
    /// Unmount the root after a builder that used it (the pipeline does; `kernel build` leaves
    /// the root as `kernel mount` would).
    pub unmount_after: bool,
}

/// The kernel volume: named, or the only one there is; it must exist.
pub fn kernel_volume(
    storage: &dyn Storage,
    named: Option<&str>,
) -> Result<VolumeId, PipelineError> {
    let listing = || "cannot list the kernel volumes".to_owned();
    if let Some(name) = named {
        let id = VolumeId::new(VolumeKind::Kernel, name).what(listing)?;
        return match storage.get(&id) {
            Ok(_) => Ok(id),
            Err(StorageError::NotFound(_)) => Err(PipelineError::MissingKernel {
                name: name.to_owned(),
            }),
            Err(other) => Err(other).what(listing),
        };
    }
    let kernels = storage.list(VolumeKind::Kernel).what(listing)?;
    match kernels.as_slice() {
        [only] => Ok(only.id.clone()),
        [] => Err(PipelineError::NoKernel),
        _ => Err(PipelineError::SeveralKernels),
    }
}

/// Builds a system's kernel with the step's builder: its config fragments, the kernel
/// volume's sources, the initramfs embedded; results in `out/SYSTEM/`.
pub fn build(step: &KernelStep) -> Result<KernelReport, PipelineError> {
    let KernelStep {
        storage, builder, ..
    } = *step;
    let kernel = kernel_volume(storage, step.kernel.or(step.system.kernel.as_deref()))?;
    let cannot = || format!("cannot build the kernel of system '{}'", step.system_name);
    let volume = storage.get(&kernel).what(cannot)?;
    let source = kernel_build::find_source(&volume.path).what(cannot)?;
    let root_id = VolumeId::new(VolumeKind::Root, step.root).what(cannot)?;
    let root_path = storage.path(&root_id).what(cannot)?;
    if !step.initramfs.is_file() {
        return Err(PipelineError::NoInitramfs {
            path: step.initramfs.to_owned(),
            root: step.root.to_owned(),
        });
    }
    let inputs = vec![
        (
            "initramfs_sha256".to_owned(),
            kernel_build::sha256_file(step.initramfs).what(cannot)?,
        ),
        (
            "kernel".to_owned(),
            format!("{} (created {})", kernel.name(), volume.created),
        ),
        ("builder".to_owned(), builder.name().to_owned()),
    ];
    let arch_name = step.system.arch(&step.config.build);
    let arch = Arch::named(arch_name).ok_or_else(|| PipelineError::KernelArch {
        system: step.system_name.to_owned(),
        arch: arch_name.to_owned(),
    })?;
    let fragments = step.config.kernel_fragments(step.system).what(cannot)?;
    let build_dir = step.layout.kernel_builds().join(step.system_name);
    let out_dir = step.layout.out().join(step.system_name);
    let request = KernelJob {
        system: step.system_name,
        root: step.root,
        root_path: &root_path,
        source: &source,
        build_dir: &build_dir,
        fragments: &fragments,
        initramfs: step.initramfs,
        compression: step.compression,
        cmdline: step.system.cmdline.as_deref(),
        arch: arch.kernel,
        jobs: step.config.build.jobs,
        out_dir: &out_dir,
        inputs: &inputs,
    };
    let built = builder.build(&request);
    // A builder that used the root leaves its kernel mounts there; so does a failed one.
    if builder.capabilities().uses_root && step.unmount_after {
        umount_all(&root_path, false).what(|| format!("cannot unmount root '{}'", step.root))?;
    }
    built.what(|| {
        format!(
            "cannot build the kernel of system '{}' ({} builder)",
            step.system_name,
            builder.name()
        )
    })
}
