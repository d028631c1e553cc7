//! Running `zfs` and `zpool` with `-H` (tab-separated, no headers) output, and turning their
//! complaints into typed errors.

use std::process::{Command, Output};
use std::time::Duration;

use autogentoo_core::storage::StorageError;

/// How long to keep retrying an operation zfs-fuse reports as busy: unmounting is asynchronous
/// there, so a rename or destroy right after it can fail for a moment.
const BUSY_RETRIES: u32 = 50;
const BUSY_WAIT: Duration = Duration::from_millis(100);

/// What a failed `zfs` call meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Failure {
    Missing,
    Exists,
    Busy,
    HasClones,
    Other,
}

/// A failed call: how, and the command's own message.
#[derive(Debug)]
pub struct CallError {
    pub failure: Failure,
    pub command: String,
    pub stderr: String,
}

impl CallError {
    /// The generic error for the user: the command and what it said.
    pub fn into_storage(self) -> StorageError {
        StorageError::Command {
            command: self.command,
            stderr: self.stderr,
        }
    }
}

/// Runs `program args…`; its stdout on success.
pub fn run(program: &str, args: &[&str]) -> Result<String, CallError> {
    let command = format!("{program} {}", args.join(" "));
    let output: Output = match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(e) => {
            return Err(CallError {
                failure: Failure::Other,
                command,
                stderr: e.to_string(),
            })
        }
    };
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr)
        .trim()
        .replace('\n', "; ");
    Err(CallError {
        failure: classify(&stderr),
        command,
        stderr,
    })
}

/// Like [`run`], retrying for a while when the dataset is busy.
pub fn run_patiently(program: &str, args: &[&str]) -> Result<String, CallError> {
    let mut attempt = 0;
    loop {
        match run(program, args) {
            Err(e) if e.failure == Failure::Busy && attempt < BUSY_RETRIES => {
                attempt += 1;
                std::thread::sleep(BUSY_WAIT);
            }
            other => return other,
        }
    }
}

/// The messages of OpenZFS 2.x and zfs-fuse 0.7 that we act on.
fn classify(stderr: &str) -> Failure {
    if stderr.contains("does not exist") || stderr.contains("could not find any snapshots") {
        Failure::Missing
    } else if stderr.contains("already exists") {
        Failure::Exists
    } else if stderr.contains("dependent clones") {
        Failure::HasClones
    } else if stderr.contains("is busy") || stderr.contains("busy") {
        Failure::Busy
    } else {
        Failure::Other
    }
}

/// Whether `program` can be run at all.
pub fn available(program: &str) -> bool {
    Command::new(program).arg("-?").output().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_of_both_implementations_are_classified() {
        assert_eq!(
            classify("cannot open 'tank/x': dataset does not exist"),
            Failure::Missing
        );
        assert_eq!(
            classify("cannot create 'tank/x': dataset already exists"),
            Failure::Exists
        );
        assert_eq!(
            classify("cannot rename 'tank/x': dataset is busy"),
            Failure::Busy
        );
        assert_eq!(
            classify("cannot destroy 'tank/s': filesystem has dependent clones; use '-R'"),
            Failure::HasClones
        );
        assert_eq!(classify("cannot mount: permission denied"), Failure::Other);
    }
}
