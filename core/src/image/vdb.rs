//! Portage's database of installed packages, `/var/db/pkg/CATEGORY/PF/`, read from a tree we do
//! not trust (a root, an image tree): what `qlist -Iv` and `equery uses` would tell.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use serde::Serialize;

use crate::files::bounded_read::{self, Limit, ReadError};
use crate::files::in_root::RootDir;

/// Where Portage keeps the database, inside a tree.
pub const VDB: &str = "var/db/pkg";

/// One installed package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Installed {
    pub category: String,
    /// Name, version and revision: `greet-1.0`, `libgreet-1.0-r1`.
    pub pf: String,
    /// `0`, or `0/1` with a subslot.
    pub slot: String,
    /// The USE flags of the package's IUSE that were on when it was built, sorted.
    pub use_enabled: Vec<String>,
    /// The USE flags of its IUSE that were off, sorted.
    pub use_disabled: Vec<String>,
    /// The binary package build it came from (`binpkg-multi-instance`), when Portage says.
    pub build_id: Option<u64>,
}

impl fmt::Display for Installed {
    /// `app-misc/greet-1.0:0 USE="-shout"`, as emerge shows a package.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.category, self.pf, self.slot)?;
        let flags: Vec<String> = self
            .use_enabled
            .iter()
            .cloned()
            .chain(self.use_disabled.iter().map(|flag| format!("-{flag}")))
            .collect();
        if !flags.is_empty() {
            write!(f, " USE=\"{}\"", flags.join(" "))?;
        }
        Ok(())
    }
}

/// Every package installed in `tree`, sorted by category and name; an empty list when the tree
/// has no database.
pub fn installed(tree: &RootDir) -> Result<Vec<Installed>, ReadError> {
    let mut out = Vec::new();
    for category in entries(tree, Path::new(VDB))? {
        let category_dir = Path::new(VDB).join(&category);
        for pf in entries(tree, &category_dir)? {
            let dir = category_dir.join(&pf);
            let field = |name: &str| -> Result<Option<String>, ReadError> {
                match bounded_read::read_in(tree, &dir.join(name), Limit::STATE) {
                    Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).trim().to_owned())),
                    Err(ReadError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound =>
                    {
                        Ok(None)
                    }
                    Err(other) => Err(other),
                }
            };
            // Portage's own temporary entries (`-MERGING-…`) have no SLOT yet.
            let Some(slot) = field("SLOT")? else {
                continue;
            };
            let iuse: Vec<String> = field("IUSE")?
                .unwrap_or_default()
                .split_whitespace()
                .map(|flag| flag.trim_start_matches(['+', '-']).to_owned())
                .collect();
            let enabled = field("USE")?.unwrap_or_default();
            let enabled: Vec<&str> = enabled.split_whitespace().collect();
            let (mut on, mut off): (Vec<String>, Vec<String>) = iuse
                .into_iter()
                .partition(|flag| enabled.contains(&flag.as_str()));
            on.sort();
            off.sort();
            out.push(Installed {
                category: category.to_string_lossy().into_owned(),
                pf: pf.to_string_lossy().into_owned(),
                slot,
                use_enabled: on,
                use_disabled: off,
                build_id: field("BUILD_ID")?.and_then(|id| id.parse().ok()),
            });
        }
    }
    out.sort_by(|a, b| (&a.category, &a.pf).cmp(&(&b.category, &b.pf)));
    Ok(out)
}

/// The names in the directory `inner` of `tree`, without hidden ones; none when it is missing.
fn entries(tree: &RootDir, inner: &Path) -> Result<Vec<OsString>, ReadError> {
    let shown: PathBuf = tree.display_path(inner);
    let io = |e: rustix::io::Errno| ReadError::Io {
        what: "package database",
        path: shown.clone(),
        source: e.into(),
    };
    let fd = match tree.open_at(inner, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(&fd).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name().to_bytes();
        if name.first() == Some(&b'.') {
            continue;
        }
        names.push(std::ffi::OsStr::from_bytes(name).to_owned());
    }
    names.sort();
    Ok(names)
}
