//! The program's side of the boundary: loading a plugin library, checking it, and adapting what
//! it provides to the core's types, so the rest of the program cannot tell a plugin's backend
//! from a built-in one.
//!
//! Loading goes in this order, and stops at the first problem with an error naming the file:
//! open the library (by path with [`load`], or as a file already opened and checked with
//! [`load_file`]); find the [`PluginHeader`](crate::PluginHeader) (none: not a plugin); check
//! its API version (incompatible: nothing else is read); find and check the root module (its
//! layout must match the declared version); ask what the plugin provides. Libraries stay loaded
//! for the life of the process: the objects they made may still be in use.

// `ErrorFfi` is the boundary's error type, passed by value with a layout the ABI fixes; errors
// are rare, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::fmt;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use abi_stable::library::{lib_header_from_raw_library, LibraryError, RawLibrary};
use abi_stable::std_types::{RResult, RStr, RString, Tuple2};
use autogentoo_core::kernel::{
    KernelBuilder, KernelBuilderCapabilities, KernelError, KernelJob, KernelReport,
};
use autogentoo_core::pack::{PackError, PackReport, PackRequest, Packer, PackerCapabilities};
use autogentoo_core::registry::StorageSettings;
use autogentoo_core::storage::{
    Capabilities, PendingVolume, Snapshot, SnapshotId, Storage, StorageError, Usage, Volume,
    VolumeId, VolumeKind,
};

use crate::convert::*;
use crate::ffi::{
    error_kind, v1_0, ErrorFfi, KernelBuilderBox, PackerBox, PluginModRef, StepFfi, StorageBox,
    HOOK_AFTER, HOOK_BEFORE, OUTCOME_LAYER, OUTCOME_NOTE,
};
use crate::hooks::{ExtraLayer, HookOutcome, HookPoint, Step};
use crate::{ApiVersion, PluginHeader, API_VERSION, HEADER_MAGIC, HEADER_SYMBOL};

/// A library that could not be used as a plugin: the file and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct LoadError {
    pub path: PathBuf,
    pub reason: LoadFailure,
}

/// Why a library could not be used as a plugin.
#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    #[error("cannot load the library: {0}")]
    Open(String),
    #[error("not an autogentoo plugin (it has no `{HEADER_SYMBOL}` symbol)")]
    NotAPlugin,
    #[error(
        "plugin '{name}' was built for API {plugin}, this autogentoo speaks {host}; \
         rebuild it against autogentoo-plugin-api {}.x",
        host.major
    )]
    Incompatible {
        name: String,
        plugin: ApiVersion,
        host: ApiVersion,
    },
    #[error("plugin '{name}' is missing a symbol: {reason}")]
    MissingSymbol { name: String, reason: String },
    #[error("plugin '{name}' does not match the API {api} it declares: {reason}")]
    Mismatch {
        name: String,
        api: ApiVersion,
        reason: String,
    },
    #[error("plugin '{name}' failed to start: {reason}")]
    Start { name: String, reason: String },
}

/// A loaded plugin: what its header says and what it provides.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub path: PathBuf,
    pub name: String,
    pub version: String,
    /// The API version it was built for.
    pub api: ApiVersion,
    /// The storage backends it provides, by name.
    pub storage_backends: Vec<String>,
    /// The packers it provides, by name (API 1.1).
    pub packers: Vec<String>,
    /// The kernel builders it provides, by name (API 1.1).
    pub kernel_builders: Vec<String>,
    /// Whether it has pipeline hooks.
    pub pipeline_hooks: bool,
    module: PluginModRef,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("version", &self.version)
            .field("api", &self.api)
            .finish_non_exhaustive()
    }
}

/// Loads the plugin library at `path`. See the module's documentation for the checks.
pub fn load(path: &Path) -> Result<LoadedPlugin, LoadError> {
    let fail = |reason| LoadError {
        path: path.to_owned(),
        reason,
    };
    let library =
        RawLibrary::load_at(path).map_err(|e| fail(LoadFailure::Open(library_error(e))))?;
    check(library, path).map_err(fail)
}

