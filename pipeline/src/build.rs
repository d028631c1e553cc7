//! The steps of one build, in order. Each step decides from its fingerprint whether it runs,
//! says so, runs the hooks around it, and reports what it made.
//!
//! What the commands and the image's emerge print goes to `out/SYSTEM/STEP.log` (and to the
//! observer); a failing command fails the build with the last lines of its log, and leaves the
//! root as it was, for a look inside with `root shell`.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

use autogentoo_core::arch::Arch;
use autogentoo_core::chroot::root_lock::{LockError, LockKind, RootLock};
use autogentoo_core::chroot::root_mounts;
use autogentoo_core::kernel::outputs as kernel_outputs;
use autogentoo_core::pack::{self, initramfs, Layer, PackRequest};
use autogentoo_core::site_config::{SystemConfig, NO_KERNEL};
use autogentoo_core::stage_import::{Silent, ARCH_PROPERTY, SEAL_SNAPSHOT};
use autogentoo_core::storage::workdir::Layout;
use autogentoo_core::storage::{workdir, SnapshotId, StorageError, VolumeId, VolumeKind};
use autogentoo_plugin_api::{HookPoint, Values};

use crate::event::{ArtifactKind, Event, Inputs, Observer, StepName};
use crate::kernel::{self, KernelStep};
use crate::state::{Fingerprint, State};
use crate::step_log::StepLog;
use crate::{image, Outcome, PipelineError, Request, ResultExt as _};

/// Runs the pipeline for `request.system`, reporting to `observer`. Every input is checked
/// before the first step, so that a missing stage, kernel, overlay or packer is found now, not
/// after a clone and a pack.
pub fn run(request: &Request, observer: &mut dyn Observer) -> Result<Outcome, PipelineError> {
    let mut build = Build::prepare(request, observer)?;
    build.workdir()?;
    build.root()?;
    build.commands()?;
    build.image()?;
    let archive = build.pack()?;
    let outcome = match build.kernel(archive.clone())? {
        Some(image) => Outcome {
            kind: "image",
            path: image,
        },
        None => Outcome {
            kind: "initramfs",
            path: archive,
        },
    };
    build.observer.event(&Event::Finished {
        system: request.system.to_owned(),
        kind: outcome.kind.to_owned(),
        path: outcome.path.clone(),
    });
    Ok(outcome)
}

/// What a step that ran made.
struct Done {
    /// For the `after` hooks.
    outputs: Values,
    /// One line for people.
    summary: String,
    artifacts: Vec<(ArtifactKind, PathBuf)>,
}

/// A build under way: what the steps share.
struct Build<'r, 'o> {
    /// This system's build lock, unless pretending.
    _lock: Option<RootLock>,
    req: &'r Request<'r>,
    observer: &'o mut dyn Observer,
    system: SystemConfig,
    stage: VolumeId,
    image_base: Option<VolumeId>,
    kernel: Option<VolumeId>,
    root_name: String,
    root_id: VolumeId,
    root_path: PathBuf,
    out_dir: PathBuf,
    state: State,
    /// Inputs every step's hooks get: `workdir`, `backend`, `out_dir`, `site_dir`.
    common: Values,
    /// The fingerprint of the commands' inputs, part of the image's.
    commands_print: String,
    /// When the root was created, or "not created".
    root_made: String,
    /// Whether the pack step runs (or, with pretend, would).
    pack_runs: bool,
}

