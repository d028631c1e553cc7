//! The command line's promises to scripts and people: bad input is one clear error and a stable
//! exit code (1 for errors, 2 for usage), commands can be re-run, and `--json` is parseable.

use std::ffi::OsStr;
use std::fs;
use std::path::PathBuf;

use anyhow::Result;
use autogentoo_tests::{build_small_tree, list_dir, Workdir};

#[test]
fn invalid_names_are_refused_with_one_error() -> Result<()> {
    let workdir = Workdir::new();
    let tree = workdir.scratch().join("small");
    build_small_tree(&tree)?;
    workdir.import(&tree, "gentoo");
    workdir.ok(["root", "create", "build", "--stage", "gentoo"]);

    for name in ["../x", "a/b", ""] {
        let commands: [Vec<&OsStr>; 7] = [
            vec![
                "stage".as_ref(),
                "import".as_ref(),
                tree.as_os_str(),
                "--name".as_ref(),
                name.as_ref(),
            ],
            vec!["stage".as_ref(), "path".as_ref(), name.as_ref()],
            vec!["stage".as_ref(), "remove".as_ref(), name.as_ref()],
            vec![
                "root".as_ref(),
                "create".as_ref(),
                name.as_ref(),
                "--stage".as_ref(),
                "gentoo".as_ref(),
            ],
            vec![
                "root".as_ref(),
                "create".as_ref(),
                "other".as_ref(),
                "--stage".as_ref(),
                name.as_ref(),
            ],
            vec![
                "root".as_ref(),
                "snapshot".as_ref(),
                "build".as_ref(),
                name.as_ref(),
            ],
            vec!["root".as_ref(), "remove".as_ref(), name.as_ref()],
        ];
        for args in commands {
            let run = workdir.run(&args).expect_code(1);
            run.expect_one_error();
            assert!(
                run.stderr.contains(&format!("name '{name}'")),
                "names the refused name: {}",
                run.describe()
            );
        }
    }
    assert_eq!(workdir.stage_names(), ["gentoo"]);
    assert_eq!(workdir.root_names(), ["build"]);
    assert!(!workdir.path().join("x").exists() && !workdir.top().join("x").exists());
    assert!(!workdir.path().join("stages/a").exists() && !workdir.path().join("roots/a").exists());
    Ok(())
}

#[test]
fn unknown_subcommand_is_a_usage_error() {
    let workdir = Workdir::new();
    for args in [
        &["frobnicate"][..],
        &["stage", "frobnicate"],
        &["root", "list", "--frobnicate"],
    ] {
        let run = workdir.run(args).expect_code(2);
        assert!(
            run.stderr.contains("frobnicate"),
            "names what it did not understand: {}",
            run.describe()
        );
    }
}

#[test]
fn unknown_backend_lists_the_known_ones() {
    let workdir = Workdir::new();
    let run = workdir
        .run(["--backend", "nosuch", "stage", "list"])
        .expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr.contains("nosuch") && run.stderr.contains("dir"),
        "names the backend and the known ones: {}",
        run.describe()
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn build_with_an_unknown_kernel_builder_lists_the_known_ones_before_any_step() -> Result<()> {
    let workdir = Workdir::uninitialised();
    let config = workdir.scratch().join("autogentoo.toml");
    fs::write(
        &config,
        "[systems.demo]\nstage = \"demo\"\nkernel_build = \"distcc\"\n",
    )?;
    let run = workdir
        .run([
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("build"),
            OsStr::new("demo"),
        ])
        .expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr
            .contains("unknown kernel builder 'distcc'; known kernel builders: host, root"),
        "{}",
        run.describe()
    );
    assert!(
        !workdir.path().exists() || list_dir(workdir.path()).is_empty(),
        "no step ran: {:?}",
        list_dir(workdir.path())
    );
    Ok(())
}

#[test]
fn config_with_an_unknown_key_names_file_line_and_key() -> Result<()> {
    let workdir = Workdir::new();
    let config = workdir.scratch().join("autogentoo.toml");
    fs::write(
        &config,
        "# the test site\n[storage]\nbackend = \"dir\"\nbakend = \"zfs\"\n",
    )?;
    let run = workdir
        .run([
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("workdir"),
            OsStr::new("status"),
        ])
        .expect_code(1);
    run.expect_one_error();
    let located = format!("{}:4: ", config.display());
    assert!(
        run.stderr.contains(&located) && run.stderr.contains("bakend"),
        "says `{located}` and names the key: {}",
        run.describe()
    );
    assert_eq!(run.stdout, "");
    Ok(())
}

