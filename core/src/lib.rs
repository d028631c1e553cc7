//! The autogentoo model: the [`storage::Storage`], [`pack::Packer`] and
//! [`kernel::KernelBuilder`] traits with their built-in implementations and conformance
//! suites, the registry that finds them by name, stage import, chroot mounts, and the site
//! configuration. The pipeline that puts them together is the `autogentoo-pipeline` crate.
//!
//! The modules by area: [`storage`] (the trait, the workdir's layout, directory-backed
//! metadata), [`stage_import`], [`chroot`] (mounts, running in a root, locks), [`pack`]
//! (newc cpio and initramfs, SquashFS), [`kernel`] (kconfig, kbuild, booting in QEMU),
//! [`image`] (what a slim image holds), and [`files`] (reading, writing and copying where we
//! do not trust the tree).
//! The command-line program and the backends build on this crate; it never prints and never
//! exits, it returns typed errors that carry the path and the operation.

pub mod arch;
pub mod chroot;
pub mod civil_time;
pub mod files;
pub mod image;
pub mod kernel;
pub mod names;
pub mod pack;
pub mod registry;
pub mod site_config;
pub mod stage_import;
pub mod storage;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
