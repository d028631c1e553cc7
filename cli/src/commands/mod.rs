//! The command tree. Each leaf command is a module with a doc-commented `Args` struct (the doc is
//! the help text) and one `run` function, dispatched from the single `match` in [`run`].

mod root;
mod stage;
mod volume;
mod workdir;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::context::{Context, GlobalArgs};

/// Gentoo stages, build roots and EFI-stub images with the root inside the initramfs.
#[derive(Parser, Debug)]
#[command(
    name = "autogentoo",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The storage layout: stages, roots, kernels, caches, repos, out
    #[command(subcommand)]
    Workdir(workdir::WorkdirCommand),
    /// Imported stage tarballs that roots are cloned from
    #[command(subcommand)]
    Stage(stage::StageCommand),
    /// Read-write build roots
    #[command(subcommand)]
    Root(root::RootCommand),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let ctx = Context::new(&cli.global)?;
    match cli.command {
        Command::Workdir(workdir::WorkdirCommand::Init(args)) => workdir::init::run(&ctx, args),
        Command::Workdir(workdir::WorkdirCommand::Status(args)) => workdir::status::run(&ctx, args),
        Command::Stage(stage::StageCommand::Import(args)) => stage::import::run(&ctx, args),
        Command::Stage(stage::StageCommand::List(args)) => stage::list::run(&ctx, args),
        Command::Stage(stage::StageCommand::Path(args)) => stage::path::run(&ctx, args),
        Command::Stage(stage::StageCommand::Remove(args)) => stage::remove::run(&ctx, args),
        Command::Root(root::RootCommand::Create(args)) => root::create::run(&ctx, args),
        Command::Root(root::RootCommand::List(args)) => root::list::run(&ctx, args),
        Command::Root(root::RootCommand::Path(args)) => root::path::run(&ctx, args),
        Command::Root(root::RootCommand::Snapshot(args)) => root::snapshot::run(&ctx, args),
        Command::Root(root::RootCommand::Rollback(args)) => root::rollback::run(&ctx, args),
        Command::Root(root::RootCommand::Remove(args)) => root::remove::run(&ctx, args),
    }
}
