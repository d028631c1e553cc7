//! The plugin's side of the boundary: the [`Plugin`] a library defines, and the root module that
//! carries its calls. Every call from the host runs under `catch_unwind`, so a panic in plugin
//! code comes back as an error naming the call instead of unwinding across the boundary (which
//! would abort the host).

// `ErrorFfi` is the boundary's error type, passed by value with a layout the ABI fixes; errors
// are rare, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::OnceLock;

use abi_stable::library::{CheckTypeLayout, LibHeader, RootModuleResult};
use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBoxError, RResult, RStr, RString, RVec, Tuple2};
use std::sync::atomic::AtomicBool;

use autogentoo_core::kernel::{KernelBuilder, KernelError};
use autogentoo_core::pack::{PackError, Packer};
use autogentoo_core::registry::StorageSettings;
use autogentoo_core::stage_import::Silent;
use autogentoo_core::storage::{Storage, StorageError};

use crate::convert::*;
use crate::ffi::{
    error_kind, v1_0, ErrorFfi, KernelBuilderBox, KernelBuilderFfi, KernelBuilderFfi_TO,
    KernelJobFfi, KernelReportFfi, KeyedFfi, KindFfi, OutcomeItemFfi, PackReportFfi,
    PackRequestFfi, PackerBox, PackerCapabilitiesFfi, PackerFfi, PackerFfi_TO, PendingFfi,
    PluginMod, PluginModRef, SnapshotFfi, SnapshotIdFfi, StepFfi, StorageBox, StorageFfi,
    StorageFfi_TO, UsageFfi, VolumeFfi, VolumeIdFfi, HOOK_BEFORE, OUTCOME_LAYER, OUTCOME_NOTE,
};
use crate::hooks::{HookOutcome, PipelineHooks, Step};

/// Opens a storage backend: the same signature as a built-in backend's factory.
pub type StorageOpen = fn(&StorageSettings) -> Result<Box<dyn Storage>, StorageError>;

/// Makes a packer: the same signature as a built-in packer's factory.
pub type PackerOpen = fn() -> Result<Box<dyn Packer>, PackError>;

/// Makes a kernel builder: the same signature as a built-in builder's factory.
pub type KernelBuilderOpen = fn() -> Result<Box<dyn KernelBuilder>, KernelError>;

/// What a plugin provides. Build one in the function given to [`crate::export_plugin!`].
#[derive(Default)]
pub struct Plugin {
    storage: Vec<(String, StorageOpen)>,
    packers: Vec<(String, PackerOpen)>,
    kernel_builders: Vec<(String, KernelBuilderOpen)>,
    hooks: Option<Box<dyn PipelineHooks>>,
}

impl Plugin {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a storage backend, selected with `--backend NAME`.
    pub fn storage_backend(mut self, name: &str, open: StorageOpen) -> Self {
        self.storage.push((name.to_owned(), open));
        self
    }

    /// Adds a packer, selected with `pack.packer = "NAME"` (API 1.1).
    pub fn packer(mut self, name: &str, open: PackerOpen) -> Self {
        self.packers.push((name.to_owned(), open));
        self
    }

    /// Adds a kernel builder, selected with a system's `kernel_build = "NAME"` (API 1.1).
    pub fn kernel_builder(mut self, name: &str, open: KernelBuilderOpen) -> Self {
        self.kernel_builders.push((name.to_owned(), open));
        self
    }

    /// Sets the plugin's pipeline hooks.
    pub fn pipeline_hooks(mut self, hooks: impl PipelineHooks) -> Self {
        self.hooks = Some(Box::new(hooks));
        self
    }
}

/// The plugin this library defines; each plugin library has its own copy of this crate, and so
/// of this cell.
static PLUGIN: OnceLock<Plugin> = OnceLock::new();

thread_local! {
    /// Where the last panic of this thread happened, for the error that reports it.
    static PANIC_LOCATION: RefCell<Option<String>> = const { RefCell::new(None) };
}

pub use abi_stable::library::__call_root_module_loader as call_root_module_loader;

