//! `autogentoo root shell`

use std::process::ExitCode;

use anyhow::Result;
use autogentoo_core::files::in_root::RootDir;
use autogentoo_core::storage::{VolumeId, VolumeKind};
use clap::Args;
use rustix::fs::{Mode, OFlags};

use crate::commands::chroot;
use crate::context::Context;

/// Open a shell inside a root
///
/// Open a login shell inside a root (bash if the root has it, else sh), as `root run` would run
/// a command.
#[derive(Args, Debug)]
pub struct ShellArgs {
    /// The root
    pub name: String,
}

pub fn run(ctx: &Context, args: ShellArgs) -> Result<ExitCode> {
    let root = ctx
        .storage()?
        .path(&VolumeId::new(VolumeKind::Root, &args.name)?)?;
    let dir = RootDir::open(&root)?;
    let has_bash = dir
        .open_at("bin/bash".as_ref(), OFlags::PATH, Mode::empty())
        .is_ok();
    let shell = if has_bash { "/bin/bash" } else { "/bin/sh" };
    chroot::run_in_root(ctx, &args.name, vec![shell.into(), "-l".into()], None)
}
