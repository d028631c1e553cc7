//! The farm's binhost: the binary packages its hosts built, one tree per arch, laid out as
//! Portage's multi-instance PKGDIR (`CATEGORY/PN/PF-BUILD_ID.gpkg.tar`) with its `Packages`
//! index, so that any Portage reads it as a binhost (`binrepos.conf`, `--getbinpkg`).
//!
//! A host publishes what its build added to its cache, each package with its entry from the
//! cache's own `Packages` index (what Portage wrote when it made the package: CPV, USE,
//! dependencies, digests). Before a build a host fetches what the binhost has that its cache
//! lacks, each package checked against its SHA-256; Portage in the host's roots then finds them
//! in the cache (`emerge --usepkg`) and indexes them itself, so a package built once on one host
//! is installed, not built, on the others.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::api_types::Package;

/// The file names Portage gives binary packages.
const SUFFIXES: [&str; 2] = [".gpkg.tar", ".xpak"];

/// Checks a package's path: `CATEGORY/PN/FILE`, plain names only (no `..`), a package file's
/// suffix.
pub fn check_path(path: &str) -> Result<(), String> {
    let as_path = Path::new(path);
    let plain = as_path
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    let named = SUFFIXES.iter().any(|s| path.ends_with(s));
    if plain && named && as_path.components().count() == 3 {
        Ok(())
    } else {
        Err(format!(
            "`{path}` is not a binary package's path (CATEGORY/PN/FILE.gpkg.tar)"
        ))
    }
}

/// The binary packages under `dir`: (path relative to it, full path), sorted.
pub fn list(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    let mut found = Vec::new();
    walk(dir, dir, 0, &mut found)?;
    found.sort();
    Ok(found)
}

fn walk(
    top: &Path,
    dir: &Path,
    depth: usize,
    found: &mut Vec<(String, PathBuf)>,
) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() && depth < 2 && !entry.file_name().to_string_lossy().starts_with('.') {
            walk(top, &path, depth + 1, found)?;
        } else if kind.is_file() {
            let rel = path
                .strip_prefix(top)
                .map_err(io::Error::other)?
                .to_string_lossy()
                .into_owned();
            if check_path(&rel).is_ok() {
                found.push((rel, path));
            }
        }
    }
    Ok(())
}

/// A `Packages` index as Portage writes it: a header block, then one block per package, each
/// of `KEY: value` lines, blocks apart by an empty line.
pub struct Index {
    pub header: BTreeMap<String, String>,
    pub packages: Vec<BTreeMap<String, String>>,
}

/// Keys of a package's entry that Portage leaves out when the header has the same value.
const INHERITED: [&str; 2] = ["CHOST", "repository"];
/// Keys a binhost must never hand out: Portage drops them from a remote index, as commands a
/// server could make a client run.
const REFUSED: [&str; 2] = ["FETCHCOMMAND", "RESUMECOMMAND"];
/// The most an entry may hold, in bytes: dependency strings are long, but not this long.
const ENTRY_LIMIT: usize = 256 * 1024;

impl Index {
    pub fn parse(text: &str) -> Self {
        let mut blocks = text.split("\n\n").map(|block| {
            block
                .lines()
                .filter_map(|line| line.split_once(':'))
                .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
                .collect::<BTreeMap<_, _>>()
        });
        let header = blocks.next().unwrap_or_default();
        let packages = blocks.filter(|block| block.contains_key("CPV")).collect();
        Self { header, packages }
    }

    /// The entry of the package at `path` (its `PATH`), with the keys it inherits from the
    /// header written out, so that it stands alone.
    pub fn entry(&self, path: &str) -> Option<BTreeMap<String, String>> {
        let mut entry = self
            .packages
            .iter()
            .find(|entry| entry.get("PATH").map(String::as_str) == Some(path))?
            .clone();
        for key in INHERITED {
            if let Some(value) = self.header.get(key) {
                entry.entry(key.to_owned()).or_insert_with(|| value.clone());
            }
        }
        Some(entry)
    }
}

/// Checks what a host says of a package it publishes: plain `KEY: value` lines, a `CPV` of the
/// package's category, its `PATH` and `SIZE`, and no commands for the client to run.
pub fn check_entry(package: &Package) -> Result<(), String> {
    let entry = &package.metadata;
    let what = &package.path;
    let mut bytes = 0;
    for (key, value) in entry {
        bytes += key.len() + value.len();
        let plain_key = !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !plain_key || value.chars().any(char::is_control) {
            return Err(format!(
                "{what}: the index entry's `{}` is not a plain `KEY: value` line",
                key.escape_debug()
            ));
        }
        if REFUSED.contains(&key.as_str()) {
            return Err(format!(
                "{what}: an index entry may not set {key}, a command for clients to run"
            ));
        }
    }
    if bytes > ENTRY_LIMIT {
        return Err(format!(
            "{what}: the index entry is over {ENTRY_LIMIT} bytes"
        ));
    }
    let category = what.split('/').next().unwrap_or_default();
    match entry.get("CPV") {
        Some(cpv) if cpv.split_once('/').is_some_and(|(c, _)| c == category) => {}
        _ => {
            return Err(format!(
                "{what}: the index entry's CPV is missing or not in category {category}"
            ))
        }
    }
    if entry.get("PATH") != Some(what) {
        return Err(format!("{what}: the index entry's PATH is not {what}"));
    }
    if entry.get("SIZE") != Some(&package.size.to_string()) {
        return Err(format!(
            "{what}: the index entry's SIZE is not the package's, {}",
            package.size
        ));
    }
    Ok(())
}

