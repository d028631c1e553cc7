//! `autogentoo repo …`

pub mod list;
pub mod pack;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum RepoCommand {
    /// Pack a root's ebuild repository, or a directory, into a SquashFS image
    Pack(pack::PackArgs),
    /// List the SquashFS images of the repository
    List(list::ListArgs),
}
