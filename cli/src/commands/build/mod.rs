//! `autogentoo build`: the standard pipeline for one system of the site config.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use autogentoo_core::packer::PackRequest;
use autogentoo_core::pipeline::{Fingerprint, State};
use autogentoo_core::root_mounts;
use autogentoo_core::root_run;
use autogentoo_core::stage_import::{Silent, SEAL_SNAPSHOT};
use autogentoo_core::storage::{SnapshotId, StorageError, VolumeId, VolumeKind};
use autogentoo_core::workdir;
use autogentoo_plugin_api::Values;
use clap::Args;

use crate::commands::kernel::build::{
    build_kernel, default_initramfs, fragments, kernel_volume, KernelStep,
};
use crate::commands::root::pack::layers;
use crate::context::Context;
use crate::output;

/// Run the standard pipeline for a system of the site config: the workdir, its root (cloned
/// from its stage if missing), the system's commands inside the root, the initramfs (root,
/// common/, overlays), the kernel config and the kernel with the initramfs embedded, and the
/// unmount. Each step is skipped when its inputs are unchanged since it last ran (their hashes
/// are kept in WORKDIR/out/SYSTEM/build-state.json). Plugins' hooks run before and after each
/// step that runs.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The system, as `[systems.NAME]` in the site config
    pub system: String,

    /// Print the plan (each step and whether it would run) and do nothing
    #[arg(long)]
    pub pretend: bool,
}

/// One line of the plan.
#[derive(serde::Serialize)]
struct Step {
    name: &'static str,
    run: bool,
    why: String,
}

