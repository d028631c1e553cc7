//! Plugins: libraries found in the site config's `[plugins] dirs` and in the directories of
//! `AUTOGENTOO_PLUGIN_PATH`, loaded when the program starts. Their storage backends, packers
//! and kernel builders join the built-in ones in the registry, and their hooks run around the
//! steps of `build SYSTEM`.
//!
//! Directories are searched in that order, the libraries of each by name; hooks run in the
//! order their plugins were loaded. A library that cannot be used (not a plugin, built for
//! another API, missing a symbol, panicking, clashing with a name already taken) is left out
//! with one warning line; all of them are reported together, at load time, and everything else
//! keeps working.

mod trust;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::Result;
use autogentoo_core::registry::Registry;
use autogentoo_core::site_config::PluginsSection;
use autogentoo_pipeline::state::Fingerprint;
use autogentoo_pipeline::{Hooks, PluginOutcome, StepName};
use autogentoo_plugin_api::host::{self, LoadedPlugin, PluginHooks};
use autogentoo_plugin_api::{HookError, HookPoint, Step, Values, SETTING_PREFIX};

use trust::{Distrust, Library, PluginDir};

/// Directories searched for plugins, separated by `:`, after the site config's.
pub const PATH_VAR: &str = "AUTOGENTOO_PLUGIN_PATH";

/// The plugins of this run, and the libraries that could not be loaded.
#[derive(Default)]
pub struct Plugins {
    pub loaded: Vec<LoadedPlugin>,
    pub failures: Vec<Failure>,
    /// Each loaded plugin's settings from the site config, as hook inputs.
    settings: BTreeMap<String, Values>,
}

/// A plugin library (or directory) left out, and why.
#[derive(Clone, Debug)]
pub struct Failure {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {}: {}", self.path.display(), self.reason)
    }
}

/// Loads the plugins in the site config's `dirs` and in [`PATH_VAR`]'s directories, registers
/// what they provide, keeps each one's `[plugins.NAME]` settings for its hooks, and warns once
/// for each library left out.
pub fn load(config: &PluginsSection, registry: &mut Registry) -> Plugins {
    let mut dirs = config.dirs.to_vec();
    if let Some(path) = std::env::var_os(PATH_VAR) {
        dirs.extend(std::env::split_paths(&path).filter(|d| !d.as_os_str().is_empty()));
    }
    let mut plugins = Plugins::default();
    // In search order; each file once, however many names lead to it.
    let mut seen = BTreeSet::new();
    let mut libraries = Vec::new();
    for dir in &dirs {
        match libraries_in(dir) {
            Ok(found) => {
                for (path, library) in found {
                    match library {
                        Ok(library) => {
                            if seen.insert(library.id) {
                                libraries.push((path, library));
                            }
                        }
                        Err(distrust) => plugins.failures.push(Failure {
                            path,
                            reason: distrust.to_string(),
                        }),
                    }
                }
            }
            Err(distrust) => plugins.failures.push(Failure {
                path: dir.clone(),
                reason: distrust.to_string(),
            }),
        }
    }
    // Every library was opened and checked above; each is loaded through its descriptor, so
    // what runs is what was checked, whatever has happened to its path since.
    for (path, library) in libraries {
        match host::load_file(library.file, &path) {
            Ok(plugin) => {
                if let Err(failure) = plugins.admit(plugin, registry) {
                    plugins.failures.push(failure);
                }
            }
            Err(e) => plugins.failures.push(Failure {
                path: e.path,
                reason: e.reason.to_string(),
            }),
        }
    }
    for failure in &plugins.failures {
        tracing::warn!("{failure}");
    }
    for (name, settings) in &config.settings {
        if !plugins.loaded.iter().any(|p| &p.name == name) {
            tracing::warn!(
                "the site config has settings for plugin '{name}' ([plugins.{name}]), \
                 but no plugin of that name is loaded"
            );
            continue;
        }
        let mut values = Values::default();
        for (key, value) in settings {
            values.set(&format!("{SETTING_PREFIX}{key}"), value.to_string());
        }
        plugins.settings.insert(name.clone(), values);
    }
    plugins
}

/// A library as the user would name it (below the plugin directory as they gave it), open and
/// checked, or with the reason it cannot be trusted.
type Found = (PathBuf, Result<Library, Distrust>);

