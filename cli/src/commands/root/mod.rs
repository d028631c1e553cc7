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
    /// Create a read-write root cloned from a stage
    Create(create::CreateArgs),
    /// List the roots
    List(list::ListArgs),
    /// Print a root's directory
    Path(path::PathArgs),
    /// Take a read-only snapshot of a root
    Snapshot(snapshot::SnapshotArgs),
    /// Return a root to one of its snapshots
    Rollback(rollback::RollbackArgs),
    /// Remove a root and its snapshots
    Remove(remove::RemoveArgs),
    /// Mount proc, sys, dev, run, the caches and the repository into a root
    Mount(mount::MountArgs),
    /// Unmount everything below a root, in one call
    Umount(umount::UmountArgs),
    /// Pack a root and the site files into an initramfs
    Pack(pack::PackArgs),
    /// Run a command inside a root, in private namespaces
    Run(run::RunArgs),
    /// Open a shell inside a root
    Shell(shell::ShellArgs),
}
