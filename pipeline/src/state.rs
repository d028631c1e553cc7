//! What `build SYSTEM` remembers between runs: for each step, a fingerprint of its inputs. A step
//! whose inputs hash the same as last time, and whose outputs are still there, is skipped.
//!
//! Trees are fingerprinted by their metadata — path, type, mode, owner, size, mtime to the
//! nanosecond, device number, symlink target — not their contents: a stat walk of a 200 MB root
//! takes a fraction of a second, and any tool that changes a file changes its mtime or size.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use autogentoo_core::files::bounded_read::{self, Limit, ReadError};
use autogentoo_core::files::output_file::{self, OutputError};
use autogentoo_core::storage::{io_err, StorageError};

/// The fingerprints recorded by the last successful run of each step.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    steps: BTreeMap<String, String>,
    #[serde(skip)]
    path: PathBuf,
}

impl State {
    /// The state at `path`; an absent file, or one this version cannot parse, is an empty
    /// state (everything runs). Something there that is not a state file is an error naming it.
    pub fn load(path: &Path) -> Result<Self, ReadError> {
        let mut state: State = match bounded_read::read(path, Limit::STATE) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("ignoring {}, which cannot be parsed: {e}", path.display());
                State::default()
            }),
            Err(e) if e.is_not_found() => State::default(),
            Err(e) => return Err(e),
        };
        state.path = path.to_owned();
        Ok(state)
    }

    /// Whether `step` last ran with these inputs.
    pub fn unchanged(&self, step: &str, fingerprint: &str) -> bool {
        self.steps.get(step).is_some_and(|f| f == fingerprint)
    }

    /// Records a successful run of `step` and saves the state at once (atomically), so an
    /// interrupted build keeps what it finished.
    pub fn record(&mut self, step: &str, fingerprint: &str) -> Result<(), OutputError> {
        self.steps.insert(step.to_owned(), fingerprint.to_owned());
        let text = serde_json::to_vec_pretty(self).expect("the state serialises");
        output_file::write(&self.path, &text).map(drop)
    }

    /// Forgets a step, so it runs next time (its inputs may have changed under it).
    pub fn forget(&mut self, step: &str) {
        self.steps.remove(step);
    }
}

/// Hashes a step's inputs.
#[derive(Default)]
pub struct Fingerprint {
    hasher: Sha256,
}

impl Fingerprint {
    /// Adds a labelled value.
    pub fn text(mut self, label: &str, value: &str) -> Self {
        self.hasher.update(label.as_bytes());
        self.hasher.update([0]);
        self.hasher.update(value.as_bytes());
        self.hasher.update([0]);
        self
    }

    /// Adds the metadata of every entry below `root`, not descending into `skip` (paths
    /// relative to the root); a missing root counts as empty.
    pub fn tree(mut self, root: &Path, skip: &[PathBuf]) -> Result<Self, StorageError> {
        self.hasher.update(root.as_os_str().as_bytes());
        let mut todo = vec![PathBuf::new()];
        while let Some(rel) = todo.pop() {
            let dir = root.join(&rel);
            let mut entries: Vec<_> = match fs::read_dir(&dir) {
                Ok(entries) => entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name())
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("read", &dir)(e)),
            };
            entries.sort();
            for name in entries {
                let path = rel.join(&name);
                let full = root.join(&path);
                let meta = fs::symlink_metadata(&full).map_err(io_err("inspect", &full))?;
                let skipped = meta.is_dir() && skip.contains(&path);
                self.hasher.update(path.as_os_str().as_bytes());
                // A skipped directory's size and mtime only tell what happened inside it.
                let (size, mtime, mtime_nsec) = if skipped {
                    (0, 0, 0)
                } else {
                    (meta.size(), meta.mtime() as u64, meta.mtime_nsec() as u64)
                };
                for field in [
                    u64::from(meta.mode()),
                    u64::from(meta.uid()),
                    u64::from(meta.gid()),
                    size,
                    mtime,
                    mtime_nsec,
                    meta.rdev(),
                ] {
                    self.hasher.update(field.to_le_bytes());
                }
                if meta.file_type().is_symlink() {
                    let target = fs::read_link(&full).map_err(io_err("read link", &full))?;
                    self.hasher.update(target.as_os_str().as_bytes());
                }
                if meta.is_dir() && !skipped {
                    todo.push(path);
                }
            }
        }
        Ok(self)
    }

    /// Adds a regular file's contents, streamed (config fragments, an archive); `what` names
    /// it in errors.
    pub fn file(mut self, path: &Path, what: &'static str) -> Result<Self, ReadError> {
        let (mut file, _) = bounded_read::open_regular(path, what)?;
        self.hasher.update(path.as_os_str().as_bytes());
        std::io::copy(&mut file, &mut self.hasher).map_err(|source| ReadError::Io {
            what,
            path: path.to_owned(),
            source,
        })?;
        Ok(self)
    }

    pub fn finish(self) -> String {
        autogentoo_core::files::digests::hex(&self.hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_touched_file_changes_the_tree_fingerprint_and_a_skipped_dir_does_not() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::create_dir_all(dir.path().join("var/tmp")).unwrap();
        fs::write(dir.path().join("etc/motd"), "hi").unwrap();
        let skip = [PathBuf::from("var/tmp")];
        let print = || {
            Fingerprint::default()
                .tree(dir.path(), &skip)
                .unwrap()
                .finish()
        };
        let first = print();
        assert_eq!(first, print(), "the same tree hashes the same");
        fs::write(dir.path().join("var/tmp/scratch"), "x").unwrap();
        assert_eq!(
            first,
            print(),
            "what is skipped does not count, nor the mtime it changes"
        );
        fs::write(dir.path().join("etc/motd"), "hello").unwrap();
        assert_ne!(first, print(), "a changed file counts");
    }

    #[test]
    fn state_remembers_fingerprints_across_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out/state.json");
        let mut state = State::load(&path).unwrap();
        assert!(!state.unchanged("pack", "abc"));
        state.record("pack", "abc").unwrap();
        let state = State::load(&path).unwrap();
        assert!(state.unchanged("pack", "abc"));
        assert!(!state.unchanged("pack", "def"));
    }
}
