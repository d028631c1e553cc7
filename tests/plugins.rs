//! Plugins loaded by the `autogentoo` binary, built by cargo from the example and test plugin
//! crates in plugins/: `plugin list` and its failures; a plugin built for another API refused
//! with the message naming both versions while the rest keep working; a panicking plugin call
//! reported as an error by a process that goes on; a plugin laid out for API 1.0 still loaded;
//! the overlay backend driven through the binary; and a real `build` (a kernel compiled on the
//! host) with the uki plugin's packer and kernel builder and the site plugin's hooks: the
//! build-info file in the xz archive, a Unified Kernel Image that boots in QEMU/OVMF, signed with
//! sbsign and verified with sbverify, and reassembled without make after a site change.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use autogentoo_tests::{
    build_busybox_tree, build_small_tree, kernel_source, mountinfo, mounts_below, plugin_library,
    run_tool, sweep_below, Run, Workdir,
};

const OVERLAY: &str = "autogentoo-plugin-overlay";
const SITE_HOOKS: &str = "autogentoo-plugin-site-hooks";
const API_MISMATCH: &str = "autogentoo-plugin-test-api-mismatch";
const API_1_0: &str = "autogentoo-plugin-test-api-1-0";
const PANICKING: &str = "autogentoo-plugin-test-panicking";
const UKI: &str = "autogentoo-plugin-uki";

/// What the loader says of the plugin built for API 99.0.
const MISMATCH_REASON: &str = "plugin 'api-mismatch' was built for API 99.0, this autogentoo \
                               speaks 1.1; rebuild it against autogentoo-plugin-api 1.x";

/// A directory holding links to the libraries of `packages`.
fn plugin_dir(dir: &Path, packages: &[&str]) -> PathBuf {
    fs::create_dir_all(dir).expect("the plugin directory");
    for package in packages {
        let library = plugin_library(package);
        symlink(
            &library,
            dir.join(library.file_name().expect("a file name")),
        )
        .expect("link the plugin");
    }
    dir.to_owned()
}

/// The binary over `workdir` with `args`, loading the plugins of `plugins` only.
fn with_plugins<S: AsRef<OsStr>>(workdir: &Workdir, plugins: &Path, args: &[S]) -> Run {
    let mut command = workdir.command(args);
    command.env("AUTOGENTOO_PLUGIN_PATH", plugins);
    Run::of(command)
}

/// Unmounts what a test left below its directory (overlay clones) before it is removed.
struct Sweep(PathBuf);

impl Drop for Sweep {
    fn drop(&mut self) {
        let left = sweep_below(&self.0, &|_| false);
        if !left.is_empty() {
            eprintln!("cleaned up after the test: {}", left.join("; "));
        }
    }
}

