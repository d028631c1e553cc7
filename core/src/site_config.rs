//! The site configuration, `autogentoo.toml`: where the storage lives, how commands run inside
//! roots, what is mounted into them and packed out of them, and the systems the site builds. The
//! file sits at the top of a site directory that also holds `common/` (files every image gets),
//! `overlays/KIND/NAME/` (hardware and application overlays) and kernel configs, and relative
//! paths in it are taken from that directory. Every key has a default, so an empty file, or none,
//! is valid; every mistake is one line naming the file, the line and the key.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::ops::{Range, RangeInclusive};
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_path_to_error::Segment;
use thiserror::Error;
use toml::de::{DeArray, DeTable};

use crate::chroot::binfmt::BinfmtPolicy;
use crate::files::bounded_read::{self, FileKind, Limit, ReadError};
use crate::names;

/// The architectures Gentoo keywords packages for, as in the repository's `profiles/arch.list`.
pub const GENTOO_ARCHES: &[&str] = &[
    "alpha", "amd64", "arm", "arm64", "hppa", "loong", "m68k", "mips", "ppc", "ppc64", "riscv",
    "s390", "sparc", "x86",
];

/// A site configuration that cannot be read or does not make sense.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read the site config {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Unreadable(#[from] ReadError),
    /// A syntax, type or validation error at `line` (when it could be found) of `file`.
    #[error("{}", located(file, *line, key, message))]
    Invalid {
        file: PathBuf,
        line: Option<usize>,
        /// The key path, like `pack.level` or `systems.demo.overlays[1]`; empty for the file as a
        /// whole.
        key: String,
        message: String,
    },
    #[error("`{overlay}` is not an overlay: {reason}")]
    BadOverlay { overlay: String, reason: String },
    #[error(
        "overlay `{overlay}` needs a site directory; pass --config with the site's autogentoo.toml"
    )]
    NoSite { overlay: String },
    #[error("overlay `{overlay}` not found: expected the directory {}", path.display())]
    MissingOverlay { overlay: String, path: PathBuf },
    #[error("unknown system `{name}`; {}", known_systems(known))]
    UnknownSystem { name: String, known: Vec<String> },
}

fn located(file: &Path, line: Option<usize>, key: &str, message: &str) -> String {
    let mut text = file.display().to_string();
    if let Some(line) = line {
        text.push_str(&format!(":{line}"));
    }
    if !key.is_empty() {
        text.push_str(&format!(": {key}"));
    }
    format!("{text}: {message}")
}

fn known_systems(known: &[String]) -> String {
    if known.is_empty() {
        "the site config defines none; add a [systems.NAME] table".to_owned()
    } else {
        format!("the site config defines {}", known.join(", "))
    }
}

/// The whole site configuration: one `autogentoo.toml`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SiteConfig {
    /// Where the volumes live and which backend keeps them.
    pub storage: StorageSection,
    /// How commands run inside roots.
    pub build: BuildSection,
    /// What is mounted into a root, and where.
    pub mounts: MountsSection,
    /// How a root and the site files are packed into an initramfs.
    pub pack: PackSection,
    /// The systems the site builds with `autogentoo build NAME`, one `[systems.NAME]` table each.
    pub systems: BTreeMap<String, SystemConfig>,
    /// Where plugins are loaded from.
    pub plugins: PluginsSection,
    /// Where builds are recorded.
    pub database: DatabaseSection,
    /// Which recorded builds `builds purge` removes.
    pub retention: RetentionSection,
    /// The directory holding the file, which its relative paths were resolved against; `None`
    /// for the built-in defaults.
    #[serde(skip)]
    pub site_dir: Option<PathBuf>,
}

/// `[storage]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageSection {
    /// The storage backend: `dir`, `btrfs`, `zfs`, or one a plugin adds. `--backend` overrides it.
    pub backend: String,
    /// The top of the storage layout (stages, roots, kernels, caches, output), relative to the
    /// site directory unless absolute. `--workdir` overrides it.
    pub workdir: PathBuf,
    /// The dataset the `zfs` backend keeps its volumes under, like `tank/autogentoo`.
    pub zfs_dataset: Option<String>,
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            backend: "dir".to_owned(),
            workdir: PathBuf::from("/var/lib/autogentoo"),
            zfs_dataset: None,
        }
    }
}

/// `[database]`: where builds are recorded. Without a URL, in SQLite at
/// `WORKDIR/autogentoo.db`; `AUTOGENTOO_DATABASE_URL` in the environment overrides both.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSection {
    /// A PostgreSQL URL (`postgres://autogentoo@db.example/autogentoo`), for a farm. It never
    /// holds the password: that goes in `password_file`.
    pub url: Option<String>,
    /// A file holding the database password, relative to the site directory unless absolute.
    pub password_file: Option<PathBuf>,
}

/// `[retention]`: which builds `builds purge` removes, in buckets as Gentoo Build Publisher
/// keeps them. Kept and published builds, and a system's newest successful one, never go.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    /// Every build of this many last days stays.
    pub all_days: u32,
    /// Then the newest build of each day, for this many days.
    pub daily_days: u32,
    /// Then the newest of each week, for this many days.
    pub weekly_days: u32,
    /// Then the newest of each month (30 days), for this many days; nothing older stays.
    pub monthly_days: u32,
}

impl Default for RetentionSection {
    fn default() -> Self {
        Self {
            all_days: 1,
            daily_days: 7,
            weekly_days: 31,
            monthly_days: 365,
        }
    }
}

