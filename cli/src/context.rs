//! What every command needs: the site configuration, the global options laid over it, the
//! plugins, and the storage backend they select.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result};
use autogentoo_core::kernel::kernel_build::{sha256_file, Kbuild};
use autogentoo_core::kernel::KernelBuilder;
use autogentoo_core::pack::initramfs::Newc;
use autogentoo_core::pack::Packer;
use autogentoo_core::registry::{Registry, StorageSettings};
use autogentoo_core::site_config::SiteConfig;
use autogentoo_core::storage::workdir::Layout;
use autogentoo_core::storage::Storage;
use autogentoo_db::{Database, Location, URL_VAR};
use autogentoo_pipeline::RootRunner;
use clap::Args;

use crate::plugins::{self, Plugins};

/// The site configuration read when neither `--config` nor `AUTOGENTOO_CONFIG` names one.
const SYSTEM_CONFIG: &str = "/etc/autogentoo/autogentoo.toml";

/// Options that mean the same in every command.
#[derive(Args, Debug)]
pub struct GlobalArgs {
    /// Storage backend (dir, zfs, btrfs, or one a plugin provides); overrides `storage.backend`
    #[arg(long, global = true, env = "AUTOGENTOO_BACKEND", value_name = "NAME")]
    pub backend: Option<String>,

    /// Site configuration file [default: /etc/autogentoo/autogentoo.toml if it exists]
    #[arg(long, global = true, env = "AUTOGENTOO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where stages, roots and caches live; overrides `storage.workdir`
    #[arg(long, global = true, env = "AUTOGENTOO_WORKDIR", value_name = "DIR")]
    pub workdir: Option<PathBuf>,

    /// More detail on stderr (-v, -vv, -vvv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr, no progress bars
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Machine-readable output on stdout (stable field names)
    #[arg(long, global = true)]
    pub json: bool,

    /// Mount this repository snapshot (NAME.sqfs in WORKDIR/repos) in roots; overrides
    /// `mounts.repo_image`
    #[arg(
        long,
        global = true,
        env = "AUTOGENTOO_REPO_IMAGE",
        value_name = "NAME"
    )]
    pub repo_image: Option<String>,

    /// A Portage binhost for the commands run in roots (`PORTAGE_BINHOST`, with
    /// `FEATURES=getbinpkg`), like the one a farm's build host serves on loopback
    #[arg(long, global = true, env = "AUTOGENTOO_BINHOST", value_name = "URL")]
    pub binhost: Option<String>,
}

/// The resolved run context.
pub struct Context {
    pub config: SiteConfig,
    pub backend: String,
    pub settings: StorageSettings,
    pub json: bool,
    pub quiet: bool,
    /// `-v`: show what commands run inside roots print, beside their logs.
    pub verbose: bool,
    /// The plugins loaded, and those that could not be.
    pub plugins: Plugins,
    /// The site file read, to hand on to the commands we start ourselves.
    config_path: Option<PathBuf>,
    /// What the command line put over the site config, handed on likewise.
    overrides: Overrides,
    registry: Registry,
}

/// Global options that change the site config for this run.
#[derive(Clone, Debug, Default)]
struct Overrides {
    repo_image: Option<String>,
    binhost: Option<String>,
}

impl Overrides {
    fn apply(&self, config: &mut SiteConfig) {
        if let Some(name) = &self.repo_image {
            config.mounts.repo_image = Some(name.clone());
        }
        if let Some(url) = &self.binhost {
            let env = &mut config.build.env;
            env.insert("PORTAGE_BINHOST".to_owned(), url.clone());
            // FEATURES in the environment adds to make.conf's: keep the site's, add ours.
            let features = env.get("FEATURES").map_or("", String::as_str);
            let features = format!("{features} getbinpkg").trim_start().to_owned();
            env.insert("FEATURES".to_owned(), features);
        }
    }
}

