//! The command tree. Each leaf command is a module with a doc-commented `Args` struct (the doc is
//! the help text) and one `run` function, dispatched from the single `match` in [`run`].

mod build;
mod builds;
mod chroot;
mod completions;
mod doctor;
mod farm;
mod internal_init;
mod kernel;
mod man;
mod plugin;
mod publish;
mod repo;
mod root;
mod serve;
mod stage;
mod submit;
mod volume;
mod workdir;
mod worker;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::context::{Context, GlobalArgs};
use crate::output;

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
    /// SquashFS snapshots of the ebuild repository
    #[command(subcommand)]
    Repo(repo::RepoCommand),
    /// The standard pipeline for a system of the site config, each step skipped when unchanged
    Build(build::BuildArgs),
    /// The builds the database recorded: list, show, logs, diff, keep, purge
    #[command(subcommand)]
    Builds(builds::BuildsCommand),
    /// Point published/SYSTEM at a recorded build's results
    Publish(publish::PublishArgs),
    /// Kernel sources, configs, builds and boots
    #[command(subcommand)]
    Kernel(kernel::KernelCommand),
    /// Serve a build farm's API over the build database and its job queue
    Serve(serve::ServeArgs),
    /// Take build jobs from a farm server, as one of its build hosts
    Worker(worker::WorkerArgs),
    /// Submit a build to a farm server
    Submit(submit::SubmitArgs),
    /// A farm's enrollment keys, API tokens, build hosts, inputs, jobs and audit log
    #[command(subcommand)]
    Farm(farm::FarmCommand),
    /// Plugins: what is loaded, from where, and what could not be
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    Doctor(doctor::DoctorArgs),
    Completions(completions::CompletionsArgs),
    Man(man::ManArgs),
    #[command(hide = true)]
    InternalInit(internal_init::InitArgs),
}

/// Runs the parsed command line; the exit code is the command's own for `root run|shell`.
pub fn run(cli: Cli) -> Result<ExitCode> {
    if let Command::InternalInit(args) = cli.command {
        return internal_init::run(args, cli.global.json);
    }
    // Made from the command line alone: a broken site config must not stand in their way.
    match cli.command {
        Command::Completions(args) => return completions::run(args).map(|()| ExitCode::SUCCESS),
        Command::Man(args) => return man::run(args).map(|()| ExitCode::SUCCESS),
        _ => {}
    }
    // The listings end quietly when their reader goes away (`| head`).
    use builds::BuildsCommand::{Diff, List, Log, Show};
    if matches!(
        cli.command,
        Command::Builds(List(_) | Show(_) | Log(_) | Diff(_))
    ) {
        output::end_on_closed_stdout();
    }
    let ctx = Context::new(&cli.global)?;
    let done = match cli.command {
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
        Command::Root(root::RootCommand::Mount(args)) => root::mount::run(&ctx, args),
        Command::Root(root::RootCommand::Umount(args)) => root::umount::run(&ctx, args),
        Command::Root(root::RootCommand::Pack(args)) => root::pack::run(&ctx, args),
        Command::Root(root::RootCommand::Run(args)) => return root::run::run(&ctx, args),
        Command::Root(root::RootCommand::Shell(args)) => return root::shell::run(&ctx, args),
        Command::Repo(repo::RepoCommand::Pack(args)) => repo::pack::run(&ctx, args),
        Command::Repo(repo::RepoCommand::List(args)) => repo::list::run(&ctx, args),
        Command::Kernel(kernel::KernelCommand::Import(args)) => kernel::import::run(&ctx, args),
        Command::Kernel(kernel::KernelCommand::List(args)) => kernel::list::run(&ctx, args),
        Command::Kernel(kernel::KernelCommand::Path(args)) => kernel::path::run(&ctx, args),
        Command::Kernel(kernel::KernelCommand::Remove(args)) => kernel::remove::run(&ctx, args),
        Command::Kernel(kernel::KernelCommand::Config(args)) => kernel::config::run(&ctx, args),
        Command::Kernel(kernel::KernelCommand::Mount(args)) => kernel::mount::run(&ctx, args),
        Command::Kernel(kernel::KernelCommand::Build(args)) => kernel::build::run(&ctx, args),
        Command::Kernel(kernel::KernelCommand::Boot(args)) => kernel::boot::run(&ctx, args),
        Command::Build(args) => build::run(&ctx, args),
        Command::Builds(builds::BuildsCommand::List(args)) => builds::list::run(&ctx, args),
        Command::Builds(builds::BuildsCommand::Show(args)) => builds::show::run(&ctx, args),
        Command::Builds(builds::BuildsCommand::Log(args)) => builds::log::run(&ctx, args),
        Command::Builds(builds::BuildsCommand::Diff(args)) => builds::diff::run(&ctx, args),
        Command::Builds(builds::BuildsCommand::Keep(args)) => builds::keep::run(&ctx, args),
        Command::Builds(builds::BuildsCommand::Purge(args)) => builds::purge::run(&ctx, args),
        Command::Publish(args) => publish::run(&ctx, args),
        Command::Serve(args) => serve::run(&ctx, args),
        Command::Worker(args) => worker::run(&ctx, args),
        Command::Submit(args) => submit::run(&ctx, args),
        Command::Farm(command) => farm_command(&ctx, command),
        Command::Plugin(plugin::PluginCommand::List(args)) => plugin::list::run(&ctx, args),
        Command::Doctor(args) => doctor::run(&ctx, args),
        Command::InternalInit(_) | Command::Completions(_) | Command::Man(_) => {
            unreachable!("handled above")
        }
    };
    done.map(|()| ExitCode::SUCCESS)
}

fn farm_command(ctx: &Context, command: farm::FarmCommand) -> Result<()> {
    use farm::{FarmCommand, HostCommand, InputCommand, JobCommand, KeyCommand, TokenCommand};
    match command {
        FarmCommand::Key(KeyCommand::Create(args)) => farm::key_create::run(ctx, args),
        FarmCommand::Token(TokenCommand::Create(args)) => farm::token_create::run(ctx, args),
        FarmCommand::Token(TokenCommand::List(args)) => farm::token_list::run(ctx, args),
        FarmCommand::Token(TokenCommand::Revoke(args)) => farm::token_revoke::run(ctx, args),
        FarmCommand::Host(HostCommand::List(args)) => farm::host_list::run(ctx, args),
        FarmCommand::Host(HostCommand::Revoke(args)) => farm::host_revoke::run(ctx, args),
        FarmCommand::Input(InputCommand::Add(args)) => farm::input_add::run(ctx, args),
        FarmCommand::Input(InputCommand::List(args)) => farm::input_list::run(ctx, args),
        FarmCommand::Job(JobCommand::List(args)) => farm::job_list::run(ctx, args),
        FarmCommand::Job(JobCommand::Cancel(args)) => farm::job_cancel::run(ctx, args),
        FarmCommand::Audit(args) => farm::audit::run(ctx, args),
    }
}