impl<'r, 'o> Build<'r, 'o> {
    fn prepare(
        req: &'r Request<'r>,
        observer: &'o mut dyn Observer,
    ) -> Result<Self, PipelineError> {
        let name = req.system;
        let config = req.config;
        let system = config
            .system(name)
            .what(|| format!("cannot build system '{name}'"))?
            .clone();
        let cannot = || format!("system '{name}' cannot be built");
        req.packer.check(config.pack.compression).what(cannot)?;
        let wants_kernel = system.kernel_build != NO_KERNEL;
        if wants_kernel && req.kernel_builder.is_none() {
            return Err(PipelineError::NoKernelBuilder {
                system: name.to_owned(),
                builder: system.kernel_build.clone(),
            });
        }
        let storage = req.storage;
        let stage = VolumeId::new(VolumeKind::Stage, &system.stage).what(cannot)?;
        let Ok(stage_volume) = storage.get(&stage) else {
            return Err(PipelineError::MissingStage {
                system: name.to_owned(),
                stage: system.stage.clone(),
            });
        };
        // The stage's programs (and the image base's) must be of the system's arch, when their
        // import could tell.
        let arch = system.arch(&config.build);
        let same_arch = |stage: &str, volume: &autogentoo_core::storage::Volume| match volume
            .properties
            .get(ARCH_PROPERTY)
        {
            Some(stage_arch) if stage_arch != arch => Err(PipelineError::StageArch {
                system: name.to_owned(),
                arch: arch.to_owned(),
                stage: stage.to_owned(),
                stage_arch: stage_arch.clone(),
            }),
            _ => Ok(()),
        };
        same_arch(&system.stage, &stage_volume)?;
        let image_base = match system.image.as_ref().and_then(|i| i.base.as_deref()) {
            Some(base) => {
                let id = VolumeId::new(VolumeKind::Stage, base).what(cannot)?;
                let Ok(base_volume) = storage.get(&id) else {
                    return Err(PipelineError::MissingImageBase {
                        system: name.to_owned(),
                        stage: base.to_owned(),
                    });
                };
                same_arch(base, &base_volume)?;
                Some(id)
            }
            None => None,
        };
        let kernel = if wants_kernel {
            Some(kernel::kernel_volume(storage, system.kernel.as_deref())?)
        } else {
            None
        };
        for overlay in &system.overlays {
            config.overlay_dir(overlay).what(cannot)?;
        }
        // One build of a system at a time, held until the build ends.
        let lock = if req.pretend {
            None
        } else {
            Some(
                RootLock::exclusive_now(&req.layout, name, LockKind::Build).map_err(|error| {
                    match error {
                        LockError::Storage(source) => PipelineError::Failed {
                            what: cannot(),
                            source: source.into(),
                        },
                        busy => PipelineError::Busy(busy),
                    }
                })?,
            )
        };
        let root_name = system.root_name(name).to_owned();
        let root_id = VolumeId::new(VolumeKind::Root, &root_name).what(cannot)?;
        let out_dir = req.layout.out().join(name);
        let state = State::load(&out_dir.join("build-state.json")).what(cannot)?;
        let mut common = Values::default()
            .with("workdir", &req.layout.workdir)
            .with("backend", storage.backend_name())
            .with("out_dir", &out_dir);
        if let Some(site_dir) = &config.site_dir {
            common.set("site_dir", site_dir);
        }
        let mut steps = vec![StepName::Workdir, StepName::Root, StepName::Commands];
        if system.image.is_some() {
            steps.push(StepName::Image);
        }
        steps.push(StepName::Pack);
        if wants_kernel {
            steps.push(StepName::Kernel);
        }
        let stage_made = storage.get(&stage).what(cannot)?.created;
        let inputs = Inputs {
            stage: format!("{} (created {stage_made})", system.stage),
            repo: repo_in_use(&req.layout, &req.config.mounts)?,
            packages: system
                .image
                .as_ref()
                .map(|image| image.packages.clone())
                .unwrap_or_default(),
        };
        observer.event(&Event::Plan {
            system: name.to_owned(),
            pretend: req.pretend,
            steps,
            inputs,
        });
        Ok(Self {
            _lock: lock,
            req,
            observer,
            system,
            stage,
            image_base,
            kernel,
            root_name,
            root_id,
            root_path: PathBuf::new(),
            out_dir,
            state,
            common,
            commands_print: String::new(),
            root_made: String::new(),
            pack_runs: false,
        })
    }

