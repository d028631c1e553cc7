//! Which process runs a build, told apart from a later one with the same PID: its PID, its
//! start time and the host's boot, so that a build whose process died shows as interrupted.

/// A process on a host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Process {
    pub host: String,
    pub pid: i64,
    /// Clock ticks after boot when it started (`/proc/PID/stat`, field 22).
    pub start: i64,
    /// `/proc/sys/kernel/random/boot_id`: a PID of another boot is another process.
    pub boot_id: String,
}

impl Process {
    /// This process.
    pub fn this() -> Self {
        let pid = i64::from(rustix::process::getpid().as_raw_nonzero().get());
        Self {
            host: host_name(),
            pid,
            start: start_time(pid).unwrap_or(0),
            boot_id: boot_id(),
        }
    }

    /// Whether the process still runs. Only a process of this host can be asked about; for one
    /// of another host the answer is `None`.
    pub fn is_alive(&self) -> Option<bool> {
        if self.host != host_name() {
            return None;
        }
        if self.boot_id != boot_id() {
            return Some(false);
        }
        Some(start_time(self.pid) == Some(self.start))
    }
}

/// This host's name.
pub fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|id| id.trim().to_owned())
        .unwrap_or_default()
}

/// A process's start time, `None` when there is no such process.
fn start_time(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces and parentheses.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_reused_pid_is_not() {
        let this = Process::this();
        assert!(this.start > 0);
        assert_eq!(this.is_alive(), Some(true));
        let reused = Process {
            start: this.start + 1,
            ..this.clone()
        };
        assert_eq!(reused.is_alive(), Some(false));
        let elsewhere = Process {
            host: format!("{}-other", this.host),
            ..this
        };
        assert_eq!(elsewhere.is_alive(), None);
    }
}
