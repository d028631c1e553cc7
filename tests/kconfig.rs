//! `autogentoo kernel config` on configs that the real kbuild of Debian's Linux 6.1 makes: what
//! `make allnoconfig` lacks is listed and written, kconfig reads the written file back as
//! written, `make olddefconfig` drops EFI again while ACPI is off and `--check --source` says
//! so, and once ACPI is on, EFI stays. Bad input is one error line that changes nothing.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use autogentoo_core::kernel::kconfig::{merge, Config, Value};
use autogentoo_tests::{kernel_make, kernel_source, Run, Workdir};

const INITRAMFS: &str = "/var/lib/autogentoo/out/web/initramfs.cpio.gz";
/// A command line with the two characters Kconfig escapes in strings.
const CMDLINE: &str = r#"console=ttyS0 msg="a \ b""#;
/// As a `.config` holds it.
const CMDLINE_LINE: &str = r#"CONFIG_CMDLINE="console=ttyS0 msg=\"a \\ b\"""#;

/// `kernel config FILE --initramfs INITRAMFS --compression gzip --cmdline CMDLINE EXTRA…`
fn config_args(file: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = ["kernel", "config"].map(OsString::from).to_vec();
    args.push(file.into());
    let inputs = [
        "--initramfs",
        INITRAMFS,
        "--compression",
        "gzip",
        "--cmdline",
        CMDLINE,
    ];
    args.extend(inputs.map(OsString::from));
    args.extend(extra.iter().map(OsString::from));
    args
}

/// A build directory with the `.config` of `make allnoconfig`; returns the file.
fn allnoconfig(workdir: &Workdir) -> PathBuf {
    let build = workdir.scratch().join("build");
    kernel_make(&kernel_source(), &build, &["allnoconfig"]).expect("make allnoconfig");
    build.join(".config")
}

fn lines(run: &Run) -> Vec<&str> {
    run.stdout.lines().collect()
}

#[test]
fn check_lists_what_allnoconfig_lacks_and_write_adds_it() {
    let workdir = Workdir::uninitialised();
    let file = allnoconfig(&workdir);
    let original = fs::read_to_string(&file).unwrap();
    let old = workdir.scratch().join("build/.config.old");
    let initramfs_line = format!("+CONFIG_INITRAMFS_SOURCE=\"{INITRAMFS}\"");
    let cmdline_line = format!("+{CMDLINE_LINE}");
    let diff = [
        "-# CONFIG_BLK_DEV_INITRD is not set",
        "+CONFIG_BLK_DEV_INITRD=y",
        &initramfs_line,
        "+CONFIG_RD_GZIP=y",
        "-# CONFIG_DEVTMPFS is not set",
        "+CONFIG_DEVTMPFS=y",
        "+CONFIG_EFI=y",
        "+CONFIG_EFI_STUB=y",
        "-# CONFIG_CMDLINE_BOOL is not set",
        "+CONFIG_CMDLINE_BOOL=y",
        &cmdline_line,
    ];

    let shown = workdir.ok(config_args(&file, &[]));
    assert_eq!(lines(&shown), diff, "{}", shown.describe());
    let checked = workdir.run(config_args(&file, &["--check"])).expect_code(1);
    assert_eq!(lines(&checked), diff, "{}", checked.describe());
    checked.expect_one_error();
    assert!(
        checked.stderr.contains(&format!(
            "8 options in {} need changing; run with --write",
            file.display()
        )),
        "{}",
        checked.describe()
    );
    let json = workdir
        .run(config_args(&file, &["--check", "--json"]))
        .expect_code(1)
        .json();
    let changes = json["changes"].as_array().expect("a list of changes");
    assert_eq!(changes.len(), 8, "{json}");
    assert!(changes.contains(&serde_json::json!({"symbol": "EFI", "old": null, "new": "y"})));
    assert!(
        changes.contains(&serde_json::json!({"symbol": "BLK_DEV_INITRD", "old": "n", "new": "y"}))
    );
    assert_eq!(json["dropped"], serde_json::json!([]));
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        original,
        "showing and checking write nothing"
    );
    assert!(!old.exists());

    let written = workdir.ok(config_args(&file, &["--write"]));
    assert_eq!(lines(&written), diff, "{}", written.describe());
    assert_eq!(fs::read_to_string(&old).unwrap(), original, "FILE.old");
    let new = fs::read_to_string(&file).unwrap();
    let expected_kept = original
        .replace(
            "# CONFIG_BLK_DEV_INITRD is not set",
            "CONFIG_BLK_DEV_INITRD=y",
        )
        .replace("# CONFIG_DEVTMPFS is not set", "CONFIG_DEVTMPFS=y")
        .replace("# CONFIG_CMDLINE_BOOL is not set", "CONFIG_CMDLINE_BOOL=y");
    let (kept, appended) = new.split_at(expected_kept.len().min(new.len()));
    assert_eq!(kept, expected_kept, "every other line is kept as it was");
    assert_eq!(
        appended,
        format!(
            "CONFIG_INITRAMFS_SOURCE=\"{INITRAMFS}\"\nCONFIG_RD_GZIP=y\nCONFIG_EFI=y\n\
             CONFIG_EFI_STUB=y\n{CMDLINE_LINE}\n"
        )
    );

    let rechecked = workdir.ok(config_args(&file, &["--check"]));
    assert_eq!(rechecked.stdout, "", "{}", rechecked.describe());
    workdir.ok(config_args(&file, &["--write"]));
    assert_eq!(fs::read_to_string(&file).unwrap(), new, "nothing to write");
    assert_eq!(
        fs::read_to_string(&old).unwrap(),
        original,
        "FILE.old stays when nothing is written"
    );
}

