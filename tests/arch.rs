//! Other architectures from this host: an arm64 stage (Debian's arm64 static busybox), its
//! architecture recorded on import and checked by `build`, and its programs run inside a root
//! through qemu-user (binfmt_misc with the F flag, registered because the site allows it).

use std::fs;

use anyhow::Result;
use autogentoo_tests::{arm64_busybox, build_busybox_tree_of, unpack_initramfs, Workdir};

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
"#;

#[test]
fn an_arm64_stage_imports_runs_and_builds_through_qemu_user() -> Result<()> {
    let workdir = Workdir::new();
    let stage = workdir.scratch().join("stage");
    build_busybox_tree_of(&stage, &arm64_busybox()?)?;
    workdir.import(&stage, "arm64-busybox");
    let config = workdir.scratch().join("autogentoo.toml");
    fs::write(&config, SITE)?;
    let config = config.to_str().unwrap().to_owned();
    let with_site = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--config".to_owned(), config.clone()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all
    };

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
            "system 'wrong-arch' is amd64, but the programs of its stage 'arm64-busybox' are \
             arm64; import a stage of amd64, or set `arch = \"arm64\"` in [systems.wrong-arch]"
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
