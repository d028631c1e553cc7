//! What a new user meets first, driven through the binary: `doctor` on this host (what it has
//! is found, what a site asks for and the host lacks is missing with its fix, in text and
//! JSON, with the exit codes scripts rely on), the completion scripts really completing in
//! bash and fish and loading in zsh, the manual pages rendering with man and naming every
//! public command, and `cargo xtask install` laying all of it out under a prefix.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use autogentoo_tests::{binary, isolated_binary, plugin_library, require_root, run_tool, Run};
use serde_json::Value;
use tempfile::TempDir;

/// A site directory with `autogentoo.toml` holding `toml`, and a workdir path beside it that
/// nothing creates.
struct Site {
    dir: TempDir,
}

impl Site {
    fn new(toml: &str) -> Self {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("autogentoo-doctor.")
            .tempdir()
            .expect("a temporary directory");
        fs::write(dir.path().join("autogentoo.toml"), toml).expect("write the site config");
        Self { dir }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("autogentoo.toml")
    }

    fn workdir(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// A directory below the site, made empty.
    fn empty_dir(&self, name: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        fs::create_dir_all(&dir).expect("an empty directory");
        dir
    }

    /// `autogentoo --config SITE --workdir WORK [global…] doctor [--json]`, with no autogentoo
    /// settings or plugins from the environment; `env` is applied last.
    fn doctor(&self, global: &[&str], json: bool, env: &[(&str, &OsStr)]) -> Run {
        let mut command = isolated_binary();
        command
            .arg("--config")
            .arg(self.config())
            .arg("--workdir")
            .arg(self.workdir())
            .args(global)
            .arg("doctor");
        if json {
            command.arg("--json");
        }
        for (var, value) in env {
            command.env(var, value);
        }
        Run::of(command)
    }
}

/// The checks of a `doctor --json` run by name, after checking the document's shape: `ok`, and
/// `checks` whose entries have exactly the five stable fields, with a fix exactly when the
/// thing is absent.
#[track_caller]
fn checks(run: &Run) -> BTreeMap<String, Value> {
    let report = run.json();
    let checks = report["checks"].as_array().expect("checks is an array");
    let mut by_name = BTreeMap::new();
    for check in checks {
        let object = check.as_object().expect("a check is an object");
        let fields: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            fields,
            ["detail", "fix", "name", "needed_by", "status"],
            "fields of {check}"
        );
        let status = check["status"].as_str().expect("status is text");
        assert!(
            ["ok", "missing", "not_needed"].contains(&status),
            "status of {check}"
        );
        assert!(check["detail"].is_string(), "detail of {check}");
        assert!(check["needed_by"].is_array(), "needed_by of {check}");
        assert_eq!(
            check["fix"].is_null(),
            status == "ok",
            "a fix exactly for what is absent: {check}"
        );
        assert_eq!(
            status == "not_needed",
            check["needed_by"].as_array().unwrap().is_empty() && status != "ok",
            "not needed exactly when absent and nothing needs it: {check}"
        );
        let name = check["name"].as_str().expect("name is text").to_owned();
        assert!(
            by_name.insert(name.clone(), check.clone()).is_none(),
            "one check named {name}"
        );
    }
    let missing = by_name.values().any(|c| c["status"] == "missing");
    assert_eq!(
        report["ok"],
        Value::Bool(!missing),
        "ok: {}",
        run.describe()
    );
    assert_eq!(
        run.code(),
        Some(if missing { 1 } else { 0 }),
        "{}",
        run.describe()
    );
    by_name
}

/// The check `name`, which must be there.
#[track_caller]
fn check<'a>(checks: &'a BTreeMap<String, Value>, name: &str) -> &'a Value {
    checks
        .get(name)
        .unwrap_or_else(|| panic!("no check {name} in {:?}", checks.keys()))
}

#[track_caller]
fn assert_status(checks: &BTreeMap<String, Value>, name: &str, status: &str) {
    let found = check(checks, name);
    assert_eq!(found["status"], status, "{name}: {found}");
}

/// The check `name` is missing, needed by `by`, with a fix containing `fix`.
#[track_caller]
fn assert_missing(checks: &BTreeMap<String, Value>, name: &str, by: &str, fix: &str) {
    let found = check(checks, name);
    assert_eq!(found["status"], "missing", "{name}: {found}");
    assert!(
        found["needed_by"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b == by),
        "{name} needed by {by}: {found}"
    );
    assert!(
        found["fix"].as_str().unwrap().contains(fix),
        "{name}'s fix says {fix:?}: {found}"
    );
}