    /// Says whether `step` runs; true when it is to run now (not with pretend). When the
    /// caller has set the cancel flag (an observer may set it as the step starts), the step
    /// fails before it does anything, and the build stops.
    fn decide(&mut self, step: StepName, run: bool, why: String) -> Result<bool, PipelineError> {
        let event = match (run, self.req.pretend) {
            (false, _) => Event::StepSkipped { step, why },
            (true, true) => Event::StepWouldRun { step, why },
            (true, false) => Event::StepStarted { step, why },
        };
        self.observer.event(&event);
        let runs = run && !self.req.pretend;
        if runs && self.req.cancel.load(Ordering::SeqCst) {
            let error = PipelineError::Stopped {
                system: self.req.system.to_owned(),
                step,
            };
            self.observer.event(&Event::StepFailed {
                step,
                error: error.one_line(),
            });
            return Err(error);
        }
        Ok(runs)
    }

    /// Reports the results a skipped step made in an earlier build, those that are there.
    fn kept(&mut self, step: StepName, artifacts: Vec<(ArtifactKind, PathBuf)>) {
        for (kind, path) in artifacts {
            if path.is_file() {
                self.observer.event(&Event::Artifact {
                    step,
                    kind,
                    path,
                    made: false,
                });
            }
        }
    }

    /// Runs a step that was decided to run: its `before` hooks, `work` (given the layers the
    /// hooks ask to pack), its `after` hooks, then reports what it made; a failure is reported
    /// before it is returned.
    fn execute<T>(
        &mut self,
        step: StepName,
        inputs: Values,
        work: impl FnOnce(&mut Self, Vec<Layer>) -> Result<(T, Done), PipelineError>,
    ) -> Result<T, PipelineError> {
        let started = Instant::now();
        let result = self.hook(HookPoint::Before, step, &inputs, &Values::default());
        let result = result.and_then(|layers| work(self, layers));
        let result = result.and_then(|(value, done)| {
            self.hook(HookPoint::After, step, &inputs, &done.outputs)?;
            Ok((value, done))
        });
        match result {
            Ok((value, done)) => {
                for (kind, path) in done.artifacts {
                    self.observer.event(&Event::Artifact {
                        step,
                        kind,
                        path,
                        made: true,
                    });
                }
                self.observer.event(&Event::StepFinished {
                    step,
                    duration: started.elapsed(),
                    summary: done.summary,
                });
                Ok(value)
            }
            Err(error) => {
                self.observer.event(&Event::StepFailed {
                    step,
                    error: error.one_line(),
                });
                Err(error)
            }
        }
    }

    /// Runs the plugins' hooks; hands back the layers they ask to pack (before `pack` only).
    fn hook(
        &mut self,
        point: HookPoint,
        step: StepName,
        inputs: &Values,
        outputs: &Values,
    ) -> Result<Vec<Layer>, PipelineError> {
        let mut all = self.common.clone();
        for (key, value) in inputs.iter() {
            all.set(key, value);
        }
        let outcomes = self
            .req
            .hooks
            .run(point, step, &all, outputs)
            .map_err(PipelineError::Hook)?;
        let mut layers = Vec::new();
        for plugin in outcomes {
            for text in plugin.outcome.notes {
                self.observer.event(&Event::Note {
                    step,
                    plugin: plugin.plugin.clone(),
                    text,
                });
            }
            if plugin.outcome.layers.is_empty() {
                continue;
            }
            if (point, step) != (HookPoint::Before, StepName::Pack) {
                tracing::warn!(
                    "plugin '{}' asked to pack extra layers {point} {step}; only before pack counts",
                    plugin.plugin
                );
                continue;
            }
            layers.extend(plugin.outcome.layers.into_iter().map(|extra| Layer {
                name: extra.name,
                path: extra.path,
                site: true,
            }));
        }
        Ok(layers)
    }

    /// 1. The workdir.
    fn workdir(&mut self) -> Result<(), PipelineError> {
        let layout = &self.req.layout;
        let initialised = layout.out().is_dir() && layout.repos().is_dir();
        let why = format!(
            "{} ({})",
            layout.workdir.display(),
            self.req.storage.backend_name()
        );
        if self.decide(StepName::Workdir, !initialised, why)? {
            self.execute(StepName::Workdir, Values::default(), |build, _| {
                let layout = &build.req.layout;
                workdir::init(build.req.storage, layout)
                    .what(|| "cannot initialise the workdir".into())?;
                Ok((
                    (),
                    Done {
                        outputs: Values::default(),
                        summary: format!("{} initialised", layout.workdir.display()),
                        artifacts: Vec::new(),
                    },
                ))
            })?;
        }
        Ok(())
    }

