//! A test plugin exported exactly as a plugin built against API 1.0 is: a 1.0 header and the
//! 1.0 root module, without the entries later versions appended. The program must load it, read
//! the appended entries as absent, and use what it provides: the dir backend under the name
//! `dir-api-1-0`.

use autogentoo_plugin_api::Plugin;

fn define() -> Plugin {
    Plugin::new().storage_backend("dir-api-1-0", autogentoo_backend_dir::open)
}

autogentoo_plugin_api::__export_plugin_for_api_1_0!("api-1-0", define);
