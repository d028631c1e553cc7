//! The autogentoo model: the [`storage::Storage`], [`packer::Packer`] and
//! [`kernel_builder::KernelBuilder`] traits with their built-in implementations and conformance
//! suites, the registry that finds them by name, stage import, chroot mounts, the pipeline's
//! state, and the site configuration.
//! The command-line program and the backends build on this crate; it never prints and never
//! exits, it returns typed errors that carry the path and the operation.

pub mod bounded_read;
pub mod civil_time;
pub mod cpio;
pub mod digests;
pub mod image_libraries;
pub mod in_root;
pub mod initramfs;
pub mod kconfig;
pub mod kernel_build;
pub mod kernel_builder;
pub mod loop_device;
pub mod mountinfo;
pub mod names;
pub mod output_file;
pub mod packer;
pub mod pipeline;
pub mod qemu_boot;
pub mod registry;
pub mod root_lock;
pub mod root_mounts;
pub mod root_run;
pub mod site_config;
pub mod squashfs_pack;
pub mod stage_import;
pub mod storage;
pub mod tree_copy;
pub mod vdb;
pub mod workdir;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