/// A shared library that is not a plugin.
fn some_library() -> PathBuf {
    [
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("zlib is installed (Debian's zlib1g)")
}

#[test]
fn plugin_list_shows_each_plugin_and_each_library_it_could_not_use() {
    let workdir = Workdir::uninitialised();
    let dir = plugin_dir(
        &workdir.scratch().join("plugins"),
        &[OVERLAY, SITE_HOOKS, UKI, API_MISMATCH],
    );
    fs::copy(some_library(), dir.join("libz.so")).expect("copy zlib");
    fs::write(dir.join("broken.so"), "not a library\n").expect("write broken.so");

    let run = with_plugins(&workdir, &dir, &["plugin", "list", "--json"]).expect_code(0);
    let listing = run.json();
    assert_eq!(listing["api_version"], "1.1", "{}", run.describe());
    let plugins = listing["plugins"].as_array().expect("plugins");
    let names: Vec<&str> = plugins.iter().filter_map(|p| p["name"].as_str()).collect();
    assert_eq!(
        names,
        ["overlay", "site-hooks", "uki"],
        "{}",
        run.describe()
    );
    assert_eq!(plugins[0]["api_version"], "1.1");
    assert_eq!(
        plugins[0]["provides"]["storage_backends"],
        serde_json::json!(["overlay"])
    );
    assert_eq!(plugins[0]["provides"]["pipeline_hooks"], false);
    assert_eq!(plugins[1]["provides"]["pipeline_hooks"], true);
    assert_eq!(
        plugins[2]["provides"]["packers"],
        serde_json::json!(["newc-xz"])
    );
    assert_eq!(
        plugins[2]["provides"]["kernel_builders"],
        serde_json::json!(["uki"])
    );
    assert_eq!(
        plugins[0]["path"].as_str(),
        dir.join("libautogentoo_plugin_overlay.so").to_str()
    );

    let failures = listing["failures"].as_array().expect("failures");
    let reason = |file: &str| -> String {
        failures
            .iter()
            .find(|f| f["path"].as_str() == dir.join(file).to_str())
            .and_then(|f| f["reason"].as_str())
            .unwrap_or_else(|| panic!("no failure for {file}: {}", run.describe()))
            .to_owned()
    };
    assert_eq!(failures.len(), 3, "{}", run.describe());
    assert_eq!(
        reason("libautogentoo_plugin_test_api_mismatch.so"),
        MISMATCH_REASON
    );
    assert_eq!(
        reason("libz.so"),
        "not an autogentoo plugin (it has no `autogentoo_plugin_header` symbol)"
    );
    let broken = reason("broken.so");
    assert!(
        broken.starts_with("cannot load the library: ") && broken.contains("broken.so"),
        "{broken}"
    );
    // Reported at load time too: one warning line each, all of them.
    let warnings: Vec<&str> = run.stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 3, "{}", run.describe());
    assert!(warnings.iter().any(|w| w.contains(MISMATCH_REASON)));

    let text = with_plugins(&workdir, &dir, &["plugin", "list"]).expect_code(0);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), 6, "{}", text.describe());
    assert!(lines[0].starts_with("overlay ") && lines[0].contains("storage backend 'overlay'"));
    assert!(lines[1].starts_with("site-hooks ") && lines[1].contains("pipeline hooks"));
    assert!(
        lines[2].starts_with("uki ") && lines[2].contains("packer 'newc-xz', kernel builder 'uki'"),
        "{}",
        text.describe()
    );
    assert!(lines[3..].iter().all(|l| l.starts_with("failed: plugin ")));
}

#[test]
fn a_plugin_built_for_another_api_is_refused_while_the_rest_keep_working() {
    let workdir = Workdir::uninitialised();
    let _sweep = Sweep(workdir.top().to_owned());
    let dir = plugin_dir(&workdir.scratch().join("plugins"), &[API_MISMATCH, OVERLAY]);
    let init = with_plugins(&workdir, &dir, &["--backend", "overlay", "workdir", "init"]);
    let init = init.expect_code(0);
    let warning = format!(
        "plugin {}: {MISMATCH_REASON}",
        dir.join("libautogentoo_plugin_test_api_mismatch.so")
            .display()
    );
    assert!(init.stderr.contains(&warning), "{}", init.describe());

    build_small_tree(&workdir.scratch().join("tree")).expect("a small tree");
    let import = with_plugins(
        &workdir,
        &dir,
        &[
            OsStr::new("--backend"),
            OsStr::new("overlay"),
            OsStr::new("stage"),
            OsStr::new("import"),
            workdir.scratch().join("tree").as_os_str(),
            OsStr::new("--name"),
            OsStr::new("base"),
        ],
    );
    import.expect_code(0);

    let unknown = with_plugins(
        &workdir,
        &dir,
        &["--backend", "api-mismatch", "stage", "list"],
    );
    let unknown = unknown.expect_code(1);
    assert!(
        unknown.stderr.contains(
            "error: unknown storage backend 'api-mismatch'; known storage backends: btrfs, dir, overlay, zfs"
        ),
        "{}",
        unknown.describe()
    );
}