/// The last line on stderr of a doctor run that found something missing names each missing
/// check; as text, it is the one error line there is (under --json, errors are written as JSON).
#[track_caller]
fn assert_names_missing(run: &Run, names: &[&str]) {
    if !run.command.contains("--json") {
        run.expect_one_error();
    }
    let line = run.stderr.lines().last().expect("an error line");
    for name in names {
        assert!(line.contains(name), "the error line names {name}: {line}");
    }
}

fn filesystem_registered(name: &str) -> bool {
    fs::read_to_string("/proc/filesystems")
        .expect("/proc/filesystems")
        .lines()
        .any(|line| line.split_whitespace().last() == Some(name))
}

const PLAIN_SITE: &str = "[storage]\nbackend = \"dir\"\n";

#[test]
fn doctor_finds_what_this_host_offers_and_changes_nothing() {
    let site = Site::new(PLAIN_SITE);
    let run = site.doctor(&[], true, &[]);
    let checks = checks(&run);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    for name in [
        "privileges",
        "backend",
        "loop-devices",
        "squashfs",
        "mount-namespace",
        "pid-namespace",
        "packer",
    ] {
        assert_status(&checks, name, "ok");
    }
    for by in ["root mount", "build"] {
        assert!(
            check(&checks, "loop-devices")["needed_by"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b == by),
            "loop devices needed by {by}"
        );
    }
    // What the kernel registers is reported as it is, needed or not.
    if filesystem_registered("overlay") {
        assert_status(&checks, "overlayfs", "ok");
    }
    // binfmt_misc is information for now: nothing needs it.
    assert!(check(&checks, "binfmt-misc")["needed_by"]
        .as_array()
        .unwrap()
        .is_empty());
    // Nothing of the site's asks for these, so their absence would not count.
    for name in ["zfs", "qemu-system-x86_64", "ovmf", "make"] {
        assert!(
            check(&checks, name)["needed_by"]
                .as_array()
                .unwrap()
                .is_empty(),
            "{name} not needed by a site without systems"
        );
    }
    assert!(
        !checks.contains_key("zfs-dataset") && !checks.contains_key("btrfs-workdir"),
        "backend-specific checks only for that backend"
    );

    // The same as text: one line each, in the same order, starting with the status.
    let text = site.doctor(&[], false, &[]).expect_code(0);
    let lines: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(lines.len(), checks.len(), "{}", text.describe());
    for line in &lines {
        let (status, rest) = if let Some(rest) = line.strip_prefix("not needed ") {
            ("not_needed", rest)
        } else {
            let (status, rest) = line.split_once(' ').expect("status, then the rest");
            (status, rest)
        };
        let name = rest.split_whitespace().next().expect("a name");
        assert_eq!(check(&checks, name)["status"], status, "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ok ") && l.contains(" squashfs ")),
        "{}",
        text.describe()
    );

    assert!(
        !site.workdir().exists(),
        "doctor created the workdir {}",
        site.workdir().display()
    );
}

#[test]
fn a_tool_hidden_from_path_is_missing_with_the_package_to_install() {
    let site = Site::new(
        "[systems.demo]\nstage = \"demo\"\nkernel_build = \"host\"\n\
         [systems.other]\nstage = \"demo\"\n",
    );
    let empty = site.empty_dir("empty-path");
    let run = site.doctor(&[], true, &[("PATH", empty.as_os_str())]);
    let checks = checks(&run);
    let by = "systems.demo.kernel_build = host";
    for (program, package) in [
        ("make", "make"),
        ("gcc", "gcc"),
        ("bc", "bc"),
        ("flex", "flex"),
        ("bison", "bison"),
    ] {
        assert_missing(&checks, program, by, &format!("apt-get install {package}"));
    }
    assert_missing(
        &checks,
        "qemu-system-x86_64",
        "kernel boot",
        "apt-get install qemu-system-x86",
    );
    // The root builder uses the root's toolchain: it alone does not need the host's.
    assert_eq!(check(&checks, "make")["needed_by"], serde_json::json!([by]));
    assert_status(&checks, "kernel-builder-host", "ok");
    assert_status(&checks, "kernel-builder-root", "ok");
    assert_names_missing(&run, &["make", "gcc", "qemu-system-x86_64"]);

    // In text, the missing line carries what needs it and the fix.
    let text = site.doctor(&[], false, &[("PATH", empty.as_os_str())]);
    assert_eq!(text.code(), Some(1), "{}", text.describe());
    let make = text
        .stdout
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("make"))
        .expect("a line for make");
    assert!(
        make.starts_with("missing ")
            && make.contains(by)
            && make.ends_with("fix: apt-get install make"),
        "{make}"
    );
    assert_names_missing(&text, &["make"]);

    // With the host's PATH, the toolchain the test suite installs is found.
    let run = site.doctor(&[], true, &[]);
    let checks = self::checks(&run);
    for program in ["make", "gcc", "bc", "flex", "bison", "qemu-system-x86_64"] {
        assert_status(&checks, program, "ok");
    }
}

