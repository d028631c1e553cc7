//! The site config, `autogentoo.toml`, written by hand: every value written is the value the
//! program uses, and every mistake is one line naming the file, the line and the key.
//!
//! The configs are generated as a model, written out as TOML by this file's own small writer
//! (which remembers the line of every key), and compared with what `SiteConfig::parse` makes of
//! the text.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use autogentoo_core::names;
use autogentoo_core::site_config::{
    BuildSection, Compression, ConfigError, MountsSection, PackSection, Setting, SiteConfig,
    StorageSection, SystemConfig, GENTOO_ARCHES,
};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use proptest::sample::select;
use tempfile::TempDir;

// ---------------------------------------------------------------------------------------------
// A TOML writer that remembers where each key went.

#[derive(Clone, Debug)]
enum Toml {
    Str(String),
    Int(i64),
    Bool(bool),
    /// Items, and whether each goes on a line of its own.
    Array(Vec<Toml>, bool),
    Inline(Vec<(String, Toml)>),
    Float(f64),
}

/// One `[a.b]` table (the preamble, before any header, has an empty path) and its entries.
#[derive(Clone, Debug)]
struct Table {
    path: Vec<String>,
    entries: Vec<(String, Toml)>,
}

/// A written config: the text and the line (from 1) of each key path, named as the program
/// names keys in its errors (`pack.exclude[2]`, `systems.web.stage`).
struct Written {
    text: String,
    lines: BTreeMap<String, usize>,
}

fn basic_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push('\t'),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Literal strings for some of the values that can be written so, for variety.
fn string(text: &str) -> String {
    let literal_ok = !text.contains('\'') && !text.chars().any(|c| c.is_control() && c != '\t');
    if literal_ok && text.len() % 3 == 1 {
        format!("'{text}'")
    } else {
        basic_string(text)
    }
}

fn key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        name.to_owned()
    } else {
        basic_string(name)
    }
}

fn scalar(value: &Toml) -> String {
    match value {
        Toml::Str(text) => string(text),
        Toml::Int(n) => n.to_string(),
        Toml::Bool(b) => b.to_string(),
        Toml::Float(x) => format!("{x:?}"),
        Toml::Array(items, _) => {
            let items: Vec<String> = items.iter().map(scalar).collect();
            format!("[{}]", items.join(", "))
        }
        Toml::Inline(entries) => {
            let entries: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{} = {}", key(k), scalar(v)))
                .collect();
            format!("{{ {} }}", entries.join(", "))
        }
    }
}

/// Comments and blank lines between the lines that matter, chosen by `decor`.
struct Decor<'a> {
    choices: &'a [u8],
    next: usize,
}

impl Decor<'_> {
    fn before_line(&mut self, lines: &mut Vec<String>) {
        let choice = self.choices.get(self.next).copied().unwrap_or(0);
        self.next += 1;
        match choice % 8 {
            0 => lines.push(String::new()),
            1 => lines.push(format!("# note {choice}: \"quoted\" = [not a table]")),
            _ => {}
        }
    }
}