#[test]
fn workdir_init_twice_is_fine() -> Result<()> {
    let workdir = Workdir::uninitialised();
    let first = workdir.ok(["workdir", "init"]);
    assert_eq!(first.stdout, "", "quiet by default");
    let layout = [
        "stages",
        "roots",
        "kernels",
        "cache/distfiles",
        "cache/binpkgs",
        "repos",
        "out",
    ];
    for dir in layout {
        assert!(workdir.path().join(dir).is_dir(), "{dir} is created");
    }
    let tree = workdir.scratch().join("small");
    build_small_tree(&tree)?;
    let stage = workdir.import(&tree, "gentoo");

    workdir.ok(["workdir", "init"]);
    for dir in layout {
        assert!(workdir.path().join(dir).is_dir(), "{dir} is still there");
    }
    assert_eq!(
        workdir.stage_names(),
        ["gentoo"],
        "existing volumes are kept"
    );
    assert_eq!(fs::read(stage.join("etc/hostname"))?, b"gentoo\n");
    assert_eq!(workdir.pending(), Vec::<PathBuf>::new());
    Ok(())
}

#[test]
fn commands_before_init_say_to_run_it() {
    let workdir = Workdir::uninitialised();
    let run = workdir.run(["stage", "list"]).expect_code(1);
    run.expect_one_error();
    assert!(
        run.stderr.contains("workdir init"),
        "says what to do: {}",
        run.describe()
    );
    assert!(
        !workdir.path().exists(),
        "a read-only command creates nothing"
    );
}

#[test]
fn workdir_status_json_has_backend_capabilities_usage_volumes() -> Result<()> {
    let workdir = Workdir::new();
    let tree = workdir.scratch().join("small");
    build_small_tree(&tree)?;
    workdir.import(&tree, "gentoo");
    workdir.ok(["root", "create", "build", "--stage", "gentoo"]);

    let status = workdir.ok(["workdir", "status", "--json"]).json();
    assert_eq!(status["backend"], "dir", "{status}");
    assert_eq!(
        status["workdir"],
        workdir.path().to_str().unwrap(),
        "{status}"
    );
    let caps = status["capabilities"]
        .as_object()
        .expect("capabilities is an object");
    assert!(
        !caps.is_empty() && caps.values().all(|v| v.is_boolean()),
        "{status}"
    );
    assert_eq!(
        caps["xattrs"], true,
        "the temp dir's filesystem holds xattrs: {status}"
    );
    assert_eq!(caps["special_files"], true, "{status}");
    let usage = &status["usage"];
    let field = |name: &str| {
        usage[name]
            .as_u64()
            .unwrap_or_else(|| panic!("usage.{name} in {status}"))
    };
    assert!(field("used_bytes") <= field("total_bytes"), "{status}");
    assert!(field("available_bytes") <= field("total_bytes"), "{status}");
    let volumes = &status["volumes"];
    assert_eq!(volumes["stage"], serde_json::json!(["gentoo"]), "{status}");
    assert_eq!(volumes["root"], serde_json::json!(["build"]), "{status}");
    assert_eq!(
        volumes["cache"],
        serde_json::json!(["binpkgs", "distfiles"]),
        "{status}"
    );

    let text = workdir.ok(["workdir", "status"]);
    assert!(
        text.stdout.contains("dir") && text.stdout.contains("gentoo"),
        "{}",
        text.describe()
    );
    assert_eq!(list_dir(&workdir.pending_dir()), Vec::<PathBuf>::new());
    Ok(())
}

/// The system's commands count as run for the root they ran in: a root removed and cloned again
/// from its stage has none of their effects, so `build` runs them again.
#[test]
fn build_runs_the_commands_again_in_a_new_root() -> Result<()> {
    let workdir = Workdir::new();
    let tree = workdir.scratch().join("stage");
    autogentoo_tests::build_busybox_stage(&tree, false)?;
    workdir.import(&tree, "busybox");
    // Kernel sources that make refuses: the build stops at its kernel step, after the commands
    // step has recorded its run.
    let source = workdir.scratch().join("linux");
    fs::create_dir(&source)?;
    fs::write(source.join("Makefile"), "%:\n\tfalse\n")?;
    fs::write(source.join("Kconfig"), "")?;
    workdir.ok([
        OsStr::new("kernel"),
        OsStr::new("import"),
        source.as_os_str(),
        OsStr::new("--name"),
        OsStr::new("src"),
    ]);
    let config = workdir.scratch().join("autogentoo.toml");
    fs::write(
        &config,
        "[systems.web]\nstage = \"busybox\"\nkernel = \"src\"\nkernel_build = \"host\"\n\
         commands = [\"echo ran >> /etc/ran\"]\n",
    )?;
    let build = |pretend: bool| {
        let mut args = vec![
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("build"),
            OsStr::new("web"),
        ];
        if pretend {
            args.push(OsStr::new("--pretend"));
        }
        workdir.run(args)
    };
    build(false).expect_code(1);
    let plan = build(true).expect_code(0);
    assert!(
        plan.stdout.contains("skip commands"),
        "unchanged in the same root: {}",
        plan.describe()
    );
    workdir.ok(["root", "remove", "web"]);
    let plan = build(true).expect_code(0);
    assert!(
        plan.stdout.contains("run  commands"),
        "run again in a new root: {}",
        plan.describe()
    );
    build(false).expect_code(1);
    let ran = fs::read_to_string(workdir.root_path("web").join("etc/ran"))?;
    assert_eq!(ran, "ran\n", "the new root has the commands' effect");
    Ok(())
}
