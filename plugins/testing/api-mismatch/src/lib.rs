//! A test plugin built "for API 99.0": the loader must refuse it with a message naming both
//! versions, without reading anything past its header, while the other plugins keep working.
//! A real plugin calls `export_plugin!`, which always declares the API it was built with; this
//! one writes its header by hand to stand for a plugin from another major version.

use autogentoo_plugin_api::{ApiVersion, PluginHeader};

#[unsafe(export_name = "autogentoo_plugin_header")]
pub static HEADER: PluginHeader = PluginHeader::new(
    "api-mismatch",
    env!("CARGO_PKG_VERSION"),
    ApiVersion {
        major: 99,
        minor: 0,
    },
);
