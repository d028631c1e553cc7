//! The packer conformance suite on the `newc-xz` packer as the program sees it: the plugin
//! library loaded by the host's loader, the packer made by the registry's factory, and every
//! call crossing the plugin boundary. Needs root (the suite's trees have owners) and GNU cpio
//! and xz, as the end-to-end tests do.

use std::path::Path;
use std::sync::OnceLock;

use autogentoo_core::pack::Packer;
use autogentoo_core::testkit::cdylib::build_cdylib;
use autogentoo_plugin_api::host::{self, LoadedPlugin};

fn plugin() -> &'static LoadedPlugin {
    static PLUGIN: OnceLock<LoadedPlugin> = OnceLock::new();
    PLUGIN.get_or_init(|| {
        let path = build_cdylib(
            env!("CARGO_PKG_NAME"),
            Path::new(env!("CARGO_MANIFEST_DIR")),
        );
        host::load(&path).unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
    })
}

fn newc_xz() -> Box<dyn Packer> {
    let packer = plugin().packer_factory("newc-xz")().expect("the plugin makes its packer");
    assert_eq!(packer.name(), "newc-xz");
    packer
}

autogentoo_core::packer_conformance!(newc_xz);

#[test]
fn the_plugin_says_what_it_provides() {
    let plugin = plugin();
    assert_eq!(plugin.name, "uki");
    assert_eq!(plugin.packers, ["newc-xz"]);
    assert_eq!(plugin.kernel_builders, ["uki"]);
    let builder = plugin.kernel_builder_factory("uki")().expect("the plugin makes its builder");
    assert_eq!(builder.name(), "uki");
    assert!(!builder.capabilities().uses_root && !builder.capabilities().links_initramfs);
}