/// Loads the plugin library `file` is open on, and no other: a caller that has checked an open
/// file (its owner, its mode) loads what it checked, whatever happens to `path` meanwhile.
/// `path` is where it was found, for the plugin's [`LoadedPlugin::path`] and for errors.
///
/// The dynamic loader opens the file again through `/proc/self/fd/N`, which leads to the open
/// file itself, not to a path. The loader then knows the library by that name, and hands an
/// already loaded library to whoever asks for a name it knows, before looking at any file: so
/// `N` must never name another library in this process, and `file` stays open for as long as
/// the library may stay loaded, that is for the life of the process (open it close-on-exec, so
/// that no child inherits it). `$ORIGIN` in the library's own search path then means
/// `/proc/self/fd`: a plugin is one self-contained library.
pub fn load_file(file: OwnedFd, path: &Path) -> Result<LoadedPlugin, LoadError> {
    let fail = |reason| LoadError {
        path: path.to_owned(),
        reason,
    };
    let opened = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    let library = RawLibrary::load_at(&opened).map_err(|e| {
        // The loader's message names the file it was given; the user knows it by `path`.
        let said =
            library_error(e).replace(&opened.display().to_string(), &path.display().to_string());
        fail(LoadFailure::Open(said))
    })?;
    let _kept_open = file.into_raw_fd();
    check(library, path).map_err(fail)
}

/// The checks after the library is open, in the order the module's documentation gives.
fn check(library: RawLibrary, path: &Path) -> Result<LoadedPlugin, LoadFailure> {
    let (name, version, api) = read_header(&library)?;
    if !API_VERSION.accepts(api) {
        return Err(LoadFailure::Incompatible {
            name,
            plugin: api,
            host: API_VERSION,
        });
    }
    // SAFETY: the library stays loaded for the life of the process (it is leaked below).
    let header = unsafe { lib_header_from_raw_library(&library) };
    // Objects the plugin makes point into it: it is never unloaded.
    std::mem::forget(library);
    let header = header.map_err(|e| LoadFailure::MissingSymbol {
        name: name.clone(),
        reason: library_error(e),
    })?;
    let module = match api.minor {
        // abi_stable refuses a root module with fewer entries than the type it is checked
        // against, so a 1.0 plugin is checked against the root module as 1.0 laid it out. Its
        // entries are a prefix of ours, and the accessors of the later ones read the plugin's
        // own count of entries, so they answer "absent" for it.
        0 => header
            .init_root_module::<v1_0::PluginModRef>()
            // SAFETY: the 1.0 root module is the prefix of ours, entry for entry.
            .map(|module| PluginModRef(unsafe { module.0.cast() })),
        _ => header.init_root_module::<PluginModRef>(),
    };
    let module = module.map_err(|e| match e {
        LibraryError::RootModule { err, .. } => LoadFailure::Start {
            name: name.clone(),
            reason: match err {
                abi_stable::library::RootModuleError::Unwound => "it panicked".to_owned(),
                other => other.to_string(),
            },
        },
        other => LoadFailure::Mismatch {
            name: name.clone(),
            api,
            reason: library_error(other),
        },
    })?;
    let provides = match (module.provides())() {
        RResult::ROk(list) => list,
        RResult::RErr(e) => {
            return Err(LoadFailure::Start {
                name,
                reason: hook_error_text(e),
            })
        }
    };
    let mut storage_backends = Vec::new();
    let mut packers = Vec::new();
    let mut kernel_builders = Vec::new();
    let mut pipeline_hooks = false;
    for Tuple2(kind, provided) in provides {
        match kind.as_str() {
            "storage" => storage_backends.push(provided.into()),
            "packer" => packers.push(provided.into()),
            "kernel-builder" => kernel_builders.push(provided.into()),
            "pipeline-hooks" => pipeline_hooks = true,
            // A kind from a later minor version than ours: accepts() refused such plugins.
            _ => {}
        }
    }
    Ok(LoadedPlugin {
        path: path.to_owned(),
        name,
        version,
        api,
        storage_backends,
        packers,
        kernel_builders,
        pipeline_hooks,
        module,
    })
}

fn read_header(library: &RawLibrary) -> Result<(String, String, ApiVersion), LoadFailure> {
    let symbol = format!("{HEADER_SYMBOL}\0");
    // SAFETY: the symbol is a `PluginHeader` static if the magic says so; only the magic is read
    // before that is known, and the header is at least as long as the magic.
    let header: &PluginHeader = unsafe {
        let pointer = library
            .get::<*const PluginHeader>(symbol.as_bytes())
            .map_err(|_| LoadFailure::NotAPlugin)?;
        &**pointer
    };
    if header.magic != HEADER_MAGIC {
        return Err(LoadFailure::NotAPlugin);
    }
    Ok((
        PluginHeader::text(&header.name),
        PluginHeader::text(&header.version),
        header.api,
    ))
}

