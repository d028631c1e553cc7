//! Gentoo `DIGESTS` files: the checksums published beside each stage tarball.
//!
//! The file lists hashes under headers such as `# SHA512 HASH`, one `HEX  FILENAME` line each,
//! possibly inside an OpenPGP clear-signed message. We verify the SHA512 of the tarball, hashing
//! the bytes as they are read for the import, so that what is checked is what is extracted.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha512};

use crate::files::bounded_read::{self, Limit, ReadError};

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
    #[error("{}:{line}: malformed SHA512 line for '{file}': {reason}; a SHA512 line is 128 hex digits, \
             two spaces and the file name; fix the line or download the DIGESTS file again", .digests.display())]
    Malformed {
        digests: PathBuf,
        line: usize,
        file: String,
        reason: String,
    },
    #[error("SHA512 of {} does not match {}: expected {expected}, got {actual}; the download is corrupt or not the one the DIGESTS describe", .file.display(), .digests.display())]
    Mismatch {
        file: PathBuf,
        digests: PathBuf,
        expected: String,
        actual: String,
    },
}

/// A SHA512 line for the file that does not hold a SHA512.
#[derive(Debug, PartialEq, Eq)]
pub struct MalformedLine {
    /// Counted from 1, as editors show it.
    pub line: usize,
    pub reason: String,
}

/// The SHA512 that `digests` lists for a file named `file_name` (the last path component is
/// compared), lowercased; `None` if no SHA512 line names the file.
///
/// A SHA512 line is one under a `# SHA512 HASH` header, or, before any header, a bare
/// `HEX  NAME` line as `sha512sum` writes. The first such line for the file decides: a hash
/// that is not 128 hex digits is malformed, never a hash that merely fails to match.
pub fn expected_sha512(digests: &str, file_name: &str) -> Result<Option<String>, MalformedLine> {
    let mut section: Option<String> = None;
    let mut in_signature = false;
    for (index, line) in digests.lines().enumerate() {
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
        if section.as_deref().is_some_and(|s| s != "SHA512") {
            continue;
        }
        let mut fields = line.split_whitespace();
        let (Some(hash), Some(name)) = (fields.next(), fields.next()) else {
            continue;
        };
        let name = name.trim_start_matches('*');
        let base = name.rsplit('/').next().unwrap_or(name);
        if base != file_name {
            continue;
        }
        return match sha512_problem(hash) {
            None => Ok(Some(hash.to_ascii_lowercase())),
            Some(reason) => Err(MalformedLine {
                line: index + 1,
                reason,
            }),
        };
    }
    Ok(None)
}

/// What is wrong with `hash` as a SHA512 in hex, if anything.
fn sha512_problem(hash: &str) -> Option<String> {
    if let Some(bad) = hash.chars().find(|c| !c.is_ascii_hexdigit()) {
        Some(format!("'{bad}' is not a hex digit"))
    } else if hash.len() != 128 {
        Some(format!("the hash has {} hex digits", hash.len()))
    } else {
        None
    }
}

/// A digest as lowercase hex, as DIGESTS files, manifests and `sha256sum` write them.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A file's SHA512 as its DIGESTS file lists it, checked against the file's bytes as a reader
/// hands them over: the file is read once, by whoever uses it, never again for the check.
pub struct Sha512Check {
    file: PathBuf,
    digests: PathBuf,
    expected: String,
    hasher: Sha512,
}

impl Sha512Check {
    /// Reads the SHA512 that the DIGESTS file `digests` lists for `file`: a missing or
    /// malformed line is refused here, before the file is read.
    pub fn new(file: &Path, digests: &Path) -> Result<Self, DigestError> {
        let text = bounded_read::read_text(digests, Limit::DIGESTS)?;
        let file_name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let expected = match expected_sha512(&text, &file_name) {
            Ok(Some(expected)) => expected,
            Ok(None) => {
                return Err(DigestError::NoEntry {
                    digests: digests.to_owned(),
                    file: file_name,
                })
            }
            Err(MalformedLine { line, reason }) => {
                return Err(DigestError::Malformed {
                    digests: digests.to_owned(),
                    line,
                    file: file_name,
                    reason,
                })
            }
        };
        Ok(Self {
            file: file.to_owned(),
            digests: digests.to_owned(),
            expected,
            hasher: Sha512::new(),
        })
    }

