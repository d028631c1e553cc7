//! `autogentoo man [COMMAND…] [--dir DIR]`

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use autogentoo_core::files::output_file;
use clap::{Args, Command, CommandFactory};
use clap_mangen::Man;

use super::Cli;

/// Print a manual page, or write them all into a directory
///
/// Print the manual page of autogentoo, or of one of its commands (`autogentoo man root pack |
/// man -l -`), as roff on stdout; with --dir, write every page into DIR instead:
/// autogentoo.1, and autogentoo-root.1, autogentoo-root-pack.1, … for each command, as
/// `cargo xtask install` does into share/man/man1.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// The command whose page to print, like `root pack`; none for autogentoo's own
    #[arg(value_name = "COMMAND")]
    pub command: Vec<String>,

    /// Write every page into DIR (made if missing) instead of printing one
    #[arg(long, value_name = "DIR", conflicts_with = "command")]
    pub dir: Option<PathBuf>,
}

pub fn run(args: ManArgs) -> Result<()> {
    let top = tree();
    if let Some(dir) = &args.dir {
        return write_all(&top, dir);
    }
    let mut command = &top;
    for (depth, word) in args.command.iter().enumerate() {
        command = public_subcommands(command)
            .find(|sub| sub.get_name() == word)
            .with_context(|| {
                let known: Vec<&str> = public_subcommands(command).map(Command::get_name).collect();
                format!(
                    "no command `autogentoo {}`; `{}` has: {}",
                    args.command[..=depth].join(" "),
                    command.get_bin_name().unwrap_or(command.get_name()),
                    if known.is_empty() {
                        "no subcommands".to_owned()
                    } else {
                        known.join(", ")
                    }
                )
            })?;
    }
    let mut page = Vec::new();
    page_of(command)
        .render(&mut page)
        .context("cannot render the manual page")?;
    std::io::stdout()
        .write_all(&page)
        .context("cannot write the manual page to stdout")
}

/// The command tree as the pages show it: built, so that each command knows its full name
/// (`autogentoo root pack`, page `autogentoo-root-pack`) and carries the global options, and
/// without clap's `help` subcommand, which `--help` already documents on every page.
fn tree() -> Command {
    let mut top = Cli::command().disable_help_subcommand(true);
    top.build();
    top
}

/// The subcommands that get a page: not the hidden ones (`internal-init` is not for people).
fn public_subcommands(command: &Command) -> impl Iterator<Item = &Command> {
    command.get_subcommands().filter(|sub| !sub.is_hide_set())
}

fn page_of(command: &Command) -> Man {
    Man::new(command.clone()).source(format!("autogentoo {}", env!("CARGO_PKG_VERSION")))
}

/// Writes the page of `command` and of every public command below it into `dir`, each as an
/// output that appears whole (see `autogentoo_core::files::output_file`).
fn write_all(command: &Command, dir: &Path) -> Result<()> {
    let man = page_of(command);
    let path = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)
        .with_context(|| format!("cannot render {}", path.display()))?;
    output_file::write(&path, &page)?;
    for sub in public_subcommands(command) {
        write_all(sub, dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_command_has_a_page_named_after_its_path() {
        fn names(command: &Command, out: &mut Vec<String>) {
            out.push(page_of(command).get_filename());
            for sub in public_subcommands(command) {
                names(sub, out);
            }
        }
        let mut pages = Vec::new();
        names(&tree(), &mut pages);
        assert!(pages.contains(&"autogentoo.1".to_owned()));
        assert!(pages.contains(&"autogentoo-root-pack.1".to_owned()));
        assert!(!pages.iter().any(|p| p.contains("internal")), "{pages:?}");
        assert!(!pages.iter().any(|p| p.ends_with("-help.1")), "{pages:?}");
    }
}
