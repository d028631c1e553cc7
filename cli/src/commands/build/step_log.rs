//! The log of one step of `build`: what the commands a step runs inside the root print goes to
//! `out/SYSTEM/STEP.log` (and to the terminal with `-v`), so a long emerge stays quiet until it
//! fails, and then says where to look.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};
use autogentoo_core::chroot::root_run;

/// How many of a failed command's last lines its error shows.
const TAIL_LINES: usize = 20;

/// An open step log.
pub struct StepLog {
    path: PathBuf,
    file: File,
    echo: bool,
}

impl StepLog {
    /// Starts `out_dir/STEP.log` afresh. The file is never reached through a symlink.
    pub fn create(out_dir: &Path, step: &str, echo: bool) -> Result<Self> {
        std::fs::create_dir_all(out_dir)
            .with_context(|| format!("cannot create {}", out_dir.display()))?;
        let path = out_dir.join(format!("{step}.log"));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .with_context(|| format!("cannot open the step log {}", path.display()))?;
        Ok(Self { path, file, echo })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `command` (a `root run` of ours, for `shown` in root `root`) with its output in
    /// the log; a non-zero exit is an error carrying the log's path and last lines. Killing us
    /// kills the command.
    pub fn run(&mut self, mut command: Command, shown: &str, root: &str) -> Result<()> {
        writeln!(self.file, "$ {shown}").context("cannot write the step log")?;
        let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .context("cannot make a pipe for the step log")?;
        command
            .stdin(Stdio::null())
            .stdout(writer.try_clone().context("cannot share the pipe")?)
            .stderr(writer);
        root_run::tie_to_us(&mut command)?;
        let mut child = command.spawn().context("cannot start `root run`")?;
        // Our copies of the pipe's writing end go with the command: the reader sees the end
        // when the command and everything it started are done.
        drop(command);
        let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
        let mut lines = BufReader::new(File::from(reader));
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = lines
                .read_until(b'\n', &mut line)
                .context("cannot read the command's output")?;
            if read == 0 {
                break;
            }
            self.file
                .write_all(&line)
                .with_context(|| format!("cannot write the step log {}", self.path.display()))?;
            if self.echo {
                // The terminal is a convenience: a closed one does not stop the build.
                let _ = io::stderr().write_all(&line);
            }
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        let status = child.wait().context("cannot wait for `root run`")?;
        self.file.flush().context("cannot write the step log")?;
        if status.success() {
            return Ok(());
        }
        bail!(
            "`{shown}` failed inside root '{root}' ({status}); the last lines of its log, {}:\n{}",
            self.path.display(),
            Vec::from(tail).join("\n")
        )
    }
}
