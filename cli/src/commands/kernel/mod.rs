//! `autogentoo kernel …`

pub mod boot;
pub mod build;
pub mod config;
pub mod import;
pub mod list;
pub mod mount;
pub mod path;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum KernelCommand {
    /// Import kernel sources (a tarball or directory) as a read-only kernel volume
    Import(import::ImportArgs),
    /// List the imported kernel sources
    List(list::ListArgs),
    /// Print a kernel volume's directory
    Path(path::PathArgs),
    /// Check or set the options the pipeline needs in a kernel config, and show the diff
    Config(config::ConfigArgs),
    /// Bind a kernel's sources, build directory and initramfs into a root
    Mount(mount::MountArgs),
    /// Build a system's EFI-stub kernel with its initramfs embedded
    Build(build::BuildArgs),
    /// Boot an EFI image in QEMU/OVMF and check what it prints
    Boot(boot::BootArgs),
}
