//! autogentoo's plugin ABI: what a plugin library exports, how the program loads it, and the
//! adapters that turn what a plugin provides into the core's own types.
//!
//! A plugin is a `cdylib` that calls [`export_plugin!`] once. Its author writes ordinary Rust
//! against `autogentoo-core` — a storage backend is an implementation of
//! [`Storage`](autogentoo_core::storage::Storage), a packer of
//! [`Packer`](autogentoo_core::pack::Packer), a kernel builder of
//! [`KernelBuilder`](autogentoo_core::kernel::KernelBuilder), pipeline hooks implement
//! [`PipelineHooks`] — and this crate carries every call across the library boundary. On the
//! host side, [`host::load`] opens a library, checks it, and hands back factories that return a
//! `Box<dyn Storage>`, `Box<dyn Packer>` or `Box<dyn KernelBuilder>` like any built-in one's,
//! and hooks the pipeline calls around its steps.
//!
//! The boundary itself is built on `abi_stable`, which is kept private to this crate: plugins and
//! the program only ever see this crate's types, so moving to another mechanism (stabby, a plain
//! C ABI over libloading) changes this crate alone.
//!
//! # Versions
//!
//! The API has a version `MAJOR.MINOR` ([`API_VERSION`]), separate from any crate's version. A
//! plugin records the version it was built for in a small header whose layout never changes, and
//! the host reads that header before anything else:
//!
//! - the major versions must be equal;
//! - the plugin's minor version must be at most the host's (a newer host knows every older
//!   minor version; an older host cannot know what a newer plugin expects);
//! - otherwise the plugin is refused with "plugin NAME was built for API a.b, this autogentoo
//!   speaks c.d", and nothing else in it is touched.
//!
//! Within a major version the ABI only grows: new entries are appended to the root module and to
//! the storage interface, never inserted, removed or changed, and the host treats an entry that
//! an older plugin lacks as absent. Values that are likely to grow (storage settings, step
//! inputs and outputs, hook results, capabilities) travel as keyed lists or bit sets, so a new key
//! or bit is a minor change too. Anything else is a new major version.
//!
//! - 1.0: storage backends and pipeline hooks.
//! - 1.1: packers and kernel builders, as two entries appended to the root module and two kinds
//!   in `provides`. A 1.0 plugin still loads: it lists neither kind, and the host reads the two
//!   entries as absent.

mod convert;
// abi_stable's `#[sabi_trait]` (last released in 2023) writes impls inside a module it generates,
// which rustc has warned about since 1.80.
#[allow(non_local_definitions)]
mod ffi;
mod guest;
mod hooks;
pub mod host;

use std::fmt;

pub use guest::{KernelBuilderOpen, PackerOpen, Plugin, StorageOpen};
pub use hooks::{
    ExtraLayer, HookError, HookOutcome, HookPoint, PipelineHooks, Step, Values, SETTING_PREFIX,
};

/// A version of the plugin API.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

/// The version of the API this crate speaks: plugins built with it declare it, the host checks
/// plugins against it.
pub const API_VERSION: ApiVersion = ApiVersion { major: 1, minor: 1 };

