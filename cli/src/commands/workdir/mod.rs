//! `autogentoo workdir …`

pub mod init;
pub mod status;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum WorkdirCommand {
    /// Create the storage layout (safe to run again)
    Init(init::InitArgs),
    /// Show the backend, its capabilities, the volumes and the space used
    Status(status::StatusArgs),
}