/// The header abi_stable reads, for the root module `load` returns.
///
/// # Safety
/// `load` must return the root module of [`PluginModRef`]'s type.
pub const unsafe fn lib_header(load: extern "C" fn() -> RootModuleResult) -> LibHeader {
    // SAFETY: as the caller promises.
    unsafe { LibHeader::from_constructor::<PluginModRef>(load, CheckTypeLayout::Yes) }
}

/// The header abi_stable reads, for a root module laid out as API 1.0 laid it out.
///
/// # Safety
/// `load` must return the root module of [`v1_0::PluginModRef`]'s type.
pub const unsafe fn lib_header_v1_0(load: extern "C" fn() -> RootModuleResult) -> LibHeader {
    // SAFETY: as the caller promises.
    unsafe { LibHeader::from_constructor::<v1_0::PluginModRef>(load, CheckTypeLayout::Yes) }
}

/// Defines the plugin and returns its root module as API 1.0 laid it out: for the test plugin
/// that stands for a plugin built against 1.0.
pub fn root_module_v1_0(define: fn() -> Plugin) -> Result<v1_0::PluginModRef, RBoxError> {
    define_once(define)?;
    Ok(v1_0::PluginMod {
        provides,
        open_storage,
        run_hook,
    }
    .leak_into_prefix())
}

/// Defines the plugin and returns its root module; called once, when the host loads it.
pub fn root_module(define: fn() -> Plugin) -> Result<PluginModRef, RBoxError> {
    define_once(define)?;
    Ok(PluginMod {
        provides,
        open_storage,
        run_hook,
        open_packer,
        open_kernel_builder,
    }
    .leak_into_prefix())
}

fn define_once(define: fn() -> Plugin) -> Result<(), RBoxError> {
    // This library's panics are caught at the boundary and reported there; the default hook
    // would print them as well, on the host's stderr.
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(|l| l.to_string());
        PANIC_LOCATION.with(|cell| *cell.borrow_mut() = location);
    }));
    let plugin = catch_unwind(define).map_err(|payload| {
        let message = format!("defining the plugin panicked: {}", panic_message(payload));
        RBoxError::from_fmt(&message)
    })?;
    let _ = PLUGIN.set(plugin);
    Ok(())
}

fn plugin() -> &'static Plugin {
    PLUGIN
        .get()
        .expect("the root module defines the plugin first")
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned());
    match PANIC_LOCATION.with(|cell| cell.borrow_mut().take()) {
        Some(location) => format!("{text} (at {location})"),
        None => text,
    }
}

/// Runs `call`, turning a panic into an error.
fn guard<T>(call: impl FnOnce() -> Result<T, ErrorFfi>) -> RResult<T, ErrorFfi> {
    match catch_unwind(AssertUnwindSafe(call)) {
        Ok(result) => result.into(),
        Err(payload) => RResult::RErr(ErrorFfi::new(error_kind::PANICKED, panic_message(payload))),
    }
}

extern "C" fn provides() -> RResult<RVec<Tuple2<RString, RString>>, ErrorFfi> {
    guard(|| {
        let plugin = plugin();
        let mut out: RVec<Tuple2<RString, RString>> = plugin
            .storage
            .iter()
            .map(|(name, _)| Tuple2("storage".into(), name.as_str().into()))
            .collect();
        let named = |kind: &str, name: &String| Tuple2(kind.into(), name.as_str().into());
        out.extend(plugin.packers.iter().map(|(n, _)| named("packer", n)));
        out.extend(
            plugin
                .kernel_builders
                .iter()
                .map(|(n, _)| named("kernel-builder", n)),
        );
        if plugin.hooks.is_some() {
            out.push(Tuple2("pipeline-hooks".into(), RString::new()));
        }
        Ok(out)
    })
}

extern "C" fn open_storage(name: RStr<'_>, settings: &KeyedFfi) -> RResult<StorageBox, ErrorFfi> {
    guard(|| {
        let open = opener(&plugin().storage, "storage backend", &name)?;
        let storage = open(&settings_from(settings)).map_err(error_ffi)?;
        Ok(StorageFfi_TO::from_value(Guest(storage), TD_Opaque))
    })
}

