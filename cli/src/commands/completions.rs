//! `autogentoo completions SHELL`

use std::io::Write;

use anyhow::{Context as _, Result};
use clap::{Args, Command, CommandFactory, ValueEnum};

use super::Cli;

/// Print the completion script for bash, zsh or fish
///
/// Print the completion script for SHELL on stdout. `cargo xtask install` puts it where the
/// shell finds it; by hand: `autogentoo completions bash >
/// /usr/share/bash-completion/completions/autogentoo`, `autogentoo completions zsh >
/// /usr/share/zsh/site-functions/_autogentoo`, or `autogentoo completions fish >
/// /usr/share/fish/vendor_completions.d/autogentoo.fish`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell the script is for
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells we ship completions for (and test them in).
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

pub fn run(args: CompletionsArgs) -> Result<()> {
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut command = public(Cli::command());
    let name = command.get_name().to_owned();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    std::io::stdout()
        .write_all(&script)
        .context("cannot write the completion script to stdout")
}

/// `command` without its hidden subcommands, at every level: clap's completion generators offer
/// hidden subcommands too, and `internal-init` is not for people. clap can add subcommands but
/// not take them away, so a level that has hidden ones is made anew from what completion reads
/// of it (name, texts, version, arguments) and its public subcommands.
fn public(command: Command) -> Command {
    if !command.get_subcommands().any(Command::is_hide_set) {
        return command.mut_subcommands(public);
    }
    let mut made = Command::new(command.get_name().to_owned())
        .propagate_version(command.is_propagate_version_set())
        .args(command.get_arguments().cloned())
        .subcommands(
            command
                .get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .cloned()
                .map(public),
        );
    if let Some(about) = command.get_about() {
        made = made.about(about.clone());
    }
    if let Some(about) = command.get_long_about() {
        made = made.long_about(about.clone());
    }
    if let Some(version) = command.get_version() {
        made = made.version(version.to_owned());
    }
    made
}
