//! The pipeline as a library, run as a server or a worker would run it: no command line in
//! between, its events to an observer of the caller's. And `build --json`, which prints the
//! same events, one JSON object per line.
//!
//! The system is quick (a busybox stage, two commands, no kernel), so every step's events are
//! seen in a few seconds.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;

use anyhow::Result;
use autogentoo_backend_dir::DirStorage;
use autogentoo_core::pack::initramfs::Newc;
use autogentoo_core::site_config::SiteConfig;
use autogentoo_core::storage::workdir::Layout;
use autogentoo_pipeline::{
    ArtifactKind, Event, NoHooks, PipelineError, Request, RootRunner, StepName,
};
use autogentoo_tests::{
    busybox_workdir, isolated_binary, unpack_initramfs, Workdir, QUICK_SYSTEMS,
};

/// A workdir with the busybox stage imported, and a site config of quick systems.
fn site() -> Result<(Workdir, PathBuf)> {
    let workdir = busybox_workdir()?;
    let config = workdir.scratch().join("autogentoo.toml");
    fs::write(&config, QUICK_SYSTEMS)?;
    Ok((workdir, config))
}

/// Commands in roots through `root run` of the binary under test, as the command line does it.
struct ThroughTheBinary<'a> {
    workdir: &'a Path,
    config: &'a Path,
}

impl RootRunner for ThroughTheBinary<'_> {
    fn command(&self, root: &str, image: Option<&Path>, argv: &[String]) -> Command {
        let mut command = isolated_binary();
        command
            .args(["--backend", "dir", "--workdir"])
            .arg(self.workdir)
            .arg("--config")
            .arg(self.config)
            .args(["root", "run", root]);
        if let Some(image) = image {
            command.arg("--image").arg(image);
        }
        command.arg("--").args(argv);
        command
    }
}

/// Builds `system` with the library; returns its outcome and events.
fn build(
    workdir: &Workdir,
    config_path: &Path,
    system: &str,
) -> (
    Result<autogentoo_pipeline::Outcome, PipelineError>,
    Vec<Event>,
) {
    let config = SiteConfig::load(config_path).expect("the site config loads");
    let storage = DirStorage::open(workdir.path()).expect("the workdir opens");
    let cancel = AtomicBool::new(false);
    let runner = ThroughTheBinary {
        workdir: workdir.path(),
        config: config_path,
    };
    let request = Request {
        system,
        config: &config,
        storage: &storage,
        layout: Layout::new(workdir.path()),
        packer: &Newc,
        kernel_builder: None,
        hooks: &NoHooks,
        runner: &runner,
        pretend: false,
        cancel: &cancel,
    };
    let mut events: Vec<Event> = Vec::new();
    let outcome = autogentoo_pipeline::run(&request, &mut events);
    (outcome, events)
}

/// Each step event as `VERB STEP` (`started root`, `skipped kernel`, …), in order.
fn step_events(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::StepStarted { step, .. } => Some(format!("started {step}")),
            Event::StepWouldRun { step, .. } => Some(format!("would-run {step}")),
            Event::StepSkipped { step, .. } => Some(format!("skipped {step}")),
            Event::StepFinished { step, .. } => Some(format!("finished {step}")),
            Event::StepFailed { step, .. } => Some(format!("failed {step}")),
            _ => None,
        })
        .collect()
}

