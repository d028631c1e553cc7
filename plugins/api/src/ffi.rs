//! The types that cross the library boundary, in `abi_stable`'s terms. Nothing here is public
//! outside this crate: [`crate::convert`] turns them into the core's types and back.
//!
//! The root module and the storage interface are prefix types: a later minor version appends
//! entries after the ones marked `last_prefix_field`, and a host reading an older plugin sees
//! those entries as absent. Everything else that may grow is a keyed list or a bit set.

use abi_stable::library::RootModule;
use abi_stable::sabi_types::VersionStrings;
use std::sync::atomic::AtomicBool;

use abi_stable::std_types::{RBox, ROption, RResult, RStr, RString, RVec, Tuple2};
use abi_stable::{declare_root_module_statics, sabi_trait, StableAbi};

/// abi_stable's own version of the root module, kept equal to [`crate::API_VERSION`]: since its
/// major is not 0, abi_stable only requires equal majors, which the header check already ensured.
pub const ROOT_MODULE_VERSION: &str = "1.1.0";

/// Named values: storage settings, a step's inputs and outputs. Values are bytes, so paths need
/// not be UTF-8.
pub type KeyedFfi = RVec<Tuple2<RString, RVec<u8>>>;

/// A storage backend object made by a plugin.
pub type StorageBox = StorageFfi_TO<'static, RBox<()>>;

/// A packer made by a plugin (API 1.1).
pub type PackerBox = PackerFfi_TO<'static, RBox<()>>;

/// A kernel builder made by a plugin (API 1.1).
pub type KernelBuilderBox = KernelBuilderFfi_TO<'static, RBox<()>>;

