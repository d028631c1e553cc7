//! `autogentoo internal-init`: not for people. `root run` starts this program again in this role
//! as PID 1 of the command's PID namespace, and hands it what to run through a pipe; see
//! `autogentoo_core::chroot::root_run`. Run any other way, it refuses before touching anything.

use std::process::ExitCode;

use anyhow::Result;
use autogentoo_core::chroot::root_run::{accept_handshake, init_main};
use clap::Args;

use crate::output;

/// The init of `root run`'s PID namespace (internal)
#[derive(Args, Debug)]
pub struct InitArgs {
    /// The pipe the parent hands the root and the command through
    #[arg(long, default_value_t = -1)]
    pub handshake_fd: i32,
}

/// Runs the command and exits with its code; a command that cannot be started exits 127 (not
/// found) or 126 (not executable), as a shell's would.
pub fn run(args: InitArgs, json: bool) -> Result<ExitCode> {
    let outcome = accept_handshake(args.handshake_fd).and_then(|spec| init_main(&spec));
    let code = match outcome {
        Ok(code) => code,
        Err(err) => {
            let code = err.exit_code();
            output::print_error(&anyhow::Error::new(err), json, code.clamp(0, 255) as u8);
            code
        }
    };
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
