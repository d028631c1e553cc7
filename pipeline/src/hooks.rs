//! What the pipeline needs from its caller besides storage, packer and kernel builder: hooks
//! around the steps (the command line's plugins), and a way to run a command inside a root.

use std::path::Path;
use std::process::Command;

use autogentoo_plugin_api::{HookError, HookOutcome, HookPoint, Values};

use crate::event::StepName;
use crate::state::Fingerprint;

/// A hook's outcome with the plugin it came from.
pub struct PluginOutcome {
    pub plugin: String,
    pub outcome: HookOutcome,
}

/// Hooks run before and after each step that runs.
///
/// The contract:
/// - `run` gets the step's inputs (and, after it, its outputs) and hands back each plugin's
///   outcome, in the order the plugins run; an error fails the build before (or after) the
///   step, naming the plugin;
/// - only the layers handed back before `pack` are packed; the pipeline warns of others;
/// - `mark` adds to a step's fingerprint whatever about the hooks should make a step run again
///   when it changes (the plugins, their versions and settings).
pub trait Hooks {
    fn mark(&self, fingerprint: Fingerprint) -> Fingerprint {
        fingerprint
    }

    fn run(
        &self,
        point: HookPoint,
        step: StepName,
        inputs: &Values,
        outputs: &Values,
    ) -> Result<Vec<PluginOutcome>, HookError>;
}

/// No hooks: a build without plugins.
pub struct NoHooks;

impl Hooks for NoHooks {
    fn run(
        &self,
        _: HookPoint,
        _: StepName,
        _: &Values,
        _: &Values,
    ) -> Result<Vec<PluginOutcome>, HookError> {
        Ok(Vec::new())
    }
}

/// Runs commands inside roots. Entering a root means entering namespaces a process never
/// leaves, so each command is a process of its own: the command line starts itself again as
/// `root run`; a worker would do the same with its own binary.
///
/// The contract: the command returned, once spawned, mounts the root as `root run` does (the
/// caches, the repository snapshot, the kernel's filesystems), binds `image` (when given) at
/// [`autogentoo_core::chroot::root_mounts::IMAGE_TARGET`] inside it, runs `argv` there, exits
/// with its status, and leaves the root unmounted and unlocked. Its stdin, stdout and stderr
/// are the caller's to set.
pub trait RootRunner {
    fn command(&self, root: &str, image: Option<&Path>, argv: &[String]) -> Command;
}
