//! The site config as a farm hands it out: its whole directory (the `autogentoo.toml` and
//! what it refers to: common/, overlays, kernel fragments, the example repository) packed as a
//! reproducible tar, named by its SHA-256. Each job carries that hash; a host fetches the tar
//! once, checks the hash, and builds from its own unpacked copy.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::secret::hex;

/// Why a site snapshot could not be made or unpacked.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("cannot pack the site config directory {}", dir.display())]
    Pack {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the site config from the server has SHA-256 {got}, not the job's {want}")]
    Hash { want: String, got: String },
    #[error("cannot unpack the site config into {}", dir.display())]
    Unpack {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Packs the directory `dir` as a tar whose bytes depend only on the files' names, contents,
/// modes and symlink targets: sorted, with zero times and owners. Returns (SHA-256, bytes).
pub fn pack(dir: &Path) -> Result<(String, Vec<u8>), SiteError> {
    let error = |source| SiteError::Pack {
        dir: dir.to_owned(),
        source,
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    add_dir(&mut builder, dir, Path::new("")).map_err(error)?;
    let bytes = builder.into_inner().map_err(error)?;
    Ok((hex(&Sha256::digest(&bytes)), bytes))
}

fn add_dir(builder: &mut tar::Builder<Vec<u8>>, root: &Path, rel: &Path) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let name = rel.join(entry.file_name());
        let kind = entry.file_type()?;
        if kind.is_dir() {
            builder.append_dir(&name, root.join(&name))?;
            add_dir(builder, root, &name)?;
        } else if kind.is_file() || kind.is_symlink() {
            builder.append_path_with_name(root.join(&name), &name)?;
        }
    }
    Ok(())
}

/// Unpacks a snapshot received for `hash` into `dir` (made atomically: a partial one is never
/// left under that name), after checking its hash. An existing `dir` is kept as it is.
pub fn unpack(bytes: &[u8], hash: &str, dir: &Path) -> Result<(), SiteError> {
    let got = hex(&Sha256::digest(bytes));
    if got != hash {
        return Err(SiteError::Hash {
            want: hash.to_owned(),
            got,
        });
    }
    if dir.exists() {
        return Ok(());
    }
    let error = |source| SiteError::Unpack {
        dir: dir.to_owned(),
        source,
    };
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(error)?;
    let partial = tempdir_in(parent).map_err(error)?;
    // tar's unpack refuses names with `..` and absolute paths: nothing lands outside.
    tar::Archive::new(bytes)
        .unpack(&partial)
        .map_err(error)
        .and_then(|()| fs::rename(&partial, dir).map_err(error))
        .inspect_err(|_| {
            let _ = fs::remove_dir_all(&partial);
        })
}

fn tempdir_in(parent: &Path) -> io::Result<PathBuf> {
    let path = parent.join(format!(".partial-{}", crate::secret::random_hex(6)));
    fs::create_dir(&path)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_reproducible_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site");
        fs::create_dir_all(site.join("common/etc")).unwrap();
        fs::write(site.join("autogentoo.toml"), "[build]\n").unwrap();
        fs::write(site.join("common/etc/motd"), "hi\n").unwrap();
        let (hash, bytes) = pack(&site).unwrap();
        // Touching a file changes nothing; changing one changes the hash.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(site.join("common/etc/motd"), "hi\n").unwrap();
        assert_eq!(pack(&site).unwrap().0, hash);
        fs::write(site.join("common/etc/motd"), "hello\n").unwrap();
        assert_ne!(pack(&site).unwrap().0, hash);

        let out = dir.path().join("out");
        assert!(matches!(
            unpack(&bytes, &"0".repeat(64), &out),
            Err(SiteError::Hash { .. })
        ));
        assert!(!out.exists());
        unpack(&bytes, &hash, &out).unwrap();
        assert_eq!(
            fs::read_to_string(out.join("common/etc/motd")).unwrap(),
            "hi\n"
        );
    }
}