#[test]
fn a_plugin_built_for_api_1_0_still_loads_and_its_backend_works() {
    let workdir = Workdir::uninitialised();
    let _sweep = Sweep(workdir.top().to_owned());
    let dir = plugin_dir(&workdir.scratch().join("plugins"), &[API_1_0, OVERLAY]);
    let list = with_plugins(&workdir, &dir, &["plugin", "list", "--json"]).expect_code(0);
    let listing = list.json();
    assert_eq!(
        listing["failures"],
        serde_json::json!([]),
        "{}",
        list.describe()
    );
    let old = listing["plugins"]
        .as_array()
        .expect("a list of plugins")
        .iter()
        .find(|p| p["name"] == "api-1-0")
        .unwrap_or_else(|| panic!("api-1-0 is loaded: {}", list.describe()));
    assert_eq!(old["api_version"], "1.0");
    assert_eq!(
        old["provides"]["storage_backends"],
        serde_json::json!(["dir-api-1-0"])
    );
    assert_eq!(old["provides"]["packers"], serde_json::json!([]));

    let cli = |args: &[&OsStr]| {
        let mut all = vec![OsStr::new("--backend"), OsStr::new("dir-api-1-0")];
        all.extend_from_slice(args);
        with_plugins(&workdir, &dir, &all).expect_code(0)
    };
    let os = OsStr::new;
    cli(&[os("workdir"), os("init")]);
    let tree = workdir.scratch().join("tree");
    build_small_tree(&tree).expect("a small tree");
    cli(&[
        os("stage"),
        os("import"),
        tree.as_os_str(),
        os("--name"),
        os("base"),
    ]);
    let stages = cli(&[os("stage"), os("list")]);
    assert!(
        stages.stdout.lines().any(|l| l.starts_with("base\t")),
        "{}",
        stages.describe()
    );
    assert!(workdir.path().join("stages/base").is_dir());
}

#[test]
fn settings_for_a_plugin_that_is_not_loaded_are_warned_about() {
    let workdir = Workdir::uninitialised();
    let dir = plugin_dir(&workdir.scratch().join("plugins"), &[SITE_HOOKS]);
    let config = workdir.scratch().join("autogentoo.toml");
    fs::write(
        &config,
        "[plugins.site-hook]\nsign_key = \"keys/db.key\"\n[plugins.site-hooks]\nsign_key = \"k\"\n",
    )
    .expect("write the site config");
    let list = with_plugins(
        &workdir,
        &dir,
        &[
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("plugin"),
            OsStr::new("list"),
        ],
    )
    .expect_code(0);
    let warnings: Vec<&str> = list.stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{}", list.describe());
    assert!(
        warnings[0].contains(
            "the site config has settings for plugin 'site-hook' ([plugins.site-hook]), \
             but no plugin of that name is loaded"
        ),
        "{}",
        list.describe()
    );
}

#[test]
fn a_panicking_plugin_call_is_an_error_and_the_process_goes_on() {
    let workdir = Workdir::uninitialised();
    let dir = plugin_dir(&workdir.scratch().join("plugins"), &[PANICKING]);
    let panic = "the panicking test plugin panics here (at plugins/testing/panicking/src/lib.rs:";

    let init = with_plugins(
        &workdir,
        &dir,
        &["--backend", "panicking", "workdir", "init"],
    );
    // A panic unwinding into the host would abort it: no exit code, a signal.
    let init = init.expect_code(1);
    init.expect_one_error();
    assert!(
        init.stderr
            .contains(&format!("plugin 'panicking' panicked in init: {panic}")),
        "{}",
        init.describe()
    );

    let list = with_plugins(&workdir, &dir, &["--backend", "panicking", "root", "list"]);
    let list = list.expect_code(1);
    list.expect_one_error();
    assert!(list
        .stderr
        .contains("plugin 'panicking' panicked in list: "));

    // A hook's panic fails the build: once its inputs are there (build checks them before any
    // step), the root step runs on a workdir without the root, and the hook before it panics.
    with_plugins(&workdir, &dir, &["--backend", "dir", "workdir", "init"]).expect_code(0);
    let stage = workdir.scratch().join("stage");
    build_small_tree(&stage).expect("a stage tree");
    let source = workdir.scratch().join("linux");
    fs::create_dir(&source).expect("a source directory");
    fs::write(source.join("Makefile"), "").expect("a Makefile");
    fs::write(source.join("Kconfig"), "").expect("a Kconfig");
    for (kind, tree, name) in [("stage", &stage, "demo"), ("kernel", &source, "linux")] {
        with_plugins(
            &workdir,
            &dir,
            &[
                OsStr::new(kind),
                OsStr::new("import"),
                tree.as_os_str(),
                OsStr::new("--name"),
                OsStr::new(name),
            ],
        )
        .expect_code(0);
    }
    let config = workdir.scratch().join("autogentoo.toml");
    fs::write(
        &config,
        "[systems.demo]\nstage = \"demo\"\nkernel = \"linux\"\nkernel_build = \"host\"\n",
    )
    .expect("write the site config");
    let build = with_plugins(
        &workdir,
        &dir,
        &[
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("build"),
            OsStr::new("demo"),
        ],
    );
    let build = build.expect_code(1);
    assert!(
        build.stderr.contains(&format!(
            "error: plugin 'panicking' panicked before root: {panic}"
        )),
        "{}",
        build.describe()
    );
    assert!(
        !workdir.path().join("roots/demo").exists(),
        "the step did not run"
    );

    // The built-in backends are untouched by it.
    with_plugins(&workdir, &dir, &["--backend", "dir", "workdir", "init"]).expect_code(0);
    with_plugins(&workdir, &dir, &["--backend", "dir", "stage", "list"]).expect_code(0);
}