#[test]
fn olddefconfig_drops_efi_without_acpi_and_source_says_why() {
    let workdir = Workdir::uninitialised();
    let file = allnoconfig(&workdir);
    let build = file.parent().unwrap().to_owned();
    let source = kernel_source();
    let source_arg = source.to_str().expect("a UTF-8 source path");
    workdir.ok(config_args(&file, &["--write"]));
    kernel_make(&source, &build, &["olddefconfig"]).expect("make olddefconfig");

    // kconfig kept the strings as written, escapes and all, and dropped EFI.
    let config = Config::load(&file).unwrap();
    assert_eq!(config.get("CMDLINE"), Some(&Value::String(CMDLINE.into())));
    assert_eq!(
        config.get("INITRAMFS_SOURCE"),
        Some(&Value::String(INITRAMFS.into()))
    );
    assert_eq!(config.get("RD_GZIP"), Some(&Value::Yes));
    assert_eq!(config.get("EFI"), None);
    assert_eq!(config.get("ACPI"), Some(&Value::No));

    let checked = workdir.run(config_args(&file, &["--check"])).expect_code(1);
    assert_eq!(lines(&checked), ["+CONFIG_EFI=y", "+CONFIG_EFI_STUB=y"]);
    let explained = workdir
        .run(config_args(&file, &["--check", "--source", source_arg]))
        .expect_code(1);
    explained.expect_one_error();
    assert_eq!(lines(&explained), ["+CONFIG_EFI=y", "+CONFIG_EFI_STUB=y"]);
    let stderr: Vec<&str> = explained.stderr.lines().collect();
    assert_eq!(
        stderr,
        [
            format!(
                "error: {} does not have what the pipeline needs",
                file.display()
            )
            .as_str(),
            "  caused by: 2 options the pipeline needs are missing after make olddefconfig \
             (explained from a loose reading of the Kconfig files)",
            "  caused by: CONFIG_EFI was dropped by make olddefconfig: it depends on ACPI, which \
             is not set; add CONFIG_ACPI=y to the kernel config",
            "  caused by: CONFIG_EFI_STUB was dropped by make olddefconfig: it depends on EFI, \
             which is not set; add CONFIG_EFI=y to the kernel config",
        ],
        "{}",
        explained.describe()
    );
    let json = workdir
        .run(config_args(
            &file,
            &[
                "--check", "--source", source_arg, "--arch", "x86_64", "--json",
            ],
        ))
        .expect_code(1)
        .json();
    assert_eq!(json["dropped"][0]["symbol"], "EFI", "{json}");
    assert!(json["dropped"][0]["message"]
        .as_str()
        .unwrap()
        .contains("add CONFIG_ACPI=y"));

    // Following the advice: ACPI as a fragment over the config, then what the pipeline needs.
    let acpi = Config::parse("CONFIG_ACPI=y\n").unwrap();
    merge([&Config::load(&file).unwrap(), &acpi])
        .save(&file)
        .unwrap();
    workdir.ok(config_args(&file, &["--write"]));
    kernel_make(&source, &build, &["olddefconfig"]).expect("make olddefconfig");
    let config = Config::load(&file).unwrap();
    assert_eq!(config.get("EFI"), Some(&Value::Yes));
    assert_eq!(config.get("EFI_STUB"), Some(&Value::Yes));
    let passed = workdir.ok(config_args(&file, &["--check", "--source", source_arg]));
    assert_eq!(passed.stdout, "", "{}", passed.describe());
}

