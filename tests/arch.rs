//! Other architectures from this host: an arm64 stage (Debian's arm64 static busybox), its
//! architecture recorded on import and checked by `build`, its programs run inside a root
//! through qemu-user (binfmt_misc with the F flag, registered because the site allows it), and
//! an arm64 kernel cross-built on the host with our initramfs, booted under AAVMF.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use autogentoo_tests::{
    arm64_busybox, build_busybox_tree, build_busybox_tree_of, example_repo, kernel_source,
    portage_stage_for, run_tool, unpack_initramfs, Workdir,
};

/// A workdir with an arm64 busybox tree imported as stage `arm64-busybox` (after `prepare` added
/// to the tree what a test needs), and a site config beside it, at `site_dir/autogentoo.toml`.
struct Arm64Site {
    workdir: Workdir,
    config: String,
}

impl Arm64Site {
    fn new(site_dir: &str, site: &str, prepare: impl FnOnce(&Path) -> Result<()>) -> Result<Self> {
        let workdir = Workdir::new();
        let stage = workdir.scratch().join("stage");
        build_busybox_tree_of(&stage, &arm64_busybox()?)?;
        prepare(&stage)?;
        workdir.import(&stage, "arm64-busybox");
        let dir = workdir.scratch().join(site_dir);
        fs::create_dir_all(&dir)?;
        let config = dir.join("autogentoo.toml");
        fs::write(&config, site)?;
        let config = config.to_str().expect("a UTF-8 path").to_owned();
        Ok(Self { workdir, config })
    }

    /// `args` after `--config` and the site config.
    fn args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["--config".to_owned(), self.config.clone()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    }
}

/// An arm64 system that records what its programs say they run on, a build on the host's
/// arch, and a site that lets autogentoo register qemu-user-static's handler.
const SITE: &str = r#"
[build]
binfmt = "register"

[pack]
rdinit = "/bin/sh"

[systems.tiny-arm64]
stage = "arm64-busybox"
arch = "arm64"
kernel_build = "none"
commands = ["/bin/busybox uname -m > /etc/machine"]

[systems.wrong-arch]
stage = "arm64-busybox"
kernel_build = "none"

[systems.wrong-base]
stage = "arm64-busybox"
arch = "arm64"
kernel_build = "none"

[systems.wrong-base.image]
packages = ["app-misc/hello"]
base = "host-busybox"
"#;

