//! `autogentoo stage …`

pub mod import;
pub mod list;
pub mod path;
pub mod remove;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum StageCommand {
    Import(import::ImportArgs),
    List(list::ListArgs),
    Path(path::PathArgs),
    Remove(remove::RemoveArgs),
}
