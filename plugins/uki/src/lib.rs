//! An example third-party autogentoo plugin for Unified Kernel Images (UKIs), for machines that
//! boot from a small EFI system partition:
//!
//! - the kernel builder `uki` (`uki::Uki`): kbuild on the host for a kernel without an
//!   initramfs, then systemd's EFI stub with the kernel, the initramfs, the command line and an
//!   os-release added as sections. An initramfs-only change reassembles the image from the
//!   kernel already built, without compiling or linking;
//! - the packer `newc-xz` (`newc_xz::NewcXz`): the core's newc archive compressed with `xz`,
//!   the smallest of the formats the kernel unpacks.
//!
//! Both call programs of the host: `xz` (xz-utils), `objdump` and `objcopy` (binutils), and
//! systemd's stub (systemd-boot-efi); a missing one is an error that says what to install.

mod newc_xz;
mod pe_layout;
mod tool;
mod uki;

use autogentoo_core::kernel::kernel_build::KernelError;
use autogentoo_core::kernel::KernelBuilder;
use autogentoo_core::pack::{PackError, Packer};
use autogentoo_plugin_api::Plugin;

fn open_packer() -> Result<Box<dyn Packer>, PackError> {
    Ok(Box::new(newc_xz::NewcXz))
}

fn open_builder() -> Result<Box<dyn KernelBuilder>, KernelError> {
    Ok(Box::new(uki::Uki::new()))
}

fn define() -> Plugin {
    Plugin::new()
        .packer("newc-xz", open_packer)
        .kernel_builder("uki", open_builder)
}
autogentoo_plugin_api::export_plugin!("uki", define);
