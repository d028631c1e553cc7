//! What builds start from, handed out by the farm by content: stage and kernel source
//! tarballs, and SquashFS snapshots of the ebuild repository. An admin adds them to the server
//! (`farm input add`); a job carries those its system uses (its stage, its image's base, its
//! kernel, the repository snapshot), and a host that lacks one fetches it, checks its SHA-256,
//! and imports it before the build.
//!
//! A host remembers what it imported from the farm in `WORKDIR/farm/inputs/KIND/NAME`: the
//! content's SHA-256 and the volume's creation time. A volume of that name that the farm did not
//! put there (imported by hand, or made again since) is never replaced: the job fails and says
//! what to remove. A repository snapshot the farm put there is replaced by a newer one.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use autogentoo_core::site_config::{SiteConfig, SystemConfig, NO_KERNEL};

use crate::api_types::{Input, InputKind, InputRecord, Job};
use crate::client::Client;
use crate::secret;

/// Why a job's input could not be made ready on a host.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(
        "this host's {kind} '{name}' is not the one the farm hands out ({short}…): remove it \
         ({remove}) and the host takes the farm's"
    )]
    NotTheFarms {
        kind: InputKind,
        name: String,
        short: String,
        remove: String,
    },
    #[error("{kind} '{name}' from the farm has SHA-256 {got}, not {want}; it was dropped")]
    Corrupt {
        kind: InputKind,
        name: String,
        got: String,
        want: String,
    },
    #[error("cannot import {kind} '{name}' from the farm: {why}")]
    Import {
        kind: InputKind,
        name: String,
        why: String,
    },
    #[error("{} on this host", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
}

/// The names of each kind that a system of `config` builds from, as the site config gives
/// them; the repository snapshot only when the config names one (`mounts.repo_image`).
pub fn used_by(config: &SiteConfig, system: &SystemConfig) -> Vec<(InputKind, String)> {
    let mut used = vec![(InputKind::Stage, system.stage.clone())];
    if let Some(base) = system.image.as_ref().and_then(|i| i.base.clone()) {
        used.push((InputKind::Stage, base));
    }
    if system.kernel_build != NO_KERNEL {
        if let Some(kernel) = &system.kernel {
            used.push((InputKind::Kernel, kernel.clone()));
        }
    }
    if let Some(repo) = &config.mounts.repo_image {
        used.push((InputKind::Repo, repo.clone()));
    }
    used
}

/// The inputs a job carries: of the names it uses, those the farm has; and, when the site
/// config names no repository snapshot, the newest the farm has. `kept` is newest first. A
/// name the farm does not have is the host's own to provide.
pub fn for_job(used: &[(InputKind, String)], kept: &[InputRecord]) -> Vec<Input> {
    let mut inputs: Vec<Input> = Vec::new();
    for (kind, name) in used {
        let found = kept
            .iter()
            .find(|r| r.input.kind == *kind && r.input.name == *name);
        if let Some(record) = found {
            if !inputs.contains(&record.input) {
                inputs.push(record.input.clone());
            }
        }
    }
    if !used.iter().any(|(kind, _)| *kind == InputKind::Repo) {
        if let Some(newest) = kept.iter().find(|r| r.input.kind == InputKind::Repo) {
            inputs.push(newest.input.clone());
        }
    }
    inputs
}

/// Checks that the first bytes of a content look like an input of `kind`: a tarball (plain,
/// or gzip, xz, bzip2 or zstd compressed, as `stage import` reads them) or a SquashFS image.
pub fn check_content(kind: InputKind, head: &[u8]) -> Result<(), String> {
    let ok = match kind {
        InputKind::Repo => head.starts_with(b"hsqs"),
        InputKind::Stage | InputKind::Kernel => {
            head.starts_with(&[0x1f, 0x8b])
                || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0])
                || head.starts_with(b"BZh")
                || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
                || head.get(257..262) == Some(b"ustar")
        }
    };
    if ok {
        Ok(())
    } else if kind == InputKind::Repo {
        Err("a repository snapshot is a SquashFS image, as `autogentoo repo pack` writes".into())
    } else {
        Err(format!(
            "a {kind} is a tarball (.tar, .tar.gz, .tar.xz, .tar.bz2 or .tar.zst)"
        ))
    }
}

/// The first 512 bytes of `file` (fewer when it is shorter).
pub fn head_of(file: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(file)?
        .take(512)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// A host's workdir, as the worker drives it: through the autogentoo program, with its backend.
pub struct HostWorkdir<'a> {
    pub program: &'a Path,
    pub workdir: &'a Path,
    pub backend: &'a str,
    /// The host's own database, for the commands run.
    pub database_url: String,
}