    /// 2. The root, cloned from the stage when missing.
    fn root(&mut self) -> Result<(), PipelineError> {
        let storage = self.req.storage;
        let exists = storage.get(&self.root_id).is_ok();
        let why = if exists {
            format!("'{}' exists", self.root_name)
        } else {
            format!(
                "create '{}' from stage '{}'",
                self.root_name, self.system.stage
            )
        };
        if self.decide(StepName::Root, !exists, why)? {
            let inputs = Values::default()
                .with("stage", &self.system.stage)
                .with("root", &self.root_name);
            self.execute(StepName::Root, inputs, |build, _| {
                // A fresh clone has none of the commands' effects, whatever ran in an earlier
                // root.
                build.state.forget("commands");
                let cannot = || format!("cannot create root '{}'", build.root_name);
                let seal = SnapshotId::new(build.stage.clone(), SEAL_SNAPSHOT).what(cannot)?;
                let root = storage.clone_snapshot(&seal, &build.root_id).what(cannot)?;
                Ok((
                    (),
                    Done {
                        outputs: Values::default().with("root_path", &root.path),
                        summary: format!("'{}' at {}", build.root_name, root.path.display()),
                        artifacts: Vec::new(),
                    },
                ))
            })?;
        }
        let pretend = self.req.pretend;
        self.root_path = storage
            .path(&self.root_id)
            .or_else(|e| match e {
                StorageError::NotFound(_) if pretend => Ok(PathBuf::from("(not created yet)")),
                other => Err(other),
            })
            .what(|| format!("cannot find root '{}'", self.root_name))?;
        // The root counts: commands that ran in a root since removed (by hand, say) have not
        // run in its successor.
        self.root_made = storage.get(&self.root_id).map_or_else(
            |_| "not created".to_owned(),
            |root| root.created.to_string(),
        );
        Ok(())
    }

    /// 3. The system's commands inside the root.
    fn commands(&mut self) -> Result<(), PipelineError> {
        let stage_made = self
            .req
            .storage
            .get(&self.stage)
            .what(|| format!("cannot read stage '{}'", self.system.stage))?
            .created;
        self.commands_print = self
            .req
            .hooks
            .mark(Fingerprint::default())
            .text("commands", &self.system.commands.join("\n"))
            .text("root", &self.root_made)
            .text("stage", &format!("{stage_made}"))
            .text(
                "repo",
                &repo_in_use(&self.req.layout, &self.req.config.mounts)?,
            )
            .finish();
        let count = self.system.commands.len();
        let run = count > 0 && !self.state.unchanged("commands", &self.commands_print);
        let why = match (count, run) {
            (0, _) => "none configured".into(),
            (n, true) => format!("{n} command(s) in '{}'", self.root_name),
            (n, false) => format!("{n} command(s), unchanged since they last ran"),
        };
        if !self.decide(StepName::Commands, run, why)? {
            if !self.req.pretend {
                let log = self.out_dir.join("commands.log");
                self.kept(StepName::Commands, vec![(ArtifactKind::StepLog, log)]);
            }
            return Ok(());
        }
        // The image and the pack must see what the commands changed.
        self.state.forget("image");
        self.state.forget("pack");
        let inputs = Values::default()
            .with("root", &self.root_name)
            .with("root_path", &self.root_path)
            .with("commands", self.system.commands.join("\n"));
        self.execute(StepName::Commands, inputs, |build, _| {
            let mut log = StepLog::create(&build.out_dir, StepName::Commands)?;
            for command in &build.system.commands {
                let argv = ["/bin/sh", "-c", command].map(String::from);
                let run = build.req.runner.command(&build.root_name, None, &argv);
                log.run(run, command, &build.root_name, build.observer)?;
            }
            build
                .state
                .record("commands", &build.commands_print)
                .what(|| "cannot record the commands step".into())?;
            Ok((
                (),
                Done {
                    outputs: Values::default().with("log", log.path()),
                    summary: format!("{count} command(s) ran"),
                    artifacts: vec![(ArtifactKind::StepLog, log.path().to_owned())],
                },
            ))
        })
    }