/// `[build]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildSection {
    /// Parallel jobs for builds inside roots, at least 1; the default is the number of CPUs.
    pub jobs: u32,
    /// `MAKEOPTS` inside roots, like `-j8 -l8`; unset means `-j` with `jobs`.
    pub makeopts: Option<String>,
    /// The Gentoo architecture of the roots: amd64, x86, arm64, arm, ppc64, riscv, …
    pub arch: String,
    /// Environment for every command run inside a root, like `FEATURES` or `EMERGE_DEFAULT_OPTS`.
    pub env: BTreeMap<String, String>,
    /// A root of another architecture runs its programs through qemu-user: `check` (the
    /// default) makes sure binfmt_misc has a handler for it and says what to run if not;
    /// `register` registers qemu-user-static's.
    pub binfmt: BinfmtPolicy,
}

impl BuildSection {
    /// `MAKEOPTS` as configured, or `-j{jobs}`.
    pub fn makeopts(&self) -> String {
        match &self.makeopts {
            Some(makeopts) => makeopts.clone(),
            None => format!("-j{}", self.jobs),
        }
    }
}

impl Default for BuildSection {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            jobs: u32::try_from(cpus).unwrap_or(u32::MAX),
            makeopts: None,
            arch: "amd64".to_owned(),
            env: BTreeMap::new(),
            binfmt: BinfmtPolicy::default(),
        }
    }
}

/// `[mounts]`: mount points inside a root, relative to its top.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MountsSection {
    /// Where the shared distfiles cache is mounted (`DISTDIR`).
    pub distfiles: PathBuf,
    /// Where the shared binary packages are mounted (`PKGDIR`).
    pub binpkgs: PathBuf,
    /// Where the ebuild repository snapshot is mounted, read-only.
    pub repo: PathBuf,
    /// The SquashFS snapshot of the ebuild repository to mount, as `autogentoo repo list` names
    /// it; unset means the newest.
    pub repo_image: Option<String>,
    /// Give a mounted root the host's `/etc/resolv.conf`, so that emerge can fetch.
    pub resolv_conf: bool,
}

impl Default for MountsSection {
    fn default() -> Self {
        Self {
            distfiles: PathBuf::from("var/cache/distfiles"),
            binpkgs: PathBuf::from("var/cache/binpkgs"),
            repo: PathBuf::from("var/db/repos/gentoo"),
            repo_image: None,
            resolv_conf: true,
        }
    }
}

/// `[pack]`
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackSection {
    /// The packer: `newc` (built in) or one a plugin provides.
    pub packer: String,
    /// The initramfs compression: `gzip`, `zstd`, `none`, or `xz` with a packer that writes it.
    /// The kernel config is made to unpack it (`CONFIG_RD_GZIP`, …).
    pub compression: Compression,
    /// The compression level, 1-9 for gzip and 1-19 for zstd; unset means the compressor's
    /// default.
    pub level: Option<u32>,
    /// Directories of the root, relative to its top, whose contents are left out of the image;
    /// the directories themselves are kept, empty, as mount points. Setting it replaces the
    /// default list.
    pub exclude: Vec<String>,
    /// The program the kernel starts from the initramfs (`rdinit=`), an absolute path inside it.
    pub rdinit: String,
    /// Pack the site files (`common/` and overlays) with their owners on disk instead of as
    /// root's, for sites that ship files owned by service users.
    pub keep_site_owners: bool,
}

impl Default for PackSection {
    fn default() -> Self {
        let exclude = [
            "var/cache/distfiles",
            "var/cache/binpkgs",
            "var/cache/binhost",
            "var/db/repos",
            "usr/src",
            "var/tmp",
            "tmp",
            "proc",
            "sys",
            "dev",
            "run",
        ];
        Self {
            packer: "newc".to_owned(),
            compression: Compression::default(),
            level: None,
            exclude: exclude.map(str::to_owned).to_vec(),
            rdinit: "/init".to_owned(),
            keep_site_owners: false,
        }
    }
}

/// How an initramfs is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    Zstd,
    /// Not written by the built-in packer; for packers that plugins provide.
    Xz,
    None,
}

impl Compression {
    /// The levels the compressor accepts; `None` when there is no compressor to take one.
    pub fn levels(self) -> Option<RangeInclusive<u32>> {
        match self {
            Self::Gzip => Some(1..=9),
            Self::Zstd => Some(1..=19),
            Self::Xz => Some(0..=9),
            Self::None => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
            Self::Xz => "xz",
            Self::None => "none",
        })
    }
}

/// `[systems.NAME]`: one system the site builds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemConfig {
    /// The imported stage the system's root is cloned from. Required.
    pub stage: String,
    /// The root volume the system is built in; unset means the system's own name.
    pub root: Option<String>,
    /// The Gentoo architecture of the system (its stage's programs, its kernel); unset means
    /// `build.arch`.
    pub arch: Option<String>,
    /// Overlays packed over the root after `common/`, in order, each `KIND/NAME` under the
    /// site's `overlays/`, like `hardware/qemu-x86_64`.
    #[serde(default)]
    pub overlays: Vec<String>,
    /// The kernel config, relative to the site directory unless absolute, like
    /// `kernel/qemu-x86_64.kconfig`.
    pub kernel_config: Option<PathBuf>,
    /// The kernel source volume the system's kernel is built from.
    pub kernel: Option<String>,
    /// The kernel command line, like `console=ttyS0 rdinit=/init`.
    pub cmdline: Option<String>,
    /// Commands run inside the root, in order, before it is packed, like `emerge -uDN @world`.
    #[serde(default)]
    pub commands: Vec<String>,
    /// The kernel builder: `root` (kbuild with the root's toolchain, the Gentoo way), `host`
    /// (kbuild with the host's), one a plugin provides, or [`NO_KERNEL`] for a system whose
    /// pipeline stops at the initramfs.
    #[serde(default = "default_kernel_build")]
    pub kernel_build: String,
    /// `[systems.NAME.image]`: pack a slim image tree instead of the whole build root.
    pub image: Option<ImageConfig>,
}