/// The root module of a plugin.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
pub struct PluginMod {
    /// What the plugin provides, as `(kind, name)`: `("storage", "overlay")`,
    /// `("pipeline-hooks", "")`; since 1.1 also `("packer", NAME)` and
    /// `("kernel-builder", NAME)`.
    pub provides: extern "C" fn() -> RResult<RVec<Tuple2<RString, RString>>, ErrorFfi>,
    /// Opens the storage backend `name` with the settings (`workdir`, `dataset`).
    pub open_storage: extern "C" fn(RStr<'_>, &KeyedFfi) -> RResult<StorageBox, ErrorFfi>,
    /// Runs the plugin's hook at `point` (`HOOK_BEFORE` or `HOOK_AFTER`) of a step.
    #[sabi(last_prefix_field)]
    pub run_hook: extern "C" fn(u8, &StepFfi) -> RResult<RVec<OutcomeItemFfi>, ErrorFfi>,
    /// 1.1: makes the packer `name`.
    pub open_packer: extern "C" fn(RStr<'_>) -> RResult<PackerBox, ErrorFfi>,
    /// 1.1: makes the kernel builder `name`.
    pub open_kernel_builder: extern "C" fn(RStr<'_>) -> RResult<KernelBuilderBox, ErrorFfi>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "autogentoo_plugin";
    const NAME: &'static str = "autogentoo plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings::new(ROOT_MODULE_VERSION);
}

/// The root modules of earlier minor versions, frozen as they were released. abi_stable accepts
/// a root module with more entries than the type it is checked against, never fewer, so the host
/// checks a plugin against the root module of the version the plugin declares. Each minor
/// version that appends entries leaves its predecessor's root module here, unchanged.
// Only the layouts are used: a loaded module is read through the current root module's type.
#[allow(dead_code)]
pub mod v1_0 {
    use super::*;

    /// The root module of API 1.0.
    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
    pub struct PluginMod {
        pub provides: extern "C" fn() -> RResult<RVec<Tuple2<RString, RString>>, ErrorFfi>,
        pub open_storage: extern "C" fn(RStr<'_>, &KeyedFfi) -> RResult<StorageBox, ErrorFfi>,
        #[sabi(last_prefix_field)]
        pub run_hook: extern "C" fn(u8, &StepFfi) -> RResult<RVec<OutcomeItemFfi>, ErrorFfi>,
    }

    impl RootModule for PluginModRef {
        declare_root_module_statics! {PluginModRef}
        const BASE_NAME: &'static str = "autogentoo_plugin";
        const NAME: &'static str = "autogentoo plugin";
        const VERSION_STRINGS: VersionStrings = VersionStrings::new("1.0.0");
    }
}

pub const HOOK_BEFORE: u8 = 0;
pub const HOOK_AFTER: u8 = 1;

/// One step of the pipeline as a hook sees it.
#[repr(C)]
#[derive(StableAbi)]
pub struct StepFfi {
    pub system: RString,
    pub step: RString,
    pub inputs: KeyedFfi,
    pub outputs: KeyedFfi,
}

/// One item of what a hook returns; a host skips kinds it does not know.
#[repr(C)]
#[derive(StableAbi)]
pub struct OutcomeItemFfi {
    pub kind: u32,
    pub name: RString,
    pub value: RVec<u8>,
}

/// An extra layer for the pack: `name`, and the directory as `value`.
pub const OUTCOME_LAYER: u32 = 1;
/// A line for the log: the text as `name`.
pub const OUTCOME_NOTE: u32 = 2;

#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindFfi {
    Stage,
    Root,
    Kernel,
    Cache,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct VolumeIdFfi {
    pub kind: KindFfi,
    pub name: RString,
}

#[repr(C)]
#[derive(StableAbi, Clone, Debug)]
pub struct SnapshotIdFfi {
    pub volume: VolumeIdFfi,
    pub name: RString,
}

#[repr(C)]
#[derive(StableAbi)]
pub struct VolumeFfi {
    pub id: VolumeIdFfi,
    pub path: RVec<u8>,
    pub origin: abi_stable::std_types::ROption<SnapshotIdFfi>,
    pub sealed: bool,
    pub created: i64,
    pub properties: RVec<Tuple2<RString, RString>>,
}

#[repr(C)]
#[derive(StableAbi)]
pub struct SnapshotFfi {
    pub id: SnapshotIdFfi,
    pub created: i64,
}

#[repr(C)]
#[derive(StableAbi)]
pub struct UsageFfi {
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
}

#[repr(C)]
#[derive(StableAbi)]
pub struct PendingFfi {
    pub id: VolumeIdFfi,
    pub path: RVec<u8>,
    pub token: RString,
}

/// Capabilities as bits; a capability added later is a new bit, and an older plugin's 0 there
/// reads as "cannot".
pub mod caps {
    pub const CHEAP_CLONE: u64 = 1 << 0;
    pub const CHEAP_SNAPSHOT: u64 = 1 << 1;
    pub const ENFORCED_READ_ONLY: u64 = 1 << 2;
    pub const XATTRS: u64 = 1 << 3;
    pub const SPECIAL_FILES: u64 = 1 << 4;
    pub const SHARED_BLOCKS: u64 = 1 << 5;
}

/// An error, as a kind code and the texts its kind needs; see [`crate::convert`] for which
/// field holds what. A host shows an unknown kind's `what` as it is.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub struct ErrorFfi {
    pub kind: u32,
    pub what: RString,
    pub detail: RString,
    pub path: RVec<u8>,
    pub errno: i32,
    pub dependants: RVec<VolumeIdFfi>,
}

/// Error kinds: the core's storage errors, a hook's failure, and a panic caught in the plugin.
pub mod error_kind {
    pub const NOT_FOUND: u32 = 1;
    pub const ALREADY_EXISTS: u32 = 2;
    pub const HAS_DEPENDANTS: u32 = 3;
    pub const READ_ONLY: u32 = 4;
    pub const INVALID_NAME: u32 = 5;
    pub const INVALID_PROPERTY: u32 = 6;
    pub const MISSING_PREREQUISITE: u32 = 7;
    pub const UNSUPPORTED: u32 = 8;
    pub const IO: u32 = 9;
    pub const COMMAND: u32 = 10;
    pub const CORRUPT: u32 = 11;
    pub const FAILED: u32 = 12;
    pub const UNKNOWN_BACKEND: u32 = 13;
    /// 1.1: a pack stopped because it was asked to.
    pub const INTERRUPTED: u32 = 14;
    pub const PANICKED: u32 = 100;
}

/// A storage backend, method for method the core's `Storage` trait.
#[sabi_trait]
pub trait StorageFfi: Send + Sync {
    fn backend_name(&self) -> RResult<RString, ErrorFfi>;
    fn capabilities(&self) -> RResult<u64, ErrorFfi>;
    fn init(&self) -> RResult<(), ErrorFfi>;
    fn usage(&self) -> RResult<UsageFfi, ErrorFfi>;
    fn create(&self, id: &VolumeIdFfi) -> RResult<VolumeFfi, ErrorFfi>;
    fn create_pending(&self, id: &VolumeIdFfi) -> RResult<PendingFfi, ErrorFfi>;
    fn commit(&self, pending: PendingFfi) -> RResult<VolumeFfi, ErrorFfi>;
    fn discard(&self, pending: PendingFfi) -> RResult<(), ErrorFfi>;
    fn sweep_abandoned(&self) -> RResult<u64, ErrorFfi>;
    fn snapshot(&self, id: &SnapshotIdFfi) -> RResult<SnapshotFfi, ErrorFfi>;
    fn seal(&self, id: &VolumeIdFfi, snapshot: RStr<'_>) -> RResult<SnapshotFfi, ErrorFfi>;
    fn snapshots(&self, id: &VolumeIdFfi) -> RResult<RVec<SnapshotFfi>, ErrorFfi>;
    fn clone_snapshot(
        &self,
        from: &SnapshotIdFfi,
        id: &VolumeIdFfi,
    ) -> RResult<VolumeFfi, ErrorFfi>;
    fn rollback(&self, to: &SnapshotIdFfi) -> RResult<(), ErrorFfi>;
    fn destroy(&self, id: &VolumeIdFfi) -> RResult<(), ErrorFfi>;
    fn destroy_snapshot(&self, id: &SnapshotIdFfi) -> RResult<(), ErrorFfi>;
    fn list(&self, kind: KindFfi) -> RResult<RVec<VolumeFfi>, ErrorFfi>;
    fn get(&self, id: &VolumeIdFfi) -> RResult<VolumeFfi, ErrorFfi>;
    #[sabi(last_prefix_field)]
    fn set_property(
        &self,
        id: &VolumeIdFfi,
        key: RStr<'_>,
        value: RStr<'_>,
    ) -> RResult<(), ErrorFfi>;
}

/// One layer of a pack.
#[repr(C)]
#[derive(StableAbi)]
pub struct LayerFfi {
    pub name: RString,
    pub path: RVec<u8>,
    pub site: bool,
}

/// The core's `PackRequest`, less the progress bar (a plugin's pack shows none). Compressions
/// travel by name, so a new one is not a layout change; `extra` is for keys a later minor
/// version adds.
#[repr(C)]
#[derive(StableAbi)]
pub struct PackRequestFfi {
    pub layers: RVec<LayerFfi>,
    pub exclude: RVec<RVec<u8>>,
    pub rdinit: RString,
    pub keep_site_owners: bool,
    pub compression: RString,
    pub level: ROption<u32>,
    pub source_date_epoch: ROption<u64>,
    pub threads: u64,
    pub output: RVec<u8>,
    pub extra: KeyedFfi,
}

/// The core's `PackReport`.
#[repr(C)]
#[derive(StableAbi)]
pub struct PackReportFfi {
    pub archive: RVec<u8>,
    pub manifest: ROption<RVec<u8>>,
    pub sha256: RString,
    pub compression: RString,
    pub entries: u64,
    pub cpio_bytes: u64,
    pub archive_bytes: u64,
    pub dropped_xattrs: u64,
    pub extra: KeyedFfi,
}

/// The core's `PackerCapabilities`.
#[repr(C)]
#[derive(StableAbi)]
pub struct PackerCapabilitiesFfi {
    pub compressions: RVec<RString>,
    /// `packer_caps` bits.
    pub bits: u64,
}

/// Packer capabilities as bits; an older plugin's 0 in a later bit reads as "cannot".
pub mod packer_caps {
    pub const REPRODUCIBLE: u64 = 1 << 0;
    pub const MANIFEST: u64 = 1 << 1;
}

/// A packer, method for method the core's `Packer` trait.
#[sabi_trait]
pub trait PackerFfi: Send + Sync {
    fn name(&self) -> RResult<RString, ErrorFfi>;
    fn capabilities(&self) -> RResult<PackerCapabilitiesFfi, ErrorFfi>;
    #[sabi(last_prefix_field)]
    fn pack(
        &self,
        request: &PackRequestFfi,
        cancel: &AtomicBool,
    ) -> RResult<PackReportFfi, ErrorFfi>;
}

/// The core's `KernelJob`.
#[repr(C)]
#[derive(StableAbi)]
pub struct KernelJobFfi {
    pub system: RString,
    pub root: RString,
    pub root_path: RVec<u8>,
    pub source: RVec<u8>,
    pub build_dir: RVec<u8>,
    pub fragments: RVec<RVec<u8>>,
    pub initramfs: RVec<u8>,
    pub compression: RString,
    pub cmdline: ROption<RString>,
    pub arch: RString,
    pub jobs: u32,
    pub out_dir: RVec<u8>,
    pub inputs: RVec<Tuple2<RString, RString>>,
    pub extra: KeyedFfi,
}

/// The core's `KernelReport`.
#[repr(C)]
#[derive(StableAbi)]
pub struct KernelReportFfi {
    pub image: RVec<u8>,
    pub config: RVec<u8>,
    pub system_map: RVec<u8>,
    pub manifest: RVec<u8>,
    pub sha256: RString,
    pub config_changes: RVec<RString>,
    pub extra: KeyedFfi,
}

/// Kernel builder capabilities as bits.
pub mod kernel_caps {
    pub const USES_ROOT: u64 = 1 << 0;
    pub const LINKS_INITRAMFS: u64 = 1 << 1;
}

/// A kernel builder, method for method the core's `KernelBuilder` trait.
#[sabi_trait]
pub trait KernelBuilderFfi: Send + Sync {
    fn name(&self) -> RResult<RString, ErrorFfi>;
    fn capabilities(&self) -> RResult<u64, ErrorFfi>;
    #[sabi(last_prefix_field)]
    fn build(&self, job: &KernelJobFfi) -> RResult<KernelReportFfi, ErrorFfi>;
}
