//! Gentoo `DIGESTS` files: the checksums published beside each stage tarball.
//!
//! The file lists hashes under headers such as `# SHA512 HASH`, one `HEX  FILENAME` line each,
//! possibly inside an OpenPGP clear-signed message. We verify the SHA512 of the tarball.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha512};

use crate::bounded_read::{self, Limit, ReadError};

/// A DIGESTS check that did not pass.
#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Unreadable(#[from] ReadError),
    #[error("{} has no SHA512 line for '{file}'; pass the DIGESTS file that belongs to this tarball", .digests.display())]
    NoEntry { digests: PathBuf, file: String },
    #[error("SHA512 of {} does not match {}: expected {expected}, got {actual}; the download is corrupt or not the one the DIGESTS describe", .file.display(), .digests.display())]
    Mismatch {
        file: PathBuf,
        digests: PathBuf,
        expected: String,
        actual: String,
    },
}

/// The SHA512 that `digests` lists for a file named `file_name` (the last path component is
/// compared), lowercased.
pub fn expected_sha512(digests: &str, file_name: &str) -> Option<String> {
    let mut section: Option<String> = None;
    let mut in_signature = false;
    for line in digests.lines() {
        let line = line.trim_end();
        // Clear-signed messages dash-escape lines that begin with '-'.
        let line = line.strip_prefix("- ").unwrap_or(line);
        if line.starts_with("-----BEGIN PGP SIGNATURE") {
            in_signature = true;
        } else if line.starts_with("-----END PGP SIGNATURE") {
            in_signature = false;
        }
        if in_signature || line.starts_with("-----") || line.starts_with("Hash:") {
            continue;
        }
        if let Some(header) = line.strip_prefix('#') {
            section = header
                .split_whitespace()
                .next()
                .map(str::to_ascii_uppercase);
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hash), Some(name)) = (fields.next(), fields.next()) else {
            continue;
        };
        let is_sha512 = match &section {
            Some(s) => s == "SHA512",
            None => hash.len() == 128,
        };
        let name = name.trim_start_matches('*');
        let base = name.rsplit('/').next().unwrap_or(name);
        if is_sha512 && base == file_name && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(hash.to_ascii_lowercase());
        }
    }
    None
}

/// The SHA512 of a file's contents, lowercase hex.
pub fn sha512_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha512::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `file` against the SHA512 that the DIGESTS file `digests` lists for it; returns the
/// verified hash.
pub fn verify(file: &Path, digests: &Path) -> Result<String, DigestError> {
    let text = bounded_read::read_text(digests, Limit::DIGESTS)?;
    let file_name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let expected = expected_sha512(&text, &file_name).ok_or_else(|| DigestError::NoEntry {
        digests: digests.to_owned(),
        file: file_name,
    })?;
    let actual = sha512_file(file).map_err(|source| DigestError::Read {
        path: file.to_owned(),
        source,
    })?;
    if actual == expected {
        Ok(actual)
    } else {
        Err(DigestError::Mismatch {
            file: file.to_owned(),
            digests: digests.to_owned(),
            expected,
            actual,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA512_A: &str = "aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11aa11";
    const BLAKE_A: &str = "bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22bb22";

    #[test]
    fn finds_the_sha512_line_of_a_signed_gentoo_digests_file() {
        let text = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n\
             # BLAKE2B HASH\n{BLAKE_A}  stage3-amd64-openrc-20261124T170000Z.tar.xz\n\
             # SHA512 HASH\n{SHA512_A}  stage3-amd64-openrc-20261124T170000Z.tar.xz\n\
             # SHA512 HASH\n{BLAKE_A}  stage3-amd64-openrc-20261124T170000Z.tar.xz.CONTENTS.gz\n\
             -----BEGIN PGP SIGNATURE-----\n\nabcdef\n-----END PGP SIGNATURE-----\n"
        );
        assert_eq!(
            expected_sha512(&text, "stage3-amd64-openrc-20261124T170000Z.tar.xz").as_deref(),
            Some(SHA512_A)
        );
        assert_eq!(expected_sha512(&text, "other.tar.xz"), None);
    }

    #[test]
    fn plain_sha512sum_output_is_accepted() {
        let text = format!("{}  ./dist/stage.tar\n", SHA512_A.to_uppercase());
        assert_eq!(
            expected_sha512(&text, "stage.tar").as_deref(),
            Some(SHA512_A)
        );
    }

    #[test]
    fn verify_reports_a_mismatch_with_both_hashes() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("stage.tar");
        std::fs::write(&file, b"not the stage").unwrap();
        let digests = tmp.path().join("stage.tar.DIGESTS");
        std::fs::write(&digests, format!("# SHA512 HASH\n{SHA512_A}  stage.tar\n")).unwrap();
        let err = verify(&file, &digests).unwrap_err();
        assert!(matches!(err, DigestError::Mismatch { .. }), "{err}");
        assert!(err.to_string().contains(SHA512_A));
        let good = sha512_file(&file).unwrap();
        std::fs::write(&digests, format!("# SHA512 HASH\n{good}  stage.tar\n")).unwrap();
        assert_eq!(verify(&file, &digests).unwrap(), good);
    }
}