    /// 4. The image tree, for a system that packs one instead of its root.
    fn image(&mut self) -> Result<(), PipelineError> {
        let Some(config) = self.system.image.clone() else {
            return Ok(());
        };
        let tree = image::tree(&self.out_dir);
        let mut print = self
            .req
            .hooks
            .mark(Fingerprint::default())
            .text("packages", &config.packages.join("\n"))
            .text("libraries", &format!("{:?}", config.libraries))
            .text("root", &self.root_made)
            .text("commands", &self.commands_print)
            .text(
                "repo",
                &repo_in_use(&self.req.layout, &self.req.config.mounts)?,
            );
        // The binary packages the image is installed from: their index changes with every
        // package built or rebuilt.
        let arch = Arch::named(self.system.arch(&self.req.config.build));
        let index = workdir::binpkgs_cache(self.req.storage, arch)
            .ok()
            .map(|cache| cache.join("Packages"))
            .filter(|index| index.is_file());
        if let Some(index) = &index {
            print = print
                .file(index, "binary package index")
                .what(|| "cannot fingerprint the image's inputs".into())?;
        }
        let print = print.finish();
        let run = !tree.is_dir() || !self.state.unchanged("image", &print);
        let why = if run {
            format!(
                "{} from binary packages into {}",
                config.packages.join(" "),
                tree.display()
            )
        } else {
            "packages, binary packages and root unchanged".into()
        };
        if !self.decide(StepName::Image, run, why)? {
            if !self.req.pretend {
                let kept = self.image_artifacts();
                self.kept(StepName::Image, kept);
            }
            return Ok(());
        }
        self.state.forget("image");
        self.state.forget("pack");
        let inputs = Values::default()
            .with("root", &self.root_name)
            .with("root_path", &self.root_path)
            .with("packages", config.packages.join(" "));
        self.execute(StepName::Image, inputs, |build, _| {
            let report = image::build(
                build.req.runner,
                build.observer,
                &config,
                &build.root_name,
                &build.root_path,
                &build.out_dir,
            )?;
            build
                .state
                .record("image", &print)
                .what(|| "cannot record the image step".into())?;
            let list = image::package_list(&build.out_dir);
            Ok((
                (),
                Done {
                    outputs: Values::default()
                        .with("image_tree", &report.tree)
                        .with("packages", &list),
                    summary: format!(
                        "{} package(s), {} file(s) copied from the build root for {} program(s) \
                         and libraries",
                        report.packages.len(),
                        report.libraries.copied.len(),
                        report.libraries.programs
                    ),
                    artifacts: build.image_artifacts(),
                },
            ))
        })
    }

    /// The image step's results: its package list and its log.
    fn image_artifacts(&self) -> Vec<(ArtifactKind, PathBuf)> {
        vec![
            (
                ArtifactKind::PackageList,
                image::package_list(&self.out_dir),
            ),
            (ArtifactKind::StepLog, self.out_dir.join("image.log")),
        ]
    }

