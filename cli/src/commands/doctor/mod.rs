//! `autogentoo doctor`

mod probe;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use anyhow::{bail, Result};
use autogentoo_backend_btrfs::Subvolumes;
use autogentoo_backend_dir::Trees;
use autogentoo_core::kernel::kernel_build::Kbuild;
use autogentoo_core::pack::initramfs::Newc;
use autogentoo_plugin_api::host::LoadedPlugin;
use autogentoo_plugin_api::API_VERSION;
use clap::Args;
use rustix::thread::UnshareFlags;
use serde::Serialize;

use crate::context::Context;
use crate::output;
use crate::plugins::PATH_VAR;

/// Check this host against what the site config needs, one line each with the fix
///
/// Check what this host offers against what the site config asks for: root privileges, loop
/// devices, SquashFS, namespaces, binfmt_misc, overlayfs, btrfs, ZFS, the storage backend,
/// packer and kernel builders selected, the kernel build toolchain, the programs the selected
/// plugins call, QEMU and OVMF. One line each: `ok`, `missing` (something this site needs;
/// the line ends with the fix) or `not needed` (absent, but nothing configured uses it). Exits
/// 1 when something needed is missing, 0 otherwise. It only looks: nothing on the host changes.
/// With --json: `{"ok": bool, "checks": [{"name", "status" (ok, missing, not_needed),
/// "detail", "fix" (null when ok), "needed_by" (what needs it; empty when nothing does)}]}`.
#[derive(Args, Debug)]
pub struct DoctorArgs {}

/// Everything doctor found.
#[derive(Serialize)]
struct Report {
    /// Nothing needed is missing.
    ok: bool,
    checks: Vec<Check>,
}

/// One line of the report.
#[derive(Serialize)]
struct Check {
    /// A stable name, like `squashfs` or `zfs-running`.
    name: String,
    status: Status,
    /// What was found, or what was not.
    detail: String,
    /// For what is absent: the command or kernel option that provides it.
    fix: Option<String>,
    /// What needs it in this configuration: commands, or the settings that choose it.
    needed_by: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Status {
    Ok,
    Missing,
    NotNeeded,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::NotNeeded => "not needed",
        })
    }
}

/// Something the host does not offer, and how to get it.
struct Absent {
    detail: String,
    fix: String,
}

fn absent(detail: impl Into<String>, fix: impl Into<String>) -> Absent {
    Absent {
        detail: detail.into(),
        fix: fix.into(),
    }
}

type Found = Result<String, Absent>;