impl ApiVersion {
    /// Whether a host speaking `self` can load a plugin built for `plugin`.
    pub fn accepts(self, plugin: ApiVersion) -> bool {
        self.major == plugin.major && plugin.minor <= self.minor
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The symbol under which a plugin exports its [`PluginHeader`].
pub const HEADER_SYMBOL: &str = "autogentoo_plugin_header";

/// What the header starts with, so that a stray symbol of the same name is not taken for one.
pub const HEADER_MAGIC: [u8; 16] = *b"autogentoo-plug\0";

/// The part of a plugin that never changes, whatever the API version: the plugin's name and
/// version and the API version it was built for. The host reads it before anything else, so an
/// incompatible plugin is refused without touching the rest. Never change this layout; it is
/// plain C so that any future mechanism can read it.
#[repr(C)]
pub struct PluginHeader {
    magic: [u8; 16],
    api: ApiVersion,
    name: StaticStr,
    version: StaticStr,
}

/// A `&'static str` as a pointer and a length.
#[repr(C)]
struct StaticStr {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the header only points to string literals, which are immutable and live forever.
unsafe impl Sync for PluginHeader {}

impl PluginHeader {
    /// The header of a plugin called `name`, at `version`, built for `api`. [`export_plugin!`]
    /// writes it with [`API_VERSION`]; spelling it out by hand is only for tests of the loader.
    pub const fn new(name: &'static str, version: &'static str, api: ApiVersion) -> Self {
        Self {
            magic: HEADER_MAGIC,
            api,
            name: StaticStr {
                ptr: name.as_ptr(),
                len: name.len(),
            },
            version: StaticStr {
                ptr: version.as_ptr(),
                len: version.len(),
            },
        }
    }

    fn text(field: &StaticStr) -> String {
        // SAFETY: written by `new` from a `&'static str` of the library, which stays loaded.
        let bytes = unsafe { std::slice::from_raw_parts(field.ptr, field.len) };
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// Exports the plugin from a `cdylib`: its header (name, version of the crate, [`API_VERSION`])
/// and its root module. `define` is a `fn() -> Plugin`, called once when the library is loaded.
///
/// ```ignore
/// fn define() -> autogentoo_plugin_api::Plugin {
///     autogentoo_plugin_api::Plugin::new()
///         .storage_backend("overlay", open)
///         .packer("newc-xz", open_packer)
/// }
/// autogentoo_plugin_api::export_plugin!("overlay", define);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($name:literal, $define:path) => {
        #[unsafe(export_name = "autogentoo_plugin_header")]
        pub static AUTOGENTOO_PLUGIN_HEADER: $crate::PluginHeader = $crate::PluginHeader::new(
            $name,
            ::core::env!("CARGO_PKG_VERSION"),
            $crate::API_VERSION,
        );

        // The name abi_stable looks the root module up by (a test in this crate checks it).
        #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
        pub static AUTOGENTOO_PLUGIN_ROOT: $crate::__private::LibHeader = {
            extern "C" fn load() -> $crate::__private::RootModuleResult {
                $crate::__private::call_root_module_loader(|| {
                    $crate::__private::root_module($define)
                })
            }
            // SAFETY: `load` returns the root module type named here.
            unsafe { $crate::__private::lib_header(load) }
        };
    };
}

/// Exports a plugin exactly as one built against API 1.0 would be: a 1.0 header and the 1.0
/// root module. Only for the test plugin that checks that the program still loads 1.0 plugins.
#[doc(hidden)]
#[macro_export]
macro_rules! __export_plugin_for_api_1_0 {
    ($name:literal, $define:path) => {
        #[unsafe(export_name = "autogentoo_plugin_header")]
        pub static AUTOGENTOO_PLUGIN_HEADER: $crate::PluginHeader = $crate::PluginHeader::new(
            $name,
            ::core::env!("CARGO_PKG_VERSION"),
            $crate::ApiVersion { major: 1, minor: 0 },
        );

        #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
        pub static AUTOGENTOO_PLUGIN_ROOT: $crate::__private::LibHeader = {
            extern "C" fn load() -> $crate::__private::RootModuleResult {
                $crate::__private::call_root_module_loader(|| {
                    $crate::__private::root_module_v1_0($define)
                })
            }
            // SAFETY: `load` returns the 1.0 root module type named here.
            unsafe { $crate::__private::lib_header_v1_0(load) }
        };
    };
}

/// What [`export_plugin!`] expands to needs; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::guest::{
        call_root_module_loader, lib_header, lib_header_v1_0, root_module, root_module_v1_0,
    };
    pub use abi_stable::library::{LibHeader, RootModuleResult};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_accepts_its_major_and_older_minors_only() {
        let host = ApiVersion { major: 1, minor: 2 };
        assert!(host.accepts(ApiVersion { major: 1, minor: 0 }));
        assert!(host.accepts(ApiVersion { major: 1, minor: 2 }));
        assert!(!host.accepts(ApiVersion { major: 1, minor: 3 }));
        assert!(!host.accepts(ApiVersion { major: 2, minor: 0 }));
        assert!(!host.accepts(ApiVersion { major: 0, minor: 2 }));
    }

    #[test]
    fn the_macro_exports_the_root_module_under_abi_stables_name() {
        assert_eq!(
            abi_stable::library::ROOT_MODULE_LOADER_NAME,
            "_1as_0lib_1header_0root_bmodule_bloader"
        );
    }

    #[test]
    fn abi_stables_version_of_the_root_module_is_the_api_version() {
        assert_eq!(
            ffi::ROOT_MODULE_VERSION,
            format!("{}.{}.0", API_VERSION.major, API_VERSION.minor)
        );
    }
}
