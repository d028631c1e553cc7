//! `autogentoo workdir …`

pub mod init;
pub mod status;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum WorkdirCommand {
    Init(init::InitArgs),
    Status(status::StatusArgs),
}