/// The artifacts the events report as made by the build (or kept from an earlier one).
fn artifacts(events: &[Event], made_now: bool) -> Vec<(ArtifactKind, PathBuf)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Artifact {
                kind, path, made, ..
            } if *made == made_now => Some((*kind, path.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_system_without_a_kernel_builds_through_the_library_and_reports_each_step() -> Result<()> {
    let (workdir, config) = site()?;
    let (outcome, events) = build(&workdir, &config, "quick");
    let outcome = outcome?;
    let archive = workdir.path().join("out/quick/initramfs.cpio.gz");
    assert_eq!(outcome.kind, "initramfs");
    assert_eq!(outcome.path, archive);

    match events.first() {
        Some(Event::Plan {
            system,
            pretend,
            steps,
            inputs,
        }) => {
            assert_eq!((system.as_str(), pretend), ("quick", &false));
            use StepName::*;
            assert_eq!(steps, &[Workdir, Root, Commands, Pack]);
            assert!(inputs.stage.starts_with("busybox (created "), "{inputs:?}");
            assert!(inputs.packages.is_empty(), "{inputs:?}");
        }
        other => panic!("a build starts with its plan, not {other:?}"),
    }
    assert_eq!(
        step_events(&events),
        [
            "skipped workdir",
            "started root",
            "finished root",
            "started commands",
            "finished commands",
            "started pack",
            "finished pack",
            "skipped kernel",
        ],
        "{events:#?}"
    );
    // What the commands printed came as log lines of their step, and is in the step's log.
    assert!(
        events.contains(&Event::Log {
            step: StepName::Commands,
            line: "a line for the log".into()
        }),
        "{events:#?}"
    );
    let log = workdir.path().join("out/quick/commands.log");
    assert!(fs::read_to_string(&log)?.contains("$ echo a line for the log\na line for the log\n"));
    let built = artifacts(&events, true);
    assert_eq!(
        built,
        [
            (ArtifactKind::StepLog, log),
            (ArtifactKind::Initramfs, archive.clone()),
            (
                ArtifactKind::InitramfsManifest,
                workdir
                    .path()
                    .join("out/quick/initramfs.cpio.gz.manifest.json")
            ),
        ]
    );
    for (_, path) in &built {
        assert!(path.is_file(), "{} was made", path.display());
    }
    assert_eq!(
        events.last(),
        Some(&Event::Finished {
            system: "quick".into(),
            kind: "initramfs".into(),
            path: archive.clone(),
        })
    );
    // The archive holds what the commands did, as GNU cpio reads it.
    let unpacked = workdir.scratch().join("unpacked");
    unpack_initramfs(&archive, &unpacked)?;
    assert_eq!(fs::read_to_string(unpacked.join("etc/built"))?, "built\n");

    // Nothing changed: every step is skipped, and the outcome is the same archive.
    let (again, events) = build(&workdir, &config, "quick");
    assert_eq!(again?.path, archive);
    assert_eq!(
        step_events(&events),
        [
            "skipped workdir",
            "skipped root",
            "skipped commands",
            "skipped pack",
            "skipped kernel"
        ],
        "{events:#?}"
    );
    // Its results are the earlier build's, reported as kept.
    assert!(artifacts(&events, true).is_empty(), "{events:#?}");
    assert_eq!(artifacts(&events, false), built);
    Ok(())
}

#[test]
fn a_failing_command_is_a_typed_error_and_a_failed_step_and_nothing_is_packed() -> Result<()> {
    let (workdir, config) = site()?;
    let (outcome, events) = build(&workdir, &config, "fails");
    let log = workdir.path().join("out/fails/commands.log");
    match outcome {
        Err(PipelineError::CommandFailed {
            command,
            root,
            status,
            log: at,
            tail,
        }) => {
            assert_eq!(command, "echo about to fail; exit 3");
            assert_eq!(root, "fails");
            assert_eq!(status.code(), Some(3));
            assert_eq!(at, log);
            assert_eq!(tail, "about to fail", "the failed command's last lines");
        }
        other => panic!("expected the command's failure, got {other:?}"),
    }
    assert_eq!(
        step_events(&events),
        [
            "skipped workdir",
            "started root",
            "finished root",
            "started commands",
            "failed commands"
        ],
        "{events:#?}"
    );
    let failed = events.iter().find_map(|event| match event {
        Event::StepFailed { error, .. } => Some(error.clone()),
        _ => None,
    });
    assert!(
        failed.is_some_and(
            |error| error.contains("`echo about to fail; exit 3` failed inside root 'fails'")
        ),
        "{events:#?}"
    );
    assert!(!workdir.path().join("out/fails/initramfs.cpio.gz").exists());
    assert!(
        !events
            .iter()
            .any(|event| matches!(event, Event::Finished { .. })),
        "{events:#?}"
    );
    Ok(())
}

#[test]
fn build_json_prints_each_event_as_one_json_object_per_line() -> Result<()> {
    let (workdir, config) = site()?;
    let config = config.as_os_str();
    let events = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec![OsStr::new("--config"), config, OsStr::new("--json")];
        all.extend(args.iter().map(OsStr::new));
        let run = workdir.ok(all);
        run.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"))
            })
            .collect()
    };
    let kinds = |events: &[serde_json::Value]| -> Vec<String> {
        events
            .iter()
            .map(|event| {
                let kind = event["event"].as_str().expect("every event has a kind");
                match event["step"].as_str() {
                    Some(step) => format!("{kind} {step}"),
                    None => kind.to_owned(),
                }
            })
            .collect()
    };

    // With --pretend: the plan, and nothing made.
    let plan = events(&["build", "quick", "--pretend"]);
    assert_eq!(
        kinds(&plan),
        [
            "plan",
            "step_skipped workdir",
            "step_would_run root",
            "step_would_run commands",
            "step_would_run pack",
            "step_skipped kernel",
            "finished"
        ],
        "{plan:#?}"
    );
    assert!(!workdir.path().join("out/quick").exists());

    let built = events(&["build", "quick"]);
    let archive = workdir.path().join("out/quick/initramfs.cpio.gz");
    assert_eq!(
        kinds(&built),
        [
            "plan",
            "step_skipped workdir",
            "step_started root",
            "step_finished root",
            "step_started commands",
            "log commands",
            "log commands",
            "log commands",
            "artifact commands",
            "step_finished commands",
            "step_started pack",
            "artifact pack",
            "artifact pack",
            "step_finished pack",
            "step_skipped kernel",
            "finished"
        ],
        "{built:#?}"
    );
    assert_eq!(
        built[0]["steps"],
        serde_json::json!(["workdir", "root", "commands", "pack"])
    );
    assert_eq!(built[5]["line"], "$ echo built > /etc/built");
    assert_eq!(built[7]["line"], "a line for the log");
    assert_eq!(built[11]["kind"], "initramfs");
    assert_eq!(built[11]["path"], archive.to_str().unwrap());
    assert!(built[13]["duration"].is_u64(), "{}", built[13]);
    assert_eq!(built[15]["path"], archive.to_str().unwrap());
    assert!(archive.is_file());
    Ok(())
}
