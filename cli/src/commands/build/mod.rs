//! `autogentoo build`: the standard pipeline for one system of the site config.

mod image;
mod step_log;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use autogentoo_core::chroot::root_mounts;
use autogentoo_core::pack::Layer;
use autogentoo_core::pack::PackRequest;
use autogentoo_core::pipeline::{Fingerprint, State};
use autogentoo_core::site_config::NO_KERNEL;
use autogentoo_core::stage_import::{Silent, SEAL_SNAPSHOT};
use autogentoo_core::storage::workdir;
use autogentoo_core::storage::{SnapshotId, StorageError, VolumeId, VolumeKind};
use autogentoo_plugin_api::Values;
use clap::Args;

use crate::commands::kernel::build::{
    build_kernel, default_initramfs, fragments, kernel_volume, KernelStep,
};
use crate::commands::root::pack::layers;
use crate::context::Context;
use crate::output;
use step_log::StepLog;

/// Run the standard pipeline for a system of the site config: the workdir, its root (cloned
/// from its stage if missing), the system's commands inside the root, the image tree (for a
/// system with `[systems.NAME.image]`), the initramfs (the root or the image, then common/ and
/// the overlays), the kernel config and the kernel with the initramfs embedded, and the
/// unmount. Each step is skipped when its inputs are unchanged since it last ran (their hashes
/// are kept in WORKDIR/out/SYSTEM/build-state.json). Plugins' hooks run before and after each
/// step that runs.
///
/// What the commands and the image's emerge print goes to WORKDIR/out/SYSTEM/STEP.log (and to
/// the terminal with -v); a failing command fails the build with the last lines of its log,
/// and leaves the root as it was, for a look inside with `root shell`. A system with
/// `kernel_build = "none"` stops at the initramfs.
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
    let wants_kernel = system.kernel_build != NO_KERNEL;
    let builder = if wants_kernel {
        Some(ctx.kernel_builder(&system.kernel_build)?)
    } else {
        None
    };
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
    let image_base = match system
        .image
        .as_ref()
        .and_then(|image| image.base.as_deref())
    {
        Some(base) => {
            let id = VolumeId::new(VolumeKind::Stage, base)?;
            if storage.get(&id).is_err() {
                bail!(
                    "the image of system '{}' starts from stage '{base}', which is not imported; \
                     run `autogentoo stage import SOURCE --name {base}`",
                    args.system
                );
            }
            Some(id)
        }
        None => None,
    };
    let kernel = if wants_kernel {
        Some(
            kernel_volume(&*storage, system.kernel.as_deref())
                .with_context(|| format!("system '{}' cannot be built", args.system))?,
        )
    } else {
        None
    };
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
        // The image is made from what the commands built.
        state.forget("image");
        hooks.before("commands", &inputs)?;
        let mut log = StepLog::create(&out_dir, "commands", ctx.verbose)?;
        for command in &system.commands {
            let mut run = ctx.reinvoke();
            run.args(["root", "run", &root_name, "--", "/bin/sh", "-c", command]);
            log.run(run, command, &root_name)?;
        }
        hooks.after(
            "commands",
            &inputs,
            &Values::default().with("log", log.path()),
        )?;
        state.record("commands", &commands_print)?;
    }

    // 4. The image tree, for a system that packs one instead of its root.
    let binpkgs_index = storage
        .path(&VolumeId::new(VolumeKind::Cache, workdir::CACHES[1])?)
        .map(|cache| cache.join("Packages"))
        .ok();
    if let Some(image_config) = &system.image {
        let tree = image::tree(&out_dir);
        let mut image_print = hooks
            .mark(Fingerprint::default())
            .text("packages", &image_config.packages.join("\n"))
            .text("libraries", &format!("{:?}", image_config.libraries))
            .text("root", &root_made)
            .text("commands", &commands_print)
            .text(
                "repo",
                &repo
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
        // The binary packages the image is installed from: their index changes with every
        // package built or rebuilt.
        if let Some(index) = binpkgs_index.as_deref().filter(|index| index.is_file()) {
            image_print = image_print.file(index, "binary package index")?;
        }
        let image_print = image_print.finish();
        let run_image = !tree.is_dir() || !state.unchanged("image", &image_print);
        say(
            Step {
                name: "image",
                run: run_image,
                why: if run_image {
                    format!(
                        "{} from binary packages into {}",
                        image_config.packages.join(" "),
                        tree.display()
                    )
                } else {
                    "packages, binary packages and root unchanged".into()
                },
            },
            args.pretend,
        );
        if run_image && !args.pretend {
            state.forget("image");
            state.forget("pack");
            let inputs = Values::default()
                .with("root", &root_name)
                .with("root_path", &root_path)
                .with("packages", image_config.packages.join(" "));
            hooks.before("image", &inputs)?;
            let report = image::build(ctx, image_config, &root_name, &root_path, &out_dir)
                .with_context(|| format!("step image of system '{}' failed", args.system))?;
            hooks.after(
                "image",
                &inputs,
                &Values::default()
                    .with("image_tree", &report.tree)
                    .with("packages", image::package_list(&out_dir)),
            )?;
            if !ctx.quiet {
                eprintln!(
                    "image: {} package(s), {} file(s) copied from the build root for {} program(s) and libraries",
                    report.packages.len(),
                    report.libraries.copied.len(),
                    report.libraries.programs
                );
            }
            state.record("image", &image_print)?;
        }
    }

    // 5. The initramfs.
    let compression = ctx.config.pack.compression;
    let archive = default_initramfs(ctx, &root_name, compression);
    let mut layers = layers(ctx, &root_name, &root_path, &system.overlays)?;
    if system.image.is_some() {
        // Not the build root: the image's base, then its tree, under the site's layers.
        let mut image_layers = Vec::new();
        if let Some(base) = &image_base {
            image_layers.push(Layer {
                name: format!("stage:{}", base.name()),
                path: storage.path(base)?,
                site: false,
            });
        }
        image_layers.push(Layer {
            name: format!("image:{}", args.system),
            path: image::tree(&out_dir),
            site: false,
        });
        layers.splice(0..1, image_layers);
    }
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

    // 6. The kernel, with the initramfs embedded.
    let (Some(kernel), Some(builder)) = (kernel, builder) else {
        say(
            Step {
                name: "kernel",
                run: false,
                why: format!("kernel_build = \"{NO_KERNEL}\": the system ends with its initramfs"),
            },
            args.pretend,
        );
        print_outcome(ctx, &args, ("initramfs", &archive), &plan);
        return Ok(());
    };
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
    print_outcome(ctx, &args, ("image", &image), &plan);
    Ok(())
}

/// Prints what the build made (the last step's output, `(key, path)`), or with --json the
/// plan and that output.
fn print_outcome(ctx: &Context, args: &BuildArgs, (key, made): (&str, &Path), plan: &[Step]) {
    if ctx.json {
        output::json(&serde_json::json!({
            "system": args.system,
            "pretend": args.pretend,
            key: made,
            "steps": plan,
        }));
    } else if !args.pretend {
        println!("{}", made.display());
    }
}