impl Context {
    pub fn new(global: &GlobalArgs) -> Result<Self> {
        let config_path = match &global.config {
            Some(path) => Some(path.clone()),
            None if std::path::Path::new(SYSTEM_CONFIG).exists() => {
                Some(PathBuf::from(SYSTEM_CONFIG))
            }
            None => None,
        };
        let mut config = match &config_path {
            Some(path) => SiteConfig::load(path)?,
            None => SiteConfig::default(),
        };
        let overrides = Overrides {
            repo_image: global.repo_image.clone(),
            binhost: global.binhost.clone(),
        };
        overrides.apply(&mut config);
        let backend = global
            .backend
            .clone()
            .unwrap_or_else(|| config.storage.backend.clone());
        let workdir = global
            .workdir
            .clone()
            .unwrap_or_else(|| config.storage.workdir.clone());
        let workdir = std::path::absolute(&workdir)
            .with_context(|| format!("cannot resolve the workdir {}", workdir.display()))?;
        let settings = StorageSettings {
            workdir,
            dataset: config.storage.zfs_dataset.clone(),
        };
        let mut registry = Registry::default();
        registry.register_storage(autogentoo_backend_dir::NAME, autogentoo_backend_dir::open);
        registry.register_storage(
            autogentoo_backend_btrfs::NAME,
            autogentoo_backend_btrfs::open,
        );
        registry.register_storage(autogentoo_backend_zfs::NAME, autogentoo_backend_zfs::open);
        registry.register_packer(Newc::NAME, || Ok(Box::new(Newc)));
        registry.register_kernel_builder(Kbuild::HOST, || Ok(Box::new(Kbuild::host())));
        let mut ctx = Self {
            config,
            backend,
            settings,
            json: global.json,
            quiet: global.quiet,
            verbose: global.verbose > 0,
            plugins: Plugins::default(),
            config_path: config_path.map(|p| std::path::absolute(&p).unwrap_or(p)),
            overrides,
            registry,
        };
        let reinvoke = ctx.reinvoke();
        let program: Vec<std::ffi::OsString> = std::iter::once(reinvoke.get_program())
            .chain(reinvoke.get_args())
            .map(ToOwned::to_owned)
            .collect();
        ctx.registry.register_kernel_builder(Kbuild::ROOT, move || {
            Ok(Box::new(Kbuild::in_root(program.clone())))
        });
        ctx.plugins = plugins::load(&ctx.config.plugins, &mut ctx.registry);
        Ok(ctx)
    }

    /// The workdir's plain directories.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.settings.workdir)
    }

    /// This program again, with the same backend, workdir and site config: for steps that must
    /// run in a process of their own (`root run` enters namespaces it never leaves).
    pub fn reinvoke(&self) -> Command {
        let mut command = Command::new("/proc/self/exe");
        command.arg("--backend").arg(&self.backend);
        command.arg("--workdir").arg(&self.settings.workdir);
        if let Some(path) = &self.config_path {
            command.arg("--config").arg(path);
        }
        if self.quiet {
            command.arg("--quiet");
        }
        if let Some(name) = &self.overrides.repo_image {
            command.arg("--repo-image").arg(name);
        }
        if let Some(url) = &self.overrides.binhost {
            command.arg("--binhost").arg(url);
        }
        command
    }

    /// The packer `name`.
    pub fn packer(&self, name: &str) -> Result<Box<dyn Packer>> {
        let factory = self.registry.packer(name)?;
        Ok(factory()?)
    }

    /// The kernel builder `name`.
    pub fn kernel_builder(&self, name: &str) -> Result<Box<dyn KernelBuilder>> {
        let factory = self.registry.kernel_builder(name)?;
        Ok(factory()?)
    }

    /// Where the build database is: `AUTOGENTOO_DATABASE_URL`, else the site config's
    /// `[database]`, else SQLite in the workdir.
    pub fn database_location(&self) -> Result<Location> {
        Ok(Location::resolve(
            std::env::var(URL_VAR).ok(),
            &self.config.database,
            &self.settings.workdir,
        )?)
    }

    /// Opens the build database (see [`Context::database_location`]).
    pub fn database(&self) -> Result<Database> {
        Ok(Database::open(&self.database_location()?)?)
    }

    /// The SHA-256 of the site config file, empty for the built-in defaults.
    pub fn config_hash(&self) -> Result<String> {
        match &self.config_path {
            Some(path) => Ok(sha256_file(path)?),
            None => Ok(String::new()),
        }
    }

    /// The site config file read, if any.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }

    /// Opens the selected backend over the workdir.
    pub fn storage(&self) -> Result<Box<dyn Storage>> {
        let factory = self.registry.storage(&self.backend)?;
        Ok(factory(&self.settings)?)
    }
}

/// The pipeline runs commands in roots as `root run ROOT [--image DIR] -- ARGV…` of this
/// program.
impl RootRunner for Context {
    fn command(&self, root: &str, image: Option<&Path>, argv: &[String]) -> Command {
        let mut command = self.reinvoke();
        command.args(["root", "run", root]);
        if let Some(image) = image {
            command.arg("--image").arg(image);
        }
        command.arg("--").args(argv);
        command
    }
}

/// Who started the build (or a publication), and through what: the user (the one behind
/// sudo, when there is one) and this program.
pub fn started_by() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|var| std::env::var(var).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()));
    format!("{user} (autogentoo)")
}
