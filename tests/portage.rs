//! Real Portage in autogentoo roots, all through the binary: the Portage stand-in stage
//! (`scripts/portage-stage`: Debian with Portage from its PyPI sources), the example ebuild
//! repository packed by `repo pack --dir` and mounted read-only, its distfiles in the shared
//! cache. emerge builds from source in one root, writing gpkg binary packages (multi-instance) to
//! the shared cache; a second root installs them without a compiler; `build` runs emerge
//! commands into per-step logs and packs a slim image of named packages over a busybox base.
//! What a Gentoo user would look at is checked: `/var/db/pkg`, the gpkg files, `ldd`, the
//! programs' output inside the root and inside the unpacked image.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context as _, Result};
use autogentoo_tests::{
    build_busybox_tree, example_repo, is_mount_point, list_dir, mounts_below, portage_stage,
    run_tool, unpack_initramfs, MountedWorkdir, Run,
};

/// The site config of these tests: the example repository where the stand-in stage's
/// repos.conf expects it, and the example site's Portage settings.
const SITE: &str = r#"[storage]
backend = "dir"

[mounts]
repo = "var/db/repos/example"

[build.env]
FEATURES = "buildpkg binpkg-multi-instance -news"
EMERGE_DEFAULT_OPTS = "--usepkg --binpkg-respect-use=y --quiet-build=y"
"#;

/// A workdir with the Portage stage imported as `portage`, the example repository's snapshot,
/// its distfiles in the shared cache, and a site config with `systems` appended to [`SITE`].
struct PortageSite {
    wd: MountedWorkdir,
    config: PathBuf,
}

impl PortageSite {
    fn new(systems: &str) -> Result<Self> {
        let wd = MountedWorkdir::new();
        let site = wd.scratch().join("site");
        fs::create_dir_all(&site)?;
        let config = site.join("autogentoo.toml");
        fs::write(&config, format!("{SITE}\n{systems}"))?;
        // Every image gets an /init from the site's common files.
        fs::create_dir_all(site.join("common"))?;
        fs::write(
            site.join("common/init"),
            "#!/bin/sh\nexec /usr/bin/greet init reached\n",
        )?;
        fs::set_permissions(site.join("common/init"), fs::Permissions::from_mode(0o755))?;
        let this = Self { wd, config };
        this.wd.import(&portage_stage(), "portage");
        let (repo, distfiles) = example_repo();
        let image = this.ok(&[
            "repo",
            "pack",
            "--dir",
            repo.to_str().unwrap(),
            "--name",
            "example",
        ]);
        assert!(image.stdout.trim_end().ends_with("repos/example.sqfs"));
        run_tool(Command::new(distfiles).arg(this.cache("distfiles")))?;
        Ok(this)
    }

