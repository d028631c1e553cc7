//! The recorder: an observer of the pipeline that writes a build into the database as it runs
//! (the build when its plan comes, each step as it ends, with what its commands printed), and
//! keeps its results in `out/SYSTEM/N/`: each file hard-linked, so a file no step changed is
//! one inode shared with the build before, and last week's image is still there after this
//! week's builds replaced it in `out/SYSTEM/`.
//!
//! The database is opened and written on a thread of the recorder's own, so that a build does
//! not wait for it: the opening, the migration check and the build's first record happen while
//! the pipeline looks at the root. The build waits for it twice: as its first step that runs
//! starts (so that a database that cannot record stops the build before it does any work), and
//! at its end, while its results are kept (under the build lock, which the pipeline holds until
//! it returns).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use autogentoo_pipeline::{ArtifactKind, Event, Observer, PipelineError, StepName};
use sha2::{Digest, Sha256};

use crate::location::Location;
use crate::{Artifact, Batch, Database, DbError, End, Outcome, Step};

/// How hard the logs are compressed: zstd's default, a fraction of a second for a long emerge.
pub(crate) const LOG_LEVEL: i32 = 3;

/// What a build is, besides its events: for its record.
#[derive(Clone, Debug)]
pub struct BuildInfo {
    pub system: String,
    /// Who started it, and through what.
    pub started_by: String,
    /// The SHA-256 of the site config.
    pub config_hash: String,
    /// Where results are kept: WORKDIR/out.
    pub out_root: PathBuf,
}

/// What the pipeline's thread hands the recorder's.
enum Message {
    Event(Event),
    /// Answered once everything sent before it is written.
    Barrier(mpsc::SyncSender<()>),
    /// The pipeline returned, with its error on one line if it failed.
    End(Option<String>),
}

/// Records one build of one system, on a thread of its own.
pub struct Recorder {
    sender: mpsc::Sender<Message>,
    worker: JoinHandle<Result<Option<i64>, DbError>>,
    /// Whether a step has started: the first waits until the build is recorded.
    step_started: bool,
}

impl Recorder {
    /// Starts recording a build into the database at `location` (opened on the recorder's
    /// thread). When recording fails, it sets `stop`, the pipeline's cancel flag: a build that
    /// cannot be recorded stops before its next step, and [`Recorder::finish`] says why.
    pub fn start(
        location: Location,
        build: BuildInfo,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, DbError> {
        let (sender, receiver) = mpsc::channel();
        let worker = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || {
                let result = Database::open(&location)
                    .and_then(|db| Writer::new(&db, build).serve(&receiver));
                if result.is_err() {
                    stop.store(true, Ordering::SeqCst);
                }
                result
            })
            .map_err(DbError::Runtime)?;
        Ok(Self {
            sender,
            worker,
            step_started: false,
        })
    }

