//! The standard pipeline of autogentoo as a library: for one system of the site config, the
//! workdir, its root (cloned from its stage when missing), the system's commands inside the
//! root, the image tree (for a system with `[systems.NAME.image]`), the initramfs, and the
//! kernel with the initramfs embedded. Each step is skipped when its inputs are unchanged since
//! it last ran ([`state`]).
//!
//! A caller hands [`run`] a [`Request`]: the site config and system, the storage backend, the
//! packer and kernel builder it resolved by name, its [`Hooks`] and a [`RootRunner`]. What
//! happens is reported as typed [`Event`]s to an [`Observer`]: the command line renders them,
//! a recorder keeps them, a worker streams them. The library never prints; it returns a
//! [`PipelineError`].

mod build;
pub mod event;
pub mod hooks;
pub mod image;
pub mod kernel;
pub mod state;
mod step_log;

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::AtomicBool;

use autogentoo_core::kernel::KernelBuilder;
use autogentoo_core::pack::Packer;
use autogentoo_core::site_config::SiteConfig;
use autogentoo_core::storage::workdir::Layout;
use autogentoo_core::storage::Storage;

pub use build::run;
pub use event::{ArtifactKind, Event, Inputs, Observer, StepName};
pub use hooks::{Hooks, NoHooks, PluginOutcome, RootRunner};

/// Any error of the layers below, with what we were doing in [`PipelineError::Failed`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One build of one system.
pub struct Request<'a> {
    /// The system, as `[systems.NAME]` in `config`.
    pub system: &'a str,
    pub config: &'a SiteConfig,
    pub storage: &'a dyn Storage,
    pub layout: Layout,
    /// The packer the site config names (`pack.packer`).
    pub packer: &'a dyn Packer,
    /// The system's kernel builder (`kernel_build`); `None` for a system without a kernel.
    pub kernel_builder: Option<&'a dyn KernelBuilder>,
    pub hooks: &'a dyn Hooks,
    pub runner: &'a dyn RootRunner,
    /// Report the plan (each step and whether it would run) and change nothing.
    pub pretend: bool,
    /// Set to stop the build: by an interrupt, or by a recorder that cannot record. The build
    /// stops as its next step that runs starts; a pack in progress stops and leaves nothing.
    pub cancel: &'a AtomicBool,
}

/// What a build made: the last step's output.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Outcome {
    /// `image` for a system with a kernel (its EFI application), else `initramfs`.
    pub kind: &'static str,
    pub path: PathBuf,
}

/// Why a build stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(
        "system '{system}' needs stage '{stage}', which is not imported; \
         run `autogentoo stage import SOURCE --name {stage}`"
    )]
    MissingStage { system: String, stage: String },
    #[error(
        "system '{system}' is {arch}, but the programs of stage '{stage}' are {stage_arch}; \
         import a stage of {arch}, or set `arch = \"{stage_arch}\"` in [systems.{system}]"
    )]
    StageArch {
        system: String,
        arch: String,
        stage: String,
        stage_arch: String,
    },
    #[error(
        "the image of system '{system}' starts from stage '{stage}', which is not imported; \
         run `autogentoo stage import SOURCE --name {stage}`"
    )]
    MissingImageBase { system: String, stage: String },
    #[error(
        "kernel sources '{name}' are not imported; run `autogentoo kernel import SOURCE --name \
         {name}` (`autogentoo kernel list` shows those that are)"
    )]
    MissingKernel { name: String },
    #[error("no kernel sources imported; run `autogentoo kernel import SOURCE --name NAME`")]
    NoKernel,
    #[error("several kernel volumes; name one with --kernel or the system's `kernel`")]
    SeveralKernels,
    #[error(
        "system '{system}' is {arch}, for which autogentoo builds no kernels; set `kernel_build = \"none\"` \
         in [systems.{system}], or use a kernel builder plugin that does"
    )]
    KernelArch { system: String, arch: String },
    #[error("system '{system}' builds a kernel with '{builder}', but no kernel builder was given")]
    NoKernelBuilder { system: String, builder: String },
    #[error(
        "{} does not exist; pack the root first (`autogentoo root pack {root}`)",
        path.display()
    )]
    NoInitramfs { path: PathBuf, root: String },
    #[error(
        "`{command}` failed inside root '{root}' ({status}); the last lines of its log, {}:\n{tail}",
        log.display()
    )]
    CommandFailed {
        command: String,
        root: String,
        status: ExitStatus,
        log: PathBuf,
        tail: String,
    },
    /// The cancel flag was set: the build stopped as `step` was to start.
    #[error("the build of system '{system}' stopped as its {step} step was to start")]
    Stopped { system: String, step: StepName },
    /// Another process builds the same system.
    #[error(transparent)]
    Busy(autogentoo_core::chroot::root_lock::LockError),
    /// A plugin's hook failed; its error names the plugin and the step.
    #[error(transparent)]
    Hook(BoxError),
    /// What we were doing, and the error of the layer below.
    #[error("{what}")]
    Failed {
        what: String,
        #[source]
        source: BoxError,
    },
}

impl PipelineError {
    /// The error and its causes on one line, each cause once: for an event, a record, a
    /// server's answer.
    pub fn one_line(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(next) = cause {
            let line = next.to_string();
            if !text.contains(&line) {
                text.push_str(": ");
                text.push_str(&line);
            }
            cause = next.source();
        }
        text
    }
}

/// Says what we were doing when an error of the layers below happened.
pub(crate) trait ResultExt<T> {
    fn what(self, what: impl FnOnce() -> String) -> Result<T, PipelineError>;
}

impl<T, E: Into<BoxError>> ResultExt<T> for Result<T, E> {
    fn what(self, what: impl FnOnce() -> String) -> Result<T, PipelineError> {
        self.map_err(|source| PipelineError::Failed {
            what: what(),
            source: source.into(),
        })
    }
}