impl HostWorkdir<'_> {
    fn command(&self) -> Command {
        let mut command = Command::new(self.program);
        command
            .arg("--workdir")
            .arg(self.workdir)
            .args(["--backend", self.backend])
            .env(autogentoo_db::URL_VAR, &self.database_url)
            .stdin(Stdio::null());
        command
    }

    /// Runs the program with `args`; its output, whatever its exit status.
    fn run<I, S>(&self, args: I) -> Result<std::process::Output, InputError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command()
            .args(args)
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| InputError::Io {
                path: self.program.to_owned(),
                source,
            })
    }

    /// The creation time of the volume `name` of `kind` (a stage, a kernel), if it is there.
    fn volume_created(&self, kind: InputKind, name: &str) -> Result<Option<i64>, InputError> {
        let output = self.run(["--json", kind.as_str(), "list"])?;
        if !output.status.success() {
            return Err(InputError::Import {
                kind,
                name: name.to_owned(),
                why: format!(
                    "`{kind} list` failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            });
        }
        let volumes: Vec<serde_json::Value> =
            serde_json::from_slice(&output.stdout).unwrap_or_default();
        Ok(volumes
            .iter()
            .find(|v| v["id"]["name"] == name)
            .and_then(|v| v["created"].as_i64()))
    }

    fn import(&self, input: &Input, file: &Path) -> Result<(), InputError> {
        let output = self.run([
            input.kind.as_str().as_ref(),
            "import".as_ref(),
            file.as_os_str(),
            "--name".as_ref(),
            std::ffi::OsStr::new(&input.name),
        ])?;
        if output.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(&output.stderr);
        Err(InputError::Import {
            kind: input.kind,
            name: input.name.clone(),
            why: said.lines().last().unwrap_or("").trim().to_owned(),
        })
    }
}

/// Makes each input of `job` ready in the host's workdir, fetching what it lacks with the
/// job's credential (`client`). Returns the name of the repository snapshot the build must
/// mount, when the job carries one.
pub fn provide(
    host: &HostWorkdir,
    client: &Client,
    job: &Job,
) -> Result<Option<String>, InputError> {
    let mut repo = None;
    for input in &job.inputs {
        match input.kind {
            InputKind::Repo => {
                provide_repo(host, client, job, input)?;
                repo = Some(input.name.clone());
            }
            InputKind::Stage | InputKind::Kernel => provide_volume(host, client, job, input)?,
        }
    }
    Ok(repo)
}

/// Where the host notes what the farm put in its workdir.
fn marker(host: &HostWorkdir, input: &Input) -> PathBuf {
    host.workdir
        .join("farm")
        .join("inputs")
        .join(input.kind.as_str())
        .join(&input.name)
}

fn read_marker(path: &Path) -> Option<(String, String)> {
    let text = std::fs::read_to_string(path).ok()?;
    let (sha256, rest) = text.trim().split_once(' ').unwrap_or((text.trim(), ""));
    Some((sha256.to_owned(), rest.to_owned()))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), InputError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let partial = dir.join(format!(".{}.partial", secret::random_hex(4)));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&partial, bytes))
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|source| {
            let _ = std::fs::remove_file(&partial);
            InputError::Io {
                path: path.to_owned(),
                source,
            }
        })
}

fn short(sha256: &str) -> String {
    sha256.chars().take(12).collect()
}

/// A stage or kernel volume: there with the farm's content, or imported now.
fn provide_volume(
    host: &HostWorkdir,
    client: &Client,
    job: &Job,
    input: &Input,
) -> Result<(), InputError> {
    let marker = marker(host, input);
    if let Some(created) = host.volume_created(input.kind, &input.name)? {
        let ours = read_marker(&marker)
            .is_some_and(|(sha256, made)| sha256 == input.sha256 && made == created.to_string());
        if ours {
            return Ok(());
        }
        return Err(InputError::NotTheFarms {
            kind: input.kind,
            name: input.name.clone(),
            short: short(&input.sha256),
            remove: format!("`autogentoo {} remove {}`", input.kind, input.name),
        });
    }
    let file = fetch(host, client, job, input)?;
    let imported = host.import(input, &file);
    let _ = std::fs::remove_file(&file);
    imported?;
    let created = host
        .volume_created(input.kind, &input.name)?
        .ok_or_else(|| InputError::Import {
            kind: input.kind,
            name: input.name.clone(),
            why: "it is not listed after its import".into(),
        })?;
    write_atomically(&marker, format!("{} {created}\n", input.sha256).as_bytes())
}

/// A repository snapshot: `repos/NAME.sqfs` with the farm's content, put there now, or put
/// over an older one the farm put there.
fn provide_repo(
    host: &HostWorkdir,
    client: &Client,
    job: &Job,
    input: &Input,
) -> Result<(), InputError> {
    let repos = autogentoo_core::storage::workdir::Layout::new(host.workdir).repos();
    let image = repos.join(format!("{}.sqfs", input.name));
    let marker = marker(host, input);
    if image.exists() {
        let have = sha256_of_file(&image)?;
        if have == input.sha256 {
            return Ok(());
        }
        if read_marker(&marker).is_none_or(|(sha256, _)| sha256 != have) {
            return Err(InputError::NotTheFarms {
                kind: input.kind,
                name: input.name.clone(),
                short: short(&input.sha256),
                remove: format!("rm {}", image.display()),
            });
        }
    }
    let file = fetch(host, client, job, input)?;
    let head = head_of(&file).map_err(|source| InputError::Io {
        path: file.clone(),
        source,
    })?;
    if let Err(why) = check_content(InputKind::Repo, &head) {
        let _ = std::fs::remove_file(&file);
        return Err(InputError::Import {
            kind: input.kind,
            name: input.name.clone(),
            why,
        });
    }
    // The marker first: a host killed between the two has a marker for an image it lacks,
    // which the next job puts there.
    write_atomically(&marker, format!("{}\n", input.sha256).as_bytes())?;
    let partial = repos.join(format!(".{}.{}.partial", input.name, secret::random_hex(4)));
    std::fs::create_dir_all(&repos)
        .and_then(|()| std::fs::rename(&file, &partial))
        .and_then(|()| std::fs::rename(&partial, &image))
        .map_err(|source| {
            let _ = std::fs::remove_file(&file);
            let _ = std::fs::remove_file(&partial);
            InputError::Io {
                path: image.clone(),
                source,
            }
        })
}

