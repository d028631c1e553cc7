//! `autogentoo kernel …`

pub mod boot;
pub mod build;
pub mod config;
pub mod import;
pub mod list;
pub mod mount;
pub mod path;
pub mod remove;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum KernelCommand {
    Import(import::ImportArgs),
    List(list::ListArgs),
    Path(path::PathArgs),
    Remove(remove::RemoveArgs),
    Config(config::ConfigArgs),
    Mount(mount::MountArgs),
    Build(build::BuildArgs),
    Boot(boot::BootArgs),
}
