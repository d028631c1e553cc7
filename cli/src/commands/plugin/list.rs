//! `autogentoo plugin list`

use anyhow::Result;
use autogentoo_plugin_api::host::LoadedPlugin;
use autogentoo_plugin_api::API_VERSION;
use clap::Args;
use serde::Serialize;

use crate::context::Context;
use crate::output;
use crate::plugins::PATH_VAR;

/// List the plugins loaded and the libraries that could not be
///
/// List the plugins found in the site config's `[plugins] dirs` and in AUTOGENTOO_PLUGIN_PATH:
/// name, version, the plugin API version each was built for, what it provides and its file;
/// then each library or directory that could not be used, and why.
#[derive(Args, Debug)]
pub struct ListArgs {}

#[derive(Serialize)]
struct Listing<'a> {
    /// The plugin API this program speaks.
    api_version: String,
    plugins: Vec<Entry<'a>>,
    failures: Vec<FailureEntry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    name: &'a str,
    version: &'a str,
    api_version: String,
    provides: Provides<'a>,
    path: &'a std::path::Path,
}

#[derive(Serialize)]
struct Provides<'a> {
    storage_backends: &'a [String],
    packers: &'a [String],
    kernel_builders: &'a [String],
    pipeline_hooks: bool,
}

#[derive(Serialize)]
struct FailureEntry<'a> {
    path: &'a std::path::Path,
    reason: &'a str,
}

pub fn run(ctx: &Context, _args: ListArgs) -> Result<()> {
    let plugins = &ctx.plugins;
    if ctx.json {
        output::json(&Listing {
            api_version: API_VERSION.to_string(),
            plugins: plugins.loaded.iter().map(entry).collect(),
            failures: plugins
                .failures
                .iter()
                .map(|f| FailureEntry {
                    path: &f.path,
                    reason: &f.reason,
                })
                .collect(),
        });
        return Ok(());
    }
    if plugins.loaded.is_empty() && plugins.failures.is_empty() && !ctx.quiet {
        eprintln!(
            "no plugins: none in the site config's [plugins] dirs or in {PATH_VAR} \
             (this autogentoo speaks plugin API {API_VERSION})"
        );
    }
    let rows: Vec<[String; 5]> = plugins
        .loaded
        .iter()
        .map(|p| {
            [
                p.name.clone(),
                p.version.clone(),
                format!("API {}", p.api),
                provides(p),
                p.path.display().to_string(),
            ]
        })
        .collect();
    let width = |column: usize| rows.iter().map(|r| r[column].len()).max().unwrap_or(0);
    let widths = [width(0), width(1), width(2), width(3)];
    for [name, version, api, provides, path] in &rows {
        println!(
            "{name:<w0$}  {version:<w1$}  {api:<w2$}  {provides:<w3$}  {path}",
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
    for failure in &plugins.failures {
        println!("failed: {failure}");
    }
    Ok(())
}

fn entry(plugin: &LoadedPlugin) -> Entry<'_> {
    Entry {
        name: &plugin.name,
        version: &plugin.version,
        api_version: plugin.api.to_string(),
        provides: Provides {
            storage_backends: &plugin.storage_backends,
            packers: &plugin.packers,
            kernel_builders: &plugin.kernel_builders,
            pipeline_hooks: plugin.pipeline_hooks,
        },
        path: &plugin.path,
    }
}

/// What a plugin provides, in words.
fn provides(plugin: &LoadedPlugin) -> String {
    let kinds = [
        ("storage backend", &plugin.storage_backends),
        ("packer", &plugin.packers),
        ("kernel builder", &plugin.kernel_builders),
    ];
    let mut parts: Vec<String> = kinds
        .iter()
        .flat_map(|(what, names)| names.iter().map(move |n| format!("{what} '{n}'")))
        .collect();
    if plugin.pipeline_hooks {
        parts.push("pipeline hooks".into());
    }
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(", ")
    }
}