    /// Records how the pipeline ended (a failure with its error), waits until all is written,
    /// and returns the build's number (`None` when it ended before its plan), or the first
    /// error met while recording.
    pub fn finish(self, result: Result<(), &PipelineError>) -> Result<Option<i64>, DbError> {
        let error = result.err().map(PipelineError::one_line);
        // A recorder that failed has stopped reading; its error is what the join returns.
        let _ = self.sender.send(Message::End(error));
        drop(self.sender);
        match self.worker.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Waits until the recorder's thread has written everything sent so far (or has failed).
    fn barrier(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        if self.sender.send(Message::Barrier(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

impl Observer for Recorder {
    fn event(&mut self, event: &Event) {
        // A failed recorder has stopped reading; its error comes with `finish`.
        let _ = self.sender.send(Message::Event(event.clone()));
        match event {
            // The first step that runs waits until the database is open and the build is in
            // it: a database that cannot record stops the build before it does any work, not
            // hours later. A build that changes nothing never waits here.
            Event::StepStarted { .. } if !self.step_started => {
                self.step_started = true;
                self.barrier();
            }
            // The results are kept while the build still holds its lock: no other build of the
            // system can replace them under the links.
            Event::Finished { .. } => self.barrier(),
            _ => {}
        }
    }
}

/// The recorder's thread: writes one build.
/// Records one build of one system.
struct Writer<'d> {
    db: &'d Database,
    system: String,
    started_by: String,
    config_hash: String,
    out_root: PathBuf,
    /// The build's number and results directory, once its plan came.
    begun: Option<(i64, PathBuf)>,
    finished: bool,
    position: i64,
    /// Why each step under way runs.
    running: BTreeMap<StepName, String>,
    /// What the commands of each step under way printed.
    logs: BTreeMap<StepName, (i64, String)>,
    artifacts: Vec<(StepName, ArtifactKind, PathBuf, bool)>,
    /// What is recorded but not written yet: skipped steps wait for the next write, so that a
    /// build that changes nothing writes once at its start and once at its end.
    pending: Batch,
}

impl<'d> Writer<'d> {
    fn new(db: &'d Database, build: BuildInfo) -> Self {
        Self {
            db,
            system: build.system,
            started_by: build.started_by,
            config_hash: build.config_hash,
            out_root: build.out_root,
            begun: None,
            finished: false,
            position: 0,
            running: BTreeMap::new(),
            logs: BTreeMap::new(),
            artifacts: Vec::new(),
            pending: Batch::default(),
        }
    }

    /// Writes what `messages` bring until the pipeline's end; returns the build's number.
    fn serve(mut self, messages: &mpsc::Receiver<Message>) -> Result<Option<i64>, DbError> {
        for message in messages {
            match message {
                Message::Event(event) => self.record(&event)?,
                Message::Barrier(done) => {
                    let _ = done.send(());
                }
                Message::End(error) => return self.finish(error),
            }
        }
        // The pipeline's side went away without an end: it panicked.
        Ok(self.begun.map(|(number, _)| number))
    }

    /// Writes what is pending, with `end` when the build ended.
    fn write(&mut self, number: i64, end: Option<End>) -> Result<(), DbError> {
        let mut batch = std::mem::take(&mut self.pending);
        batch.end = end;
        self.db.write(&self.system, number, batch)
    }

    /// Records how the pipeline ended (a failure with its error), and returns the build's
    /// number.
    fn finish(mut self, error: Option<String>) -> Result<Option<i64>, DbError> {
        let Some((number, _)) = &self.begun else {
            return Ok(None);
        };
        let number = *number;
        if let (Some(error), false) = (error, self.finished) {
            let end = End {
                outcome: Outcome::Failed,
                error: Some(error),
                contents: None,
            };
            self.write(number, Some(end))?;
        }
        Ok(Some(number))
    }

    fn record(&mut self, event: &Event) -> Result<(), DbError> {
        if let Event::Plan {
            pretend, inputs, ..
        } = event
        {
            if !pretend {
                let mut hash = Sha256::new();
                for part in [&self.config_hash, &inputs.stage, &inputs.repo] {
                    hash.update(part.as_bytes());
                    hash.update([0]);
                }
                hash.update(inputs.packages.join("\n").as_bytes());
                let fingerprint = autogentoo_core::files::digests::hex(&hash.finalize());
                self.begun = Some(self.db.begin(
                    &self.system,
                    &self.started_by,
                    &self.config_hash,
                    inputs,
                    &fingerprint,
                    &self.out_root,
                )?);
            }
            return Ok(());
        }
        let Some((number, out_dir)) = self.begun.clone() else {
            return Ok(());
        };
        match event {
            Event::StepStarted { step, why } => {
                self.running.insert(*step, why.clone());
            }
            Event::StepSkipped { step, why } => {
                self.step(number, *step, "skipped", why.clone(), None, None, None)?
            }
            Event::Log { step, line } => {
                let (lines, text) = self.logs.entry(*step).or_default();
                *lines += 1;
                text.push_str(line);
                text.push('\n');
            }
            Event::StepFinished {
                step,
                duration,
                summary,
            } => {
                let why = self.running.remove(step).unwrap_or_default();
                let millis = duration.as_millis().try_into().unwrap_or(i64::MAX);
                self.step(
                    number,
                    *step,
                    "ran",
                    why,
                    Some(millis),
                    Some(summary.clone()),
                    None,
                )?;
            }
            Event::StepFailed { step, error } => {
                let why = self.running.remove(step).unwrap_or_default();
                self.step(
                    number,
                    *step,
                    "failed",
                    why,
                    None,
                    None,
                    Some(error.clone()),
                )?;
            }
            Event::Artifact {
                step,
                kind,
                path,
                made,
            } => self.artifacts.push((*step, *kind, path.clone(), *made)),
            Event::Finished { .. } => {
                let contents = self.keep(number, &out_dir)?;
                let end = End {
                    outcome: Outcome::Succeeded,
                    error: None,
                    contents,
                };
                self.write(number, Some(end))?;
                self.finished = true;
            }
            Event::Plan { .. } | Event::StepWouldRun { .. } | Event::Note { .. } => {}
        }
        Ok(())
    }

    /// Records a step that ended, with the log of what its commands printed.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        number: i64,
        step: StepName,
        outcome: &str,
        why: String,
        duration_ms: Option<i64>,
        summary: Option<String>,
        error: Option<String>,
    ) -> Result<(), DbError> {
        self.position += 1;
        let record = Step {
            step: step.to_string(),
            outcome: outcome.to_owned(),
            why,
            duration_ms,
            summary,
            error,
        };
        self.pending.steps.push((self.position, record));
        if let Some((lines, text)) = self.logs.remove(&step) {
            let compressed =
                zstd::encode_all(text.as_bytes(), LOG_LEVEL).map_err(|source| DbError::Keep {
                    system: self.system.clone(),
                    number,
                    dir: PathBuf::from(format!("(the log of step {step})")),
                    source,
                })?;
            self.pending
                .logs
                .push((step.as_str().to_owned(), lines, compressed));
        }
        // A step that ran is written at once (with the skipped ones before it): a build killed
        // later still shows how far it came.
        if outcome != "skipped" {
            self.write(number, None)?;
        }
        Ok(())
    }

    /// Hard-links the build's results into `out_dir` and records each with its size and
    /// SHA-256 (read from the link, so from what is kept); returns the image's package list.
    /// The directory appears whole: it is filled as a hidden one beside it, then renamed.
    fn keep(&mut self, number: i64, out_dir: &Path) -> Result<Option<String>, DbError> {
        let failed = |source| DbError::Keep {
            system: self.system.clone(),
            number,
            dir: out_dir.to_owned(),
            source,
        };
        let system_out = self.out_root.join(&self.system);
        remove_partial_dirs(&system_out).map_err(|source| DbError::Leftovers {
            dir: system_out.clone(),
            source,
        })?;
        let staging = partial_dir(out_dir);
        fs::create_dir_all(&staging).map_err(failed)?;
        let mut contents = None;
        let mut records = Vec::new();
        let earlier = self.db.last_artifacts(&self.system)?;
        for (step, kind, path, made) in std::mem::take(&mut self.artifacts) {
            let Some(name) = path.file_name() else {
                continue;
            };
            let kept = staging.join(name);
            link_or_copy(&path, &kept).map_err(failed)?;
            // A file an earlier build kept is the same inode here: its hash is known, and a
            // build that changed nothing does not read its initramfs again.
            let name_text = name.to_string_lossy();
            let known = earlier
                .get(name_text.as_ref())
                .filter(|(earlier, _, _)| !made && same_file(earlier, &kept));
            let (size, sha256) = match known {
                Some((_, size, sha256)) => (*size, sha256.clone()),
                None => size_and_sha256(&kept).map_err(failed)?,
            };
            if kind == ArtifactKind::PackageList {
                contents = fs::read_to_string(&kept).ok();
            }
            let kind = serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            records.push(Artifact {
                name: name.to_string_lossy().into_owned(),
                kind,
                step: step.to_string(),
                made,
                size,
                sha256,
                path: out_dir.join(name),
            });
        }
        remove_dir_if_there(out_dir).map_err(failed)?;
        fs::rename(&staging, out_dir).map_err(failed)?;
        self.pending.artifacts.extend(records);
        Ok(contents)
    }
}

/// Whether two paths are one file, unchanged: the same inode, size and modification time.
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(a), Ok(b)) => {
            (a.dev(), a.ino(), a.size(), a.mtime(), a.mtime_nsec())
                == (b.dev(), b.ino(), b.size(), b.mtime(), b.mtime_nsec())
        }
        _ => false,
    }
}