    /// Where `workdir status` says a cache is.
    fn cache(&self, name: &str) -> PathBuf {
        let status = self.ok(&["workdir", "status", "--json"]).json();
        PathBuf::from(status["caches"][name].as_str().expect("a cache path"))
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut all = vec![OsStr::new("--config"), self.config.as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        self.wd.run(all)
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> Run {
        let run = self.run(args);
        assert!(run.status.success(), "expected success: {}", run.describe());
        run
    }

    /// `root run ROOT -- sh -c SCRIPT`, which must succeed.
    #[track_caller]
    fn sh(&self, root: &str, script: &str) -> Run {
        self.ok(&["root", "run", root, "--", "sh", "-c", script])
    }

    /// The packages installed in a tree, as `qlist -I` lists them: `category/name-version`.
    fn installed(tree: &Path) -> Vec<String> {
        files_two_deep(&tree.join("var/db/pkg"))
    }

    /// The binary packages in the shared cache, relative to it: `category/name/file`.
    fn gpkgs(&self) -> Vec<String> {
        let cache = self.cache("binpkgs");
        let mut out = Vec::new();
        for package in files_two_deep(&cache) {
            for file in list_dir(&cache.join(&package)) {
                out.push(format!("{package}/{}", name(&file)));
            }
        }
        out
    }
}

/// The last component of a path.
fn name(path: &Path) -> String {
    path.file_name()
        .expect("a named entry")
        .to_string_lossy()
        .into_owned()
}

/// `a/b` for every directory `b` in a directory `a` of `top`, sorted.
fn files_two_deep(top: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for first in list_dir(top).iter().filter(|path| path.is_dir()) {
        for second in list_dir(first).iter().filter(|path| path.is_dir()) {
            out.push(format!("{}/{}", name(first), name(second)));
        }
    }
    out
}

/// One field of a package's `/var/db/pkg` entry.
fn vdb(root: &Path, package: &str, field: &str) -> String {
    fs::read_to_string(root.join("var/db/pkg").join(package).join(field))
        .unwrap_or_else(|e| panic!("{package} {field}: {e}"))
        .trim()
        .to_owned()
}

#[test]
fn emerge_builds_from_the_snapshot_into_shared_caches_and_a_second_root_installs_the_binaries(
) -> Result<()> {
    let site = PortageSite::new("")?;
    site.ok(&["root", "create", "builder", "--stage", "portage"]);
    let builder = site.wd.root_path("builder");

    // (1) From the read-only snapshot and the shared distfiles, into gpkg binary packages; the
    // root is also mounted for a shell, as a user would have it while working in it.
    site.ok(&["root", "mount", "builder"]);
    let emerge = site.ok(&[
        "root",
        "run",
        "builder",
        "--",
        "emerge",
        "app-misc/greet",
        "app-misc/hello",
    ]);
    for package in [
        "dev-libs/libgreet-1.0",
        "app-misc/greet-1.0",
        "app-misc/hello-1.0",
    ] {
        assert!(
            emerge
                .stdout
                .lines()
                .any(|line| line.starts_with(">>> Emerging (") && line.contains(package)),
            "emerge built {package} from source: {}",
            emerge.describe()
        );
    }
    site.ok(&["root", "umount", "builder"]);
    assert!(
        mounts_below(&builder).is_empty(),
        "umount took everything down"
    );
    assert_eq!(
        PortageSite::installed(&builder),
        [
            "app-misc/greet-1.0",
            "app-misc/hello-1.0",
            "dev-libs/libgreet-1.0"
        ]
    );
    assert_eq!(vdb(&builder, "dev-libs/libgreet-1.0", "SLOT"), "0/1");
    // `:=` was recorded with the subslot built against, as Portage does for rebuilds.
    assert_eq!(
        vdb(&builder, "app-misc/greet-1.0", "RDEPEND"),
        "dev-libs/libgreet:0/1="
    );
    assert_eq!(vdb(&builder, "app-misc/greet-1.0", "BUILD_ID"), "1");
    assert_eq!(
        site.gpkgs(),
        [
            "app-misc/greet/greet-1.0-1.gpkg.tar",
            "app-misc/hello/hello-1.0-1.gpkg.tar",
            "dev-libs/libgreet/libgreet-1.0-1.gpkg.tar",
        ]
    );
    let gpkg = site
        .cache("binpkgs")
        .join("app-misc/greet/greet-1.0-1.gpkg.tar");
    let members = run_tool(Command::new("tar").arg("-tf").arg(&gpkg))?;
    for member in [
        "greet-1.0-1/gpkg-1",
        "greet-1.0-1/metadata.tar",
        "greet-1.0-1/image.tar",
    ] {
        assert!(
            members.lines().any(|line| line.starts_with(member)),
            "{member} in {}: {members}",
            gpkg.display()
        );
    }
    // The distfiles came from the shared cache (nothing fetched, nothing left half-fetched).
    assert_eq!(
        list_dir(&site.cache("distfiles"))
            .iter()
            .map(|path| name(path))
            .collect::<Vec<_>>(),
        [
            "greet-1.0.tar.gz",
            "hello-1.0.tar.gz",
            "libgreet-1.0.tar.gz"
        ]
    );
    // The repository is the snapshot, read-only; the metadata cache Portage made is the root's.
    let write = site.run(&[
        "root",
        "run",
        "builder",
        "--",
        "touch",
        "/var/db/repos/example/x",
    ]);
    assert_eq!(write.code(), Some(1), "{}", write.describe());
    assert!(
        write.stderr.contains("Read-only file system"),
        "{}",
        write.describe()
    );
    assert!(builder
        .join("var/cache/edb/dep/var/db/repos/example/app-misc/greet-1.0")
        .is_file());
    // The programs run, linked against the packaged library.
    assert_eq!(
        site.sh("builder", "greet hello world").stdout,
        "hello: world\n"
    );
    assert_eq!(
        site.sh("builder", "hello").stdout,
        "hello from a program Portage built\n"
    );
    let ldd = site.sh("builder", "ldd /usr/bin/greet").stdout;
    assert!(
        ldd.contains("libgreet.so.1 => /usr/lib/libgreet.so.1"),
        "{ldd}"
    );

    // (2) A second root from the same stage installs the binaries and runs no compiler: its
    // compiler is replaced by one that leaves a mark and fails.
    site.ok(&["root", "create", "consumer", "--stage", "portage"]);
    let consumer = site.wd.root_path("consumer");
    site.sh(
        "consumer",
        "cc=$(readlink -f \"$(command -v x86_64-linux-gnu-gcc)\") && \
         printf '#!/bin/sh\\ntouch /compiler-ran\\nexit 1\\n' > \"$cc\"",
    );
    let trap = site.run(&[
        "root",
        "run",
        "consumer",
        "--",
        "x86_64-linux-gnu-gcc",
        "--version",
    ]);
    assert_eq!(trap.code(), Some(1), "the trap works: {}", trap.describe());
    fs::remove_file(consumer.join("compiler-ran"))?;
    let binary = site.ok(&[
        "root",
        "run",
        "consumer",
        "--",
        "emerge",
        "--usepkgonly",
        "app-misc/greet",
        "app-misc/hello",
    ]);
    assert!(
        binary.stdout.contains("Emerging binary (1 of 3)"),
        "{}",
        binary.describe()
    );
    assert!(!consumer.join("compiler-ran").exists(), "no compiler ran");
    assert_eq!(
        PortageSite::installed(&consumer),
        PortageSite::installed(&builder)
    );
    assert_eq!(
        site.sh("consumer", "greet from binaries").stdout,
        "from: binaries\n"
    );

    // Both are up to date.
    for root in ["builder", "consumer"] {
        let world = site.sh(
            root,
            "emerge --pretend --verbose --update --deep --newuse @world",
        );
        assert!(
            world.stdout.contains("Total: 0 packages"),
            "{root}: {}",
            world.describe()
        );
    }

    // A USE change is a rebuild, and a second build of the package beside the first.
    site.sh(
        "builder",
        "mkdir -p /etc/portage/package.use && echo 'app-misc/greet shout' > /etc/portage/package.use/greet",
    );
    let pretend = site.sh(
        "builder",
        "emerge --pretend --verbose --update --deep --newuse @world",
    );
    assert!(
        pretend.stdout.contains("app-misc/greet-1.0") && pretend.stdout.contains("USE=\"shout*\""),
        "{}",
        pretend.describe()
    );
    site.sh("builder", "emerge --update --deep --newuse @world");
    assert_eq!(
        site.sh("builder", "greet hello world").stdout,
        "HELLO: WORLD\n"
    );
    assert!(
        site.gpkgs()
            .contains(&"app-misc/greet/greet-1.0-2.gpkg.tar".to_owned()),
        "{:?}",
        site.gpkgs()
    );
    assert!(site
        .gpkgs()
        .contains(&"app-misc/greet/greet-1.0-1.gpkg.tar".to_owned()));
    // The other root's USE is its own: with --binpkg-respect-use it keeps the first build.
    let world = site.sh(
        "consumer",
        "emerge --pretend --verbose --update --deep --newuse @world",
    );
    assert!(
        world.stdout.contains("Total: 0 packages"),
        "{}",
        world.describe()
    );
    site.wd.close()
}

/// A busybox tree imported as the stage `busybox`: the base of the slim images.
fn import_busybox(site: &PortageSite) -> Result<()> {
    let tree = site.wd.scratch().join("busybox");
    build_busybox_tree(&tree)?;
    site.wd.import(&tree, "busybox");
    Ok(())
}

/// The systems of the build tests: one that emerges and packs a slim image of `greet`, one
/// whose second command fails.
const SYSTEMS: &str = r#"
[systems.slim]
stage = "portage"
commands = ["emerge --update --newuse app-misc/greet app-misc/hello"]
kernel_build = "none"

[systems.slim.image]
packages = ["app-misc/greet"]
base = "busybox"

[systems.broken]
stage = "portage"
commands = ["emerge --oneshot app-misc/hello", "emerge app-misc/no-such-package"]
kernel_build = "none"
"#;

/// Runs a program of an unpacked image in it (`chroot`), returning what it printed.
fn in_image(tree: &Path, command: &[&str]) -> Result<String> {
    run_tool(Command::new("chroot").arg(tree).args(command))
}

#[test]
fn build_logs_each_step_and_packs_a_slim_image_from_the_binary_packages() -> Result<()> {
    let site = PortageSite::new(SYSTEMS)?;
    import_busybox(&site)?;
    let out = site.wd.path().join("out/slim");

    // (3) The commands' output goes to the step's log, not to the terminal.
    let build = site.ok(&["build", "slim"]);
    let archive = out.join("initramfs.cpio.gz");
    assert_eq!(build.stdout.trim_end(), archive.to_str().unwrap());
    for step in ["run  commands", "run  image", "run  pack"] {
        assert!(build.stderr.contains(step), "{step}: {}", build.describe());
    }
    assert!(
        !build.stderr.contains(">>> Emerging"),
        "{}",
        build.describe()
    );
    let log = fs::read_to_string(out.join("commands.log"))?;
    assert!(
        log.starts_with("$ emerge --update --newuse app-misc/greet app-misc/hello\n"),
        "{log}"
    );
    assert!(
        log.contains(">>> Emerging (1 of 3) dev-libs/libgreet-1.0::example"),
        "{log}"
    );
    let image_log = fs::read_to_string(out.join("image.log"))?;
    assert!(image_log.contains(">>> Emerging binary"), "{image_log}");

    // (4) The image: greet and what it needs at run time, over busybox; not the build root.
    assert_eq!(
        fs::read_to_string(out.join("image.packages"))?,
        "app-misc/greet-1.0:0 USE=\"-shout\"\ndev-libs/libgreet-1.0:0/1\n"
    );
    let unpacked = site.wd.scratch().join("unpacked");
    unpack_initramfs(&archive, &unpacked)?;
    for present in [
        "bin/busybox",
        "usr/bin/greet",
        "usr/lib/libgreet.so.1",
        "lib/x86_64-linux-gnu/libc.so.6",
        "lib64/ld-linux-x86-64.so.2",
        "var/db/pkg/app-misc/greet-1.0/CONTENTS",
    ] {
        assert!(
            unpacked.join(present).symlink_metadata().is_ok(),
            "{present} is in the image"
        );
    }
    for absent in [
        "usr/bin/hello",
        "usr/bin/emerge",
        "usr/bin/python3",
        "usr/bin/x86_64-linux-gnu-gcc",
        "usr/lib/gcc",
    ] {
        assert!(
            unpacked.join(absent).symlink_metadata().is_err(),
            "{absent} stays in the build root"
        );
    }
    assert_eq!(
        in_image(&unpacked, &["/usr/bin/greet", "from", "the", "image"])?,
        "from: the image\n"
    );
    let ldd = in_image(
        &unpacked,
        &["/lib64/ld-linux-x86-64.so.2", "--list", "/usr/bin/greet"],
    )?;
    assert!(
        ldd.contains("libgreet.so.1 => /usr/lib/libgreet.so.1"),
        "{ldd}"
    );
    assert!(
        ldd.contains("libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6"),
        "{ldd}"
    );

    // Nothing changed: nothing runs.
    let again = site.ok(&["build", "slim"]);
    for step in ["skip commands", "skip image", "skip pack"] {
        assert!(again.stderr.contains(step), "{step}: {}", again.describe());
    }
    // A new binary package of greet (USE=shout) changes the image.
    site.sh(
        "slim",
        "mkdir -p /etc/portage/package.use && echo 'app-misc/greet shout' > /etc/portage/package.use/greet \
         && emerge --quiet --update --newuse app-misc/greet",
    );
    let rebuilt = site.ok(&["build", "slim"]);
    assert!(
        rebuilt.stderr.contains("run  image"),
        "{}",
        rebuilt.describe()
    );
    assert!(
        rebuilt.stderr.contains("run  pack"),
        "{}",
        rebuilt.describe()
    );
    let again = site.wd.scratch().join("unpacked-again");
    unpack_initramfs(&archive, &again)?;
    assert_eq!(
        in_image(&again, &["/usr/bin/greet", "now", "loud"])?,
        "NOW: LOUD\n"
    );

    // A failing emerge fails its step with the log's last lines and path; the root stays as
    // the commands left it.
    let failed = site.run(&["-v", "build", "broken"]);
    assert_eq!(failed.code(), Some(1), "{}", failed.describe());
    let broken_log = site.wd.path().join("out/broken/commands.log");
    assert!(
        failed.stderr.contains(&format!(
            "`emerge app-misc/no-such-package` failed inside root 'broken' (exit status: 1); the last lines of its log, {}:",
            broken_log.display()
        )),
        "{}",
        failed.describe()
    );
    assert!(
        failed
            .stderr
            .contains("there are no ebuilds to satisfy \"app-misc/no-such-package\""),
        "{}",
        failed.describe()
    );
    // With -v, the emerge output was on the terminal as well.
    assert!(
        failed.stderr.contains(">>> Emerging"),
        "{}",
        failed.describe()
    );
    let log = fs::read_to_string(&broken_log)?;
    assert!(log.contains("$ emerge --oneshot app-misc/hello"), "{log}");
    assert!(log.contains("$ emerge app-misc/no-such-package"), "{log}");
    let broken = site.wd.root_path("broken");
    assert_eq!(PortageSite::installed(&broken), ["app-misc/hello-1.0"]);
    assert_eq!(
        site.sh("broken", "hello").stdout,
        "hello from a program Portage built\n"
    );
    site.wd.close()
}

#[test]
fn check_mode_refuses_an_image_whose_libraries_no_package_provides() -> Result<()> {
    let site = PortageSite::new(
        r#"
[systems.strict]
stage = "portage"
commands = ["emerge app-misc/hello"]
kernel_build = "none"

[systems.strict.image]
packages = ["app-misc/hello"]
libraries = "check"
"#,
    )?;
    let refused = site.run(&["build", "strict"]);
    assert_eq!(refused.code(), Some(1), "{}", refused.describe());
    assert!(
        refused.stderr.contains("usr/bin/hello needs")
            && refused
                .stderr
                .contains("which no package of the image installs"),
        "{}",
        refused.describe()
    );
    assert!(
        !site.wd.path().join("out/strict/initramfs.cpio.gz").exists(),
        "no initramfs from a refused image"
    );
    assert!(
        !site.wd.path().join("out/strict/image").exists(),
        "no image tree in place"
    );
    site.wd.close()
}

#[test]
fn a_hostile_portage_root_keeps_emerge_and_the_image_inside() -> Result<()> {
    let site = PortageSite::new(
        r#"
[systems.hostile]
stage = "portage"
commands = ["emerge app-misc/greet"]
kernel_build = "none"

[systems.hostile.image]
packages = ["app-misc/greet"]
"#,
    )?;
    site.ok(&["root", "create", "hostile", "--stage", "portage"]);
    let root = site.wd.root_path("hostile");
    // Every mount point and the image's bind target lead out of the root, to host directories.
    let host = site.wd.scratch().join("host");
    let mut planted = Vec::new();
    for (inside, how) in [
        ("var/cache/distfiles", "absolute"),
        ("var/cache/binpkgs", "climbing"),
        ("var/db/repos/example", "absolute"),
        ("var/lib/autogentoo", "absolute"),
    ] {
        let target = host.join(inside.replace('/', "-"));
        fs::create_dir_all(&target)?;
        let path = root.join(inside);
        if path.is_dir() {
            fs::remove_dir(&path)?;
        }
        fs::create_dir_all(path.parent().unwrap())?;
        let link = if how == "climbing" {
            Path::new(&"../".repeat(12)).join(target.strip_prefix("/")?)
        } else {
            target.clone()
        };
        symlink(&link, &path)?;
        planted.push(target);
    }
    fs::remove_file(root.join("etc/resolv.conf")).ok();
    let host_file = host.join("resolv.conf");
    fs::write(&host_file, "# the host's own file\n")?;
    symlink(&host_file, root.join("etc/resolv.conf"))?;

    let build = site.ok(&["build", "hostile"]);
    for target in &planted {
        assert_eq!(
            list_dir(target),
            Vec::<PathBuf>::new(),
            "{} untouched",
            target.display()
        );
        assert!(
            !is_mount_point(target),
            "{} is no mount point",
            target.display()
        );
    }
    assert_eq!(fs::read_to_string(&host_file)?, "# the host's own file\n");
    // emerge worked through the binds that landed inside, and the image is complete.
    assert!(
        site.gpkgs()
            .contains(&"app-misc/greet/greet-1.0-1.gpkg.tar".to_owned()),
        "{}",
        build.describe()
    );
    let unpacked = site.wd.scratch().join("unpacked");
    unpack_initramfs(
        &site.wd.path().join("out/hostile/initramfs.cpio.gz"),
        &unpacked,
    )?;
    assert_eq!(
        in_image(&unpacked, &["/usr/bin/greet", "still", "inside"])?,
        "still: inside\n"
    );
    ensure!(
        mounts_below(&root).is_empty(),
        "nothing left mounted in the root"
    );
    site.wd.close().context("the workdir")
}