#[test]
fn the_example_site_finds_all_it_needs_on_a_host_with_the_suite_s_packages() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/autogentoo.toml");
    let site = Site::new("");
    let mut command = Command::new(binary());
    command
        .arg("--config")
        .arg(&config)
        .arg("--workdir")
        .arg(site.workdir())
        .args(["doctor", "--json"])
        .env_remove("AUTOGENTOO_PLUGIN_PATH")
        .env_remove("AUTOGENTOO_BACKEND");
    let run = Run::of(command);
    let checks = checks(&run);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    for name in [
        "kernel-builder-host",
        "libelf-headers",
        "openssl-headers",
        "qemu-system-x86_64",
        "ovmf",
    ] {
        assert_status(&checks, name, "ok");
    }
}

#[test]
fn a_zfs_backend_without_zfs_is_missing_with_the_fix() {
    // No `zfs` in PATH at all: the command is what is missing.
    let site = Site::new("[storage]\nzfs_dataset = \"autogentoo-doctor-absent/work\"\n");
    let empty = site.empty_dir("empty-path");
    let run = site.doctor(&["--backend", "zfs"], true, &[("PATH", empty.as_os_str())]);
    let checks = checks(&run);
    assert_missing(&checks, "zfs", "backend zfs", "apt-get install zfs-fuse");
    assert!(
        !checks.contains_key("zfs-running"),
        "nothing to ask without zfs"
    );
    assert_names_missing(&run, &["zfs"]);

    // With the host's PATH, what is missing depends on what runs; the shared zfs-fuse daemon
    // is neither started nor stopped here, so each state is checked as it is found.
    let run = site.doctor(&["--backend", "zfs"], true, &[]);
    let checks = self::checks(&run);
    assert_eq!(run.code(), Some(1), "{}", run.describe());
    let has_zfs = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join("zfs").is_file());
    if !has_zfs {
        assert_missing(&checks, "zfs", "backend zfs", "apt-get install zfs-fuse");
    } else if Command::new("zfs")
        .args(["list", "-H"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert_status(&checks, "zfs-running", "ok");
        assert_missing(
            &checks,
            "zfs-dataset",
            "backend zfs",
            "zpool create autogentoo-doctor-absent",
        );
        assert_names_missing(&run, &["zfs-dataset"]);
    } else {
        assert_missing(&checks, "zfs-running", "backend zfs", "start");
        assert_names_missing(&run, &["zfs-running"]);
    }
}

#[test]
fn a_btrfs_backend_on_a_workdir_elsewhere_is_missing_with_the_fix() {
    // tmpfs, so certainly not btrfs.
    let shm = tempfile::Builder::new()
        .prefix("autogentoo-doctor.")
        .tempdir_in("/dev/shm")
        .expect("a directory on tmpfs");
    let site = Site::new(PLAIN_SITE);
    let mut command = Command::new(binary());
    command
        .arg("--config")
        .arg(site.config())
        .arg("--workdir")
        .arg(shm.path().join("work"))
        .args(["--backend", "btrfs", "doctor", "--json"])
        .env_remove("AUTOGENTOO_PLUGIN_PATH");
    let run = Run::of(command);
    let checks = checks(&run);
    assert_missing(&checks, "btrfs-workdir", "backend btrfs", "mkfs.btrfs");
    assert!(
        check(&checks, "btrfs-workdir")["detail"]
            .as_str()
            .unwrap()
            .contains("tmpfs"),
        "names the filesystem found"
    );
    if filesystem_registered("btrfs") {
        assert_status(&checks, "btrfs", "ok");
    }
    assert_names_missing(&run, &["btrfs-workdir"]);
}

