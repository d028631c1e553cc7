//! `autogentoo root …`

pub mod create;
pub mod list;
pub mod mount;
pub mod pack;
pub mod path;
pub mod remove;
pub mod rollback;
pub mod run;
pub mod shell;
pub mod snapshot;
pub mod umount;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum RootCommand {
    Create(create::CreateArgs),
    List(list::ListArgs),
    Path(path::PathArgs),
    Snapshot(snapshot::SnapshotArgs),
    Rollback(rollback::RollbackArgs),
    Remove(remove::RemoveArgs),
    Mount(mount::MountArgs),
    Umount(umount::UmountArgs),
    Pack(pack::PackArgs),
    Run(run::RunArgs),
    Shell(shell::ShellArgs),
}