#[test]
fn the_overlay_plugin_backend_clones_roots_as_overlay_mounts() {
    let workdir = Workdir::uninitialised();
    let _sweep = Sweep(workdir.top().to_owned());
    let dir = plugin_dir(&workdir.scratch().join("plugins"), &[OVERLAY]);
    let overlay = |args: &[&OsStr]| {
        let mut all = vec![OsStr::new("--backend"), OsStr::new("overlay")];
        all.extend_from_slice(args);
        let run = with_plugins(&workdir, &dir, &all);
        assert!(run.status.success(), "{}", run.describe());
        run
    };
    let os = OsStr::new;
    overlay(&[os("workdir"), os("init")]);
    let tree = workdir.scratch().join("tree");
    build_small_tree(&tree).expect("a small tree");
    overlay(&[
        os("stage"),
        os("import"),
        tree.as_os_str(),
        os("--name"),
        os("base"),
    ]);
    overlay(&[
        os("root"),
        os("create"),
        os("web"),
        os("--stage"),
        os("base"),
    ]);
    let root = PathBuf::from(
        overlay(&[os("root"), os("path"), os("web")])
            .stdout
            .trim_end(),
    );
    let mount = mountinfo()
        .into_iter()
        .find(|m| m.point == root)
        .expect("the root is mounted");
    assert_eq!(mount.fstype, "overlay");
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "gentoo\n"
    );

    fs::write(root.join("etc/hostname"), "web\n").unwrap();
    overlay(&[os("root"), os("snapshot"), os("web"), os("configured")]);
    fs::write(root.join("etc/hostname"), "broken\n").unwrap();
    fs::remove_file(root.join("etc/os-release")).unwrap();
    overlay(&[os("root"), os("rollback"), os("web"), os("configured")]);
    assert_eq!(
        fs::read_to_string(root.join("etc/hostname")).unwrap(),
        "web\n"
    );
    assert!(
        root.join("etc/os-release").is_file(),
        "the deletion is undone"
    );
    let stage = PathBuf::from(
        overlay(&[os("stage"), os("path"), os("base")])
            .stdout
            .trim_end(),
    );
    assert_eq!(
        fs::read_to_string(stage.join("etc/hostname")).unwrap(),
        "gentoo\n",
        "the stage is untouched"
    );

    let status = overlay(&[os("workdir"), os("status"), os("--json")]).json();
    assert_eq!(status["backend"], "overlay", "{status}");
    assert_eq!(status["capabilities"]["cheap_clone"], true, "{status}");

    let refused = with_plugins(
        &workdir,
        &dir,
        &["--backend", "overlay", "stage", "remove", "base"],
    );
    refused.expect_code(1).expect_one_error();
    overlay(&[os("root"), os("remove"), os("web")]);
    overlay(&[os("stage"), os("remove"), os("base")]);
    assert_eq!(mounts_below(workdir.top()), [], "nothing is left mounted");
}