/// The `kernel_build` of a system that has no kernel: its pipeline ends with the initramfs.
pub const NO_KERNEL: &str = "none";

/// `[systems.NAME.image]`: the initramfs holds not the build root, with its toolchain, but an
/// image tree: the base the site names, then the named packages and their runtime dependencies
/// installed from the binary packages the build root made (`emerge --usepkgonly --root=IMAGE`),
/// then the libraries their programs need that no package of the image provides.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageConfig {
    /// The packages, as emerge takes them (`app-misc/greet`, `@image`). At least one.
    pub packages: Vec<String>,
    /// An imported stage whose tree the image starts from (a busybox tree, say); unset means
    /// the packages and the site files alone.
    pub base: Option<String>,
    /// What to do about a shared library a program of the image needs and no package of the
    /// image holds: copy it from the build root, or refuse the image.
    #[serde(default)]
    pub libraries: ImageLibraries,
}

/// [`ImageConfig::libraries`]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageLibraries {
    /// Copy each missing library (and the symlinks leading to it) from the build root, as
    /// dracut does: a stage whose C library is no package (the Portage stand-in) needs it.
    #[default]
    Copy,
    /// Refuse an image with a missing library: a Gentoo stage3's glibc is a package like any
    /// other, so a library missing from the image is a dependency an ebuild forgot.
    Check,
}

fn default_kernel_build() -> String {
    "root".to_owned()
}

impl SystemConfig {
    /// The root volume of the system called `system`.
    pub fn root_name<'a>(&'a self, system: &'a str) -> &'a str {
        self.root.as_deref().unwrap_or(system)
    }

    /// The system's Gentoo architecture: its own `arch`, else `build.arch`.
    pub fn arch<'a>(&'a self, build: &'a BuildSection) -> &'a str {
        self.arch.as_deref().unwrap_or(&build.arch)
    }
}

/// `[plugins]`, and `[plugins.NAME]` for each plugin that takes settings.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PluginsSection {
    /// Directories searched for plugin libraries, relative to the site directory unless absolute.
    pub dirs: Vec<PathBuf>,
    /// `[plugins.NAME]`: the settings of the plugin called NAME, handed to its hooks as they are
    /// (a relative path is the plugin's to take from the site directory, which its hooks get).
    #[serde(skip)]
    pub settings: BTreeMap<String, BTreeMap<String, Setting>>,
    /// Every other key of `[plugins]`, as written: checked, then read into `settings`.
    #[serde(flatten)]
    tables: BTreeMap<String, toml::Value>,
}

/// One plugin setting: a string, an integer or a boolean.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Setting {
    Text(String),
    Integer(i64),
    Boolean(bool),
}

impl Setting {
    fn from_toml(value: &toml::Value) -> Option<Self> {
        match value {
            toml::Value::String(text) => Some(Self::Text(text.clone())),
            toml::Value::Integer(n) => Some(Self::Integer(*n)),
            toml::Value::Boolean(b) => Some(Self::Boolean(*b)),
            _ => None,
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => f.write_str(text),
            Self::Integer(n) => write!(f, "{n}"),
            Self::Boolean(b) => write!(f, "{b}"),
        }
    }
}

impl SiteConfig {
    /// Reads, parses and checks the site file at `path`. Its directory becomes the absolute
    /// [`site_dir`](Self::site_dir), so the paths stay valid whatever the working directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = bounded_read::read_text(path, Limit::SITE_CONFIG)?;
        let absolute = std::path::absolute(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse_in(&text, path, directory_of(&absolute))
    }

