//! The farm's binhost: the binary packages its hosts built, one tree per arch, laid out as
//! Portage's multi-instance PKGDIR (`CATEGORY/PN/PF-BUILD_ID.gpkg.tar`). A host publishes what
//! its build added to its cache; before a build it fetches what the binhost has that its cache
//! lacks, each package checked against its SHA-256. Portage in the host's roots then finds them
//! in the cache (`emerge --usepkg`) and indexes them itself, so a package built once on one
//! host is installed, not built, on the others.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// The file names Portage gives binary packages.
const SUFFIXES: [&str; 3] = [".gpkg.tar", ".xpak", ".tbz2"];

/// Checks a package's path: relative, plain names only (no `..`), a package file's suffix.
pub fn check_path(path: &str) -> Result<(), String> {
    let as_path = Path::new(path);
    let plain = as_path
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    let named = SUFFIXES.iter().any(|s| path.ends_with(s));
    if plain && named && !path.is_empty() && as_path.components().count() <= 3 {
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
        if kind.is_dir() && depth < 2 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_package_paths_inside_the_tree() {
        assert!(check_path("app-misc/hello/hello-1.0-1.gpkg.tar").is_ok());
        assert!(check_path("hello-1.0.tbz2").is_ok());
        for bad in [
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
}