#[test]
fn plugin_backends_packers_and_builders_are_checked_with_what_they_call() {
    // A backend no plugin provides: missing, naming the known ones.
    let site = Site::new(
        "[pack]\npacker = \"newc-xz\"\n\
         [systems.demo]\nstage = \"demo\"\nkernel_build = \"uki\"\n\
         [plugins.site-hooks]\nsign_key = \"db.key\"\nsign_cert = \"db.crt\"\n",
    );
    let run = site.doctor(&["--backend", "overlay"], true, &[]);
    let checks = checks(&run);
    let backend = check(&checks, "backend");
    assert_eq!(backend["status"], "missing", "{backend}");
    assert!(
        backend["detail"]
            .as_str()
            .unwrap()
            .contains("no storage backend `overlay`; known: dir, btrfs, zfs"),
        "{backend}"
    );
    assert_eq!(
        check(&checks, "overlayfs")["needed_by"],
        serde_json::json!(["backend overlay"])
    );
    assert_status(&checks, "packer", "missing");
    assert_status(&checks, "kernel-builder-uki", "missing");
    assert!(
        !checks.contains_key("xz") && !checks.contains_key("sbsign"),
        "what a plugin calls is checked only when the plugin is loaded"
    );

    // With the plugins loaded, and PATH hiding what they call.
    let plugins = site.empty_dir("plugins");
    for package in [
        "autogentoo-plugin-overlay",
        "autogentoo-plugin-uki",
        "autogentoo-plugin-site-hooks",
    ] {
        let library = plugin_library(package);
        std::os::unix::fs::symlink(&library, plugins.join(library.file_name().unwrap()))
            .expect("link the plugin");
    }
    let empty = site.empty_dir("empty-path");
    let env = [
        ("AUTOGENTOO_PLUGIN_PATH", plugins.as_os_str()),
        ("PATH", empty.as_os_str()),
    ];
    let run = site.doctor(&["--backend", "overlay"], true, &env);
    let checks = self::checks(&run);
    assert_status(&checks, "backend", "ok");
    assert_status(&checks, "packer", "ok");
    assert_status(&checks, "kernel-builder-uki", "ok");
    assert_status(&checks, "plugins", "ok");
    assert_missing(
        &checks,
        "xz",
        "pack.packer = newc-xz",
        "apt-get install xz-utils",
    );
    let by = "systems.demo.kernel_build = uki";
    assert_missing(&checks, "objcopy", by, "apt-get install binutils");
    assert_missing(&checks, "make", by, "apt-get install make");
    assert_missing(
        &checks,
        "sbsign",
        "plugins.site-hooks.sign_key",
        "apt-get install sbsigntool",
    );
    assert!(checks.contains_key("systemd-stub"));
    assert_names_missing(&run, &["xz", "objcopy", "sbsign"]);

    // With the host's PATH, everything the suite installs is there.
    let run = site.doctor(&["--backend", "overlay"], true, &env[..1]);
    let checks = self::checks(&run);
    assert_eq!(run.code(), Some(0), "{}", run.describe());
    for name in [
        "xz",
        "objcopy",
        "objdump",
        "sbsign",
        "systemd-stub",
        "overlayfs",
    ] {
        assert_status(&checks, name, "ok");
    }
}

#[test]
fn a_library_that_is_not_a_plugin_is_missing_and_doctor_takes_no_arguments() {
    let site = Site::new(PLAIN_SITE);
    let plugins = site.empty_dir("plugins");
    fs::write(plugins.join("broken.so"), "not a library\n").expect("write broken.so");
    let run = site.doctor(
        &[],
        true,
        &[("AUTOGENTOO_PLUGIN_PATH", plugins.as_os_str())],
    );
    let checks = checks(&run);
    let found = check(&checks, "plugins");
    assert_eq!(found["status"], "missing", "{found}");
    assert!(
        found["detail"].as_str().unwrap().contains("broken.so"),
        "{found}"
    );
    // The loader warns about the library first; the error comes last.
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(last.contains("plugins"), "{}", run.describe());

    let mut command = Command::new(binary());
    command.args(["doctor", "--no-such-option"]);
    Run::of(command).expect_code(2);
}

/// The completion script for `shell`, written to a file in `dir`.
fn completion_script(dir: &Path, shell: &str) -> PathBuf {
    let run = Run::of({
        let mut command = Command::new(binary());
        command.args(["completions", shell]);
        command
    })
    .expect_code(0);
    assert!(
        !run.stdout.contains("internal-init") && !run.stdout.contains("internal__init"),
        "the {shell} script offers the hidden internal-init"
    );
    let path = dir.join(format!("autogentoo.{shell}"));
    fs::write(&path, run.stdout).expect("write the script");
    path
}