#[test]
fn the_system_gives_the_command_line_and_compression_and_flags_override_them() {
    let workdir = Workdir::uninitialised();
    let site = workdir.scratch().join("autogentoo.toml");
    fs::write(
        &site,
        "[pack]\ncompression = \"zstd\"\n\n[systems.web]\nstage = \"openrc\"\ncmdline = \
         \"console=ttyS0 quiet\"\n",
    )
    .unwrap();
    let file = workdir.scratch().join("web.kconfig");
    fs::write(&file, "CONFIG_EFI=y\nCONFIG_EFI_STUB=y").unwrap();
    let run = |extra: &[&str]| {
        let mut args: Vec<OsString> = vec!["--config".into(), site.clone().into()];
        args.extend(["kernel", "config"].map(OsString::from));
        args.push(file.clone().into());
        args.extend(extra.iter().map(OsString::from));
        workdir.ok(args)
    };

    let from_system = run(&["--system", "web"]);
    assert_eq!(
        lines(&from_system),
        [
            "+CONFIG_BLK_DEV_INITRD=y",
            "+CONFIG_RD_ZSTD=y",
            "+CONFIG_DEVTMPFS=y",
            "+CONFIG_CMDLINE_BOOL=y",
            "+CONFIG_CMDLINE=\"console=ttyS0 quiet\"",
        ]
    );
    let overridden = run(&["--system", "web", "--compression", "gzip", "--cmdline", ""]);
    assert_eq!(
        lines(&overridden),
        [
            "+CONFIG_BLK_DEV_INITRD=y",
            "+CONFIG_RD_GZIP=y",
            "+CONFIG_DEVTMPFS=y"
        ]
    );
    let relative = run(&["--compression", "none", "--initramfs", "initramfs.cpio"]);
    let cwd = std::env::current_dir().unwrap();
    let wanted = format!(
        "+CONFIG_INITRAMFS_SOURCE=\"{}\"",
        cwd.join("initramfs.cpio").display()
    );
    assert!(
        lines(&relative).contains(&wanted.as_str()),
        "a relative path is made absolute: {}",
        relative.describe()
    );

    run(&["--system", "web", "--write"]);
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "CONFIG_EFI=y\nCONFIG_EFI_STUB=y\nCONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_ZSTD=y\n\
         CONFIG_DEVTMPFS=y\nCONFIG_CMDLINE_BOOL=y\nCONFIG_CMDLINE=\"console=ttyS0 quiet\"\n"
    );
    assert_eq!(
        fs::read_to_string(workdir.scratch().join("web.kconfig.old")).unwrap(),
        "CONFIG_EFI=y\nCONFIG_EFI_STUB=y"
    );
}

#[test]
fn bad_input_is_one_error_line_and_changes_nothing() {
    let workdir = Workdir::uninitialised();
    let file = workdir.scratch().join("bad.config");
    let text = "CONFIG_EFI=y\nCONFIG_DEVTMPFS=yes\n";
    fs::write(&file, text).unwrap();
    let file_arg = file.to_str().unwrap();
    let missing = workdir.scratch().join("missing.config");
    let missing_arg = missing.to_str().unwrap();
    let not_a_tree = workdir.scratch();
    let not_a_tree = not_a_tree.to_str().unwrap();
    let site = workdir.scratch().join("empty.toml");
    fs::write(&site, "").unwrap();
    let site_arg = site.to_str().unwrap();
    let good = workdir.scratch().join("good.config");
    fs::write(&good, "CONFIG_EFI=y\n").unwrap();
    let good_arg = good.to_str().unwrap();

    for (args, message) in [
        (
            vec!["kernel", "config", file_arg],
            format!(
                "error: {file_arg}:2: the value is not y, m, n, a number or a quoted string: \
                 `CONFIG_DEVTMPFS=yes`"
            ),
        ),
        (
            vec!["kernel", "config", missing_arg, "--check"],
            format!("error: cannot read the kernel config {missing_arg}: No such file"),
        ),
        (
            vec![
                "kernel",
                "config",
                good_arg,
                "--initramfs",
                "/out/initramfs.img",
            ],
            "error: the initramfs /out/initramfs.img: kbuild takes a compressed archive as it \
             is only when `.cpio.` occurs once in its path"
                .to_owned(),
        ),
        (
            vec![
                "kernel",
                "config",
                good_arg,
                "--initramfs",
                "/my out/a.cpio.gz",
            ],
            "error: the initramfs /my out/a.cpio.gz: kbuild splits CONFIG_INITRAMFS_SOURCE at \
             spaces"
                .to_owned(),
        ),
        (
            vec![
                "--config", site_arg, "kernel", "config", good_arg, "--system", "web",
            ],
            "error: unknown system `web`".to_owned(),
        ),
        (
            vec![
                "kernel", "config", good_arg, "--check", "--source", not_a_tree,
            ],
            format!("error: {not_a_tree} is not a kernel source tree"),
        ),
    ] {
        let run = workdir.run(&args).expect_code(1);
        run.expect_one_error();
        assert!(run.stderr.starts_with(&message), "{}", run.describe());
    }
    for args in [
        vec!["kernel", "config", good_arg, "--check", "--write"],
        vec!["kernel", "config", good_arg, "--source", not_a_tree],
        vec!["kernel", "config", good_arg, "--compression", "lz4"],
    ] {
        workdir.run(&args).expect_code(2);
    }
    assert_eq!(fs::read_to_string(&file).unwrap(), text);
    assert_eq!(fs::read_to_string(&good).unwrap(), "CONFIG_EFI=y\n");
    let mut names: Vec<_> = fs::read_dir(workdir.scratch())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["bad.config", "empty.toml", "good.config"],
        "nothing else written"
    );
}
