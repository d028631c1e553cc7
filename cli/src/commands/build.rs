//! `autogentoo build`: the standard pipeline (the `autogentoo-pipeline` crate) for one system
//! of the site config, its events shown as lines, or with --json as one JSON object per line.

use std::io::Write;

use anyhow::Result;
use autogentoo_core::site_config::NO_KERNEL;
use autogentoo_db::{BuildInfo, Recorder};
use autogentoo_pipeline::{Event, Observer, Request, StepName};
use clap::Args;

use crate::context::Context;
use crate::interrupt::BuildInterrupt;

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
/// `kernel_build = "none"` stops at the initramfs. With --json, stdout has one JSON object per
/// event (`plan`, `step_started`, `step_skipped`, `log`, `artifact`, `step_finished`, …,
/// `finished`).
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The system, as `[systems.NAME]` in the site config
    pub system: String,

    /// Print the plan (each step and whether it would run) and do nothing
    #[arg(long)]
    pub pretend: bool,
}

pub fn run(ctx: &Context, args: BuildArgs) -> Result<()> {
    let system = ctx.config.system(&args.system)?;
    let packer = ctx.packer(&ctx.config.pack.packer)?;
    let builder = if system.kernel_build == NO_KERNEL {
        None
    } else {
        Some(ctx.kernel_builder(&system.kernel_build)?)
    };
    let storage = ctx.storage()?;
    let hooks = ctx.plugins.step_hooks(&args.system);
    let interrupt = BuildInterrupt::install()?;
    let request = Request {
        system: &args.system,
        config: &ctx.config,
        storage: &*storage,
        layout: ctx.layout(),
        packer: &*packer,
        kernel_builder: builder.as_deref(),
        hooks: &hooks,
        runner: ctx,
        pretend: args.pretend,
        cancel: interrupt.cancel(),
    };
    let shown = Shown {
        ctx,
        pretend: args.pretend,
        interrupt: &interrupt,
    };
    // Every build that runs is recorded; a pretend one changes nothing, the database neither.
    let recorder = if args.pretend {
        None
    } else {
        let build = BuildInfo {
            system: args.system.clone(),
            started_by: crate::context::started_by(),
            config_hash: ctx.config_hash()?,
            out_root: ctx.layout().out(),
        };
        Some(Recorder::start(
            ctx.database_location()?,
            build,
            interrupt.cancel_handle(),
        )?)
    };
    // The recorder sees each event first: a step is shown as started once it is recorded.
    let mut observers = (recorder, shown);
    let result = autogentoo_pipeline::run(&request, &mut observers);
    let (recorder, _) = observers;
    let recorded = match recorder {
        Some(recorder) => recorder.finish(result.as_ref().map(drop))?,
        None => None,
    };
    let outcome = result?;
    if let (Some(number), false) = (recorded, ctx.quiet || ctx.json) {
        eprintln!(
            "recorded as build {number} of '{}' (`autogentoo builds show {} {number}`)",
            args.system, args.system
        );
    }
    if !ctx.json && !args.pretend {
        println!("{}", outcome.path.display());
    }
    Ok(())
}

/// Shows a build's events: the plan's `run`/`skip` lines (on stdout with --pretend, else on
/// stderr), plugins' notes, each step's end, and with -v what commands print in the root.
struct Shown<'a> {
    ctx: &'a Context,
    pretend: bool,
    interrupt: &'a BuildInterrupt,
}

impl Observer for Shown<'_> {
    fn event(&mut self, event: &Event) {
        match event {
            Event::StepStarted { step, .. } => self.interrupt.set_polled(*step == StepName::Pack),
            Event::StepFinished { .. } | Event::StepFailed { .. } => {
                self.interrupt.set_polled(false)
            }
            _ => {}
        }
        if self.ctx.json {
            let line = serde_json::to_string(event).expect("an event serialises");
            // Output is a convenience to the build: a closed stdout does not stop it.
            let _ = writeln!(std::io::stdout(), "{line}");
            return;
        }
        let line = match event {
            Event::StepStarted { step, why } | Event::StepWouldRun { step, why } => {
                format!("run  {step:<8} {why}")
            }
            Event::StepSkipped { step, why } => format!("skip {step:<8} {why}"),
            Event::Note { step, plugin, text } => format!("note {step:<8} {plugin}: {text}"),
            Event::StepFinished {
                step,
                duration,
                summary,
            } => format!("done {step:<8} {summary} ({:.1} s)", duration.as_secs_f64()),
            Event::Log { line, .. } if self.ctx.verbose => line.clone(),
            _ => return,
        };
        if self.pretend {
            println!("{line}");
        } else if !self.ctx.quiet || matches!(event, Event::Log { .. }) {
            eprintln!("{line}");
        }
    }
}
