//! `autogentoo plugin …`

pub mod list;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    /// List the plugins loaded and the libraries that could not be
    List(list::ListArgs),
}