/// The `*.so` files of the plugin directory `dir`, sorted; or why `dir` itself cannot be
/// trusted. The `trust` module says what is checked, and how.
fn libraries_in(dir: &Path) -> Result<Vec<Found>, Distrust> {
    let opened = PluginDir::open(dir)?;
    let mut found = Vec::new();
    for name in opened.library_names()? {
        if let Some(library) = opened.library(&name).transpose() {
            found.push((dir.join(&name), library));
        }
    }
    Ok(found)
}

impl Plugins {
    /// Registers what a loaded plugin provides, unless a name clashes with a plugin, backend,
    /// packer or kernel builder already there.
    fn admit(&mut self, plugin: LoadedPlugin, registry: &mut Registry) -> Result<(), Failure> {
        let refuse = |reason: String| Failure {
            path: plugin.path.clone(),
            reason,
        };
        if let Some(earlier) = self.loaded.iter().find(|p| p.name == plugin.name) {
            return Err(refuse(format!(
                "plugin '{}' is already loaded from {}",
                plugin.name,
                earlier.path.display()
            )));
        }
        let offered = [
            (
                "storage backend",
                &plugin.storage_backends,
                registry.storage_names(),
            ),
            ("packer", &plugin.packers, registry.packer_names()),
            (
                "kernel builder",
                &plugin.kernel_builders,
                registry.kernel_builder_names(),
            ),
        ];
        for (what, names, taken) in offered {
            if let Some(name) = names.iter().find(|n| taken.contains(n)) {
                return Err(refuse(format!(
                    "plugin '{}' provides the {what} '{name}', which is already provided",
                    plugin.name
                )));
            }
        }
        for backend in &plugin.storage_backends {
            registry.register_storage(backend, plugin.storage_factory(backend));
        }
        for packer in &plugin.packers {
            registry.register_packer(packer, plugin.packer_factory(packer));
        }
        for builder in &plugin.kernel_builders {
            registry.register_kernel_builder(builder, plugin.kernel_builder_factory(builder));
        }
        self.loaded.push(plugin);
        Ok(())
    }

    /// The hooks of the pipeline for one build of `system`.
    pub fn step_hooks(&self, system: &str) -> StepHooks {
        let mut hooks = Vec::new();
        let mut plugins = Vec::new();
        for plugin in &self.loaded {
            let Some(plugin_hooks) = plugin.hooks() else {
                continue;
            };
            let settings = self.settings.get(&plugin.name).cloned().unwrap_or_default();
            let mut line = format!("{} {}", plugin.name, plugin.version);
            for (key, value) in settings.iter() {
                line.push_str(&format!(" {key}={}", value.to_string_lossy()));
            }
            plugins.push(line);
            hooks.push((plugin_hooks, settings));
        }
        StepHooks {
            hooks,
            plugins,
            system: system.to_owned(),
        }
    }
}

/// The plugins' hooks around the steps of one `build SYSTEM`, in load order.
pub struct StepHooks {
    /// Each plugin's hooks, with its settings.
    hooks: Vec<(PluginHooks, Values)>,
    /// The plugins with hooks: name, version and settings, for the steps' fingerprints.
    plugins: Vec<String>,
    system: String,
}

impl Hooks for StepHooks {
    /// Adds the plugins that hook the steps, their versions and settings, to a step's
    /// fingerprint, so that a new, upgraded or reconfigured plugin makes the step run again.
    /// Without any, adds nothing.
    fn mark(&self, fingerprint: Fingerprint) -> Fingerprint {
        if self.plugins.is_empty() {
            fingerprint
        } else {
            fingerprint.text("hook plugins", &self.plugins.join("\n"))
        }
    }

    /// Runs each plugin's hooks with the step's inputs and the plugin's settings.
    fn run(
        &self,
        point: HookPoint,
        step: StepName,
        inputs: &Values,
        outputs: &Values,
    ) -> Result<Vec<PluginOutcome>, HookError> {
        let mut outcomes = Vec::new();
        for (hooks, settings) in &self.hooks {
            let mut inputs = inputs.clone();
            for (key, value) in settings.iter() {
                inputs.set(key, value);
            }
            let seen = Step {
                system: self.system.clone(),
                name: step.as_str().to_owned(),
                inputs,
                outputs: outputs.clone(),
            };
            let outcome = hooks.run(point, &seen)?;
            outcomes.push(PluginOutcome {
                plugin: hooks.plugin().to_owned(),
                outcome,
            });
        }
        Ok(outcomes)
    }
}