#[test]
fn an_arm64_stage_imports_runs_and_builds_through_qemu_user() -> Result<()> {
    let site = Arm64Site::new("site", SITE, |_| Ok(()))?;
    let (workdir, with_site) = (&site.workdir, |args: &[&str]| site.args(args));

    // The import read the stage's programs.
    let listed = workdir.ok(["stage", "list"]);
    let line = listed.stdout.lines().next().unwrap_or_default();
    let columns: Vec<_> = line.split('\t').collect();
    assert_eq!(columns[0], "arm64-busybox", "{}", listed.describe());
    assert_eq!(columns[2], "arm64", "{}", listed.describe());
    let json = workdir.ok(["--json", "stage", "list"]).json();
    assert_eq!(json[0]["properties"]["arch"], "arm64", "{json:#}");

    // A system of the host's arch is not built on it: the error names both.
    let refused = workdir.run(with_site(&["build", "wrong-arch"]));
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    assert!(
        refused.stderr.contains(
            "system 'wrong-arch' is amd64, but the programs of stage 'arm64-busybox' are \
             arm64; import a stage of amd64, or set `arch = \"arm64\"` in [systems.wrong-arch]"
        ),
        "{}",
        refused.describe()
    );

    // Nor is an image based on a stage of another arch than the system's.
    let host_stage = workdir.scratch().join("host-stage");
    build_busybox_tree(&host_stage)?;
    workdir.import(&host_stage, "host-busybox");
    let refused = workdir.run(with_site(&["build", "wrong-base"]));
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    assert!(
        refused.stderr.contains(
            "system 'wrong-base' is arm64, but the programs of stage 'host-busybox' are amd64"
        ),
        "{}",
        refused.describe()
    );

    // Programs in the root run through qemu-user, in the root's own namespaces.
    workdir.ok(with_site(&[
        "root",
        "create",
        "tiny-arm64",
        "--stage",
        "arm64-busybox",
    ]));
    let uname = workdir.ok(with_site(&[
        "root",
        "run",
        "tiny-arm64",
        "--",
        "/bin/busybox",
        "uname",
        "-m",
    ]));
    assert_eq!(uname.stdout.trim(), "aarch64", "{}", uname.describe());
    let handler = fs::read_to_string("/proc/sys/fs/binfmt_misc/qemu-aarch64")?;
    assert!(handler.starts_with("enabled\n"), "{handler}");
    assert!(
        handler
            .lines()
            .any(|l| l.starts_with("flags: ") && l.contains('F')),
        "{handler}"
    );

    // Its binary packages are its own: the arm64 root's PKGDIR is the arm64 cache.
    workdir.ok(with_site(&[
        "root",
        "run",
        "tiny-arm64",
        "--",
        "/bin/busybox",
        "touch",
        "/var/cache/binpkgs/made-in-arm64",
    ]));
    let caches = workdir.ok(["--json", "workdir", "status"]).json()["caches"].clone();
    let arm64_cache = Path::new(caches["binpkgs-arm64"].as_str().expect("an arm64 cache"));
    let host_cache = Path::new(caches["binpkgs"].as_str().expect("the host's cache"));
    assert!(arm64_cache.join("made-in-arm64").is_file(), "{caches:#}");
    assert!(!host_cache.join("made-in-arm64").exists(), "{caches:#}");

    // The host says it can build arm64 now, and through what.
    let status = workdir.ok(["--json", "workdir", "status"]).json();
    let arches = status["arches"].as_array().expect("a list of arches");
    let arm64 = arches.iter().find(|a| a["arch"] == "arm64");
    assert!(
        arm64.is_some_and(|a| a["through"] != "native"),
        "{status:#}"
    );
    assert!(arches
        .iter()
        .any(|a| a["arch"] == "amd64" && a["through"] == "native"));

    // The whole pipeline: the system's command ran under qemu-user, and its output is packed.
    let built = workdir.ok(with_site(&["build", "tiny-arm64"]));
    let archive = built.stdout.trim();
    let unpacked = workdir.scratch().join("unpacked");
    unpack_initramfs(archive.as_ref(), &unpacked)?;
    assert_eq!(
        fs::read_to_string(unpacked.join("etc/machine"))?,
        "aarch64\n"
    );
    Ok(())
}

/// What the arm64 image's /init prints, with what `uname -m` says inside the booted machine.
const ARM64_MARKER: &str = "autogentoo arm64 init on aarch64";

/// The arm64 system with a kernel: cross-built on the host from the shared kernel sources, with
/// the example site's arm64 fragment.
const KERNEL_SITE: &str = r#"
[build]
binfmt = "register"

[systems.arm64-efi]
stage = "arm64-busybox"
arch = "arm64"
kernel_build = "host"
kernel_config = "kernel/qemu-arm64.kconfig"
cmdline = "console=ttyAMA0 rdinit=/init"
"#;