    /// Parses and checks `text`, read from `origin`: errors name `origin`, and relative paths are
    /// taken from its directory.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        Self::parse_in(text, origin, directory_of(origin))
    }

    fn parse_in(text: &str, origin: &Path, site_dir: PathBuf) -> Result<Self, ConfigError> {
        // Parsing once into spanned tables gives serde its input and the checks below the lines
        // of the keys they refuse.
        let doc = DeTable::parse(text).map_err(|error| toml_error(origin, text, "", &error))?;
        let deserializer = toml::de::Deserializer::from(doc.clone());
        let mut config: Self = serde_path_to_error::deserialize(deserializer)
            .map_err(|error| toml_error(origin, text, &serde_key(&error), error.inner()))?;
        let checker = Checker {
            origin,
            text,
            doc: doc.get_ref(),
        };
        config.check(&checker)?;
        config.check_files(&checker, &site_dir)?;
        config.storage.workdir = site_dir.join(&config.storage.workdir);
        for system in config.systems.values_mut() {
            if let Some(kernel_config) = &mut system.kernel_config {
                *kernel_config = site_dir.join(&*kernel_config);
            }
        }
        for dir in &mut config.plugins.dirs {
            *dir = site_dir.join(&*dir);
        }
        if let Some(file) = &mut config.database.password_file {
            *file = site_dir.join(&*file);
        }
        for (name, table) in &config.plugins.tables {
            let settings = table
                .as_table()
                .into_iter()
                .flatten()
                .filter_map(|(key, value)| Some((key.clone(), Setting::from_toml(value)?)))
                .collect();
            config.plugins.settings.insert(name.clone(), settings);
        }
        config.site_dir = Some(site_dir);
        Ok(config)
    }

    /// The site's `common/` directory, whose files every image gets; `None` without a site or
    /// when the site has none.
    pub fn common_dir(&self) -> Option<PathBuf> {
        let dir = self.site_dir.as_ref()?.join("common");
        dir.is_dir().then_some(dir)
    }

    /// The directory of `overlay`, given as `KIND/NAME` (like `hardware/qemu-x86_64`), under the
    /// site's `overlays/`. It must exist.
    pub fn overlay_dir(&self, overlay: &str) -> Result<PathBuf, ConfigError> {
        check_overlay(overlay).map_err(|reason| ConfigError::BadOverlay {
            overlay: overlay.to_owned(),
            reason,
        })?;
        let site_dir = self.site_dir.as_ref().ok_or_else(|| ConfigError::NoSite {
            overlay: overlay.to_owned(),
        })?;
        let dir = site_dir.join("overlays").join(overlay);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(ConfigError::MissingOverlay {
                overlay: overlay.to_owned(),
                path: dir,
            })
        }
    }

    /// The kernel config fragments of a system, in order: its `kernel_config`, then a
    /// `NAME.kconfig` beside each overlay directory that has one
    /// (`overlays/hardware/qemu-x86_64.kconfig`).
    pub fn kernel_fragments(&self, system: &SystemConfig) -> Result<Vec<PathBuf>, ConfigError> {
        let mut out = Vec::new();
        if let Some(path) = &system.kernel_config {
            out.push(path.clone());
        }
        for overlay in &system.overlays {
            let mut fragment = self.overlay_dir(overlay)?.into_os_string();
            fragment.push(".kconfig");
            let fragment = PathBuf::from(fragment);
            if fragment.is_file() {
                out.push(fragment);
            }
        }
        Ok(out)
    }

    /// The system called `name`.
    pub fn system(&self, name: &str) -> Result<&SystemConfig, ConfigError> {
        self.systems
            .get(name)
            .ok_or_else(|| ConfigError::UnknownSystem {
                name: name.to_owned(),
                known: self.systems.keys().cloned().collect(),
            })
    }

    /// The checks serde cannot make, each refusing the first bad value it finds.
    fn check(&self, c: &Checker<'_>) -> Result<(), ConfigError> {
        use Key::{Field, Item};

        if let Some(dataset) = &self.storage.zfs_dataset {
            for part in dataset.split('/') {
                names::check(part).map_err(|error| {
                    c.error(
                        &[Field("storage"), Field("zfs_dataset")],
                        format!("`{dataset}` is not a dataset like tank/autogentoo: {error}"),
                    )
                })?;
            }
        }

        if let Some(url) = &self.database.url {
            let key = [Field("database"), Field("url")];
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            if !matches!(scheme, "postgres" | "postgresql") {
                return Err(c.error(
                    &key,
                    "not a PostgreSQL URL (postgres://USER@HOST/DB); without a URL builds are \
                     recorded in WORKDIR/autogentoo.db",
                ));
            }
            let authority = rest.split(['/', '?']).next().unwrap_or("");
            let has_password = authority
                .rsplit_once('@')
                .is_some_and(|(user, _)| user.contains(':'))
                || rest.contains("password=");
            if has_password {
                return Err(c.error(
                    &key,
                    "the URL holds a password; put it in `database.password_file` (or the whole \
                     URL in AUTOGENTOO_DATABASE_URL), never in the site config",
                ));
            }
        }

        let build = &self.build;
        if build.jobs == 0 {
            return Err(c.error(
                &[Field("build"), Field("jobs")],
                "0 jobs would build nothing; give at least 1",
            ));
        }
        if !GENTOO_ARCHES.contains(&build.arch.as_str()) {
            return Err(c.error(
                &[Field("build"), Field("arch")],
                format!(
                    "unknown arch `{}`; Gentoo's are {}",
                    build.arch,
                    GENTOO_ARCHES.join(", ")
                ),
            ));
        }
        for name in build.env.keys() {
            if !is_env_name(name) {
                return Err(c.error(
                    &[Field("build"), Field("env"), Field(name)],
                    format!(
                        "`{name}` is not an environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
                    ),
                ));
            }
        }

        let mounts = &self.mounts;
        for (key, target) in [
            ("distfiles", &mounts.distfiles),
            ("binpkgs", &mounts.binpkgs),
            ("repo", &mounts.repo),
        ] {
            check_inside_root(target)
                .map_err(|message| c.error(&[Field("mounts"), Field(key)], message))?;
        }
        if let Some(image) = &mounts.repo_image {
            names::check(image).map_err(|error| {
                c.error(
                    &[Field("mounts"), Field("repo_image")],
                    format!("`{image}` is not a repo image name: {error}"),
                )
            })?;
        }

        let pack = &self.pack;
        if let Some(level) = pack.level {
            let bad = match pack.compression.levels() {
                None => Some("`none` compression takes no level; remove it".to_owned()),
                Some(levels) if !levels.contains(&level) => Some(format!(
                    "{level} is out of range for {} ({}-{})",
                    pack.compression,
                    levels.start(),
                    levels.end()
                )),
                Some(_) => None,
            };
            if let Some(message) = bad {
                return Err(c.error(&[Field("pack"), Field("level")], message));
            }
        }
        for (index, dir) in pack.exclude.iter().enumerate() {
            check_inside_root(Path::new(dir)).map_err(|message| {
                c.error(&[Field("pack"), Field("exclude"), Item(index)], message)
            })?;
        }
        for (name, value) in &self.plugins.tables {
            let Some(table) = value.as_table() else {
                return Err(c.error(
                    &[Field("plugins"), Field(name)],
                    format!(
                        "`{name}` is neither `dirs` nor a plugin's table of settings \
                         ([plugins.{name}])"
                    ),
                ));
            };
            for (key, setting) in table {
                if Setting::from_toml(setting).is_none() {
                    return Err(c.error(
                        &[Field("plugins"), Field(name), Field(key)],
                        "a plugin setting is a string, an integer or a boolean",
                    ));
                }
            }
        }
        if !pack.rdinit.starts_with('/') {
            return Err(c.error(
                &[Field("pack"), Field("rdinit")],
                format!(
                    "`{}` is not an absolute path inside the image, like /init",
                    pack.rdinit
                ),
            ));
        }

        for (name, system) in &self.systems {
            names::check(name).map_err(|error| {
                c.error(
                    &[Field("systems"), Field(name)],
                    format!("`{name}` is not a system name: {error}"),
                )
            })?;
            if let Some(arch) = &system.arch {
                if !GENTOO_ARCHES.contains(&arch.as_str()) {
                    return Err(c.error(
                        &[Field("systems"), Field(name), Field("arch")],
                        format!(
                            "unknown arch `{arch}`; Gentoo's are {}",
                            GENTOO_ARCHES.join(", ")
                        ),
                    ));
                }
            }
            let volumes = [
                ("stage", Some(&system.stage)),
                ("root", system.root.as_ref()),
                ("kernel", system.kernel.as_ref()),
            ];
            for (key, volume) in volumes {
                if let Some(volume) = volume {
                    names::check(volume).map_err(|error| {
                        c.error(
                            &[Field("systems"), Field(name), Field(key)],
                            format!("`{volume}` is not a {key} name: {error}"),
                        )
                    })?;
                }
            }
            if let Some(path) = &system.kernel_config {
                check_inside_site(path).map_err(|message| {
                    c.error(
                        &[Field("systems"), Field(name), Field("kernel_config")],
                        message,
                    )
                })?;
            }
            for (index, overlay) in system.overlays.iter().enumerate() {
                check_overlay(overlay).map_err(|reason| {
                    c.error(
                        &[
                            Field("systems"),
                            Field(name),
                            Field("overlays"),
                            Item(index),
                        ],
                        format!("`{overlay}` is not an overlay: {reason}"),
                    )
                })?;
            }
            if let Some(image) = &system.image {
                if image.packages.is_empty() {
                    return Err(c.error(
                        &[
                            Field("systems"),
                            Field(name),
                            Field("image"),
                            Field("packages"),
                        ],
                        "an image of no packages; name at least one, like app-misc/greet",
                    ));
                }
                for (index, package) in image.packages.iter().enumerate() {
                    if !is_package_argument(package) {
                        return Err(c.error(
                            &[
                                Field("systems"),
                                Field(name),
                                Field("image"),
                                Field("packages"),
                                Item(index),
                            ],
                            format!(
                                "`{package}` is not a package atom or set like app-misc/greet or @image"
                            ),
                        ));
                    }
                }
                if let Some(base) = &image.base {
                    names::check(base).map_err(|error| {
                        c.error(
                            &[Field("systems"), Field(name), Field("image"), Field("base")],
                            format!("`{base}` is not a stage name: {error}"),
                        )
                    })?;
                }
            }
            for (index, command) in system.commands.iter().enumerate() {
                if command.trim().is_empty() {
                    return Err(c.error(
                        &[
                            Field("systems"),
                            Field(name),
                            Field("commands"),
                            Item(index),
                        ],
                        "an empty command; remove it",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl SiteConfig {
    /// The files the config names (kernel configs) must be regular files inside the site
    /// directory, symlinks resolved: a site's config cannot make us read `/etc/shadow`.
    fn check_files(&self, c: &Checker<'_>, site_dir: &Path) -> Result<(), ConfigError> {
        use Key::Field;
        for (name, system) in &self.systems {
            let Some(path) = &system.kernel_config else {
                continue;
            };
            let key = [Field("systems"), Field(name), Field("kernel_config")];
            let full = site_dir.join(path);
            let resolved = fs::canonicalize(&full).map_err(|e| {
                let why = if e.kind() == io::ErrorKind::NotFound {
                    "does not exist".to_owned()
                } else {
                    format!("cannot be read ({e})")
                };
                c.error(
                    &key,
                    format!(
                        "`{}` {why}: expected the file {}",
                        path.display(),
                        full.display()
                    ),
                )
            })?;
            let top = fs::canonicalize(site_dir).map_err(|e| {
                c.error(
                    &key,
                    format!(
                        "the site directory {} cannot be read ({e})",
                        site_dir.display()
                    ),
                )
            })?;
            if !resolved.starts_with(&top) {
                return Err(c.error(
                    &key,
                    format!(
                        "`{}` leads out of the site directory {} (to {}); keep the site's files in it",
                        path.display(),
                        top.display(),
                        resolved.display()
                    ),
                ));
            }
            let meta = fs::metadata(&resolved).map_err(|e| {
                c.error(&key, format!("cannot inspect {}: {e}", resolved.display()))
            })?;
            if !meta.is_file() {
                return Err(c.error(
                    &key,
                    format!(
                        "`{}` is {}, not a kernel config file",
                        path.display(),
                        FileKind::of(meta.file_type())
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether `text` can be handed to emerge as one package argument: an atom (`cat/pkg`,
/// `>=cat/pkg-1:0/1[use]`) or a set (`@name`), and never an option or a word with spaces.
fn is_package_argument(text: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-_.+:@=<>~*[](),!?".contains(c);
    !text.is_empty() && !text.starts_with('-') && text.chars().all(allowed)
}

/// Refuses a path to a site file that is absolute or climbs out of the site directory.
fn check_inside_site(path: &Path) -> Result<(), String> {
    if path.is_absolute() {
        return Err(format!(
            "`{}` is absolute; give it relative to the site directory, where the site's files live",
            path.display()
        ));
    }
    if path.components().any(|part| part == Component::ParentDir) {
        return Err(format!(
            "`{}` leads out of the site directory with ..",
            path.display()
        ));
    }
    Ok(())
}

/// The directory of a file, `.` for a bare file name, so that joining onto it stays relative to
/// the working directory rather than becoming absolute.
fn directory_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn toml_error(origin: &Path, text: &str, key: &str, error: &toml::de::Error) -> ConfigError {
    ConfigError::Invalid {
        file: origin.to_owned(),
        line: error.span().map(|span| line_of(text, span.start)),
        key: key.to_owned(),
        message: one_line(error.message()),
    }
}

/// The key path of a serde error. An unknown key is named by the message already, so the path
/// stops at the table that does not know it.
fn serde_key(error: &serde_path_to_error::Error<toml::de::Error>) -> String {
    let path = error.path();
    let Some(last) = path.iter().next_back() else {
        return String::new();
    };
    let key = path.to_string();
    if let Segment::Map { key: unknown } = last {
        if error
            .inner()
            .message()
            .starts_with(&format!("unknown field `{unknown}`"))
        {
            let table = &key[..key.len() - unknown.len()];
            return table.trim_end_matches('.').to_owned();
        }
    }
    key
}

fn one_line(message: &str) -> String {
    let lines: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    lines.join("; ")
}

fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    let line = text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1;
    // The end of a text that ends with a newline is on its last line, not on one after it that
    // the file does not have (an unclosed string reaches the end, say).
    line.min(text.lines().count().max(1))
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Refuses paths that would leave, or be, the top of the root they are used in.
fn check_inside_root(path: &Path) -> Result<(), String> {
    if path.is_absolute() {
        return Err(format!(
            "`{}` is absolute; give it relative to the root's top, without the leading /",
            path.display()
        ));
    }
    if path.components().any(|part| part == Component::ParentDir) {
        return Err(format!(
            "`{}` leads out of the root with ..",
            path.display()
        ));
    }
    if !path
        .components()
        .any(|part| matches!(part, Component::Normal(_)))
    {
        return Err(format!(
            "`{}` is the root's top itself; name a directory inside it",
            path.display()
        ));
    }
    Ok(())
}

fn check_overlay(overlay: &str) -> Result<(), String> {
    let Some((kind, name)) = overlay.split_once('/') else {
        return Err("name it KIND/NAME, like hardware/qemu-x86_64".to_owned());
    };
    for part in [kind, name] {
        names::check(part).map_err(|error| format!("`{part}`: {error}"))?;
    }
    Ok(())
}

/// One step of a key path.
#[derive(Clone, Copy)]
enum Key<'a> {
    Field(&'a str),
    Item(usize),
}

/// Turns a refused value into an error pointing at its line.
struct Checker<'a> {
    origin: &'a Path,
    text: &'a str,
    doc: &'a DeTable<'a>,
}

impl Checker<'_> {
    fn error(&self, key: &[Key<'_>], message: impl Into<String>) -> ConfigError {
        let mut path = String::new();
        for step in key {
            match step {
                Key::Field(name) if path.is_empty() => path.push_str(name),
                Key::Field(name) => path.push_str(&format!(".{name}")),
                Key::Item(index) => path.push_str(&format!("[{index}]")),
            }
        }
        ConfigError::Invalid {
            file: self.origin.to_owned(),
            line: self.span(key).map(|span| line_of(self.text, span.start)),
            key: path,
            message: message.into(),
        }
    }

    /// Where the key was written: the key itself for a table entry, the value for an array
    /// item. `None` for a key the file does not have.
    fn span(&self, key: &[Key<'_>]) -> Option<Range<usize>> {
        let mut table = Some(self.doc);
        let mut array: Option<&DeArray<'_>> = None;
        let mut span = None;
        for step in key {
            let value = match *step {
                Key::Field(name) => {
                    let (written, value) = table?.get_key_value(name)?;
                    span = Some(written.span());
                    value
                }
                Key::Item(index) => {
                    let value = array?.get(index)?;
                    span = Some(value.span());
                    value
                }
            };
            table = value.get_ref().as_table();
            array = value.get_ref().as_array();
        }
        span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORIGIN: &str = "config/autogentoo.toml";

    fn error(text: &str) -> String {
        SiteConfig::parse(text, Path::new(ORIGIN))
            .expect_err("the config should be refused")
            .to_string()
    }

    fn example_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/autogentoo.toml")
    }

    #[test]
    fn a_database_url_with_a_password_or_of_another_kind_is_refused() {
        let refused = error("[database]\nurl = \"postgres://farm:s3cret@db.example/farm\"\n");
        assert!(
            refused.starts_with("config/autogentoo.toml:2: database.url: the URL holds a password"),
            "{refused}"
        );
        assert!(!refused.contains("s3cret"), "{refused}");
        let refused = error("[database]\nurl = \"postgres://db.example/farm?password=x\"\n");
        assert!(refused.contains("holds a password"), "{refused}");
        let refused = error("[database]\nurl = \"mysql://db.example/farm\"\n");
        assert!(refused.contains("not a PostgreSQL URL"), "{refused}");
        let config = SiteConfig::parse(
            "[database]\nurl = \"postgres://farm@db.example/farm\"\npassword_file = \"db.pass\"\n",
            Path::new(ORIGIN),
        )
        .unwrap();
        assert_eq!(
            config.database.password_file,
            Some(PathBuf::from("config/db.pass"))
        );
    }

    #[test]
    fn the_shipped_example_loads_and_its_files_exist() {
        let config = SiteConfig::load(&example_path()).unwrap();
        let site_dir = config.site_dir.clone().unwrap();
        assert!(site_dir.is_absolute());
        assert_eq!(config.common_dir(), Some(site_dir.join("common")));

        let demo = config.system("demo").unwrap();
        assert_eq!(demo.stage, "portage");
        assert_eq!(demo.root_name("demo"), "demo");
        assert_eq!(
            demo.commands,
            ["emerge --update --newuse app-misc/greet app-misc/hello"]
        );
        assert!(demo.kernel_config.as_ref().unwrap().is_file());
        assert_eq!(
            demo.overlays,
            ["hardware/qemu-x86_64", "secret-sauce/hello", "boot/greet"]
        );
        assert_eq!(
            demo.image,
            Some(ImageConfig {
                packages: vec!["app-misc/greet".into(), "app-misc/hello".into()],
                base: Some("busybox".into()),
                libraries: ImageLibraries::Copy,
            })
        );
        assert_eq!(config.mounts.repo, Path::new("var/db/repos/example"));
        for overlay in &demo.overlays {
            assert!(config.overlay_dir(overlay).unwrap().is_dir());
        }
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let config = SiteConfig::parse("", Path::new(ORIGIN)).unwrap();
        assert_eq!(config.site_dir.as_deref(), Some(Path::new("config")));
        assert_eq!(
            SiteConfig {
                site_dir: None,
                ..config
            },
            SiteConfig::default()
        );

        let defaults = SiteConfig::default();
        assert_eq!(defaults.storage.backend, "dir");
        assert_eq!(defaults.storage.workdir, Path::new("/var/lib/autogentoo"));
        assert!(defaults.build.jobs >= 1);
        assert_eq!(
            defaults.build.makeopts(),
            format!("-j{}", defaults.build.jobs)
        );
        assert_eq!(defaults.pack.compression, Compression::Gzip);
        assert!(defaults
            .pack
            .exclude
            .iter()
            .any(|dir| dir == "var/db/repos"));
        assert_eq!(defaults.common_dir(), None);
    }

    #[test]
    fn relative_paths_are_taken_from_the_site_directory() {
        let site = tempfile::tempdir().unwrap();
        fs::create_dir(site.path().join("kernel")).unwrap();
        fs::write(site.path().join("kernel/x.kconfig"), "CONFIG_A=y\n").unwrap();
        let text = "[storage]\nworkdir = \"../work\"\n\
                    [plugins]\ndirs = [\"plugins\", \"/usr/lib/autogentoo\"]\n\
                    [systems.demo]\nstage = \"demo\"\nkernel_config = \"kernel/x.kconfig\"\n";
        let config = SiteConfig::parse(text, &site.path().join("autogentoo.toml")).unwrap();
        assert_eq!(config.storage.workdir, site.path().join("../work"));
        assert_eq!(
            config.plugins.dirs,
            [
                site.path().join("plugins"),
                PathBuf::from("/usr/lib/autogentoo")
            ]
        );
        assert_eq!(
            config.systems["demo"].kernel_config.as_deref(),
            Some(site.path().join("kernel/x.kconfig").as_path())
        );
    }

    #[test]
    fn kernel_configs_must_be_regular_files_inside_the_site_directory() {
        let site = tempfile::tempdir().unwrap();
        let origin = site.path().join("autogentoo.toml");
        fs::create_dir(site.path().join("kernel")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", site.path().join("kernel/passwd")).unwrap();
        let refused = |value: &str| {
            let text = format!("[systems.demo]\nstage = \"demo\"\nkernel_config = \"{value}\"\n");
            SiteConfig::parse(&text, &origin).unwrap_err().to_string()
        };
        let at = format!("{}:3: systems.demo.kernel_config:", origin.display());
        for (value, says) in [
            ("/etc/shadow", "is absolute"),
            (
                "../../../etc/passwd",
                "leads out of the site directory with ..",
            ),
            ("kernel/passwd", "leads out of the site directory"),
            ("kernel/missing.kconfig", "does not exist"),
            ("kernel", "is a directory, not a kernel config file"),
        ] {
            let error = refused(value);
            assert!(error.starts_with(&at), "{value}: {error}");
            assert!(error.contains(says), "{value}: {error}");
        }
    }

    #[test]
    fn plugin_settings_are_tables_named_after_the_plugin() {
        let text = "[plugins]\ndirs = [\"plugins\"]\n\
                    [plugins.site-hooks]\nsign_key = \"keys/db.key\"\nlevel = 3\nstrict = true\n";
        let config = SiteConfig::parse(text, Path::new("/srv/site/autogentoo.toml")).unwrap();
        let settings = &config.plugins.settings["site-hooks"];
        assert_eq!(settings["sign_key"].to_string(), "keys/db.key");
        assert_eq!(settings["level"].to_string(), "3");
        assert_eq!(settings["strict"].to_string(), "true");
        assert_eq!(config.plugins.dirs, [Path::new("/srv/site/plugins")]);
        assert_eq!(
            error("[plugins]\ndirz = [\"plugins\"]\n"),
            "config/autogentoo.toml:2: plugins.dirz: `dirz` is neither `dirs` nor a plugin's \
             table of settings ([plugins.dirz])"
        );
        assert_eq!(
            error("[plugins.site-hooks]\nkeys = [\"a\"]\n"),
            "config/autogentoo.toml:2: plugins.site-hooks.keys: a plugin setting is a string, \
             an integer or a boolean"
        );
    }

    #[test]
    fn an_unknown_key_names_its_section_and_the_known_ones() {
        assert_eq!(
            error("backend = \"dir\"\n"),
            "config/autogentoo.toml:1: unknown field `backend`, \
             expected one of `storage`, `build`, `mounts`, `pack`, `systems`, `plugins`, \
             `database`, `retention`"
        );
        assert_eq!(
            error("# site\n\n[storage]\nbakend = \"zfs\"\n"),
            "config/autogentoo.toml:4: storage: unknown field `bakend`, \
             expected one of `backend`, `workdir`, `zfs_dataset`"
        );
    }

    #[test]
    fn a_wrong_type_names_the_key() {
        assert_eq!(
            error("[storage]\nbackend = \"dir\"\n\n[build]\narch = \"amd64\"\njobs = \"four\"\n"),
            "config/autogentoo.toml:6: build.jobs: invalid type: string \"four\", expected u32"
        );
    }

    #[test]
    fn a_level_out_of_range_names_the_compressor() {
        assert_eq!(
            error("[pack]\ncompression = \"gzip\"\nlevel = 12\n"),
            "config/autogentoo.toml:3: pack.level: 12 is out of range for gzip (1-9)"
        );
        assert!(SiteConfig::parse(
            "[pack]\ncompression = \"zstd\"\nlevel = 12\n",
            Path::new(ORIGIN)
        )
        .is_ok());
    }

    #[test]
    fn an_absolute_mount_target_is_refused() {
        assert_eq!(
            error("[mounts]\nresolv_conf = false\ndistfiles = \"/var/cache/distfiles\"\n"),
            "config/autogentoo.toml:3: mounts.distfiles: `/var/cache/distfiles` is absolute; \
             give it relative to the root's top, without the leading /"
        );
        assert_eq!(
            error("[mounts]\nrepo = \"var/../../etc\"\n"),
            "config/autogentoo.toml:2: mounts.repo: `var/../../etc` leads out of the root with .."
        );
    }

    #[test]
    fn a_bad_system_name_is_refused() {
        assert_eq!(
            error("[systems.demo]\nstage = \"demo\"\n\n[systems.\"../up\"]\nstage = \"demo\"\n"),
            "config/autogentoo.toml:4: systems.../up: `../up` is not a system name: \
             a name starts with a letter or a digit"
        );
        assert_eq!(
            error("[systems.demo]\nstage = \"demo\"\noverlays = [\"hardware/qemu\", \"../x\"]\n"),
            "config/autogentoo.toml:3: systems.demo.overlays[1]: `../x` is not an overlay: \
             `..`: a name starts with a letter or a digit"
        );
    }

    #[test]
    fn an_unknown_system_lists_the_known_ones() {
        let config = SiteConfig::parse(
            "[systems.demo]\nstage = \"demo\"\n[systems.web]\nstage = \"stage3\"\n",
            Path::new(ORIGIN),
        )
        .unwrap();
        assert_eq!(
            config.system("dmeo").unwrap_err().to_string(),
            "unknown system `dmeo`; the site config defines demo, web"
        );
    }

    #[test]
    fn overlays_must_exist_and_stay_in_the_site() {
        let config = SiteConfig::load(&example_path()).unwrap();
        let err = config.overlay_dir("hardware/nope").unwrap_err().to_string();
        assert!(err.starts_with("overlay `hardware/nope` not found: expected the directory "));
        assert!(err.ends_with("config/overlays/hardware/nope"), "{err}");
        for bad in ["../etc", "/etc/x", "hardware", "hardware/a/b"] {
            assert!(
                matches!(config.overlay_dir(bad), Err(ConfigError::BadOverlay { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_error_at_the_end_is_on_the_last_line() {
        assert!(
            error("[build]\narch = \"\"\"amd64\n").starts_with("config/autogentoo.toml:2: "),
            "{}",
            error("[build]\narch = \"\"\"amd64\n")
        );
    }

    #[test]
    fn syntax_errors_and_other_checks_are_one_line() {
        for text in [
            "[build\njobs = 1\n",
            "[build]\nenv = { \"1X\" = \"y\" }\n",
            "[build]\narch = \"amd46\"\n",
            "[pack]\ncompression = \"lz4\"\n",
            "[systems.demo]\nroot = \"x\"\n",
        ] {
            let message = error(text);
            assert!(message.starts_with("config/autogentoo.toml:"), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn an_image_names_packages_emerge_can_take_and_a_stage_as_its_base() {
        let system = "[systems.slim]\nstage = \"portage\"\n[systems.slim.image]\n";
        for (table, key, says) in [
            (
                "packages = []",
                "systems.slim.image.packages",
                "an image of no packages",
            ),
            (
                "packages = [\"--root=/\"]",
                "systems.slim.image.packages[0]",
                "is not a package atom",
            ),
            (
                "packages = [\"app-misc/greet; rm -rf /\"]",
                "systems.slim.image.packages[0]",
                "is not a package atom",
            ),
            (
                "packages = [\"app-misc/greet\"]\nbase = \"../etc\"",
                "systems.slim.image.base",
                "is not a stage name",
            ),
            (
                "packages = [\"app-misc/greet\"]\nlibraries = \"ignore\"",
                "systems.slim.image.libraries",
                "unknown variant",
            ),
        ] {
            let message = error(&format!("{system}{table}\n"));
            assert!(message.contains(key), "{key}: {message}");
            assert!(message.contains(says), "{says}: {message}");
        }
        let config = SiteConfig::parse(
            &format!("{system}packages = [\">=dev-libs/libgreet-1:0/1=[-shout]\", \"@image\"]\n"),
            Path::new(ORIGIN),
        )
        .unwrap();
        let image = config.systems["slim"].image.as_ref().unwrap();
        assert_eq!(image.base, None);
        assert_eq!(image.libraries, ImageLibraries::Copy);
    }
}
