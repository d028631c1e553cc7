//! Pipeline hooks: what a plugin sees of a step of `build SYSTEM`, and what it may hand back.
//!
//! Hooks run around the steps that run (a skipped step has nothing to see), in the order the
//! plugins were loaded: `before` with the step's inputs, `after` with its inputs and outputs. A
//! step counts as done only when its `after` hooks succeeded, so a failed hook makes the next
//! build run the step again. The steps and their values:
//!
//! | step | inputs | outputs |
//! |---|---|---|
//! | every step | `workdir`, `backend`, `out_dir` (the system's output directory), `site_dir` (when there is a site config), `setting.KEY` for each key of the plugin's own `[plugins.NAME]` table in the site config | |
//! | `workdir` | | |
//! | `root` | `stage`, `root` (the volume's name) | `root_path` |
//! | `commands` | `root`, `root_path`, `commands` (one per line) | |
//! | `pack` | `root`, `root_path`, `root_origin` (`KIND/NAME@SNAPSHOT`, empty if none), `archive`, `packer`, `compression` | `archive`, `manifest` (if the packer writes one) |
//! | `kernel` | `root`, `kernel`, `initramfs`, `builder` (the kernel builder's name), `cmdline` | `image`, `sha256`, `config`, `system_map`, `manifest` |
//!
//! A `before pack` hook may return extra layers: directories packed after the site's overlays
//! (so their files win), with the site files' owner rules. Notes are shown with the step lines.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

/// What a plugin's `[plugins.NAME]` settings are called among its hooks' inputs:
/// `setting.KEY`.
pub const SETTING_PREFIX: &str = "setting.";

/// Named values of a step; values are paths or text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Values(BTreeMap<String, OsString>);

impl Values {
    /// Sets `key`, replacing an earlier value.
    pub fn set(&mut self, key: &str, value: impl AsRef<OsStr>) -> &mut Self {
        self.0.insert(key.to_owned(), value.as_ref().to_owned());
        self
    }

    /// `self` with `key` set, for building values in one expression.
    pub fn with(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.set(key, value);
        self
    }

    /// The value of `key` as a path.
    pub fn path(&self, key: &str) -> Option<&Path> {
        self.0.get(key).map(Path::new)
    }

    /// The value of `key` as text; `None` if it is missing or not UTF-8.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str())
    }

    /// Every key and value, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &OsStr)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_os_str()))
    }
}

/// One step of the pipeline as a hook sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Step {
    /// The system being built (`[systems.NAME]`).
    pub system: String,
    /// The step: `workdir`, `root`, `commands`, `pack` or `kernel`.
    pub name: String,
    pub inputs: Values,
    /// Empty before the step.
    pub outputs: Values,
}

/// Before or after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookPoint {
    Before,
    After,
}

impl std::fmt::Display for HookPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Before => "before",
            Self::After => "after",
        })
    }
}

/// A directory to pack as one more layer of the initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraLayer {
    /// How the pack's manifest names the layer.
    pub name: String,
    pub path: PathBuf,
}

/// What a hook hands back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HookOutcome {
    /// Extra layers (only `before pack` uses them).
    pub layers: Vec<ExtraLayer>,
    /// Lines for the log, shown with the step lines.
    pub notes: Vec<String>,
}

impl HookOutcome {
    /// An outcome with one note.
    pub fn note(text: impl Into<String>) -> Self {
        Self {
            notes: vec![text.into()],
            ..Self::default()
        }
    }
}

/// Why a hook failed; shown to the user with the plugin's name and the step.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

/// Hooks around the steps of `build SYSTEM`. Both do nothing unless implemented. An error fails
/// the build; so does a panic, which the plugin boundary catches.
pub trait PipelineHooks: Send + Sync + 'static {
    fn before(&self, step: &Step) -> Result<HookOutcome, HookError> {
        let _ = step;
        Ok(HookOutcome::default())
    }

    fn after(&self, step: &Step) -> Result<HookOutcome, HookError> {
        let _ = step;
        Ok(HookOutcome::default())
    }
}