#[test]
fn an_arm64_kernel_is_cross_built_with_our_initramfs_and_boots_under_aavmf() -> Result<()> {
    let site = Arm64Site::new("site", KERNEL_SITE, |stage| {
        let init = stage.join("init");
        fs::write(
            &init,
            "#!/bin/sh\necho \"autogentoo arm64 init on $(/bin/busybox uname -m)\"\n\
             /bin/busybox poweroff -f\n",
        )?;
        Ok(fs::set_permissions(
            &init,
            fs::Permissions::from_mode(0o755),
        )?)
    })?;
    let workdir = &site.workdir;
    let fragment =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/kernel/qemu-arm64.kconfig");
    let kernel_dir = workdir.scratch().join("site/kernel");
    fs::create_dir_all(&kernel_dir)?;
    fs::copy(&fragment, kernel_dir.join("qemu-arm64.kconfig"))?;
    let source = kernel_source();
    workdir.ok([
        "kernel".as_ref(),
        "import".as_ref(),
        source.as_os_str(),
        "--name".as_ref(),
        "linux".as_ref(),
    ]);

    let started = Instant::now();
    let built = workdir.ok(site.args(&["build", "arm64-efi"]));
    eprintln!(
        "timing: arm64 kernel cross-built on the host: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let image = Path::new(built.stdout.trim()).to_owned();
    // An EFI application for arm64: its PE header names machine 0xaa64.
    let bytes = fs::read(&image)?;
    assert_eq!(&bytes[..2], b"MZ");
    let pe = u32::from_le_bytes(bytes[0x3c..0x40].try_into()?) as usize;
    assert_eq!(&bytes[pe..pe + 4], b"PE\0\0");
    assert_eq!(u16::from_le_bytes([bytes[pe + 4], bytes[pe + 5]]), 0xaa64);
    let kernel_config = fs::read_to_string(image.with_extension("config"))?;
    for line in [
        "CONFIG_EFI_STUB=y",
        "CONFIG_SERIAL_AMBA_PL011_CONSOLE=y",
        "CONFIG_CMDLINE_FORCE=y",
        "CONFIG_CMDLINE=\"console=ttyAMA0 rdinit=/init\"",
    ] {
        assert!(kernel_config.lines().any(|l| l == line), "{line} missing");
    }

    let started = Instant::now();
    let booted = workdir.run([
        "kernel".as_ref(),
        "boot".as_ref(),
        image.as_os_str(),
        "--expect".as_ref(),
        ARM64_MARKER.as_ref(),
        "--timeout".as_ref(),
        "600".as_ref(),
    ]);
    eprintln!(
        "timing: arm64 boot under AAVMF (TCG) to the /init marker: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(booted.status.success(), "{}", booted.describe());
    let mut log = image.as_os_str().to_owned();
    log.push(".boot.log");
    let console = fs::read_to_string(&log)?;
    assert!(
        console.contains("EFI stub: Booting Linux Kernel"),
        "{console}"
    );
    assert!(console.contains(ARM64_MARKER), "{console}");
    Ok(())
}

/// The Portage stand-in stage for arm64 (debootstrap's second stage and Portage's install run
/// through qemu-user), an ebuild of the example repository emerged from source in an arm64 root,
/// and its binary package in the arm64 cache only.
#[test]
fn an_ebuild_is_emerged_in_an_arm64_root_into_the_arm64_binary_packages() -> Result<()> {
    // The stand-in stage's repos.conf names the example repository, mounted where it says.
    let site = Arm64Site::new(
        "site",
        "[build]\nbinfmt = \"register\"\n\n[mounts]\nrepo = \"var/db/repos/example\"\n",
        |_| Ok(()),
    )?;
    let (workdir, with_site) = (&site.workdir, |args: &[&str]| site.args(args));
    // A command in an arm64 root registers qemu-user-static's handler, as the site allows; the
    // stage script needs it.
    workdir.ok(with_site(&[
        "root",
        "create",
        "probe",
        "--stage",
        "arm64-busybox",
    ]));
    workdir.ok(with_site(&["root", "run", "probe", "--", "/bin/true"]));

    let started = Instant::now();
    let tarball = portage_stage_for("arm64");
    eprintln!(
        "timing: the arm64 Portage stage (cached after the first run): {:.0} s",
        started.elapsed().as_secs_f64()
    );
    workdir.import(&tarball, "portage-arm64");
    let stages = workdir.ok(["--json", "stage", "list"]).json();
    let stage = stages
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"]["name"] == "portage-arm64"))
        .expect("the stage is listed");
    assert_eq!(stage["properties"]["arch"], "arm64", "{stage:#}");

    let (repo, distfiles) = example_repo();
    workdir.ok([
        "repo".as_ref(),
        "pack".as_ref(),
        "--dir".as_ref(),
        repo.as_os_str(),
        "--name".as_ref(),
        "example".as_ref(),
    ]);
    let caches = workdir.ok(["--json", "workdir", "status"]).json()["caches"].clone();
    let distfiles_cache = caches["distfiles"].as_str().expect("a distfiles cache");
    run_tool(std::process::Command::new(distfiles).arg(distfiles_cache))?;

    workdir.ok(with_site(&[
        "root",
        "create",
        "builder",
        "--stage",
        "portage-arm64",
    ]));
    let started = Instant::now();
    let emerge = workdir.ok(with_site(&[
        "root",
        "run",
        "builder",
        "--",
        "emerge",
        "--quiet-build",
        "app-misc/hello",
    ]));
    eprintln!(
        "timing: emerge app-misc/hello from source in the arm64 root (qemu-user): {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let root = workdir.root_path("builder");
    let program = fs::read(root.join("usr/bin/hello"))?;
    assert_eq!(&program[..4], b"\x7fELF", "{}", emerge.describe());
    assert_eq!(
        u16::from_le_bytes([program[18], program[19]]),
        0xb7,
        "an aarch64 program"
    );
    let ran = workdir.ok(with_site(&["root", "run", "builder", "--", "hello"]));
    assert!(!ran.stdout.trim().is_empty(), "{}", ran.describe());

    // Its binary package is in the arm64 cache, and nowhere near the host's.
    let caches = workdir.ok(["--json", "workdir", "status"]).json()["caches"].clone();
    let arm64_cache = Path::new(caches["binpkgs-arm64"].as_str().expect("an arm64 cache"));
    let host_cache = Path::new(caches["binpkgs"].as_str().expect("the host's cache"));
    let packages: Vec<_> = fs::read_dir(arm64_cache.join("app-misc/hello"))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        packages.iter().any(|p| p.ends_with(".gpkg.tar")),
        "{packages:?}"
    );
    assert!(!host_cache.join("app-misc").exists());
    let index = fs::read_to_string(arm64_cache.join("Packages"))?;
    assert!(index.contains("CHOST: aarch64-linux-gnu"), "{index}");
    Ok(())
}

/// The drop detection reads arm64's own Kconfig: EFI there depends on the device tree, a
/// little-endian CPU and NEON, not on ACPI as on x86; and a built-in command line is forced,
/// for a system whose arch is arm64 as for `--arch arm64`.
#[test]
fn an_arm64_config_is_checked_against_arm64s_kconfig() -> Result<()> {
    let workdir = Workdir::new();
    fs::create_dir_all(workdir.scratch())?;
    let config = workdir.scratch().join("big-endian.config");
    fs::write(
        &config,
        "CONFIG_CPU_BIG_ENDIAN=y\nCONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\nCONFIG_DEVTMPFS=y\n\
         # CONFIG_EFI is not set\n",
    )?;
    let source = kernel_source();
    let checked = workdir.run([
        "kernel".as_ref(),
        "config".as_ref(),
        config.as_os_str(),
        "--check".as_ref(),
        "--source".as_ref(),
        source.as_os_str(),
        "--arch".as_ref(),
        "arm64".as_ref(),
    ]);
    assert_eq!(checked.code(), Some(1), "{}", checked.describe());
    assert!(
        checked.stderr.contains(
            "CONFIG_EFI was dropped by make olddefconfig: it depends on OF && !CPU_BIG_ENDIAN && \
             KERNEL_MODE_NEON"
        ),
        "{}",
        checked.describe()
    );
    assert!(!checked.stderr.contains("ACPI"), "{}", checked.describe());

    let site = workdir.scratch().join("autogentoo.toml");
    fs::write(
        &site,
        "[systems.a]\nstage = \"s\"\narch = \"arm64\"\ncmdline = \"console=ttyAMA0\"\n",
    )?;
    let needed = workdir.run([
        "--config".as_ref(),
        site.as_os_str(),
        "kernel".as_ref(),
        "config".as_ref(),
        config.as_os_str(),
        "--system".as_ref(),
        "a".as_ref(),
        "--source".as_ref(),
        source.as_os_str(),
        "--check".as_ref(),
    ]);
    assert!(
        needed.stdout.contains("+CONFIG_CMDLINE_FORCE=y"),
        "{}",
        needed.describe()
    );
    assert!(
        !needed.stdout.contains("CMDLINE_BOOL"),
        "{}",
        needed.describe()
    );
    Ok(())
}
