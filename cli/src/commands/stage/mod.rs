//! `autogentoo stage …`

pub mod import;
pub mod list;
pub mod path;
pub mod remove;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum StageCommand {
    /// Import a stage3 tarball or directory as a read-only stage
    Import(import::ImportArgs),
    /// List the imported stages
    List(list::ListArgs),
    /// Print a stage's directory
    Path(path::PathArgs),
    /// Remove a stage (refused while roots are cloned from it)
    Remove(remove::RemoveArgs),
}