    /// Takes the next bytes of the file.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
    }

    /// Once every byte of the file has been taken: its SHA512 (lowercase hex) if it is the one
    /// listed, else the mismatch.
    pub fn finish(self) -> Result<String, DigestError> {
        let actual = hex(&self.hasher.finalize());
        if actual == self.expected {
            Ok(actual)
        } else {
            Err(DigestError::Mismatch {
                file: self.file,
                digests: self.digests,
                expected: self.expected,
                actual,
            })
        }
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
            expected_sha512(&text, "stage3-amd64-openrc-20261124T170000Z.tar.xz"),
            Ok(Some(SHA512_A.to_owned()))
        );
        assert_eq!(expected_sha512(&text, "other.tar.xz"), Ok(None));
    }

    #[test]
    fn plain_sha512sum_output_is_accepted() {
        let text = format!("{}  ./dist/stage.tar\n", SHA512_A.to_uppercase());
        assert_eq!(
            expected_sha512(&text, "stage.tar"),
            Ok(Some(SHA512_A.to_owned()))
        );
    }

    #[test]
    fn a_short_sha512_line_for_the_file_is_malformed_not_a_mismatch() {
        let short = &SHA512_A[..60];
        let headed =
            format!("# BLAKE2B HASH\n{BLAKE_A}  stage.tar\n# SHA512 HASH\n{short}  stage.tar\n");
        let found = expected_sha512(&headed, "stage.tar").unwrap_err();
        assert_eq!(found.line, 4, "{found:?}");
        assert!(found.reason.contains("60 hex digits"), "{found:?}");
        let bare = format!("{SHA512_A}  other.tar\n{short}  ./stage.tar\n");
        assert_eq!(expected_sha512(&bare, "stage.tar").unwrap_err().line, 2);
        let not_hex = format!("# SHA512 HASH\n{}xyz  stage.tar\n", &SHA512_A[..125]);
        assert!(expected_sha512(&not_hex, "stage.tar")
            .unwrap_err()
            .reason
            .contains("'x' is not a hex digit"));
        // Another file's short line, or a short hash of another kind, is none of our business.
        let others = format!(
            "# SHA512 HASH\n{short}  stage.tar.CONTENTS.gz\n{SHA512_A}  stage.tar\n\
             # SHA256 HASH\n{short}  stage.tar\n"
        );
        assert_eq!(
            expected_sha512(&others, "stage.tar"),
            Ok(Some(SHA512_A.to_owned()))
        );

        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("stage.tar");
        let digests = tmp.path().join("stage.tar.DIGESTS");
        std::fs::write(&digests, &headed).unwrap();
        // Refused from the DIGESTS file alone: the tarball need not even exist yet.
        let Err(err) = Sha512Check::new(&file, &digests) else {
            panic!("a malformed line passes");
        };
        assert!(
            matches!(err, DigestError::Malformed { line: 4, .. }),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("{}:4: malformed", digests.display()))
                && message.contains("128 hex digits")
                && !message.contains("does not match"),
            "{message}"
        );
    }

    /// The SHA512 of "not the stage", as `sha512sum` prints it.
    const SHA512_NOT_THE_STAGE: &str =
        "b43d3aeaa0c9ea40a67f9a5bd9498e9fd2d2235eb362cec752389ea374c9f4f539ce2b9c15cccf948f88363dccea94802d03792d617cb3b1f613fc0501a60e6b";

    #[test]
    fn a_check_compares_the_bytes_it_was_given_and_reports_both_hashes() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("stage.tar");
        let digests = tmp.path().join("stage.tar.DIGESTS");
        std::fs::write(&digests, format!("# SHA512 HASH\n{SHA512_A}  stage.tar\n")).unwrap();
        let mut check = Sha512Check::new(&file, &digests).unwrap();
        check.update(b"not the ");
        check.update(b"stage");
        let err = check.finish().unwrap_err();
        assert!(matches!(err, DigestError::Mismatch { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains(SHA512_A) && message.contains(SHA512_NOT_THE_STAGE),
            "{message}"
        );

        let good = SHA512_NOT_THE_STAGE;
        std::fs::write(&digests, format!("# SHA512 HASH\n{good}  stage.tar\n")).unwrap();
        let mut check = Sha512Check::new(&file, &digests).unwrap();
        check.update(b"not the stage");
        assert_eq!(check.finish().unwrap(), good);
    }

    #[test]
    fn a_file_without_a_sha512_line_is_refused_before_it_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let digests = tmp.path().join("DIGESTS");
        std::fs::write(&digests, format!("# SHA512 HASH\n{SHA512_A}  other.tar\n")).unwrap();
        let Err(err) = Sha512Check::new(&tmp.path().join("stage.tar"), &digests) else {
            panic!("no line passes");
        };
        assert!(matches!(err, DigestError::NoEntry { .. }), "{err}");
    }
}