/// The opener registered under `name`, or an error saying this plugin has no such `what`.
fn opener<T: Copy>(list: &[(String, T)], what: &str, name: &str) -> Result<T, ErrorFfi> {
    list.iter()
        .find(|(known, _)| known == name)
        .map(|(_, open)| *open)
        .ok_or_else(|| {
            ErrorFfi::new(
                error_kind::UNKNOWN_BACKEND,
                format!("this plugin provides no {what} '{name}'"),
            )
        })
}

extern "C" fn open_packer(name: RStr<'_>) -> RResult<PackerBox, ErrorFfi> {
    guard(|| {
        let open = opener(&plugin().packers, "packer", &name)?;
        let packer = open().map_err(pack_error_ffi)?;
        Ok(PackerFfi_TO::from_value(GuestPacker(packer), TD_Opaque))
    })
}

extern "C" fn open_kernel_builder(name: RStr<'_>) -> RResult<KernelBuilderBox, ErrorFfi> {
    guard(|| {
        let open = opener(&plugin().kernel_builders, "kernel builder", &name)?;
        let builder = open().map_err(kernel_error_ffi)?;
        Ok(KernelBuilderFfi_TO::from_value(
            GuestKernelBuilder(builder),
            TD_Opaque,
        ))
    })
}

extern "C" fn run_hook(point: u8, step: &StepFfi) -> RResult<RVec<OutcomeItemFfi>, ErrorFfi> {
    guard(|| {
        let Some(hooks) = &plugin().hooks else {
            return Ok(RVec::new());
        };
        let step = Step {
            system: step.system.clone().into(),
            name: step.step.clone().into(),
            inputs: keyed_from(&step.inputs),
            outputs: keyed_from(&step.outputs),
        };
        let outcome = if point == HOOK_BEFORE {
            hooks.before(&step)
        } else {
            hooks.after(&step)
        };
        outcome
            .map(outcome_ffi)
            .map_err(|error| ErrorFfi::new(error_kind::FAILED, chain_text(&*error)))
    })
}

fn outcome_ffi(outcome: HookOutcome) -> RVec<OutcomeItemFfi> {
    let layers = outcome.layers.into_iter().map(|layer| OutcomeItemFfi {
        kind: OUTCOME_LAYER,
        name: layer.name.into(),
        value: path_ffi(&layer.path),
    });
    let notes = outcome.notes.into_iter().map(|note| OutcomeItemFfi {
        kind: OUTCOME_NOTE,
        name: note.into(),
        value: RVec::new(),
    });
    layers.chain(notes).collect()
}

/// A plugin's storage backend, answering the host.
struct Guest(Box<dyn Storage>);

impl Guest {
    fn call<T>(
        &self,
        call: impl FnOnce(&dyn Storage) -> Result<T, StorageError>,
    ) -> RResult<T, ErrorFfi> {
        guard(|| call(&*self.0).map_err(error_ffi))
    }
}

impl StorageFfi for Guest {
    fn backend_name(&self) -> RResult<RString, ErrorFfi> {
        self.call(|s| Ok(s.backend_name().into()))
    }

    fn capabilities(&self) -> RResult<u64, ErrorFfi> {
        self.call(|s| Ok(capabilities_ffi(s.capabilities())))
    }

    fn init(&self) -> RResult<(), ErrorFfi> {
        self.call(|s| s.init())
    }

    fn usage(&self) -> RResult<UsageFfi, ErrorFfi> {
        self.call(|s| s.usage().map(usage_ffi))
    }

    fn create(&self, id: &VolumeIdFfi) -> RResult<VolumeFfi, ErrorFfi> {
        self.call(|s| s.create(&volume_id_from(id)?).map(volume_ffi))
    }

    fn create_pending(&self, id: &VolumeIdFfi) -> RResult<PendingFfi, ErrorFfi> {
        self.call(|s| s.create_pending(&volume_id_from(id)?).map(pending_ffi))
    }

    fn commit(&self, pending: PendingFfi) -> RResult<VolumeFfi, ErrorFfi> {
        self.call(|s| s.commit(pending_from(pending)?).map(volume_ffi))
    }

    fn discard(&self, pending: PendingFfi) -> RResult<(), ErrorFfi> {
        self.call(|s| s.discard(pending_from(pending)?))
    }

    fn sweep_abandoned(&self) -> RResult<u64, ErrorFfi> {
        self.call(|s| s.sweep_abandoned().map(|n| n as u64))
    }