/// The demo system's stage: busybox and an executable /init.
fn build_demo_stage(tree: &Path) {
    build_busybox_tree(tree).expect("a busybox tree");
    let init = tree.join("init");
    fs::write(
        &init,
        "#!/bin/sh\necho 'autogentoo-demo: init reached'\ncat /etc/motd\npoweroff -f\n",
    )
    .expect("write /init");
    fs::set_permissions(&init, fs::Permissions::from_mode(0o755)).expect("chmod /init");
}

/// A site with the example site's files, the demo system packed by `newc-xz` and built by
/// `uki`, and `plugins/` in `[plugins] dirs` holding the site-hooks and uki plugins.
fn write_site(site: &Path) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    fs::create_dir_all(site).expect("the site directory");
    for dir in ["common", "overlays", "kernel"] {
        run_tool(
            Command::new("cp")
                .arg("-a")
                .arg(example.join(dir))
                .arg(site),
        )
        .expect("copy the example site");
    }
    plugin_dir(&site.join("plugins"), &[SITE_HOOKS, UKI]);
    fs::write(
        site.join("autogentoo.toml"),
        r#"[storage]
backend = "dir"

[pack]
packer = "newc-xz"
compression = "xz"

[plugins]
dirs = ["plugins"]

[systems.demo]
stage = "demo"
overlays = ["hardware/qemu-x86_64", "secret-sauce/hello"]
kernel_config = "kernel/qemu-x86_64.kconfig"
kernel = "linux-6.1"
cmdline = "console=ttyS0 rdinit=/init"
kernel_build = "uki"
"#,
    )
    .expect("write the site config");
}

/// One file of an xz-compressed newc archive, read back by GNU cpio.
fn file_in_archive(archive: &Path, name: &str) -> String {
    let listing = run_tool(
        Command::new("sh")
            .arg("-c")
            .arg("xz -dc \"$1\" | cpio -t --quiet")
            .arg("sh")
            .arg(archive),
    )
    .expect("cpio -t");
    assert!(
        listing.lines().any(|l| l == name),
        "{name} is not in {}",
        archive.display()
    );
    run_tool(
        Command::new("sh")
            .arg("-c")
            .arg("xz -dc \"$1\" | cpio -i --quiet --to-stdout \"$2\"")
            .arg("sh")
            .arg(archive)
            .arg(name),
    )
    .expect("cpio -i")
}

fn sbverify(cert: &Path, image: &Path) -> std::process::Output {
    Command::new("sbverify")
        .arg("--cert")
        .arg(cert)
        .arg(image)
        .output()
        .expect("run sbverify (apt-get install sbsigntool)")
}