/// What bash's completion function offers for `words`, the last being the word completed.
fn bash_completes(script: &Path, words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let program = format!(
        "source '{}' || exit 9\n\
         COMP_WORDS=({})\n\
         COMP_CWORD={}\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         COMP_POINT=${{#COMP_LINE}}\n\
         _autogentoo autogentoo \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display(),
        quoted.join(" "),
        words.len() - 1
    );
    let out = run_tool(Command::new("bash").args(["--norc", "--noprofile", "-c", &program]))
        .expect("bash runs the completion function");
    out.lines().map(str::to_owned).collect()
}

#[test]
fn bash_completes_commands_subcommands_and_options() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let script = completion_script(dir.path(), "bash");

    let top = bash_completes(&script, &["autogentoo", ""]);
    for word in [
        "root",
        "stage",
        "kernel",
        "doctor",
        "completions",
        "man",
        "--backend",
    ] {
        assert!(top.contains(&word.to_owned()), "{word} in {top:?}");
    }
    assert!(!top.iter().any(|w| w.contains("internal")), "{top:?}");

    let root = bash_completes(&script, &["autogentoo", "root", ""]);
    for word in ["pack", "mount", "umount", "create", "run"] {
        assert!(root.contains(&word.to_owned()), "{word} in {root:?}");
    }
    assert!(!root.contains(&"doctor".to_owned()), "{root:?}");

    let mut pa = bash_completes(&script, &["autogentoo", "root", "pa"]);
    pa.sort();
    assert_eq!(pa, ["pack", "path"]);

    let option = bash_completes(&script, &["autogentoo", "root", "pack", "--comp"]);
    assert_eq!(option, ["--compression"]);
}

#[test]
fn fish_completes_and_zsh_loads_the_scripts() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let fish = completion_script(dir.path(), "fish");
    let completes = |line: &str| -> Vec<String> {
        let program = format!("source '{}'; complete -C '{line}'", fish.display());
        run_tool(Command::new("fish").args(["--no-config", "-c", &program]))
            .expect("fish completes")
            .lines()
            .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
            .collect()
    };
    let root = completes("autogentoo root ");
    for word in ["pack", "mount", "umount"] {
        assert!(root.contains(&word.to_owned()), "{word} in {root:?}");
    }
    let top = completes("autogentoo ");
    assert!(top.contains(&"doctor".to_owned()), "{top:?}");
    assert!(!top.iter().any(|w| w.contains("internal")), "{top:?}");

    // zsh: the script loads into the completion system and registers itself for autogentoo.
    let zsh = completion_script(dir.path(), "zsh");
    let program = format!(
        "autoload -Uz compinit && compinit -u -D || exit 8\n\
         source '{}' || exit 9\n\
         (( $+functions[_autogentoo] )) || exit 10\n\
         [[ $_comps[autogentoo] == _autogentoo ]] || exit 11\n\
         print loaded",
        zsh.display()
    );
    let out =
        run_tool(Command::new("zsh").args(["-f", "-c", &program])).expect("zsh loads the script");
    assert_eq!(out.trim(), "loaded");
}

