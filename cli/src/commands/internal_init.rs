//! `autogentoo internal-init`: not for people. `root run` starts this program again in this role
//! as PID 1 of the command's PID namespace; see `autogentoo_core::root_run`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use autogentoo_core::root_run::{init_main, InitSpec};
use clap::Args;

/// The init of `root run`'s PID namespace (internal)
#[derive(Args, Debug)]
pub struct InitArgs {
    /// The root to chroot into
    #[arg(long)]
    pub root: PathBuf,

    /// The command
    #[arg(required = true, last = true)]
    pub command: Vec<OsString>,
}

pub fn run(args: InitArgs) -> Result<ExitCode> {
    let code = init_main(&InitSpec {
        root: args.root,
        command: args.command,
    })?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