    /// 5. The initramfs: the root (or the image's base and tree), `common/`, the overlays.
    fn pack(&mut self) -> Result<PathBuf, PipelineError> {
        let req = self.req;
        let config = req.config;
        let compression = config.pack.compression;
        let archive = req.layout.initramfs(&self.root_name, compression);
        let cannot = || format!("cannot pack root '{}'", self.root_name);
        let mut layers = pack::site_layers(
            config,
            &self.root_name,
            &self.root_path,
            &self.system.overlays,
        )
        .what(cannot)?;
        if self.system.image.is_some() {
            // Not the build root: the image's base, then its tree, under the site's layers.
            let mut image_layers = Vec::new();
            if let Some(base) = &self.image_base {
                image_layers.push(Layer {
                    name: format!("stage:{}", base.name()),
                    path: req.storage.path(base).what(cannot)?,
                    site: false,
                });
            }
            image_layers.push(Layer {
                name: format!("image:{}", req.system),
                path: image::tree(&self.out_dir),
                site: false,
            });
            layers.splice(0..1, image_layers);
        }
        let exclude: Vec<PathBuf> = config.pack.exclude.iter().map(PathBuf::from).collect();
        let epoch = std::env::var("SOURCE_DATE_EPOCH").unwrap_or_default();
        let mut print = req
            .hooks
            .mark(Fingerprint::default())
            .text(
                "options",
                &format!(
                    "{} {compression:?} {:?} {} {}",
                    req.packer.name(),
                    config.pack.level,
                    config.pack.rdinit,
                    epoch
                ),
            )
            .text(
                "keep_site_owners",
                &config.pack.keep_site_owners.to_string(),
            );
        for (index, layer) in layers.iter().enumerate() {
            let skip = if index == 0 { exclude.as_slice() } else { &[] };
            print = print
                .text("layer", &layer.name)
                .tree(&layer.path, skip)
                .what(cannot)?;
        }
        let print = print.finish();
        let run = !archive.is_file() || !self.state.unchanged("pack", &print);
        self.pack_runs = run;
        let why = if run {
            format!("{} layer(s) into {}", layers.len(), archive.display())
        } else {
            "root and site files unchanged".into()
        };
        if !self.decide(StepName::Pack, run, why)? {
            if !req.pretend {
                let manifest = initramfs::manifest_path(&archive);
                self.kept(
                    StepName::Pack,
                    vec![
                        (ArtifactKind::Initramfs, archive.clone()),
                        (ArtifactKind::InitramfsManifest, manifest),
                    ],
                );
            }
            return Ok(archive);
        }
        let origin = req
            .storage
            .get(&self.root_id)
            .what(|| format!("cannot read root '{}'", self.root_name))?
            .origin;
        let inputs = Values::default()
            .with("root", &self.root_name)
            .with("root_path", &self.root_path)
            .with(
                "root_origin",
                origin.map_or(String::new(), |o| {
                    format!("{}/{}@{}", o.volume().kind(), o.volume().name(), o.name())
                }),
            )
            .with("archive", &archive)
            .with("packer", req.packer.name())
            .with("compression", compression.to_string());
        self.execute(StepName::Pack, inputs, |build, extra_layers| {
            let request = PackRequest {
                layers: layers.into_iter().chain(extra_layers).collect(),
                exclude,
                rdinit: config.pack.rdinit.clone(),
                keep_site_owners: config.pack.keep_site_owners,
                compression,
                level: config.pack.level,
                source_date_epoch: epoch.trim().parse().ok(),
                threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
                output: archive.clone(),
                progress: &Silent,
                cancel: req.cancel,
            };
            let report = req
                .packer
                .pack(&request)
                .what(|| format!("cannot pack root '{}'", build.root_name))?;
            build
                .state
                .record("pack", &print)
                .what(|| "cannot record the pack step".into())?;
            let mut outputs = Values::default().with("archive", &report.archive);
            let mut artifacts = vec![(ArtifactKind::Initramfs, report.archive.clone())];
            if let Some(manifest) = &report.manifest {
                outputs = outputs.with("manifest", manifest);
                artifacts.push((ArtifactKind::InitramfsManifest, manifest.clone()));
            }
            Ok((
                report.archive.clone(),
                Done {
                    outputs,
                    summary: format!("{}", report.archive.display()),
                    artifacts,
                },
            ))
        })
    }

