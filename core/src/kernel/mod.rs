//! Kernel builders: what turns a kernel source tree, the site's config fragments and a packed
//! initramfs into the EFI image a machine boots. The pipeline's kernel step and `kernel build`
//! call the builder the system names (`kernel_build`); the built-in ones are kbuild in the root
//! (`root`, its toolchain) and on the host (`host`), see [`crate::kernel::kernel_build`], and plugins may
//! add others. What a builder does beyond the contract is in its [`KernelBuilderCapabilities`].

pub mod kconfig;
pub mod kernel_build;
pub mod qemu_boot;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::site_config::Compression;

pub use crate::kernel::kernel_build::{KernelError, KernelReport};

/// Builds a system's EFI image.
///
/// The contract:
///
/// - the result is `out_dir/SYSTEM.efi`, an EFI application that starts the kernel with
///   `initramfs` as its initramfs and `cmdline` as its command line, with `SYSTEM.config` (the
///   kernel config used), `SYSTEM.System.map` and `SYSTEM.manifest.json` (the image's SHA256
///   and the job's `inputs`) beside it; the report names them;
/// - each result appears whole (written under a temporary name and renamed); after a failure
///   the results of an earlier build are as they were;
/// - the kernel sources are only read; `build_dir` is the builder's own, kept between builds,
///   so a build after an initramfs-only change need not compile anything;
/// - the config is the fragments in order (a later one wins) plus what booting this way needs;
///   an option the kernel's Kconfig drops is an error naming it and the dependency it lacks;
/// - a missing initramfs is an error naming it, before anything is built;
/// - a tool that fails is an error naming the step and its log.
pub trait KernelBuilder: Send + Sync {
    /// The name it is registered under.
    fn name(&self) -> &str;

    /// What it does beyond the contract.
    fn capabilities(&self) -> KernelBuilderCapabilities;

    /// Builds `job.system`'s image into `job.out_dir`.
    fn build(&self, job: &KernelJob) -> Result<KernelReport, KernelError>;
}

/// What a kernel builder does beyond the contract, for its callers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct KernelBuilderCapabilities {
    /// It builds with the root's toolchain, mounting the kernel sources into the root; the
    /// caller unmounts the root when the build is over.
    pub uses_root: bool,
    /// The initramfs is linked into the kernel, so a new initramfs means a relink; otherwise it
    /// is attached to the image and the kernel is not touched.
    pub links_initramfs: bool,
}

/// One build.
pub struct KernelJob<'a> {
    /// The system: the results are named after it.
    pub system: &'a str,
    /// The root the system is built from, by name and on the host.
    pub root: &'a str,
    pub root_path: &'a Path,
    /// The kernel source tree on the host.
    pub source: &'a Path,
    /// The builder's directory for this system, kept between builds.
    pub build_dir: &'a Path,
    /// Config fragments, in order (later ones win).
    pub fragments: &'a [PathBuf],
    /// The packed initramfs, and how it is compressed.
    pub initramfs: &'a Path,
    pub compression: Compression,
    /// The kernel command line.
    pub cmdline: Option<&'a str>,
    /// The kernel's name for the architecture (`x86` for x86_64).
    pub arch: &'a str,
    /// How many jobs `make` may run.
    pub jobs: u32,
    /// Where the results go.
    pub out_dir: &'a Path,
    /// What the manifest records about the inputs (initramfs hash, kernel volume, …).
    pub inputs: &'a [(String, String)],
}

impl KernelJob<'_> {
    /// The results' paths: image, config, System.map, manifest.
    pub fn outputs(&self) -> [PathBuf; 4] {
        outputs(self.out_dir, self.system)
    }
}

/// The results of a build of `system` in `out_dir`: `SYSTEM.efi`, `SYSTEM.config`,
/// `SYSTEM.System.map`, `SYSTEM.manifest.json`.
pub fn outputs(out_dir: &Path, system: &str) -> [PathBuf; 4] {
    ["efi", "config", "System.map", "manifest.json"]
        .map(|ext| out_dir.join(format!("{system}.{ext}")))
}
