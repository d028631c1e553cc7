//! `autogentoo root run`

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use autogentoo_core::chroot::root_mounts;
use clap::Args;

use crate::commands::chroot;
use crate::context::Context;

/// Run a command inside a root, in private namespaces
///
/// Run a command inside a root, in a private mount namespace and a new PID namespace: the root's
/// mounts exist only for the command, and nothing stays mounted or running when it exits, even
/// if autogentoo is killed. The environment is clean: PATH, HOME, USER, TERM, MAKEOPTS and the
/// site's `build.env`. Exits with the command's exit code (128 + N if signal N ended it), or,
/// as a shell does, 127 when the command is not found in the root and 126 when it cannot be
/// executed; 1 is autogentoo's own error. Under --json, stdout is the command's.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The root
    pub name: String,

    /// The command and its arguments (after `--`)
    #[arg(required = true, last = true)]
    pub command: Vec<OsString>,

    /// Also bind kernel sources, a build directory and an initramfs directory, as `kernel
    /// mount` does, for this command only (how the `root` kernel builder runs make)
    #[arg(long, hide = true, num_args = 3, value_names = ["SOURCE", "BUILD", "INITRAMFS"])]
    pub kernel: Option<Vec<PathBuf>>,

    /// Also bind an image tree, writable, at /var/lib/autogentoo/image, for this command only
    /// (how `build` installs a slim image's packages with `emerge --root`)
    #[arg(long, hide = true, value_name = "DIR", conflicts_with = "kernel")]
    pub image: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: RunArgs) -> Result<ExitCode> {
    let kernel = args
        .kernel
        .as_deref()
        .map(|dirs| root_mounts::kernel_plan(&dirs[0], &dirs[1], &dirs[2]))
        .or_else(|| args.image.as_deref().map(root_mounts::image_plan));
    chroot::run_in_root(ctx, &args.name, args.command, kernel)
}