    /// 6. The kernel, with the initramfs embedded; `None` for a system without one.
    fn kernel(&mut self, archive: PathBuf) -> Result<Option<PathBuf>, PipelineError> {
        let req = self.req;
        let (Some(kernel), Some(builder)) = (self.kernel.clone(), req.kernel_builder) else {
            self.decide(
                StepName::Kernel,
                false,
                format!("kernel_build = \"{NO_KERNEL}\": the system ends with its initramfs"),
            )?;
            return Ok(None);
        };
        let compression = req.config.pack.compression;
        let cannot = || format!("cannot build the kernel of system '{}'", req.system);
        let created = req.storage.get(&kernel).what(cannot)?.created;
        let image = self.out_dir.join(format!("{}.efi", req.system));
        let mut print = req
            .hooks
            .mark(Fingerprint::default())
            .text("kernel", &format!("{} {created}", kernel.name()))
            .text("builder", &self.system.kernel_build)
            .text("cmdline", self.system.cmdline.as_deref().unwrap_or(""))
            .text("compression", &format!("{compression:?}"));
        for fragment in req.config.kernel_fragments(&self.system).what(cannot)? {
            print = print.file(&fragment, "kernel config").what(cannot)?;
        }
        if archive.is_file() {
            print = print.file(&archive, "initramfs").what(cannot)?;
        }
        let print = print.finish();
        // After a real pack the archive is the new one: an identical archive (packs are
        // reproducible) needs no new kernel. With pretend, a pack that would run means a kernel
        // that would.
        let run = (req.pretend && self.pack_runs)
            || !image.is_file()
            || !self.state.unchanged("kernel", &print);
        let why = if run {
            format!(
                "{} from '{}' ({} builder)",
                image.display(),
                kernel.name(),
                self.system.kernel_build
            )
        } else {
            "initramfs, config and sources unchanged".into()
        };
        if !self.decide(StepName::Kernel, run, why)? {
            if !req.pretend {
                let [efi, config, map, manifest] = kernel_outputs(&self.out_dir, req.system);
                self.kept(
                    StepName::Kernel,
                    vec![
                        (ArtifactKind::EfiImage, efi),
                        (ArtifactKind::KernelConfig, config),
                        (ArtifactKind::SystemMap, map),
                        (ArtifactKind::KernelManifest, manifest),
                    ],
                );
            }
            return Ok(Some(image));
        }
        let inputs = Values::default()
            .with("root", &self.root_name)
            .with("kernel", kernel.name())
            .with("initramfs", &archive)
            .with("builder", &self.system.kernel_build)
            .with("cmdline", self.system.cmdline.as_deref().unwrap_or(""));
        self.execute(StepName::Kernel, inputs, |build, _| {
            let step = KernelStep {
                config: req.config,
                storage: req.storage,
                layout: &req.layout,
                system_name: req.system,
                system: &build.system,
                root: &build.root_name,
                kernel: Some(kernel.name()),
                builder,
                initramfs: &archive,
                compression,
                unmount_after: true,
            };
            let report = kernel::build(&step)?;
            build
                .state
                .record("kernel", &print)
                .what(|| "cannot record the kernel step".into())?;
            let outputs = Values::default()
                .with("image", &report.image)
                .with("sha256", &report.sha256)
                .with("config", &report.config)
                .with("system_map", &report.system_map)
                .with("manifest", &report.manifest);
            Ok((
                report.image.clone(),
                Done {
                    outputs,
                    summary: format!("{} (sha256 {})", report.image.display(), report.sha256),
                    artifacts: vec![
                        (ArtifactKind::EfiImage, report.image.clone()),
                        (ArtifactKind::KernelConfig, report.config.clone()),
                        (ArtifactKind::SystemMap, report.system_map.clone()),
                        (ArtifactKind::KernelManifest, report.manifest.clone()),
                    ],
                },
            ))
        })
        .map(Some)
    }
}

/// The repository snapshot roots mount (the one the site config names, else the newest), as
/// the fingerprints see it: its path and modification time, so that an image replaced under
/// the same name counts as a new snapshot.
fn repo_in_use(
    layout: &Layout,
    mounts: &autogentoo_core::site_config::MountsSection,
) -> Result<String, PipelineError> {
    let repos = layout.repos();
    let image = match &mounts.repo_image {
        Some(name) => Some(repos.join(format!("{name}.sqfs"))),
        None => root_mounts::newest_repo_image(&repos).what(|| {
            format!(
                "cannot look for repository snapshots in {}",
                repos.display()
            )
        })?,
    };
    Ok(image
        .map(|path| {
            let modified = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs());
            format!("{} (modified {modified})", path.display())
        })
        .unwrap_or_default())
}