#[test]
fn a_real_build_with_plugin_packer_builder_and_hooks_boots_and_reassembles_without_make() {
    let workdir = Workdir::uninitialised();
    let _sweep = Sweep(workdir.top().to_owned());
    let site = workdir.scratch().join("site");
    write_site(&site);
    let config = site.join("autogentoo.toml");
    let cli = |args: &[&OsStr]| {
        let mut command = workdir.command([OsStr::new("--config"), config.as_os_str()]);
        command.args(args).env_remove("AUTOGENTOO_PLUGIN_PATH");
        let run = Run::of(command);
        assert!(run.status.success(), "{}", run.describe());
        run
    };
    let os = OsStr::new;
    cli(&[os("workdir"), os("init")]);
    let stage = workdir.scratch().join("demo-stage");
    build_demo_stage(&stage);
    cli(&[
        os("stage"),
        os("import"),
        stage.as_os_str(),
        os("--name"),
        os("demo"),
    ]);
    cli(&[
        os("kernel"),
        os("import"),
        kernel_source().as_os_str(),
        os("--name"),
        os("linux-6.1"),
    ]);

    // Without keys: the build-info file is packed, the image is left unsigned and says so.
    let started = Instant::now();
    let first = cli(&[os("build"), os("demo")]);
    eprintln!(
        "timing: first build of demo with the site hooks: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let out = workdir.path().join("out/demo");
    let image = out.join("demo.efi");
    assert!(
        first
            .stderr
            .contains("site-hooks: /etc/autogentoo-build-info added for demo"),
        "{}",
        first.describe()
    );
    assert!(
        first.stderr.contains(&format!(
            "site-hooks: skipped signing {}: no key configured",
            image.display()
        )),
        "{}",
        first.describe()
    );
    assert!(!out.join("demo.signed.efi").exists());
    let archive = out.join("initramfs.cpio.xz");
    run_tool(Command::new("xz").arg("-t").arg(&archive)).expect("xz -t accepts the archive");
    let info = file_in_archive(&archive, "etc/autogentoo-build-info");
    for line in [
        "system=demo",
        "root=demo",
        "root_origin=stage/demo@imported",
        "backend=dir",
    ] {
        assert!(info.lines().any(|l| l == line), "{line} in:\n{info}");
    }
    assert!(
        info.lines()
            .any(|l| l.starts_with("built=") && l.ends_with(" UTC")),
        "{info}"
    );
    let root = workdir.path().join("roots/demo");
    assert!(
        root.join("bin/busybox").is_file() && !root.join("etc/autogentoo-build-info").exists(),
        "the root volume itself is not changed"
    );

    // The uki builder made a Unified Kernel Image, and it boots.
    let sections = run_tool(Command::new("objdump").arg("-h").arg(&image)).expect("objdump -h");
    for section in [".osrel", ".cmdline", ".linux", ".initrd"] {
        assert!(
            sections
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(section)),
            "{section} in {}:\n{sections}",
            image.display()
        );
    }
    let manifest = |what: &str| -> String {
        let text = fs::read_to_string(out.join("demo.manifest.json")).expect("the manifest");
        let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        json[what].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(manifest("builder"), "uki");
    let kernel_sha256 = manifest("kernel_sha256");
    let boot = |image: &Path, expect: &str| {
        let started = Instant::now();
        cli(&[
            os("kernel"),
            os("boot"),
            image.as_os_str(),
            os("--expect"),
            os(expect),
            os("--timeout"),
            os("300"),
        ]);
        eprintln!(
            "timing: boot of {}: {:.1} s",
            image.display(),
            started.elapsed().as_secs_f64()
        );
    };
    boot(&image, "autogentoo-demo: init reached");
    let log = workdir.path().join("kbuild/demo/build.log");
    let log_before = fs::read_to_string(&log).expect("the build log");

    // With a key and certificate in the site config (relative to the site): a change to the
    // site repacks and reassembles, and the new image is signed.
    let keys = site.join("keys");
    fs::create_dir(&keys).unwrap();
    let (key, cert) = (keys.join("db.key"), keys.join("db.crt"));
    run_tool(
        Command::new("openssl")
            .args([
                "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
            ])
            .args(["-days", "1", "-subj", "/CN=autogentoo test signing key/"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    )
    .expect("openssl makes a key and a certificate");
    let mut text = fs::read_to_string(&config).expect("the site config");
    text.push_str(
        "\n[plugins.site-hooks]\nsign_key = \"keys/db.key\"\nsign_cert = \"keys/db.crt\"\n",
    );
    fs::write(&config, text).expect("configure the signing key");
    let motd = site.join("overlays/secret-sauce/hello/etc/motd");
    fs::create_dir_all(motd.parent().expect("a directory")).unwrap();
    fs::write(&motd, "second build\n").expect("change a site file");
    let started = Instant::now();
    let second = cli(&[os("build"), os("demo")]);
    eprintln!(
        "timing: rebuild of demo after a site change, signed: {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let signed = out.join("demo.signed.efi");
    assert!(
        second.stderr.contains(&format!(
            "site-hooks: signed {} with {}",
            signed.display(),
            cert.display()
        )),
        "{}",
        second.describe()
    );
    let verified = sbverify(&cert, &signed);
    assert!(
        verified.status.success(),
        "sbverify --cert {} {}: {}{}",
        cert.display(),
        signed.display(),
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(
        !sbverify(&cert, &image).status.success(),
        "the image the kernel build wrote is not the signed one"
    );

    // The new initramfs is in the image, and no make ran for it: the kernel is the same.
    assert_eq!(
        fs::read_to_string(&log).expect("the build log"),
        log_before,
        "make ran after an initramfs-only change"
    );
    assert_eq!(manifest("kernel_sha256"), kernel_sha256);
    boot(&signed, "second build");
}