/// Where a host downloads inputs before importing them.
fn downloads(workdir: &Path) -> PathBuf {
    workdir.join("farm").join("downloads")
}

/// Removes the downloads a worker killed mid-fetch or mid-import left behind.
pub fn sweep_downloads(workdir: &Path) {
    if let Ok(entries) = std::fs::read_dir(downloads(workdir)) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Downloads an input of `job` into the host's download directory, checked against its
/// SHA-256; returns the file.
fn fetch(
    host: &HostWorkdir,
    client: &Client,
    job: &Job,
    input: &Input,
) -> Result<PathBuf, InputError> {
    let dir = downloads(host.workdir);
    std::fs::create_dir_all(&dir).map_err(|source| InputError::Io {
        path: dir.clone(),
        source,
    })?;
    let file = dir.join(format!("{}.partial", input.sha256));
    eprintln!(
        "job {}: fetching {} '{}' ({} bytes) from the farm",
        job.id, input.kind, input.name, input.size
    );
    let got = client.download(&format!("/jobs/{}/inputs/{}", job.id, input.sha256), &file);
    let got = match got {
        Ok(got) => got,
        Err(error) => {
            let _ = std::fs::remove_file(&file);
            return Err(error.into());
        }
    };
    if got != input.sha256 {
        let _ = std::fs::remove_file(&file);
        return Err(InputError::Corrupt {
            kind: input.kind,
            name: input.name.clone(),
            got,
            want: input.sha256.clone(),
        });
    }
    Ok(file)
}

/// The SHA-256 of a file, read once.
pub fn sha256_of_file(path: &Path) -> Result<String, InputError> {
    use sha2::Digest;
    let io = |source| InputError::Io {
        path: path.to_owned(),
        source,
    };
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path).map_err(io)?, &mut hasher).map_err(io)?;
    Ok(secret::hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: InputKind, name: &str, sha: &str) -> InputRecord {
        InputRecord {
            input: Input {
                kind,
                name: name.into(),
                sha256: sha.into(),
                size: 1,
            },
            added_by: "admin".into(),
            added_at: 0,
        }
    }

    #[test]
    fn a_job_carries_what_its_system_uses_that_the_farm_has() {
        let kept = [
            record(InputKind::Repo, "gentoo-new", "r2"),
            record(InputKind::Stage, "base", "s1"),
            record(InputKind::Repo, "gentoo-old", "r1"),
            record(InputKind::Kernel, "linux", "k1"),
            record(InputKind::Stage, "other", "s2"),
        ];
        let used = [
            (InputKind::Stage, "base".to_owned()),
            (InputKind::Stage, "busybox".to_owned()),
            (InputKind::Kernel, "linux".to_owned()),
        ];
        let names: Vec<_> = for_job(&used, &kept).into_iter().map(|i| i.name).collect();
        // The host's own busybox stage; the newest repository snapshot.
        assert_eq!(names, ["base", "linux", "gentoo-new"]);
        let named = [(InputKind::Repo, "gentoo-old".to_owned())];
        let names: Vec<_> = for_job(&named, &kept).into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["gentoo-old"]);
        // A snapshot the farm lacks is the host's: no other one is put in its place.
        let absent = [(InputKind::Repo, "mine".to_owned())];
        assert!(for_job(&absent, &kept).is_empty());
    }

    #[test]
    fn contents_are_checked_by_their_magic_bytes() {
        assert!(check_content(InputKind::Repo, b"hsqs\0\0").is_ok());
        assert!(check_content(InputKind::Repo, &[0x1f, 0x8b, 8]).is_err());
        assert!(check_content(InputKind::Stage, &[0x1f, 0x8b, 8]).is_ok());
        assert!(check_content(InputKind::Kernel, b"\xfd7zXZ\0rest").is_ok());
        assert!(check_content(InputKind::Stage, &[0x28, 0xb5, 0x2f, 0xfd]).is_ok());
        let mut tar = vec![0u8; 512];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(check_content(InputKind::Stage, &tar).is_ok());
        assert!(check_content(InputKind::Stage, b"hsqs").is_err());
        assert!(check_content(InputKind::Stage, b"").is_err());
    }
}