/// abi_stable's error, on one line: the loader's own message for a library that cannot be
/// opened or lacks a symbol, the first lines of a layout mismatch (described at great length).
fn library_error(error: LibraryError) -> String {
    let text = match error {
        LibraryError::OpenError { err, .. } => return err.to_string(),
        LibraryError::GetSymbolError { symbol, err, .. } => {
            return format!(
                "`{}`: {err}",
                String::from_utf8_lossy(&symbol).trim_end_matches('\0')
            )
        }
        other => other.to_string(),
    };
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut shown = lines.iter().take(3).copied().collect::<Vec<_>>().join(" ");
    if lines.len() > 3 {
        shown.push_str(" …");
    }
    shown
}

fn hook_error_text(error: ErrorFfi) -> String {
    let what: String = error.what.into();
    if error.kind == error_kind::PANICKED {
        format!("panicked: {what}")
    } else {
        what
    }
}

impl LoadedPlugin {
    /// The factory of the storage backend `backend`, for the core registry.
    pub fn storage_factory(
        &self,
        backend: &str,
    ) -> impl Fn(&StorageSettings) -> Result<Box<dyn Storage>, StorageError> + Send + Sync + 'static
    {
        let module = self.module;
        let plugin: Arc<str> = self.name.as_str().into();
        let backend = backend.to_owned();
        move |settings| open_storage(module, &plugin, &backend, settings)
    }

    /// The factory of the packer `packer`, for the core registry.
    pub fn packer_factory(
        &self,
        packer: &str,
    ) -> impl Fn() -> Result<Box<dyn Packer>, PackError> + Send + Sync + 'static {
        let module = self.module;
        let plugin: Arc<str> = self.name.as_str().into();
        let packer = packer.to_owned();
        move || open_packer(module, &plugin, &packer)
    }

    /// The factory of the kernel builder `builder`, for the core registry.
    pub fn kernel_builder_factory(
        &self,
        builder: &str,
    ) -> impl Fn() -> Result<Box<dyn KernelBuilder>, KernelError> + Send + Sync + 'static {
        let module = self.module;
        let plugin: Arc<str> = self.name.as_str().into();
        let builder = builder.to_owned();
        move || open_kernel_builder(module, &plugin, &builder)
    }

    /// The plugin's pipeline hooks, if it has any.
    pub fn hooks(&self) -> Option<PluginHooks> {
        self.pipeline_hooks.then(|| PluginHooks {
            plugin: self.name.clone(),
            module: self.module,
        })
    }
}

fn open_storage(
    module: PluginModRef,
    plugin: &Arc<str>,
    backend: &str,
    settings: &StorageSettings,
) -> Result<Box<dyn Storage>, StorageError> {
    let call = |what: &str| format!("opening the '{backend}' backend{what}");
    let inner = into_result((module.open_storage())(
        RStr::from_str(backend),
        &settings_ffi(settings),
    ))
    .map_err(|e| error_from(e, plugin, &call("")))?;
    let name = into_result(inner.backend_name())
        .map_err(|e| error_from(e, plugin, &call(" (its name)")))?;
    let capabilities = into_result(inner.capabilities())
        .map_err(|e| error_from(e, plugin, &call(" (its capabilities)")))?;
    Ok(Box::new(PluginStorage {
        inner,
        plugin: plugin.clone(),
        name: name.into(),
        capabilities: capabilities_from(capabilities),
    }))
}

/// A plugin that lists a packer or kernel builder in `provides` but lacks the entry that makes
/// one: only a plugin whose header and root module disagree.
fn absent(plugin: &str, entry: &str) -> ErrorFfi {
    ErrorFfi::new(
        error_kind::FAILED,
        format!("plugin '{plugin}' lists a {entry} but has no entry to make one"),
    )
}

fn open_packer(
    module: PluginModRef,
    plugin: &Arc<str>,
    packer: &str,
) -> Result<Box<dyn Packer>, PackError> {
    let call = format!("opening the '{packer}' packer");
    let fail = |e| pack_error_from(e, plugin, &call);
    let open = module
        .open_packer()
        .ok_or_else(|| fail(absent(plugin, "packer")))?;
    let inner: PackerBox = into_result(open(RStr::from_str(packer))).map_err(fail)?;
    let name = into_result(inner.name()).map_err(fail)?;
    let capabilities = into_result(inner.capabilities()).map_err(fail)?;
    Ok(Box::new(PluginPacker {
        inner,
        plugin: plugin.clone(),
        name: name.into(),
        capabilities: packer_capabilities_from(capabilities),
    }))
}

