//! The log of one step: what the commands a step runs inside the root print goes to
//! `out/SYSTEM/STEP.log` and, line by line, to the observer as [`Event::Log`] (the command line
//! shows them with `-v`), so a long emerge stays quiet until it fails, and then says where to
//! look.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use autogentoo_core::chroot::root_run;

use crate::event::{Event, Observer, StepName};
use crate::{PipelineError, ResultExt as _};

/// How many of a failed command's last lines its error shows.
const TAIL_LINES: usize = 20;

/// An open step log.
pub struct StepLog {
    path: PathBuf,
    file: File,
    step: StepName,
}

impl StepLog {
    /// Starts `out_dir/STEP.log` afresh: a new file, so that the previous one, which a recorded
    /// build may keep (hard-linked), stays as it was. The file is never reached through a
    /// symlink.
    pub fn create(out_dir: &Path, step: StepName) -> Result<Self, PipelineError> {
        std::fs::create_dir_all(out_dir).what(|| format!("cannot create {}", out_dir.display()))?;
        let path = out_dir.join(format!("{step}.log"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).what(|| format!("cannot replace the step log {}", path.display()))
            }
            _ => {}
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .what(|| format!("cannot open the step log {}", path.display()))?;
        Ok(Self { path, file, step })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `command` (one of the [`crate::RootRunner`]'s, for `shown` in root `root`) with
    /// its output in the log and, line by line, handed to `observer`; a non-zero exit is
    /// [`PipelineError::CommandFailed`], with the log's path and last lines. Killing us kills
    /// the command.
    pub fn run(
        &mut self,
        mut command: Command,
        shown: &str,
        root: &str,
        observer: &mut dyn Observer,
    ) -> Result<(), PipelineError> {
        writeln!(self.file, "$ {shown}").what(|| "cannot write the step log".into())?;
        observer.event(&Event::Log {
            step: self.step,
            line: format!("$ {shown}"),
        });
        let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .what(|| "cannot make a pipe for the step log".into())?;
        command
            .stdin(Stdio::null())
            .stdout(writer.try_clone().what(|| "cannot share the pipe".into())?)
            .stderr(writer);
        root_run::tie_to_us(&mut command)
            .what(|| format!("cannot start `{shown}` in root '{root}'"))?;
        let mut child = command
            .spawn()
            .what(|| format!("cannot start `{shown}` in root '{root}'"))?;
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
                .what(|| "cannot read the command's output".into())?;
            if read == 0 {
                break;
            }
            self.file
                .write_all(&line)
                .what(|| format!("cannot write the step log {}", self.path.display()))?;
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            observer.event(&Event::Log {
                step: self.step,
                line: text.clone(),
            });
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text);
        }
        let status = child
            .wait()
            .what(|| format!("cannot wait for `{shown}` in root '{root}'"))?;
        self.file
            .flush()
            .what(|| "cannot write the step log".into())?;
        if status.success() {
            return Ok(());
        }
        Err(PipelineError::CommandFailed {
            command: shown.to_owned(),
            root: root.to_owned(),
            status,
            log: self.path.clone(),
            tail: Vec::from(tail).join("\n"),
        })
    }
}
