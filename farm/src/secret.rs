//! The farm's secrets: API tokens, enrollment keys, host and job credentials. Each is 256
//! random bits, shown once when made and stored only as its SHA-256. The prefix says what a
//! secret is, so that one pasted in the wrong place (or found by a secret scanner) is told
//! apart at a glance.

use std::path::Path;

use sha2::{Digest, Sha256};

/// What a secret is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A person's API token.
    Token,
    /// A one-time key a build host enrolls with.
    EnrollmentKey,
    /// A build host's own credential.
    Host,
    /// A job's credential: that job's logs and artifacts, for one attempt.
    Job,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Self::Token => "agt_",
            Self::EnrollmentKey => "agk_",
            Self::Host => "agh_",
            Self::Job => "agj_",
        }
    }
}

/// A new secret of `kind`.
pub fn new(kind: Kind) -> String {
    format!("{}{}", kind.prefix(), random_hex(32))
}

/// `bytes` random bytes, as hex: for secrets and for ids.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the kernel's random source works");
    hex(&buf)
}

/// What is stored of a secret.
pub fn sha256(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A secret read from a file (its first line), so that it is never on a command line.
pub fn read_file(path: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(path)?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    Ok(secret)
}

/// Writes a secret to `path`, readable by its owner only, atomically.
pub fn write_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let partial = dir.join(format!(
        ".{}.partial",
        path.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    writeln!(file, "{secret}")?;
    file.sync_all()?;
    std::fs::rename(&partial, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hashed() {
        let a = new(Kind::Host);
        let b = new(Kind::Host);
        assert!(a.starts_with("agh_") && a.len() == 4 + 64, "{a}");
        assert_ne!(a, b);
        assert_eq!(
            sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_ne!(sha256(&a), a);
    }
}