pub fn run(ctx: &Context, args: BuildArgs) -> Result<()> {
    let system = ctx.config.system(&args.system)?.clone();
    // Every input is checked before the first step, so that a missing stage, kernel, overlay,
    // packer or builder is found now, not after a clone and a pack.
    let packer = ctx.packer(&ctx.config.pack.packer)?;
    packer.check(ctx.config.pack.compression)?;
    let builder = ctx.kernel_builder(&system.kernel_build)?;
    let storage = ctx.storage()?;
    let stage = VolumeId::new(VolumeKind::Stage, &system.stage)?;
    if storage.get(&stage).is_err() {
        bail!(
            "system '{}' needs stage '{}', which is not imported; run `autogentoo stage import SOURCE --name {}`",
            args.system,
            system.stage,
            system.stage
        );
    }
    let kernel = kernel_volume(&*storage, system.kernel.as_deref())
        .with_context(|| format!("system '{}' cannot be built", args.system))?;
    for overlay in &system.overlays {
        ctx.config.overlay_dir(overlay)?;
    }
    let layout = ctx.layout();
    let root_name = system.root_name(&args.system).to_owned();
    let out_dir = layout.out().join(&args.system);
    let mut state = State::load(&out_dir.join("build-state.json"))?;
    let mut common = Values::default()
        .with("workdir", &layout.workdir)
        .with("backend", storage.backend_name())
        .with("out_dir", &out_dir);
    if let Some(site_dir) = &ctx.config.site_dir {
        common.set("site_dir", site_dir);
    }
    let hooks = ctx.plugins.step_hooks(&args.system, common, ctx.quiet);
    let mut plan: Vec<Step> = Vec::new();
    let mut say = |step: Step, pretend: bool| {
        let verb = if step.run { "run " } else { "skip" };
        let line = format!("{verb} {:<8} {}", step.name, step.why);
        // The plan is the output of --pretend; otherwise it tells on stderr what happens.
        if pretend && !ctx.json {
            println!("{line}");
        } else if !pretend && !ctx.quiet {
            eprintln!("{line}");
        }
        plan.push(step);
    };

    // 1. The workdir.
    let initialised = layout.out().is_dir() && layout.repos().is_dir();
    say(
        Step {
            name: "workdir",
            run: !initialised,
            why: format!("{} ({})", layout.workdir.display(), storage.backend_name()),
        },
        args.pretend,
    );
    if !initialised && !args.pretend {
        hooks.before("workdir", &Values::default())?;
        workdir::init(&*storage, &layout).context("cannot initialise the workdir")?;
        hooks.after("workdir", &Values::default(), &Values::default())?;
    }

    // 2. The root, cloned from the stage when missing.
    let root_id = VolumeId::new(VolumeKind::Root, &root_name)?;
    let root_exists = storage.get(&root_id).is_ok();
    say(
        Step {
            name: "root",
            run: !root_exists,
            why: if root_exists {
                format!("'{root_name}' exists")
            } else {
                format!("create '{root_name}' from stage '{}'", system.stage)
            },
        },
        args.pretend,
    );
    if !root_exists && !args.pretend {
        let inputs = Values::default()
            .with("stage", &system.stage)
            .with("root", &root_name);
        hooks.before("root", &inputs)?;
        // A fresh clone has none of the commands' effects, whatever ran in an earlier root.
        state.forget("commands");
        let root =
            storage.clone_snapshot(&SnapshotId::new(stage.clone(), SEAL_SNAPSHOT)?, &root_id)?;
        hooks.after(
            "root",
            &inputs,
            &Values::default().with("root_path", &root.path),
        )?;
    }
    let root_path = storage.path(&root_id).or_else(|e| match e {
        StorageError::NotFound(_) if args.pretend => Ok(PathBuf::from("(not created yet)")),
        other => Err(other),
    })?;

    // 3. The system's commands inside the root.
    let repo = root_mounts::newest_repo_image(&layout.repos())?;
    // The root counts: commands that ran in a root since removed (by hand, say) have not run in
    // its successor.
    let root_made = storage.get(&root_id).map_or_else(
        |_| "not created".to_owned(),
        |root| root.created.to_string(),
    );
    let commands_print = hooks
        .mark(Fingerprint::default())
        .text("commands", &system.commands.join("\n"))
        .text("root", &root_made)
        .text("stage", &format!("{}", storage.get(&stage)?.created))
        .text(
            "repo",
            &repo
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        )
        .finish();
    let run_commands = !system.commands.is_empty() && !state.unchanged("commands", &commands_print);
    say(
        Step {
            name: "commands",
            run: run_commands,
            why: match (system.commands.len(), run_commands) {
                (0, _) => "none configured".into(),
                (n, true) => format!("{n} command(s) in '{root_name}'"),
                (n, false) => format!("{n} command(s), unchanged since they last ran"),
            },
        },
        args.pretend,
    );
    if run_commands && !args.pretend {
        // The pack and kernel steps must see what the commands changed.
        state.forget("pack");
        let inputs = Values::default()
            .with("root", &root_name)
            .with("root_path", &root_path)
            .with("commands", system.commands.join("\n"));
        hooks.before("commands", &inputs)?;
        for command in &system.commands {
            let mut run = ctx.reinvoke();
            run.args(["root", "run", &root_name, "--", "/bin/sh", "-c", command]);
            // If we are killed, so is the command, and everything it started in the root.
            root_run::tie_to_us(&mut run)?;
            let status = run.status().context("cannot start `root run`")?;
            if !status.success() {
                bail!("`{command}` failed inside root '{root_name}' ({status})");
            }
        }
        hooks.after("commands", &inputs, &Values::default())?;
        state.record("commands", &commands_print)?;
    }

    // 4. The initramfs.
    let compression = ctx.config.pack.compression;
    let archive = default_initramfs(ctx, &root_name, compression);
    let layers = layers(ctx, &root_name, &root_path, &system.overlays)?;
    let exclude: Vec<PathBuf> = ctx.config.pack.exclude.iter().map(PathBuf::from).collect();
    let epoch = std::env::var("SOURCE_DATE_EPOCH").unwrap_or_default();
    let mut pack_print = hooks
        .mark(Fingerprint::default())
        .text(
            "options",
            &format!(
                "{} {compression:?} {:?} {} {}",
                packer.name(),
                ctx.config.pack.level,
                ctx.config.pack.rdinit,
                epoch
            ),
        )
        .text(
            "keep_site_owners",
            &ctx.config.pack.keep_site_owners.to_string(),
        );
    for (index, layer) in layers.iter().enumerate() {
        let skip = if index == 0 { exclude.as_slice() } else { &[] };
        pack_print = pack_print
            .text("layer", &layer.name)
            .tree(&layer.path, skip)?;
    }
    let pack_print = pack_print.finish();
    let run_pack = !archive.is_file() || !state.unchanged("pack", &pack_print);
    say(
        Step {
            name: "pack",
            run: run_pack,
            why: if run_pack {
                format!("{} layer(s) into {}", layers.len(), archive.display())
            } else {
                "root and site files unchanged".into()
            },
        },
        args.pretend,
    );
    if run_pack && !args.pretend {
        let origin = storage.get(&root_id)?.origin;
        let inputs = Values::default()
            .with("root", &root_name)
            .with("root_path", &root_path)
            .with(
                "root_origin",
                origin.map_or(String::new(), |o| {
                    format!("{}/{}@{}", o.volume().kind(), o.volume().name(), o.name())
                }),
            )
            .with("archive", &archive)
            .with("packer", packer.name())
            .with("compression", compression.to_string());
        let extra_layers = hooks.before("pack", &inputs)?;
        let cancel = crate::interrupt::cancel_flag()?;
        let request = PackRequest {
            layers: layers.iter().cloned().chain(extra_layers).collect(),
            exclude,
            rdinit: ctx.config.pack.rdinit.clone(),
            keep_site_owners: ctx.config.pack.keep_site_owners,
            compression,
            level: ctx.config.pack.level,
            source_date_epoch: epoch.trim().parse().ok(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            output: archive.clone(),
            progress: &Silent,
            cancel: &cancel,
        };
        let report = packer
            .pack(&request)
            .with_context(|| format!("cannot pack root '{root_name}'"))?;
        let mut outputs = Values::default().with("archive", &report.archive);
        if let Some(manifest) = &report.manifest {
            outputs = outputs.with("manifest", manifest);
        }
        hooks.after("pack", &inputs, &outputs)?;
        state.record("pack", &pack_print)?;
    }

    // 5. The kernel, with the initramfs embedded.
    let kernel_created = storage.get(&kernel)?.created;
    let image = out_dir.join(format!("{}.efi", args.system));
    let mut kernel_print = hooks
        .mark(Fingerprint::default())
        .text("kernel", &format!("{} {kernel_created}", kernel.name()))
        .text("builder", &system.kernel_build)
        .text("cmdline", system.cmdline.as_deref().unwrap_or(""))
        .text("compression", &format!("{compression:?}"));
    for fragment in fragments(ctx, &system)? {
        kernel_print = kernel_print.file(&fragment, "kernel config")?;
    }
    if archive.is_file() {
        kernel_print = kernel_print.file(&archive, "initramfs")?;
    }
    let kernel_print = kernel_print.finish();
    // After a real pack the archive is the new one: an identical archive (packs are
    // reproducible) needs no new kernel.
    let run_kernel =
        (args.pretend && run_pack) || !image.is_file() || !state.unchanged("kernel", &kernel_print);
    say(
        Step {
            name: "kernel",
            run: run_kernel,
            why: if run_kernel {
                format!(
                    "{} from '{}' ({} builder)",
                    image.display(),
                    kernel.name(),
                    system.kernel_build
                )
            } else {
                "initramfs, config and sources unchanged".into()
            },
        },
        args.pretend,
    );
    if run_kernel && !args.pretend {
        let inputs = Values::default()
            .with("root", &root_name)
            .with("kernel", kernel.name())
            .with("initramfs", &archive)
            .with("builder", &system.kernel_build)
            .with("cmdline", system.cmdline.as_deref().unwrap_or(""));
        hooks.before("kernel", &inputs)?;
        let job = KernelStep {
            system_name: &args.system,
            system: &system,
            root: &root_name,
            kernel: Some(kernel.name()),
            builder: &*builder,
            initramfs: &archive,
            compression,
            unmount_after: true,
        };
        let report = build_kernel(ctx, &job)?;
        let outputs = Values::default()
            .with("image", &report.image)
            .with("sha256", &report.sha256)
            .with("config", &report.config)
            .with("system_map", &report.system_map)
            .with("manifest", &report.manifest);
        hooks.after("kernel", &inputs, &outputs)?;
        state.record("kernel", &kernel_print)?;
        if !ctx.quiet {
            eprintln!(
                "built {} (sha256 {})",
                report.image.display(),
                report.sha256
            );
        }
    }
    if ctx.json {
        output::json(&serde_json::json!({
            "system": args.system,
            "pretend": args.pretend,
            "image": image,
            "steps": plan,
        }));
    } else if !args.pretend {
        println!("{}", image.display());
    }
    Ok(())
}