/// Where a build's results are gathered before they appear: `out/SYSTEM/.N.partial`.
fn partial_dir(out_dir: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(out_dir.file_name().unwrap_or_default());
    name.push(".partial");
    out_dir.with_file_name(name)
}

/// Removes what a build killed while keeping its results left: hidden `.N.partial`
/// directories of the system (no other build of it runs: the pipeline holds its lock while
/// its results are kept).
fn remove_partial_dirs(system_out: &Path) -> std::io::Result<()> {
    let entries = match fs::read_dir(system_out) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') && name.ends_with(".partial") {
            remove_dir_if_there(&entry.path())?;
        }
    }
    Ok(())
}

fn remove_dir_if_there(dir: &Path) -> std::io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(dir),
        Ok(_) => fs::remove_file(dir),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Links `from` at `to` (replacing what is there); copies when a link cannot be made (another
/// filesystem).
fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs::remove_file(to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => {
            fs::copy(from, to).map(drop)
        }
        Err(e) => Err(e),
    }
}

fn size_and_sha256(path: &Path) -> std::io::Result<(i64, String)> {
    let mut file = fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    let mut size: i64 = 0;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hash.update(&buffer[..read]);
        size += read as i64;
    }
    Ok((size, autogentoo_core::files::digests::hex(&hash.finalize())))
}