fn write(tables: &[Table], decor: &[u8]) -> Written {
    let mut lines: Vec<String> = Vec::new();
    let mut at = BTreeMap::new();
    let mut decor = Decor {
        choices: decor,
        next: 0,
    };
    for table in tables {
        let prefix = table.path.join(".");
        if !table.path.is_empty() {
            decor.before_line(&mut lines);
            let header: Vec<String> = table.path.iter().map(|p| key(p)).collect();
            lines.push(format!("[{}]", header.join(".")));
            at.insert(prefix.clone(), lines.len());
        }
        for (name, value) in &table.entries {
            decor.before_line(&mut lines);
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            match value {
                Toml::Array(items, true) => {
                    lines.push(format!("{} = [", key(name)));
                    at.insert(path.clone(), lines.len());
                    for (i, item) in items.iter().enumerate() {
                        lines.push(format!("    {},", scalar(item)));
                        at.insert(format!("{path}[{i}]"), lines.len());
                    }
                    lines.push("]".to_owned());
                }
                value => {
                    lines.push(format!("{} = {}", key(name), scalar(value)));
                    at.insert(path.clone(), lines.len());
                    let line = lines.len();
                    match value {
                        Toml::Array(items, false) => {
                            for i in 0..items.len() {
                                at.insert(format!("{path}[{i}]"), line);
                            }
                        }
                        Toml::Inline(entries) => {
                            for (k, _) in entries {
                                at.insert(format!("{path}.{k}"), line);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    Written { text, lines: at }
}

// ---------------------------------------------------------------------------------------------
// The model of a valid config.

/// Kernel configs the generated site directory holds, relative to it; the last is a symlink to
/// the first.
const KERNEL_CONFIGS: &[&str] = &[
    "kernel/qemu-x86_64.kconfig",
    "kernel/with space.kconfig",
    "top.kconfig",
    "kernel/link.kconfig",
];

/// A symlink in the site directory that leads out of it.
const ESCAPING_LINK: &str = "kernel/escape.kconfig";

#[derive(Clone, Debug, Default)]
struct Storage {
    backend: Option<String>,
    workdir: Option<String>,
    zfs_dataset: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct Build {
    jobs: Option<u32>,
    makeopts: Option<String>,
    arch: Option<String>,
    /// The variables, and whether they are written as an inline table.
    env: Option<(BTreeMap<String, String>, bool)>,
}

#[derive(Clone, Debug, Default)]
struct Mounts {
    distfiles: Option<String>,
    binpkgs: Option<String>,
    repo: Option<String>,
    repo_image: Option<String>,
    resolv_conf: Option<bool>,
}

#[derive(Clone, Debug, Default)]
struct Pack {
    packer: Option<String>,
    compression: Option<Compression>,
    level: Option<u32>,
    /// The directories, and whether each goes on a line of its own.
    exclude: Option<(Vec<String>, bool)>,
    rdinit: Option<String>,
    keep_site_owners: Option<bool>,
}

#[derive(Clone, Debug)]
struct System {
    stage: String,
    root: Option<String>,
    overlays: Option<Vec<String>>,
    /// An index into [`KERNEL_CONFIGS`].
    kernel_config: Option<usize>,
    kernel: Option<String>,
    cmdline: Option<String>,
    commands: Option<(Vec<String>, bool)>,
    kernel_build: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct Plugins {
    dirs: Option<Vec<String>>,
    settings: BTreeMap<String, BTreeMap<String, Setting>>,
}

#[derive(Clone, Debug)]
struct Model {
    storage: Option<Storage>,
    build: Option<Build>,
    mounts: Option<Mounts>,
    pack: Option<Pack>,
    systems: BTreeMap<String, System>,
    plugins: Option<Plugins>,
    /// Sorts the tables: TOML does not care about their order, and neither may we.
    order: Vec<u16>,
    decor: Vec<u8>,
}

fn compression_name(compression: Compression) -> &'static str {
    match compression {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::Xz => "xz",
        Compression::None => "none",
    }
}

fn push<T>(
    entries: &mut Vec<(String, Toml)>,
    name: &str,
    value: &Option<T>,
    f: impl Fn(&T) -> Toml,
) {
    if let Some(value) = value {
        entries.push((name.to_owned(), f(value)));
    }
}

fn table(path: &[&str], entries: Vec<(String, Toml)>) -> Table {
    Table {
        path: path.iter().map(|p| (*p).to_owned()).collect(),
        entries,
    }
}

impl Model {
    fn tables(&self) -> Vec<Table> {
        let text = |s: &String| Toml::Str(s.clone());
        let mut tables = Vec::new();
        if let Some(storage) = &self.storage {
            let mut e = Vec::new();
            push(&mut e, "backend", &storage.backend, text);
            push(&mut e, "workdir", &storage.workdir, text);
            push(&mut e, "zfs_dataset", &storage.zfs_dataset, text);
            tables.push(table(&["storage"], e));
        }
        if let Some(build) = &self.build {
            let mut e = Vec::new();
            push(&mut e, "jobs", &build.jobs, |n| Toml::Int(i64::from(*n)));
            push(&mut e, "makeopts", &build.makeopts, text);
            push(&mut e, "arch", &build.arch, text);
            let mut env_table = None;
            if let Some((env, inline)) = &build.env {
                let vars: Vec<(String, Toml)> = env
                    .iter()
                    .map(|(k, v)| (k.clone(), Toml::Str(v.clone())))
                    .collect();
                if *inline {
                    e.push(("env".to_owned(), Toml::Inline(vars)));
                } else {
                    env_table = Some(table(&["build", "env"], vars));
                }
            }
            tables.push(table(&["build"], e));
            tables.extend(env_table);
        }
        if let Some(mounts) = &self.mounts {
            let mut e = Vec::new();
            push(&mut e, "distfiles", &mounts.distfiles, text);
            push(&mut e, "binpkgs", &mounts.binpkgs, text);
            push(&mut e, "repo", &mounts.repo, text);
            push(&mut e, "repo_image", &mounts.repo_image, text);
            push(&mut e, "resolv_conf", &mounts.resolv_conf, |b| {
                Toml::Bool(*b)
            });
            tables.push(table(&["mounts"], e));
        }
        if let Some(pack) = &self.pack {
            let mut e = Vec::new();
            push(&mut e, "packer", &pack.packer, text);
            push(&mut e, "compression", &pack.compression, |c| {
                Toml::Str(compression_name(*c).to_owned())
            });
            push(&mut e, "level", &pack.level, |n| Toml::Int(i64::from(*n)));
            push(&mut e, "exclude", &pack.exclude, |(dirs, own_lines)| {
                Toml::Array(dirs.iter().map(text).collect(), *own_lines)
            });
            push(&mut e, "rdinit", &pack.rdinit, text);
            push(&mut e, "keep_site_owners", &pack.keep_site_owners, |b| {
                Toml::Bool(*b)
            });
            tables.push(table(&["pack"], e));
        }
        for (name, system) in &self.systems {
            let mut e = vec![("stage".to_owned(), text(&system.stage))];
            push(&mut e, "root", &system.root, text);
            push(&mut e, "overlays", &system.overlays, |o| {
                Toml::Array(o.iter().map(text).collect(), false)
            });
            push(&mut e, "kernel_config", &system.kernel_config, |i| {
                Toml::Str(KERNEL_CONFIGS[*i].to_owned())
            });
            push(&mut e, "kernel", &system.kernel, text);
            push(&mut e, "cmdline", &system.cmdline, text);
            push(
                &mut e,
                "commands",
                &system.commands,
                |(commands, own_lines)| {
                    Toml::Array(commands.iter().map(text).collect(), *own_lines)
                },
            );
            push(&mut e, "kernel_build", &system.kernel_build, text);
            tables.push(Table {
                path: vec!["systems".to_owned(), name.clone()],
                entries: e,
            });
        }
        if let Some(plugins) = &self.plugins {
            let mut e = Vec::new();
            push(&mut e, "dirs", &plugins.dirs, |dirs| {
                Toml::Array(dirs.iter().map(text).collect(), false)
            });
            tables.push(table(&["plugins"], e));
            for (name, settings) in &plugins.settings {
                let entries = settings
                    .iter()
                    .map(|(k, v)| {
                        let value = match v {
                            Setting::Text(t) => Toml::Str(t.clone()),
                            Setting::Integer(n) => Toml::Int(*n),
                            Setting::Boolean(b) => Toml::Bool(*b),
                        };
                        (k.clone(), value)
                    })
                    .collect();
                tables.push(Table {
                    path: vec!["plugins".to_owned(), name.clone()],
                    entries,
                });
            }
        }
        let mut keyed: Vec<(u16, Table)> = tables
            .into_iter()
            .enumerate()
            .map(|(i, t)| (self.order.get(i).copied().unwrap_or(0), t))
            .collect();
        keyed.sort_by_key(|(k, _)| *k);
        let mut tables: Vec<Table> = keyed.into_iter().map(|(_, t)| t).collect();
        tables.insert(0, table(&[], Vec::new()));
        tables
    }

    /// The config the program must make of the model, for a site at `site`.
    fn expected(&self, site: &Path) -> Expected {
        let defaults = SiteConfig::default();
        let storage = self.storage.clone().unwrap_or_default();
        let build = self.build.clone().unwrap_or_default();
        let mounts = self.mounts.clone().unwrap_or_default();
        let pack = self.pack.clone().unwrap_or_default();
        let plugins = self.plugins.clone().unwrap_or_default();
        Expected {
            storage: StorageSection {
                backend: storage.backend.unwrap_or(defaults.storage.backend),
                workdir: site.join(
                    storage
                        .workdir
                        .map_or(defaults.storage.workdir, PathBuf::from),
                ),
                zfs_dataset: storage.zfs_dataset,
            },
            build: BuildSection {
                jobs: build.jobs.unwrap_or(defaults.build.jobs),
                makeopts: build.makeopts,
                arch: build.arch.unwrap_or(defaults.build.arch),
                env: build.env.map(|(env, _)| env).unwrap_or_default(),
                binfmt: defaults.build.binfmt,
            },
            mounts: MountsSection {
                distfiles: mounts
                    .distfiles
                    .map_or(defaults.mounts.distfiles, PathBuf::from),
                binpkgs: mounts
                    .binpkgs
                    .map_or(defaults.mounts.binpkgs, PathBuf::from),
                repo: mounts.repo.map_or(defaults.mounts.repo, PathBuf::from),
                repo_image: mounts.repo_image,
                resolv_conf: mounts.resolv_conf.unwrap_or(defaults.mounts.resolv_conf),
            },
            pack: PackSection {
                packer: pack.packer.unwrap_or(defaults.pack.packer),
                compression: pack.compression.unwrap_or(defaults.pack.compression),
                level: pack.level,
                exclude: pack.exclude.map_or(defaults.pack.exclude, |(dirs, _)| dirs),
                rdinit: pack.rdinit.unwrap_or(defaults.pack.rdinit),
                keep_site_owners: pack
                    .keep_site_owners
                    .unwrap_or(defaults.pack.keep_site_owners),
            },
            systems: self
                .systems
                .iter()
                .map(|(name, s)| {
                    let system = SystemConfig {
                        stage: s.stage.clone(),
                        root: s.root.clone(),
                        arch: None,
                        overlays: s.overlays.clone().unwrap_or_default(),
                        kernel_config: s.kernel_config.map(|i| site.join(KERNEL_CONFIGS[i])),
                        kernel: s.kernel.clone(),
                        cmdline: s.cmdline.clone(),
                        commands: s.commands.clone().map(|(c, _)| c).unwrap_or_default(),
                        kernel_build: s.kernel_build.clone().unwrap_or_else(|| "root".to_owned()),
                        image: None,
                    };
                    (name.clone(), system)
                })
                .collect(),
            plugin_dirs: plugins
                .dirs
                .unwrap_or_default()
                .iter()
                .map(|d| site.join(d))
                .collect(),
            plugin_settings: plugins.settings,
        }
    }
}

#[derive(Debug, PartialEq)]
struct Expected {
    storage: StorageSection,
    build: BuildSection,
    mounts: MountsSection,
    pack: PackSection,
    systems: BTreeMap<String, SystemConfig>,
    plugin_dirs: Vec<PathBuf>,
    plugin_settings: BTreeMap<String, BTreeMap<String, Setting>>,
}

impl Expected {
    fn of(config: &SiteConfig) -> Self {
        Self {
            storage: config.storage.clone(),
            build: config.build.clone(),
            mounts: config.mounts.clone(),
            pack: config.pack.clone(),
            systems: config.systems.clone(),
            plugin_dirs: config.plugins.dirs.clone(),
            plugin_settings: config.plugins.settings.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies for valid values.

/// Any text at all, control characters and quotes included: TOML can carry it escaped.
fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        vec(any::<char>(), 0..12).prop_map(String::from_iter),
        "[ -~]{0,16}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._-]{0,11}"
}

/// A directory inside a root: relative, never `..`, never the top itself.
fn inside_root() -> impl Strategy<Value = String> {
    "(\\./)?[A-Za-z0-9_ -][A-Za-z0-9._ -]{0,7}(/[A-Za-z0-9_ -][A-Za-z0-9._ -]{0,7}){0,3}/?"
}

/// A path taken from the site directory: relative (possibly leaving it) or absolute.
fn site_path() -> impl Strategy<Value = String> {
    "(/|\\.\\./)?[A-Za-z0-9._ -]{1,8}(/[A-Za-z0-9._ -]{1,8}){0,2}"
}

fn storage() -> impl Strategy<Value = Storage> {
    (
        proptest::option::of(any_text()),
        proptest::option::of(site_path()),
        proptest::option::of(vec(name(), 1..4).prop_map(|parts| parts.join("/"))),
    )
        .prop_map(|(backend, workdir, zfs_dataset)| Storage {
            backend,
            workdir,
            zfs_dataset,
        })
}

fn build() -> impl Strategy<Value = Build> {
    (
        proptest::option::of(1..=u32::MAX),
        proptest::option::of(any_text()),
        proptest::option::of(select(GENTOO_ARCHES).prop_map(str::to_owned)),
        proptest::option::of((
            btree_map("[A-Za-z_][A-Za-z0-9_]{0,8}", any_text(), 0..4),
            any::<bool>(),
        )),
    )
        .prop_map(|(jobs, makeopts, arch, env)| Build {
            jobs,
            makeopts,
            arch,
            env,
        })
}

fn mounts() -> impl Strategy<Value = Mounts> {
    (
        proptest::option::of(inside_root()),
        proptest::option::of(inside_root()),
        proptest::option::of(inside_root()),
        proptest::option::of(name()),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(
            |(distfiles, binpkgs, repo, repo_image, resolv_conf)| Mounts {
                distfiles,
                binpkgs,
                repo,
                repo_image,
                resolv_conf,
            },
        )
}

fn compression() -> impl Strategy<Value = Compression> {
    select(vec![
        Compression::Gzip,
        Compression::Zstd,
        Compression::Xz,
        Compression::None,
    ])
}

fn pack() -> impl Strategy<Value = Pack> {
    let compression_and_level = proptest::option::of(compression()).prop_flat_map(|c| {
        let levels = c.unwrap_or_default().levels();
        let level = match levels {
            Some(range) => proptest::option::of(range).boxed(),
            None => Just(None).boxed(),
        };
        (Just(c), level)
    });
    (
        proptest::option::of(any_text()),
        compression_and_level,
        proptest::option::of((vec(inside_root(), 0..4), any::<bool>())),
        proptest::option::of(any_text().prop_map(|t| format!("/{t}"))),
        proptest::option::of(any::<bool>()),
    )
        .prop_map(
            |(packer, (compression, level), exclude, rdinit, keep_site_owners)| Pack {
                packer,
                compression,
                level,
                exclude,
                rdinit,
                keep_site_owners,
            },
        )
}

fn system() -> impl Strategy<Value = System> {
    (
        name(),
        proptest::option::of(name()),
        proptest::option::of(vec(
            (name(), name()).prop_map(|(k, n)| format!("{k}/{n}")),
            0..3,
        )),
        proptest::option::of(0..KERNEL_CONFIGS.len()),
        proptest::option::of(name()),
        proptest::option::of(any_text()),
        proptest::option::of((
            vec(
                any_text().prop_filter("a command", |c| !c.trim().is_empty()),
                0..3,
            ),
            any::<bool>(),
        )),
        proptest::option::of(any_text()),
    )
        .prop_map(
            |(stage, root, overlays, kernel_config, kernel, cmdline, commands, kernel_build)| {
                System {
                    stage,
                    root,
                    overlays,
                    kernel_config,
                    kernel,
                    cmdline,
                    commands,
                    kernel_build,
                }
            },
        )
}

fn setting() -> impl Strategy<Value = Setting> {
    prop_oneof![
        any_text().prop_map(Setting::Text),
        any::<i64>().prop_map(Setting::Integer),
        any::<bool>().prop_map(Setting::Boolean),
    ]
}

fn plugins() -> impl Strategy<Value = Plugins> {
    (
        proptest::option::of(vec(site_path(), 0..3)),
        btree_map(
            "[a-z][a-z0-9_-]{0,8}".prop_filter("not the dirs key", |n| n != "dirs"),
            btree_map("[^\n]{1,8}", setting(), 0..3),
            0..3,
        ),
    )
        .prop_map(|(dirs, settings)| Plugins { dirs, settings })
}

fn model() -> impl Strategy<Value = Model> {
    (
        proptest::option::of(storage()),
        proptest::option::of(build()),
        proptest::option::of(mounts()),
        proptest::option::of(pack()),
        btree_map(name(), system(), 0..3),
        proptest::option::of(plugins()),
        vec(any::<u16>(), 16),
        vec(any::<u8>(), 64),
    )
        .prop_map(
            |(storage, build, mounts, pack, systems, plugins, order, decor)| Model {
                storage,
                build,
                mounts,
                pack,
                systems,
                plugins,
                order,
                decor,
            },
        )
}

/// A site directory holding the kernel configs the models name.
fn site() -> TempDir {
    let site = TempDir::new().expect("a temporary directory");
    let (link, files) = KERNEL_CONFIGS.split_last().expect("kernel configs");
    for relative in files {
        let path = site.path().join(relative);
        fs::create_dir_all(path.parent().expect("a parent")).unwrap();
        fs::write(&path, "CONFIG_EFI=y\n").unwrap();
    }
    std::os::unix::fs::symlink("qemu-x86_64.kconfig", site.path().join(link)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", site.path().join(ESCAPING_LINK)).unwrap();
    site
}

// ---------------------------------------------------------------------------------------------
// Faults: one bad value or unknown key, where the error must point.

#[derive(Clone, Debug)]
enum Fault {
    /// Sets `table.key` to a value the program refuses.
    Value {
        table: Vec<String>,
        key: String,
        value: Toml,
        /// What the message says, in part.
        says: &'static str,
    },
    /// Sets `pack.compression` and a `pack.level` it does not take.
    Level {
        compression: Compression,
        level: u32,
    },
    /// Sets the array `table.key` to `index` good items and then a bad one.
    Item {
        table: Vec<String>,
        key: String,
        good: String,
        index: usize,
        bad: String,
        says: &'static str,
    },
    /// Adds a key the table does not know, at `position` among its entries.
    Unknown {
        table: Vec<String>,
        key: String,
        position: usize,
    },
    /// Adds a system under a name that is not a name.
    SystemName { name: String },
    /// Adds an environment variable whose name no shell takes.
    EnvName { name: String, inline: bool },
}

fn strings(table: &[&str]) -> Vec<String> {
    table.iter().map(|s| (*s).to_owned()).collect()
}

/// The system a fault goes into: one the model has, or one it then gets.
const FAULTY_SYSTEM: &str = "faulty";

fn bad_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[._-][A-Za-z0-9]{0,4}",
        "[a-z]{1,3}[/@ :][a-z]{1,3}",
        "[a-z]{65,70}",
        Just("..".to_owned()),
    ]
}

fn bad_inside_root() -> impl Strategy<Value = String> {
    prop_oneof![
        "/[a-z]{1,6}(/[a-z]{1,6}){0,2}",
        "([a-z]{1,4}/)?\\.\\.(/[a-z]{1,4}){0,2}",
        Just(String::new()),
        Just(".".to_owned()),
        Just("./".to_owned()),
    ]
}

fn fault() -> impl Strategy<Value = Fault> {
    let value = |table: &[&str], key: &str, value: BoxedStrategy<Toml>, says: &'static str| {
        let (table, key) = (strings(table), key.to_owned());
        value.prop_map(move |value| Fault::Value {
            table: table.clone(),
            key: key.clone(),
            value,
            says,
        })
    };
    let system = [String::from("systems"), FAULTY_SYSTEM.to_owned()];
    let system_refs: Vec<&str> = system.iter().map(String::as_str).collect();
    let mount = select(vec!["distfiles", "binpkgs", "repo"]);
    let volume = select(vec!["stage", "root", "kernel"]);
    let known_keys = |table: &'static str| -> Vec<&'static str> {
        match table {
            "" => vec!["storage", "build", "mounts", "pack", "systems", "plugins"],
            "storage" => vec!["backend", "workdir", "zfs_dataset"],
            "build" => vec!["jobs", "makeopts", "arch", "env"],
            "mounts" => vec!["distfiles", "binpkgs", "repo", "repo_image", "resolv_conf"],
            "pack" => vec![
                "packer",
                "compression",
                "level",
                "exclude",
                "rdinit",
                "keep_site_owners",
            ],
            _ => vec![
                "stage",
                "root",
                "overlays",
                "kernel_config",
                "kernel",
                "cmdline",
                "commands",
                "kernel_build",
            ],
        }
    };
    let unknown = (
        select(vec!["", "storage", "build", "mounts", "pack", "systems"]),
        "[a-z_]{1,10}",
        0..6usize,
    )
        .prop_filter_map(
            "a key the table does not know",
            move |(table, key, position)| {
                if known_keys(table).contains(&key.as_str()) {
                    return None;
                }
                let table = match table {
                    "" => Vec::new(),
                    "systems" => strings(&["systems", FAULTY_SYSTEM]),
                    t => strings(&[t]),
                };
                Some(Fault::Unknown {
                    table,
                    key,
                    position,
                })
            },
        );
    prop_oneof![
        value(&["build"], "jobs", Just(Toml::Int(0)).boxed(), "0 jobs"),
        value(
            &["build"],
            "jobs",
            any_text().prop_map(Toml::Str).boxed(),
            "invalid type"
        ),
        value(
            &["build"],
            "jobs",
            (-1000i64..0).prop_map(Toml::Int).boxed(),
            "invalid value"
        ),
        value(
            &["build"],
            "arch",
            "[a-z0-9]{1,8}"
                .prop_filter("not an arch", |a| !GENTOO_ARCHES.contains(&a.as_str()))
                .prop_map(Toml::Str)
                .boxed(),
            "unknown arch"
        ),
        value(
            &["build"],
            "makeopts",
            Just(Toml::Array(vec![], false)).boxed(),
            "invalid type"
        ),
        (mount, bad_inside_root()).prop_map(|(key, bad)| Fault::Value {
            table: strings(&["mounts"]),
            key: key.to_owned(),
            value: Toml::Str(bad),
            says: "`",
        }),
        value(
            &["mounts"],
            "repo_image",
            bad_name().prop_map(Toml::Str).boxed(),
            "is not a repo image name"
        ),
        value(
            &["mounts"],
            "resolv_conf",
            prop_oneof![Just(Toml::Str("yes".into())), Just(Toml::Int(1))].boxed(),
            "invalid type"
        ),
        value(
            &["storage"],
            "zfs_dataset",
            prop_oneof![
                Just("tank//autogentoo".to_owned()),
                Just("/tank".to_owned()),
                Just("tank/".to_owned()),
                (name(), bad_name()).prop_map(|(a, b)| format!("{a}/{b}")),
            ]
            .prop_filter("a part that is not a name", |dataset| {
                dataset.split('/').any(|part| names::check(part).is_err())
            })
            .prop_map(Toml::Str)
            .boxed(),
            "is not a dataset"
        ),
        value(
            &["storage"],
            "workdir",
            Just(Toml::Bool(true)).boxed(),
            "invalid type"
        ),
        value(
            &["pack"],
            "compression",
            prop_oneof![
                Just("lz4".to_owned()),
                Just("GZIP".to_owned()),
                "[a-z]{0,5}"
            ]
            .prop_filter("not a compression", |c| {
                !["gzip", "zstd", "xz", "none"].contains(&c.as_str())
            })
            .prop_map(Toml::Str)
            .boxed(),
            "unknown variant"
        ),
        value(
            &["pack"],
            "rdinit",
            "[^/\n][^\n]{0,8}".prop_map(Toml::Str).boxed(),
            "is not an absolute path"
        ),
        value(
            &["pack"],
            "level",
            Just(Toml::Float(1.5)).boxed(),
            "invalid type"
        ),
        prop_oneof![
            (prop_oneof![0u32..1, 10u32..100]).prop_map(|level| (Compression::Gzip, level)),
            (prop_oneof![0u32..1, 20u32..100]).prop_map(|level| (Compression::Zstd, level)),
            (10u32..100).prop_map(|level| (Compression::Xz, level)),
            (0u32..10).prop_map(|level| (Compression::None, level)),
        ]
        .prop_map(|(compression, level)| Fault::Level { compression, level }),
        (0..4usize, bad_inside_root()).prop_map(|(index, bad)| Fault::Item {
            table: strings(&["pack"]),
            key: "exclude".into(),
            good: "var/tmp".into(),
            index,
            bad,
            says: "`",
        }),
        (volume, bad_name()).prop_map({
            let system = system.clone();
            move |(key, bad)| Fault::Value {
                table: system.to_vec(),
                key: key.to_owned(),
                value: Toml::Str(bad),
                says: "is not a",
            }
        }),
        (
            0..3usize,
            prop_oneof![
                name(),
                (bad_name(), name()).prop_map(|(k, n)| format!("{k}/{n}")),
                (name(), bad_name()).prop_map(|(k, n)| format!("{k}/{n}")),
                (name(), name(), name()).prop_map(|(a, b, c)| format!("{a}/{b}/{c}")),
            ]
        )
            .prop_map({
                let system = system.clone();
                move |(index, bad)| Fault::Item {
                    table: system.to_vec(),
                    key: "overlays".into(),
                    good: "hardware/qemu".into(),
                    index,
                    bad,
                    says: "is not an overlay",
                }
            }),
        (0..3usize, "[ \t\u{a0}\u{2003}]{0,3}").prop_map({
            let system = system.clone();
            move |(index, bad)| Fault::Item {
                table: system.to_vec(),
                key: "commands".into(),
                good: "emerge -uDN @world".into(),
                index,
                bad,
                says: "an empty command",
            }
        }),
        value(
            &system_refs,
            "kernel_config",
            prop_oneof![
                "/[a-z]{1,6}(/[a-z]{1,6}){0,2}",
                "(kernel/)?\\.\\./[a-z]{1,6}",
                "kernel/missing-[a-z]{1,4}\\.kconfig",
                Just("kernel".to_owned()),
                Just(".".to_owned()),
                Just(ESCAPING_LINK.to_owned()),
            ]
            .prop_map(Toml::Str)
            .boxed(),
            "`"
        ),
        value(
            &system_refs,
            "overlays",
            any_text().prop_map(Toml::Str).boxed(),
            "invalid type"
        ),
        value(
            &["plugins", "site-hooks"],
            "key",
            prop_oneof![
                Just(Toml::Array(vec![Toml::Str("a".into())], false)),
                Just(Toml::Inline(vec![("a".into(), Toml::Int(1))])),
                Just(Toml::Float(0.5)),
            ]
            .boxed(),
            "a plugin setting is"
        ),
        value(
            &["plugins"],
            "site hooks",
            prop_oneof![
                any_text().prop_map(Toml::Str),
                any::<i64>().prop_map(Toml::Int),
            ]
            .boxed(),
            "is neither `dirs` nor"
        ),
        unknown,
        bad_name()
            .prop_filter("not also a good name", |n| names::check(n).is_err())
            .prop_map(|name| Fault::SystemName { name }),
        (
            "[0-9][A-Za-z0-9_]{0,4}|[A-Za-z_]{1,3}[-. =][a-z]{0,3}|",
            any::<bool>()
        )
            .prop_map(|(name, inline)| Fault::EnvName { name, inline }),
    ]
}

fn find<'a>(tables: &'a mut Vec<Table>, path: &[String]) -> &'a mut Table {
    let index = match tables.iter().position(|t| t.path == path) {
        Some(index) => index,
        None => {
            tables.push(Table {
                path: path.to_vec(),
                entries: Vec::new(),
            });
            tables.len() - 1
        }
    };
    &mut tables[index]
}

fn set(tables: &mut Vec<Table>, path: &[String], name: &str, value: Toml) {
    let table = find(tables, path);
    match table.entries.iter_mut().find(|(k, _)| k == name) {
        Some(entry) => entry.1 = value,
        None => table.entries.push((name.to_owned(), value)),
    }
}

/// What the error about a fault must say.
struct Report {
    /// The key path it names.
    key: String,
    /// The key path whose line it names: the key itself, or the unknown key in a table.
    line_of: String,
    /// A part of its message.
    says: String,
}

impl Report {
    fn at(key: String, says: impl Into<String>) -> Self {
        Self {
            line_of: key.clone(),
            key,
            says: says.into(),
        }
    }
}

impl Fault {
    /// Puts the fault into `tables`; returns what the error about it must say.
    fn apply(&self, tables: &mut Vec<Table>, model: &Model) -> Report {
        let needs_system = match self {
            Fault::Value { table, .. }
            | Fault::Item { table, .. }
            | Fault::Unknown { table, .. } => table.first().is_some_and(|t| t == "systems"),
            _ => false,
        };
        if needs_system && !model.systems.contains_key(FAULTY_SYSTEM) {
            tables.push(Table {
                path: strings(&["systems", FAULTY_SYSTEM]),
                entries: vec![("stage".into(), Toml::Str("stage3".into()))],
            });
        }
        match self {
            Fault::Value {
                table,
                key,
                value,
                says,
            } => {
                set(tables, table, key, value.clone());
                Report::at(format!("{}.{key}", table.join(".")), *says)
            }
            Fault::Level { compression, level } => {
                let pack = strings(&["pack"]);
                set(
                    tables,
                    &pack,
                    "compression",
                    Toml::Str(compression_name(*compression).into()),
                );
                set(tables, &pack, "level", Toml::Int(i64::from(*level)));
                let says = if *compression == Compression::None {
                    "takes no level".to_owned()
                } else {
                    format!(
                        "{level} is out of range for {}",
                        compression_name(*compression)
                    )
                };
                Report::at("pack.level".to_owned(), says)
            }
            Fault::Item {
                table,
                key,
                good,
                index,
                bad,
                says,
            } => {
                let mut items = vec![Toml::Str(good.clone()); index + 1];
                items[*index] = Toml::Str(bad.clone());
                set(tables, table, key, Toml::Array(items, index % 2 == 0));
                Report::at(format!("{}.{key}[{index}]", table.join(".")), *says)
            }
            Fault::Unknown {
                table,
                key,
                position,
            } => {
                let entries = &mut find(tables, table).entries;
                let at = position % (entries.len() + 1);
                entries.insert(at, (key.clone(), Toml::Str("x".into())));
                let table = table.join(".");
                Report {
                    line_of: if table.is_empty() {
                        key.clone()
                    } else {
                        format!("{table}.{key}")
                    },
                    key: table,
                    says: format!("unknown field `{key}`"),
                }
            }
            Fault::SystemName { name } => {
                tables.push(Table {
                    path: vec!["systems".into(), name.clone()],
                    entries: vec![("stage".into(), Toml::Str("stage3".into()))],
                });
                Report::at(format!("systems.{name}"), "is not a system name")
            }
            Fault::EnvName { name, inline } => {
                let report = Report::at(
                    format!("build.env.{name}"),
                    "is not an environment variable name",
                );
                let var = (name.clone(), Toml::Str("value".into()));
                if *inline {
                    set(tables, &strings(&["build"]), "env", Toml::Inline(vec![var]));
                    tables.retain(|t| t.path != strings(&["build", "env"]));
                } else {
                    find(tables, &strings(&["build"]))
                        .entries
                        .retain(|(k, _)| k != "env");
                    find(tables, &strings(&["build", "env"])).entries.push(var);
                }
                report
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The properties.

const FILE: &str = "autogentoo.toml";

/// Nothing a user can type makes the parser panic, and every refusal is one line.
fn parse_without_panic(text: &str, origin: &Path) -> Result<(), TestCaseError> {
    match SiteConfig::parse(text, origin) {
        Ok(_) => Ok(()),
        Err(error) => {
            let shown = error.to_string();
            prop_assert!(!shown.contains('\n'), "{}", shown);
            let ConfigError::Invalid { file, line, .. } = &error else {
                return Err(TestCaseError::fail(format!(
                    "not an Invalid error: {error:?}"
                )));
            };
            prop_assert_eq!(file, origin);
            if let Some(line) = line {
                let lines = text.lines().count().max(1);
                prop_assert!(
                    (1..=lines).contains(line),
                    "line {} of {}: {}",
                    line,
                    lines,
                    shown
                );
            }
            let named = origin.display().to_string();
            prop_assert!(shown.starts_with(&named), "{}", shown);
            Ok(())
        }
    }
}

/// Tokens of site configs, for text that gets past the TOML syntax more often than noise does.
fn toml_soup() -> impl Strategy<Value = String> {
    vec(
        prop_oneof![
            select(vec![
                "[storage]",
                "[build]",
                "[build.env]",
                "[mounts]",
                "[pack]",
                "[plugins]",
                "[systems.demo]",
                "[plugins.x]",
                "backend",
                "jobs",
                "level",
                "compression",
                "exclude",
                "stage",
                "overlays",
                "commands",
                "dirs",
                "env",
                "arch",
                "rdinit",
            ])
            .prop_map(str::to_owned),
            select(vec![
                " = ",
                "\n",
                "\n",
                "\"",
                "'",
                "[",
                "]",
                "{",
                "}",
                ",",
                ".",
                "#",
                "\\",
                "=",
                "\"gzip\"",
                "\"none\"",
                "12",
                "-1",
                "0",
                "true",
                "1.5",
                "\"a/b\"",
                "\"/x\"",
                "\"..\"",
                "\"\"\"",
                "'''",
                "\"\"",
                "\"\\u00e9\"",
                "\"\\q\"",
                "\t",
                "\r\n",
                "\u{feff}",
            ])
            .prop_map(str::to_owned),
            "[a-z.]{1,6}",
        ],
        0..60,
    )
    .prop_map(|tokens| tokens.concat())
}

proptest! {
    #![proptest_config(crate::cases(2048))]

    /// Arbitrary text and TOML-like token soup never panic; errors are one line with a line
    /// number the text has.
    #[test]
    fn arbitrary_text_never_panics(text in prop_oneof![any::<String>(), toml_soup()]) {
        parse_without_panic(&text, Path::new("site/autogentoo.toml"))?;
    }
}

proptest! {
    #![proptest_config(crate::cases(512))]

    /// A valid config parses back to the values it was written from, with the defaults for
    /// what it leaves out and relative paths taken from the site directory.
    #[test]
    fn a_valid_config_parses_back_to_its_values(model in model()) {
        let site = site();
        let tables = model.tables();
        let written = write(&tables, &model.decor);
        let config = SiteConfig::parse(&written.text, &site.path().join(FILE))
            .map_err(|e| TestCaseError::fail(format!("{e}\nin:\n{}", written.text)))?;
        prop_assert_eq!(config.site_dir.as_deref(), Some(site.path()));
        prop_assert_eq!(Expected::of(&config), model.expected(site.path()), "in:\n{}", written.text);
    }

    /// One bad value or unknown key in a valid config: the error names the file, the line the
    /// key is on, and the key, and says what is wrong.
    #[test]
    fn one_mistake_is_reported_at_its_file_line_and_key(model in model(), fault in fault()) {
        let site = site();
        let mut tables = model.tables();
        let report = fault.apply(&mut tables, &model);
        let written = write(&tables, &model.decor);
        let origin = site.path().join(FILE);
        let error = match SiteConfig::parse(&written.text, &origin) {
            Ok(_) => return Err(TestCaseError::fail(format!("accepted:\n{}", written.text))),
            Err(error) => error,
        };
        let shown = error.to_string();
        let ConfigError::Invalid { file, line, key: named, message } = error else {
            return Err(TestCaseError::fail(format!("not an Invalid error: {shown}")));
        };
        let wanted_line = written.lines.get(&report.line_of).copied();
        prop_assert!(wanted_line.is_some(), "the writer lost {}", report.line_of);
        prop_assert_eq!(&file, &origin);
        prop_assert_eq!(&named, &report.key, "{}\nin:\n{}", shown, written.text);
        prop_assert_eq!(line, wanted_line, "{}\nin:\n{}", shown, written.text);
        prop_assert!(message.contains(&report.says), "{:?} does not say {:?}", message, report.says);
        let at = format!("{}:{}: ", origin.display(), wanted_line.unwrap_or(0));
        let prefix = if report.key.is_empty() { at } else { format!("{at}{}: ", report.key) };
        prop_assert!(shown.starts_with(&prefix), "{:?} does not start with {:?}", shown, prefix);
        prop_assert!(!shown.contains('\n'), "{}", shown);
    }

    /// Valid configs damaged at random (characters inserted, removed, lines swapped) never
    /// panic, and their errors point at lines the text has.
    #[test]
    fn a_damaged_config_never_panics(
        model in model(),
        edits in vec((any::<u16>(), 0..4u8, "[\\[\\]\"'={}.,#\n a-z0-9\\\\]{0,3}"), 1..4),
    ) {
        let site = site();
        let mut text = write(&model.tables(), &model.decor).text;
        for (at, kind, insert) in edits {
            let chars: Vec<char> = text.chars().collect();
            let at = usize::from(at) % (chars.len() + 1);
            text = match kind {
                0 => {
                    let (before, after) = chars.split_at(at);
                    before.iter().collect::<String>() + &insert + &after.iter().collect::<String>()
                }
                1 => {
                    let end = (at + insert.len() + 1).min(chars.len());
                    chars[..at].iter().chain(&chars[end..]).collect()
                }
                _ => {
                    let mut lines: Vec<&str> = text.split('\n').collect();
                    let (i, j) = (at % lines.len(), (at / 7) % lines.len());
                    if kind == 2 {
                        lines.swap(i, j);
                    } else {
                        lines.insert(j, lines[i]);
                    }
                    lines.join("\n")
                }
            };
        }
        parse_without_panic(&text, &site.path().join(FILE))?;
    }
}