/// The public subcommands of `autogentoo WORDS…`, as its `--help` lists them (not `help`).
fn subcommands_in_help(words: &[&str]) -> Vec<String> {
    let out = run_tool(Command::new(binary()).args(words).arg("--help")).expect("--help");
    out.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// A page rendered by man as plain text.
fn render(page: &Path) -> String {
    run_tool(
        Command::new("man")
            .args(["-P", "cat", "-l"])
            .arg(page)
            .env("MANWIDTH", "200")
            .env("LC_ALL", "C"),
    )
    .unwrap_or_else(|e| panic!("man renders {}: {e}", page.display()))
}

#[test]
fn man_pages_render_and_name_every_public_command() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let man1 = dir.path().join("man1");
    Run::of({
        let mut command = Command::new(binary());
        command.arg("man").arg("--dir").arg(&man1);
        command
    })
    .expect_code(0);

    // Walk the commands as --help lists them: each has a page, and its parent's page names it.
    let mut expected = vec!["autogentoo.1".to_owned()];
    let mut queue: Vec<Vec<String>> = vec![vec![]];
    while let Some(words) = queue.pop() {
        let words_ref: Vec<&str> = words.iter().map(String::as_str).collect();
        let page_name = std::iter::once("autogentoo")
            .chain(words_ref.iter().copied())
            .collect::<Vec<_>>()
            .join("-");
        let text = render(&man1.join(format!("{page_name}.1")));
        assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
        for sub in subcommands_in_help(&words_ref) {
            let sub_page = format!("{page_name}-{sub}");
            assert!(
                text.contains(&format!("{sub_page}(1)")),
                "{page_name}'s page names {sub_page}(1):\n{text}"
            );
            expected.push(format!("{sub_page}.1"));
            let mut deeper = words.clone();
            deeper.push(sub);
            queue.push(deeper);
        }
    }
    assert!(expected.contains(&"autogentoo-root-pack.1".to_owned()));
    assert!(expected.contains(&"autogentoo-doctor.1".to_owned()));
    let mut written: Vec<String> = fs::read_dir(&man1)
        .expect("the pages")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    written.sort();
    expected.sort();
    assert_eq!(
        written, expected,
        "one page per public command, nothing else"
    );

    // A page printed on stdout is the page written to the directory.
    let printed = Run::of({
        let mut command = Command::new(binary());
        command.args(["man", "root", "pack"]);
        command
    })
    .expect_code(0);
    assert_eq!(
        printed.stdout,
        fs::read_to_string(man1.join("autogentoo-root-pack.1")).unwrap()
    );
    assert!(render(&man1.join("autogentoo-root-pack.1")).contains("--compression"));

    let unknown = Run::of({
        let mut command = Command::new(binary());
        command.args(["man", "root", "internal-init"]);
        command
    })
    .expect_code(1);
    unknown.expect_one_error();
    assert!(unknown.stderr.contains("pack"), "{}", unknown.describe());
}

#[test]
fn cargo_xtask_install_lays_out_the_binary_completions_and_man_pages() {
    require_root();
    let destdir = tempfile::tempdir().expect("a temporary directory");
    // The target directory this test runs from (TARGET/PROFILE/deps/TEST), and its debug build,
    // which `cargo xtask test` made before running the tests: the layout is what is tested here,
    // not a second, release, compilation of the same code.
    let exe = std::env::current_exe().expect("the test binary");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("the test binary is in TARGET/PROFILE/deps");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let started = Instant::now();
    run_tool(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args([
                "xtask",
                "install",
                "--debug",
                "--prefix",
                "/usr",
                "--destdir",
            ])
            .arg(destdir.path())
            .current_dir(workspace)
            .env("CARGO_TARGET_DIR", target),
    )
    .expect("cargo xtask install");
    eprintln!(
        "cargo xtask install took {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let usr = destdir.path().join("usr");
    let installed = usr.join("bin/autogentoo");
    let mode = fs::metadata(&installed)
        .expect("the binary")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    let version = run_tool(Command::new(&installed).arg("--version")).expect("it runs");
    assert_eq!(
        version.trim(),
        format!("autogentoo {}", env!("CARGO_PKG_VERSION"))
    );
    for (shell, path) in [
        ("bash", "share/bash-completion/completions/autogentoo"),
        ("zsh", "share/zsh/site-functions/_autogentoo"),
        ("fish", "share/fish/vendor_completions.d/autogentoo.fish"),
    ] {
        let script = fs::read_to_string(usr.join(path)).expect("the completion script");
        let own = run_tool(Command::new(&installed).args(["completions", shell]))
            .expect("the installed binary's script");
        assert_eq!(
            script, own,
            "{path} is the installed binary's {shell} script"
        );
    }
    let bash = bash_completes(
        &usr.join("share/bash-completion/completions/autogentoo"),
        &["autogentoo", "root", ""],
    );
    assert!(bash.contains(&"pack".to_owned()), "{bash:?}");

    // man finds the pages by the manual path of the prefix, as it would under /usr.
    let page = run_tool(
        Command::new("man")
            .arg("-M")
            .arg(usr.join("share/man"))
            .args(["-P", "cat", "autogentoo-root-pack"])
            .env("MANWIDTH", "200"),
    )
    .expect("man finds the installed page");
    assert!(page.contains("autogentoo-root-pack"), "{page}");
    assert!(usr.join("share/man/man1/autogentoo.1").is_file());
    let leftovers: Vec<_> = walk(destdir.path())
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(".tmp"))
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).expect("a directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
