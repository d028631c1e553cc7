//! `autogentoo builds log`

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use autogentoo_db::{Database, Outcome};
use clap::Args;

use crate::context::Context;
use crate::remote::RemoteArgs;

/// The steps whose commands print into a log, in the order they run.
const LOGGED_STEPS: [&str; 2] = ["commands", "image"];

/// How often --follow looks for more.
const POLL: Duration = Duration::from_millis(200);

/// Print what a recorded build's commands printed
///
/// Print the logs the database keeps for a build: what the commands of each step printed
/// inside the root (the system's commands, the image's emerge), in step order. With --follow,
/// a build that is running is followed as it goes, from its step logs in
/// WORKDIR/out/SYSTEM/ (with --server, from the events its build host streams), until it
/// ends; the exit code is then 0 if it succeeded, 1 if not.
#[derive(Args, Debug)]
pub struct LogArgs {
    /// The system
    pub system: String,

    /// The build's number
    pub number: i64,

    /// Only this step's log (`commands`, `image`)
    #[arg(long)]
    pub step: Option<String>,

    /// Follow a running build's log until the build ends
    #[arg(short, long)]
    pub follow: bool,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: LogArgs) -> Result<()> {
    if let Some(client) = args.remote.client()? {
        return remote(&client, &args);
    }
    let db = ctx.database()?;
    let build = db.get(&args.system, args.number)?.build;
    if args.follow && build.outcome == Outcome::Running {
        return follow(ctx, &db, &args, build.started_at);
    }
    let logs = db.logs(&args.system, args.number, args.step.as_deref())?;
    if let (Some(step), true) = (&args.step, logs.is_empty()) {
        bail!(
            "build {} of '{}' has no log for step '{step}'; `autogentoo builds show {} {}` \
             lists its steps",
            args.number,
            args.system,
            args.system,
            args.number
        );
    }
    print_logs(logs);
    Ok(())
}

fn print_logs(logs: Vec<(String, String)>) {
    let several = logs.len() > 1;
    for (step, text) in logs {
        if several {
            println!("==> {step} <==");
        }
        print!("{text}");
    }
}

/// The log of a farm build: kept, or with --follow as the build's host streams it (its
/// events, from the server), until the build ends.
fn remote(client: &autogentoo_farm::client::Client, args: &LogArgs) -> Result<()> {
    let path = format!("/builds/{}/{}", args.system, args.number);
    let build: autogentoo_db::BuildDetail = client.get(&path)?;
    if args.follow && build.build.outcome == Outcome::Running {
        let mut out = std::io::stdout().lock();
        client.events(&format!("{path}/events"), |data| {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(data) else {
                return true;
            };
            let step = event["step"].as_str().unwrap_or_default();
            if event["event"] == "log" && args.step.as_deref().is_none_or(|s| s == step) {
                let _ = writeln!(out, "{}", event["line"].as_str().unwrap_or_default());
            }
            true
        })?;
        let ended: autogentoo_db::BuildDetail = client.get(&path)?;
        return match ended.build.outcome {
            Outcome::Succeeded => Ok(()),
            other => bail!("build {} of '{}' {other}", args.number, args.system),
        };
    }
    let step = args
        .step
        .as_ref()
        .map(|s| format!("?step={s}"))
        .unwrap_or_default();
    print_logs(client.get(&format!("{path}/log{step}"))?);
    Ok(())
}

/// Prints the step logs of a running build as they grow, until the build ends.
fn follow(ctx: &Context, db: &Database, args: &LogArgs, started_at: i64) -> Result<()> {
    let out = ctx.layout().out().join(&args.system);
    let steps: Vec<&str> = LOGGED_STEPS
        .into_iter()
        .filter(|step| args.step.as_deref().is_none_or(|wanted| wanted == *step))
        .collect();
    let mut tails: Vec<Tail> = steps
        .iter()
        .map(|step| Tail::new(out.join(format!("{step}.log")), started_at))
        .collect();
    let mut stdout = std::io::stdout().lock();
    loop {
        // Whether it ran on: read after the logs, so that what it printed before it ended is
        // printed before we stop.
        db.mark_interrupted()?;
        let outcome = db.get(&args.system, args.number)?.build.outcome;
        for tail in &mut tails {
            tail.copy_new(&mut stdout)?;
        }
        stdout.flush().context("cannot write the log")?;
        if outcome != Outcome::Running {
            return match outcome {
                Outcome::Succeeded => Ok(()),
                other => bail!("build {} of '{}' {other}", args.number, args.system),
            };
        }
        std::thread::sleep(POLL);
    }
}

/// A step log being followed: printed from where we were, once this build has written it.
struct Tail {
    path: PathBuf,
    /// Milliseconds since the epoch: a log older than the build is an earlier build's.
    since: i64,
    offset: u64,
    /// The file being read (a new step log is a new file).
    inode: Option<u64>,
}

impl Tail {
    fn new(path: PathBuf, since: i64) -> Self {
        Self {
            path,
            since,
            offset: 0,
            inode: None,
        }
    }

    fn copy_new(&mut self, to: &mut impl Write) -> Result<()> {
        let Some(mut file) = open_if_written_since(&self.path, self.since)? else {
            return Ok(());
        };
        let inode = file.metadata().map(|m| m.ino()).ok();
        if inode != self.inode {
            self.inode = inode;
            self.offset = 0;
        }
        file.seek(SeekFrom::Start(self.offset))
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        let mut new = Vec::new();
        file.read_to_end(&mut new)
            .with_context(|| format!("cannot read {}", self.path.display()))?;
        self.offset += new.len() as u64;
        to.write_all(&new).context("cannot write the log")
    }
}

/// The file at `path` if it was modified at or after `since` (milliseconds since the epoch).
fn open_if_written_since(path: &Path, since: i64) -> Result<Option<File>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let meta = file
        .metadata()
        .with_context(|| format!("cannot inspect {}", path.display()))?;
    let modified = meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000;
    Ok((modified >= since).then_some(file))
}