    fn snapshot(&self, id: &SnapshotIdFfi) -> RResult<SnapshotFfi, ErrorFfi> {
        self.call(|s| s.snapshot(&snapshot_id_from(id)?).map(snapshot_ffi))
    }

    fn seal(&self, id: &VolumeIdFfi, snapshot: RStr<'_>) -> RResult<SnapshotFfi, ErrorFfi> {
        self.call(|s| s.seal(&volume_id_from(id)?, &snapshot).map(snapshot_ffi))
    }

    fn snapshots(&self, id: &VolumeIdFfi) -> RResult<RVec<SnapshotFfi>, ErrorFfi> {
        self.call(|s| {
            let list = s.snapshots(&volume_id_from(id)?)?;
            Ok(list.into_iter().map(snapshot_ffi).collect())
        })
    }

    fn clone_snapshot(
        &self,
        from: &SnapshotIdFfi,
        id: &VolumeIdFfi,
    ) -> RResult<VolumeFfi, ErrorFfi> {
        self.call(|s| {
            s.clone_snapshot(&snapshot_id_from(from)?, &volume_id_from(id)?)
                .map(volume_ffi)
        })
    }

    fn rollback(&self, to: &SnapshotIdFfi) -> RResult<(), ErrorFfi> {
        self.call(|s| s.rollback(&snapshot_id_from(to)?))
    }

    fn destroy(&self, id: &VolumeIdFfi) -> RResult<(), ErrorFfi> {
        self.call(|s| s.destroy(&volume_id_from(id)?))
    }

    fn destroy_snapshot(&self, id: &SnapshotIdFfi) -> RResult<(), ErrorFfi> {
        self.call(|s| s.destroy_snapshot(&snapshot_id_from(id)?))
    }

    fn list(&self, kind: KindFfi) -> RResult<RVec<VolumeFfi>, ErrorFfi> {
        self.call(|s| {
            let list = s.list(kind_from(kind))?;
            Ok(list.into_iter().map(volume_ffi).collect())
        })
    }

    fn get(&self, id: &VolumeIdFfi) -> RResult<VolumeFfi, ErrorFfi> {
        self.call(|s| s.get(&volume_id_from(id)?).map(volume_ffi))
    }

    fn set_property(
        &self,
        id: &VolumeIdFfi,
        key: RStr<'_>,
        value: RStr<'_>,
    ) -> RResult<(), ErrorFfi> {
        self.call(|s| s.set_property(&volume_id_from(id)?, &key, &value))
    }
}

/// A plugin's packer, answering the host.
struct GuestPacker(Box<dyn Packer>);

impl PackerFfi for GuestPacker {
    fn name(&self) -> RResult<RString, ErrorFfi> {
        guard(|| Ok(self.0.name().into()))
    }

    fn capabilities(&self) -> RResult<PackerCapabilitiesFfi, ErrorFfi> {
        guard(|| Ok(packer_capabilities_ffi(self.0.capabilities())))
    }

    fn pack(
        &self,
        request: &PackRequestFfi,
        cancel: &AtomicBool,
    ) -> RResult<PackReportFfi, ErrorFfi> {
        guard(|| {
            let request = pack_request_from(request, &Silent, cancel)?;
            self.0
                .pack(&request)
                .map(pack_report_ffi)
                .map_err(pack_error_ffi)
        })
    }
}

/// A plugin's kernel builder, answering the host.
struct GuestKernelBuilder(Box<dyn KernelBuilder>);

impl KernelBuilderFfi for GuestKernelBuilder {
    fn name(&self) -> RResult<RString, ErrorFfi> {
        guard(|| Ok(self.0.name().into()))
    }

    fn capabilities(&self) -> RResult<u64, ErrorFfi> {
        guard(|| Ok(kernel_capabilities_ffi(self.0.capabilities())))
    }

    fn build(&self, job: &KernelJobFfi) -> RResult<KernelReportFfi, ErrorFfi> {
        guard(|| {
            let parts = kernel_job_from(job)?;
            self.0
                .build(&parts.job())
                .map(kernel_report_ffi)
                .map_err(kernel_error_ffi)
        })
    }
}
