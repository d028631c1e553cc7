//! The `autogentoo` command line: argument parsing, logging, the run context, and one module per
//! command. Commands call the core library and print results; errors travel up as `anyhow`
//! chains and become one line per cause and exit code 1 (usage errors exit 2, from clap) — or,
//! under `--json`, one JSON object on stderr.

mod args;
mod commands;
mod context;
mod interrupt;
mod output;
mod plugins;
mod progress;
mod remote;

use std::process::ExitCode;

use clap::Parser;

pub use commands::Cli;

/// Parses the arguments, sets up logging, runs the command and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return output::usage_error(err, output::json_requested(std::env::args_os())),
    };
    init_logging(cli.global.verbose, cli.global.quiet);
    let json = cli.global.json;
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            output::print_error(&err, json, 1);
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AUTOGENTOO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(output::colour_on_stderr())
        .with_writer(std::io::stderr)
        .without_time()
        .with_target(false)
        .init();
}