fn open_kernel_builder(
    module: PluginModRef,
    plugin: &Arc<str>,
    builder: &str,
) -> Result<Box<dyn KernelBuilder>, KernelError> {
    let call = format!("opening the '{builder}' kernel builder");
    let fail = |e| kernel_error_from(e, plugin, &call);
    let open = module
        .open_kernel_builder()
        .ok_or_else(|| fail(absent(plugin, "kernel builder")))?;
    let inner: KernelBuilderBox = into_result(open(RStr::from_str(builder))).map_err(fail)?;
    let name = into_result(inner.name()).map_err(fail)?;
    let capabilities = into_result(inner.capabilities()).map_err(fail)?;
    Ok(Box::new(PluginKernelBuilder {
        inner,
        plugin: plugin.clone(),
        name: name.into(),
        capabilities: kernel_capabilities_from(capabilities),
    }))
}

/// A plugin's packer as the core sees it; its name and capabilities are asked once.
struct PluginPacker {
    inner: PackerBox,
    plugin: Arc<str>,
    name: String,
    capabilities: PackerCapabilities,
}

impl Packer for PluginPacker {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> PackerCapabilities {
        self.capabilities.clone()
    }

    fn pack(&self, request: &PackRequest) -> Result<PackReport, PackError> {
        let result = into_result(self.inner.pack(&pack_request_ffi(request), request.cancel));
        let call = format!("the '{}' packer", self.name);
        let report = result.map_err(|e| pack_error_from(e, &self.plugin, &call))?;
        pack_report_from(report).map_err(|e| pack_error_from(e, &self.plugin, &call))
    }
}

/// A plugin's kernel builder as the core sees it; its name and capabilities are asked once.
struct PluginKernelBuilder {
    inner: KernelBuilderBox,
    plugin: Arc<str>,
    name: String,
    capabilities: KernelBuilderCapabilities,
}

impl KernelBuilder for PluginKernelBuilder {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> KernelBuilderCapabilities {
        self.capabilities.clone()
    }

    fn build(&self, job: &KernelJob) -> Result<KernelReport, KernelError> {
        let call = format!("the '{}' kernel builder", self.name);
        into_result(self.inner.build(&kernel_job_ffi(job)))
            .map(kernel_report_from)
            .map_err(|e| kernel_error_from(e, &self.plugin, &call))
    }
}

fn into_result<T>(result: RResult<T, ErrorFfi>) -> Result<T, ErrorFfi> {
    result.into()
}

/// A plugin's storage backend as the core sees it.
struct PluginStorage {
    inner: StorageBox,
    plugin: Arc<str>,
    name: String,
    /// Asked once when the store is opened, as built-in backends probe theirs.
    capabilities: Capabilities,
}

impl PluginStorage {
    fn answer<T, U>(
        &self,
        call: &str,
        result: RResult<T, ErrorFfi>,
        convert: impl FnOnce(T) -> Result<U, StorageError>,
    ) -> Result<U, StorageError> {
        match result {
            RResult::ROk(value) => convert(value),
            RResult::RErr(e) => Err(error_from(e, &self.plugin, call)),
        }
    }
}

impl Storage for PluginStorage {
    fn backend_name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn init(&self) -> Result<(), StorageError> {
        self.answer("init", self.inner.init(), Ok)
    }

    fn usage(&self) -> Result<Usage, StorageError> {
        self.answer("usage", self.inner.usage(), |u| Ok(usage_from(u)))
    }

    fn create(&self, id: &VolumeId) -> Result<Volume, StorageError> {
        self.answer("create", self.inner.create(&volume_id_ffi(id)), volume_from)
    }

    fn create_pending(&self, id: &VolumeId) -> Result<PendingVolume, StorageError> {
        let result = self.inner.create_pending(&volume_id_ffi(id));
        self.answer("create_pending", result, pending_from)
    }

    fn commit(&self, pending: PendingVolume) -> Result<Volume, StorageError> {
        let result = self.inner.commit(pending_ffi(pending));
        self.answer("commit", result, volume_from)
    }

    fn discard(&self, pending: PendingVolume) -> Result<(), StorageError> {
        self.answer("discard", self.inner.discard(pending_ffi(pending)), Ok)
    }

    fn sweep_abandoned(&self) -> Result<usize, StorageError> {
        let result = self.inner.sweep_abandoned();
        self.answer("sweep_abandoned", result, |n| Ok(n as usize))
    }

