//! `autogentoo plugin …`

pub mod list;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum PluginCommand {
    List(list::ListArgs),
}
