//! `autogentoo repo …`

pub mod list;
pub mod pack;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    Pack(pack::PackArgs),
    List(list::ListArgs),
}