/// The `Packages` index of a binhost of `arch` holding `packages` (those with an index entry),
/// at `timestamp` (seconds; Portage fetches the index again only when it grows).
pub fn write_index<'a>(
    arch: &str,
    timestamp: u64,
    packages: impl IntoIterator<Item = &'a Package>,
) -> String {
    let entries: Vec<&BTreeMap<String, String>> = packages
        .into_iter()
        .map(|p| &p.metadata)
        .filter(|entry| entry.contains_key("CPV"))
        .collect();
    let mut text = String::new();
    let header = [
        ("ARCH", arch.to_owned()),
        ("PACKAGES", entries.len().to_string()),
        ("TIMESTAMP", timestamp.to_string()),
        ("VERSION", "0".to_owned()),
    ];
    for (key, value) in header {
        let _ = writeln!(text, "{key}: {value}");
    }
    for entry in entries {
        text.push('\n');
        for (key, value) in entry {
            let _ = writeln!(text, "{key}: {value}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_package_paths_inside_the_tree() {
        assert!(check_path("app-misc/hello/hello-1.0-1.gpkg.tar").is_ok());
        assert!(check_path("app-misc/hello/hello-1.0-1.xpak").is_ok());
        for bad in [
            "hello-1.0.tbz2",
            "app-misc/hello-1.0.tbz2",
            "../etc/passwd.gpkg.tar",
            "/abs/x.gpkg.tar",
            "app-misc/hello/../../x.gpkg.tar",
            "app-misc/hello/Packages",
            "a/b/c/d.gpkg.tar",
            "",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }

    fn package(metadata: &[(&str, &str)]) -> Package {
        Package {
            path: "app-misc/hello/hello-1.0-1.gpkg.tar".into(),
            sha256: "0".repeat(64),
            size: 20480,
            metadata: metadata
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    const GOOD: [(&str, &str); 4] = [
        ("CPV", "app-misc/hello-1.0"),
        ("PATH", "app-misc/hello/hello-1.0-1.gpkg.tar"),
        ("SIZE", "20480"),
        ("USE", "amd64"),
    ];

    #[test]
    fn an_entry_stands_alone_with_what_it_inherits() {
        let text = "ARCH: amd64\nCHOST: x86_64-pc-linux-gnu\nTIMESTAMP: 1\nVERSION: 0\n\n\
                    BUILD_ID: 1\nCPV: app-misc/hello-1.0\nPATH: app-misc/hello/hello-1.0-1.gpkg.tar\n\
                    SIZE: 20480\n\nCPV: app-misc/other-2\nPATH: app-misc/other/other-2-1.gpkg.tar\n";
        let index = Index::parse(text);
        assert_eq!(index.packages.len(), 2);
        let entry = index.entry("app-misc/hello/hello-1.0-1.gpkg.tar").unwrap();
        assert_eq!(entry["CHOST"], "x86_64-pc-linux-gnu");
        assert_eq!(entry["BUILD_ID"], "1");
        assert!(index.entry("app-misc/none/none-1-1.gpkg.tar").is_none());
    }

    #[test]
    fn an_index_is_written_as_portage_reads_it() {
        let packages = [package(&GOOD), package(&[])];
        let text = write_index("amd64", 7, &packages);
        let index = Index::parse(&text);
        assert_eq!(index.header["PACKAGES"], "1", "only packages with an entry");
        assert_eq!(index.header["TIMESTAMP"], "7");
        assert_eq!(index.header["VERSION"], "0");
        assert_eq!(index.packages, [packages[0].metadata.clone()]);
    }

    #[test]
    fn entries_that_lie_or_command_are_refused() {
        assert!(check_entry(&package(&GOOD)).is_ok());
        let with = |key: &'static str, value: &'static str| {
            let mut entry: Vec<(&str, &str)> =
                GOOD.iter().filter(|(k, _)| *k != key).copied().collect();
            entry.push((key, value));
            package(&entry)
        };
        for (bad, why) in [
            (with("CPV", "sys-apps/hello-1.0"), "CPV"),
            (with("PATH", "app-misc/hello/other-1.gpkg.tar"), "PATH"),
            (with("SIZE", "1"), "SIZE"),
            (with("FETCHCOMMAND", "curl evil"), "FETCHCOMMAND"),
            (with("USE", "a\nPATH: x"), "plain"),
            (with("B AD", "x"), "plain"),
        ] {
            let err = check_entry(&bad).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