    fn snapshot(&self, id: &SnapshotId) -> Result<Snapshot, StorageError> {
        let result = self.inner.snapshot(&snapshot_id_ffi(id));
        self.answer("snapshot", result, snapshot_from)
    }

    fn seal(&self, id: &VolumeId, snapshot: &str) -> Result<Snapshot, StorageError> {
        let result = self
            .inner
            .seal(&volume_id_ffi(id), RStr::from_str(snapshot));
        self.answer("seal", result, snapshot_from)
    }

    fn snapshots(&self, id: &VolumeId) -> Result<Vec<Snapshot>, StorageError> {
        let result = self.inner.snapshots(&volume_id_ffi(id));
        self.answer("snapshots", result, |list| {
            list.into_iter().map(snapshot_from).collect()
        })
    }

    fn clone_snapshot(&self, from: &SnapshotId, id: &VolumeId) -> Result<Volume, StorageError> {
        let result = self
            .inner
            .clone_snapshot(&snapshot_id_ffi(from), &volume_id_ffi(id));
        self.answer("clone_snapshot", result, volume_from)
    }

    fn rollback(&self, to: &SnapshotId) -> Result<(), StorageError> {
        self.answer("rollback", self.inner.rollback(&snapshot_id_ffi(to)), Ok)
    }

    fn destroy(&self, id: &VolumeId) -> Result<(), StorageError> {
        self.answer("destroy", self.inner.destroy(&volume_id_ffi(id)), Ok)
    }

    fn destroy_snapshot(&self, id: &SnapshotId) -> Result<(), StorageError> {
        let result = self.inner.destroy_snapshot(&snapshot_id_ffi(id));
        self.answer("destroy_snapshot", result, Ok)
    }

    fn list(&self, kind: VolumeKind) -> Result<Vec<Volume>, StorageError> {
        self.answer("list", self.inner.list(kind_ffi(kind)), |list| {
            list.into_iter().map(volume_from).collect()
        })
    }

    fn get(&self, id: &VolumeId) -> Result<Volume, StorageError> {
        self.answer("get", self.inner.get(&volume_id_ffi(id)), volume_from)
    }

    fn set_property(&self, id: &VolumeId, key: &str, value: &str) -> Result<(), StorageError> {
        let result = self.inner.set_property(
            &volume_id_ffi(id),
            RStr::from_str(key),
            RStr::from_str(value),
        );
        self.answer("set_property", result, Ok)
    }
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
pub enum HookFailure {
    #[error("plugin '{plugin}' failed {point} {step}: {message}")]
    Failed {
        plugin: String,
        point: HookPoint,
        step: String,
        message: String,
    },
    #[error("plugin '{plugin}' panicked {point} {step}: {message}")]
    Panicked {
        plugin: String,
        point: HookPoint,
        step: String,
        message: String,
    },
}

/// A plugin's pipeline hooks, as the pipeline calls them.
#[derive(Clone)]
pub struct PluginHooks {
    plugin: String,
    module: PluginModRef,
}

impl PluginHooks {
    /// The plugin's name, for messages.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Runs the hook at `point` of `step`.
    pub fn run(&self, point: HookPoint, step: &Step) -> Result<HookOutcome, HookFailure> {
        let ffi = StepFfi {
            system: step.system.as_str().into(),
            step: step.name.as_str().into(),
            inputs: keyed_ffi(&step.inputs),
            outputs: keyed_ffi(&step.outputs),
        };
        let code = match point {
            HookPoint::Before => HOOK_BEFORE,
            HookPoint::After => HOOK_AFTER,
        };
        let items = match (self.module.run_hook())(code, &ffi) {
            RResult::ROk(items) => items,
            RResult::RErr(e) => {
                let (plugin, step) = (self.plugin.clone(), step.name.clone());
                let message: String = e.what.into();
                return Err(if e.kind == error_kind::PANICKED {
                    HookFailure::Panicked {
                        plugin,
                        point,
                        step,
                        message,
                    }
                } else {
                    HookFailure::Failed {
                        plugin,
                        point,
                        step,
                        message,
                    }
                });
            }
        };
        let mut outcome = HookOutcome::default();
        for item in items {
            match item.kind {
                OUTCOME_LAYER => outcome.layers.push(ExtraLayer {
                    name: item.name.into(),
                    path: path_from(&item.value),
                }),
                OUTCOME_NOTE => outcome.notes.push(RString::into_string(item.name)),
                // A kind from a later minor version than ours: accepts() refused such plugins.
                _ => {}
            }
        }
        Ok(outcome)
    }
}
