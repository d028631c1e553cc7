//! What `root run` and `root shell` share: entering the namespaces, mounting, and starting this
//! program again as the init of the new PID namespace (`internal-init`).

use std::ffi::OsString;
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result};
use autogentoo_core::arch;
use autogentoo_core::chroot::binfmt;
use autogentoo_core::chroot::root_lock::{LockKind, RootLock};
use autogentoo_core::chroot::root_mounts::{self, mount_all, MountPlan};
use autogentoo_core::chroot::root_run::{self, clean_environment, InitSpec};
use autogentoo_core::storage::{VolumeId, VolumeKind};
use nix::sys::signal::{signal, SigHandler, Signal};

use crate::context::Context;

/// Runs `command` inside root `name` and returns its exit code; `extra` mounts (the kernel's,
/// for an in-root kernel build) exist in the command's namespace only, and go with it.
pub fn run_in_root(
    ctx: &Context,
    name: &str,
    command: Vec<OsString>,
    extra: Option<MountPlan>,
) -> Result<ExitCode> {
    let storage = ctx.storage()?;
    let root = storage.path(&VolumeId::new(VolumeKind::Root, name)?)?;
    // A root of another architecture runs its programs through qemu-user.
    let arch = arch::of_tree(&root)?.map(|(arch, _)| arch);
    if let Some(arch) = arch {
        if let Some(handler) = binfmt::ensure(arch, ctx.config.build.binfmt)
            .with_context(|| format!("cannot run programs in root '{name}'"))?
        {
            tracing::info!("root '{name}' is {arch}: its programs run through '{handler}'");
        }
    }
    let layout = ctx.layout();
    // Held until we exit, so `root remove` and `root rollback` see the root in use.
    let _use = RootLock::wait(&layout, name, LockKind::Use, true)?;
    let mut plan =
        root_mounts::plan_for(&*storage, &layout, &ctx.config.mounts, arch)?.without_proc();
    if let Some(extra) = extra {
        plan.mounts.extend(extra.mounts);
    }
    let caller_namespace = root_run::mount_namespace()?;
    root_run::enter_namespaces()?;
    root_run::bind_root_onto_itself(&root)?;
    mount_all(&root, &plan)
        .with_context(|| format!("cannot mount root '{name}' for the command"))?;

    let build = &ctx.config.build;
    let env_extra: Vec<(String, String)> = build
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut init = Command::new("/proc/self/exe");
    init.arg("internal-init");
    if ctx.json {
        // A command that cannot be started is reported as JSON, as our own errors are.
        init.arg("--json");
    }
    init.env_clear()
        .envs(clean_environment(&build.makeopts(), &env_extra));
    let spec = InitSpec { root, command };
    let mut child = root_run::spawn_init(init, &spec, caller_namespace)?;
    // Ctrl-C and Ctrl-\ are for the command (it gets them from the terminal too); we wait
    // for it to finish and pass on how it ended.
    for sig in [Signal::SIGINT, Signal::SIGQUIT] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe { signal(sig, SigHandler::SigIgn) }.context("cannot ignore terminal signals")?;
    }
    let status = child.wait().context("cannot wait for the command")?;
    Ok(ExitCode::from(
        root_run::exit_code(status).clamp(0, 255) as u8
    ))
}