/// Programs doctor may look for, and the Debian package that provides each.
const PACKAGES: &[(&str, &str)] = &[
    ("make", "make"),
    ("gcc", "gcc"),
    ("bc", "bc"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("xz", "xz-utils"),
    ("objcopy", "binutils"),
    ("objdump", "binutils"),
    ("sbsign", "sbsigntool"),
    ("qemu-system-x86_64", "qemu-system-x86"),
];

/// What building a kernel with kbuild takes on the host: programs, then headers with their
/// Debian packages.
const KBUILD_PROGRAMS: &[&str] = &["make", "gcc", "bc", "flex", "bison"];
const KBUILD_HEADERS: &[(&str, &str, &str)] = &[
    ("libelf-headers", "libelf.h", "libelf-dev"),
    ("openssl-headers", "openssl/opensslv.h", "libssl-dev"),
];

/// The plugins of this repository whose needs doctor knows. The plugin API has no way yet for a
/// plugin to declare the programs it calls, so these are written down here, by the plugin's
/// name and what it registers; a plugin from elsewhere is checked for being loaded only.
const UKI_PLUGIN: &str = "uki";
const UKI_PACKER: &str = "newc-xz";
const UKI_BUILDER: &str = "uki";
/// The EFI stub the `uki` kernel builder wraps the kernel in (systemd-boot-efi). A copy of the
/// plugin's own `Uki::STUB`: the plugin is a crate apart, loaded at run time, which this
/// program does not depend on, so the two must be kept the same by hand.
const UKI_STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const SITE_HOOKS_PLUGIN: &str = "site-hooks";
/// The `[plugins.site-hooks]` setting that makes it sign images with sbsign.
const SITE_HOOKS_SIGNING: &str = "sign_key";

pub fn run(ctx: &Context, _args: DoctorArgs) -> Result<()> {
    let checks = checks(ctx);
    let missing: Vec<String> = checks
        .iter()
        .filter(|c| c.status == Status::Missing)
        .map(|c| c.name.clone())
        .collect();
    if ctx.json {
        output::json(&Report {
            ok: missing.is_empty(),
            checks,
        });
    } else {
        print_lines(&checks);
    }
    if !missing.is_empty() {
        bail!(
            "this host lacks what the site needs: {}; apply the fix given for each",
            missing.join(", ")
        );
    }
    Ok(())
}

impl Check {
    fn new(name: &str, needed_by: Vec<String>, found: Found) -> Self {
        let (status, detail, fix) = match found {
            Ok(detail) => (Status::Ok, detail, None),
            Err(absent) if needed_by.is_empty() => {
                (Status::NotNeeded, absent.detail, Some(absent.fix))
            }
            Err(absent) => (Status::Missing, absent.detail, Some(absent.fix)),
        };
        Self {
            name: name.to_owned(),
            status,
            detail,
            fix,
            needed_by,
        }
    }
}

fn print_lines(checks: &[Check]) {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    for check in checks {
        let mut line = format!(
            "{:<10}  {:<width$}  {}",
            check.status.to_string(),
            check.name,
            check.detail
        );
        if !check.needed_by.is_empty() {
            line.push_str(&format!("; needed by {}", check.needed_by.join(", ")));
        }
        if let Some(fix) = &check.fix {
            line.push_str(&format!("; fix: {fix}"));
        }
        println!("{line}");
    }
}

/// For each check by name, what in this configuration needs it.
#[derive(Default)]
struct Needs(BTreeMap<String, Vec<String>>);

impl Needs {
    fn add(&mut self, name: &str, by: impl Into<String>) {
        let by = by.into();
        let list = self.0.entry(name.to_owned()).or_default();
        if !list.contains(&by) {
            list.push(by);
        }
    }

    fn of(&self, name: &str) -> Vec<String> {
        self.0.get(name).cloned().unwrap_or_default()
    }

    fn any(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// The plugin that provides `name` of a kind (`what` lists each plugin's names of that kind).
fn provider<'a>(
    ctx: &'a Context,
    name: &str,
    what: fn(&LoadedPlugin) -> &[String],
) -> Option<&'a LoadedPlugin> {
    ctx.plugins
        .loaded
        .iter()
        .find(|plugin| what(plugin).iter().any(|n| n == name))
}

fn storage_backends(plugin: &LoadedPlugin) -> &[String] {
    &plugin.storage_backends
}

fn packers(plugin: &LoadedPlugin) -> &[String] {
    &plugin.packers
}

fn kernel_builders(plugin: &LoadedPlugin) -> &[String] {
    &plugin.kernel_builders
}

/// Whether `name` of a kind comes from the plugin of this repository called `plugin`.
fn from_plugin(
    ctx: &Context,
    name: &str,
    what: fn(&LoadedPlugin) -> &[String],
    plugin: &str,
) -> bool {
    provider(ctx, name, what).is_some_and(|p| p.name == plugin)
}

/// What the site config and the global options ask of the host.
fn needs(ctx: &Context) -> Needs {
    let mut needs = Needs::default();
    for by in ["root mount", "root run", "stage import", "build"] {
        needs.add("privileges", by);
    }
    for by in ["workdir", "stage", "root", "kernel", "build"] {
        needs.add("backend", by);
    }
    // Repository images are mounted into roots through loop devices.
    for by in ["root mount", "build"] {
        needs.add("loop-devices", by);
        needs.add("squashfs", by);
    }
    for by in ["root run", "root shell", "build"] {
        needs.add("mount-namespace", by);
        needs.add("pid-namespace", by);
    }
    for by in ["root pack", "build"] {
        needs.add("packer", by);
    }
    if !ctx.plugins.failures.is_empty() {
        needs.add("plugins", format!("plugins.dirs, {PATH_VAR}"));
    }
    let backend = format!("backend {}", ctx.backend);
    match ctx.backend.as_str() {
        autogentoo_backend_btrfs::NAME => {
            needs.add("btrfs", &backend);
            needs.add("btrfs-workdir", &backend);
        }
        autogentoo_backend_zfs::NAME => {
            for name in ["zfs", "zfs-running", "zfs-dataset"] {
                needs.add(name, &backend);
            }
        }
        // The overlay plugin's backend mounts its clones as overlayfs.
        "overlay" => needs.add("overlayfs", &backend),
        _ => {}
    }
    let packer = &ctx.config.pack.packer;
    if from_plugin(ctx, packer, packers, UKI_PLUGIN) && packer == UKI_PACKER {
        needs.add("xz", format!("pack.packer = {packer}"));
    }
    for (system, config) in &ctx.config.systems {
        // Every system's build makes a kernel, and an image is booted before it ships.
        needs.add("qemu-system-x86_64", "kernel boot");
        needs.add("ovmf", "kernel boot");
        let builder = &config.kernel_build;
        let by = format!("systems.{system}.kernel_build = {builder}");
        needs.add(&format!("kernel-builder-{builder}"), &by);
        let uki = builder == UKI_BUILDER && from_plugin(ctx, builder, kernel_builders, UKI_PLUGIN);
        if builder == Kbuild::HOST || uki {
            for name in KBUILD_PROGRAMS {
                needs.add(name, &by);
            }
            for (name, _, _) in KBUILD_HEADERS {
                needs.add(name, &by);
            }
        }
        if uki {
            for name in ["objcopy", "objdump", "systemd-stub"] {
                needs.add(name, &by);
            }
        }
    }
    let signs = ctx
        .config
        .plugins
        .settings
        .get(SITE_HOOKS_PLUGIN)
        .is_some_and(|settings| settings.contains_key(SITE_HOOKS_SIGNING));
    if signs
        && ctx
            .plugins
            .loaded
            .iter()
            .any(|p| p.name == SITE_HOOKS_PLUGIN)
    {
        needs.add(
            "sbsign",
            format!("plugins.{SITE_HOOKS_PLUGIN}.{SITE_HOOKS_SIGNING}"),
        );
    }
    needs
}

/// Every check, in the order a user reads them: the setting, the kernel, storage, packing,
/// kernel builds, booting, plugins.
fn checks(ctx: &Context) -> Vec<Check> {
    let needs = needs(ctx);
    let mut checks = Vec::new();
    let mut add = |name: &str, found: Found| checks.push(Check::new(name, needs.of(name), found));
    let workdir = &ctx.settings.workdir;

    add("site", Ok(site(ctx)));
    add("privileges", privileges());
    add("backend", backend(ctx));
    add(
        "loop-devices",
        if probe::char_device(Path::new("/dev/loop-control")) {
            Ok("/dev/loop-control".to_owned())
        } else {
            Err(absent(
                "no /dev/loop-control",
                "modprobe loop (kernel option BLK_DEV_LOOP); in a container, pass in \
                 /dev/loop-control and the /dev/loop* devices",
            ))
        },
    );
    add(
        "squashfs",
        probe::filesystem("squashfs", "squashfs")
            .map_err(|d| absent(d, "modprobe squashfs (kernel option SQUASHFS)")),
    );
    add(
        "mount-namespace",
        namespace(UnshareFlags::NEWNS, "NAMESPACES"),
    );
    add("pid-namespace", namespace(UnshareFlags::NEWPID, "PID_NS"));
    add("binfmt-misc", binfmt_misc());
    add(
        "overlayfs",
        probe::filesystem("overlay", "overlay")
            .map_err(|d| absent(d, "modprobe overlay (kernel option OVERLAY_FS)")),
    );
    add(
        "btrfs",
        probe::filesystem("btrfs", "btrfs")
            .map_err(|d| absent(d, "modprobe btrfs (kernel option BTRFS_FS)")),
    );
    if needs.any("btrfs-workdir") {
        add(
            "btrfs-workdir",
            match Subvolumes.check(workdir) {
                Ok(()) => Ok(format!("{} is on btrfs", workdir.display())),
                Err(e) => Err(absent(
                    e.to_string(),
                    format!(
                        "mkfs.btrfs DEVICE && mount DEVICE {}, or pass --workdir with a \
                         directory on btrfs",
                        workdir.display()
                    ),
                )),
            },
        );
    }
    let zfs = probe::program("zfs");
    add("zfs", tool("zfs", zfs.as_deref()));
    if let Some(zfs) = &zfs {
        let running = zfs_running(zfs);
        let answers = running.is_ok();
        add("zfs-running", running);
        if answers && needs.any("zfs-dataset") {
            add("zfs-dataset", zfs_dataset(ctx, zfs));
        }
    }
    add("packer", packer(ctx));
    let mut builders: Vec<&str> = ctx
        .config
        .systems
        .values()
        .map(|s| s.kernel_build.as_str())
        .collect();
    builders.sort_unstable();
    builders.dedup();
    for builder in builders {
        add(
            &format!("kernel-builder-{builder}"),
            kernel_builder(ctx, builder),
        );
    }
    for name in KBUILD_PROGRAMS {
        add(name, tool(name, probe::program(name).as_deref()));
    }
    for (name, header, package) in KBUILD_HEADERS {
        add(
            name,
            probe::header(header)
                .map(|path| path.display().to_string())
                .ok_or_else(|| {
                    absent(format!("no {header}"), format!("apt-get install {package}"))
                }),
        );
    }
    for name in ["xz", "objcopy", "objdump", "sbsign"] {
        if needs.any(name) {
            add(name, tool(name, probe::program(name).as_deref()));
        }
    }
    if needs.any("systemd-stub") {
        add(
            "systemd-stub",
            if Path::new(UKI_STUB).is_file() {
                Ok(UKI_STUB.to_owned())
            } else {
                Err(absent(
                    format!("no {UKI_STUB}"),
                    "apt-get install systemd-boot-efi",
                ))
            },
        );
    }
    let qemu = "qemu-system-x86_64";
    add(qemu, tool(qemu, probe::program(qemu).as_deref()));
    add("ovmf", ovmf());
    add("plugins", plugins(ctx));
    checks
}

fn site(ctx: &Context) -> String {
    let site = match &ctx.config.site_dir {
        Some(dir) => format!("site {}", dir.display()),
        None => "no site config (built-in defaults)".to_owned(),
    };
    format!(
        "{site}; backend {}; workdir {}",
        ctx.backend,
        ctx.settings.workdir.display()
    )
}

fn privileges() -> Found {
    let uid = rustix::process::geteuid();
    if uid.is_root() {
        Ok("running as root".to_owned())
    } else {
        Err(absent(
            format!("running as uid {}", uid.as_raw()),
            "run autogentoo as root: mounts, namespaces, device nodes and file owners need it",
        ))
    }
}

/// The program `name` found at `path`, or its Debian package.
fn tool(name: &str, path: Option<&Path>) -> Found {
    match path {
        Some(path) => Ok(path.display().to_string()),
        None => {
            let package = PACKAGES
                .iter()
                .find(|(program, _)| *program == name)
                .map_or(name, |(_, package)| package);
            let fix = if name == "zfs" {
                "apt-get install zfs-fuse (or zfsutils-linux with the OpenZFS module)".to_owned()
            } else {
                format!("apt-get install {package}")
            };
            Err(absent(format!("no `{name}` in PATH"), fix))
        }
    }
}

fn namespace(flags: UnshareFlags, option: &str) -> Found {
    probe::namespaces(flags)
        .map(|()| "a child process can enter a new one".to_owned())
        .map_err(|detail| {
            absent(
                detail,
                format!(
                    "run as root; the kernel needs the option {option}, and a container must \
                     allow unshare (CAP_SYS_ADMIN, a seccomp profile that permits it)"
                ),
            )
        })
}

fn binfmt_misc() -> Found {
    const LATER: &str = "foreign-architecture roots, still to come, will use it";
    match probe::binfmt_misc() {
        Ok(Some(point)) => Ok(format!("mounted at {}", point.display())),
        Ok(None) => Err(match probe::filesystem("binfmt_misc", "binfmt_misc") {
            Ok(_) => absent(
                format!("in the kernel, not mounted; {LATER}"),
                "mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc",
            ),
            Err(detail) => absent(
                format!("{detail}; {LATER}"),
                "modprobe binfmt_misc (kernel option BINFMT_MISC)",
            ),
        }),
        Err(e) => Err(absent(
            format!("cannot read /proc/self/mountinfo: {e}"),
            "mount /proc",
        )),
    }
}

/// What to say about a name nothing provides: the names that are known.
fn unknown(what: &str, name: &str, known: Vec<String>) -> Absent {
    absent(
        format!("no {what} `{name}`; known: {}", known.join(", ")),
        format!(
            "put the plugin that provides it in a directory of plugins.dirs or {PATH_VAR} \
             (`autogentoo plugin list` shows what loaded and what failed)"
        ),
    )
}

/// Built in, or the plugin a name comes from.
fn origin(plugin: Option<&LoadedPlugin>) -> String {
    match plugin {
        Some(plugin) => format!("from plugin {} ({})", plugin.name, plugin.path.display()),
        None => "built in".to_owned(),
    }
}

fn backend(ctx: &Context) -> Found {
    let name = ctx.backend.as_str();
    let built_in = [
        autogentoo_backend_dir::NAME,
        autogentoo_backend_btrfs::NAME,
        autogentoo_backend_zfs::NAME,
    ];
    let plugin = provider(ctx, name, storage_backends);
    if built_in.contains(&name) || plugin.is_some() {
        return Ok(format!("{name}, {}", origin(plugin)));
    }
    let mut known: Vec<String> = built_in.iter().map(|n| (*n).to_owned()).collect();
    known.extend(
        ctx.plugins
            .loaded
            .iter()
            .flat_map(|p| p.storage_backends.clone()),
    );
    Err(unknown("storage backend", name, known))
}

fn packer(ctx: &Context) -> Found {
    let name = ctx.config.pack.packer.as_str();
    let plugin = provider(ctx, name, packers);
    if name == Newc::NAME || plugin.is_some() {
        return Ok(format!("{name} (pack.packer), {}", origin(plugin)));
    }
    let mut known = vec![Newc::NAME.to_owned()];
    known.extend(ctx.plugins.loaded.iter().flat_map(|p| p.packers.clone()));
    Err(unknown("packer", name, known))
}

fn kernel_builder(ctx: &Context, name: &str) -> Found {
    let plugin = provider(ctx, name, kernel_builders);
    if name == Kbuild::ROOT {
        // Its toolchain is the root's, which doctor does not enter.
        return Ok(format!(
            "{name}, built in: kbuild with the toolchain inside each root"
        ));
    }
    if name == Kbuild::HOST || plugin.is_some() {
        return Ok(format!("{name}, {}", origin(plugin)));
    }
    let mut known = vec![Kbuild::ROOT.to_owned(), Kbuild::HOST.to_owned()];
    known.extend(
        ctx.plugins
            .loaded
            .iter()
            .flat_map(|p| p.kernel_builders.clone()),
    );
    Err(unknown("kernel builder", name, known))
}

/// Whether ZFS answers, and through what: the OpenZFS module (`/dev/zfs`) or the zfs-fuse
/// daemon.
fn zfs_running(zfs: &Path) -> Found {
    let module = Path::new("/dev/zfs").exists();
    match probe::answer(zfs, &["list", "-H", "-o", "name"]) {
        Ok(listing) => Ok(format!(
            "`zfs list` answers ({} datasets) through {}",
            listing.lines().count(),
            if module {
                "the OpenZFS module"
            } else {
                "zfs-fuse"
            }
        )),
        Err(detail) => {
            let fix = if module {
                "see `zpool status` and the kernel log".to_owned()
            } else if probe::program("zfs-fuse").is_some() {
                "start the zfs-fuse daemon: `service zfs-fuse start`, or run `zfs-fuse` as root"
                    .to_owned()
            } else {
                "load the OpenZFS module (modprobe zfs), or apt-get install zfs-fuse and start \
                 its daemon"
                    .to_owned()
            };
            Err(absent(detail, fix))
        }
    }
}

/// The dataset the zfs backend would use: `storage.zfs_dataset`, mounted at the workdir, or
/// without it whatever dataset is mounted there; as the backend itself looks for it.
fn zfs_dataset(ctx: &Context, zfs: &Path) -> Found {
    let workdir = &ctx.settings.workdir;
    let mountpoint = |dataset: &str| {
        probe::answer(
            zfs,
            &["get", "-H", "-p", "-o", "value", "mountpoint", dataset],
        )
        .map(|value| value.trim().to_owned())
    };
    let Some(dataset) = &ctx.settings.dataset else {
        let listing = probe::answer(zfs, &["get", "-H", "-p", "-o", "name,value", "mountpoint"])
            .map_err(|detail| absent(detail, "see `zpool status`"))?;
        let at_workdir = listing
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .find(|(name, point)| !name.contains('@') && Path::new(point) == workdir);
        return match at_workdir {
            Some((name, _)) => Ok(format!("{name} is mounted at {}", workdir.display())),
            None => Err(absent(
                format!("no ZFS dataset is mounted at {}", workdir.display()),
                format!(
                    "zfs create -o mountpoint={} POOL/autogentoo, or name a dataset in \
                     storage.zfs_dataset",
                    workdir.display()
                ),
            )),
        };
    };
    match mountpoint(dataset) {
        Ok(point) if Path::new(&point) == workdir => Ok(format!("{dataset} is mounted at {point}")),
        Ok(point) => Err(absent(
            format!(
                "{dataset} (storage.zfs_dataset) is mounted at {point}, not at the workdir {}",
                workdir.display()
            ),
            format!(
                "pass --workdir {point}, or zfs set mountpoint={} {dataset}",
                workdir.display()
            ),
        )),
        Err(_) => {
            let create = format!(
                "zfs create -p -o mountpoint={} {dataset}",
                workdir.display()
            );
            let pool = dataset.split('/').next().unwrap_or(dataset);
            let fix = if pool == dataset.as_str() {
                format!("create the pool: zpool create {pool} DEVICE…")
            } else if mountpoint(pool).is_ok() {
                create
            } else {
                format!("create the pool first (zpool create {pool} DEVICE…), then {create}")
            };
            Err(absent(
                format!("no ZFS dataset {dataset} (storage.zfs_dataset)"),
                fix,
            ))
        }
    }
}

/// The firmware `kernel boot` would use, found as it finds it.
fn ovmf() -> Found {
    autogentoo_core::kernel::qemu_boot::find_firmware()
        .map(|(code, _)| code.display().to_string())
        .ok_or_else(|| {
            absent(
                "no OVMF firmware in /usr/share/OVMF",
                "apt-get install ovmf",
            )
        })
}

fn plugins(ctx: &Context) -> Found {
    let plugins = &ctx.plugins;
    if plugins.failures.is_empty() {
        let names: Vec<&str> = plugins.loaded.iter().map(|p| p.name.as_str()).collect();
        return Ok(if names.is_empty() {
            format!("none in plugins.dirs or {PATH_VAR}")
        } else {
            format!("{} loaded: {}", names.len(), names.join(", "))
        });
    }
    let failures: Vec<String> = plugins.failures.iter().map(ToString::to_string).collect();
    Err(absent(
        format!(
            "{} could not be used: {}",
            failures.len(),
            failures.join("; ")
        ),
        format!(
            "rebuild each against this autogentoo's plugin API {API_VERSION}, or take it out of \
             the plugin directory"
        ),
    ))
}
