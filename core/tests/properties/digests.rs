//! DIGESTS files as Gentoo publishes them beside a stage tarball: `stage import --digests`
//! trusts the SHA512 that `expected_sha512` finds, so it must find the right file's and nothing
//! else.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use autogentoo_core::files::digests::expected_sha512;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// The hash a section header announces, and how many hex digits its hashes have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algorithm {
    Sha512,
    Blake2b,
    Sha256,
}

impl Algorithm {
    fn header(self) -> &'static str {
        match self {
            Self::Sha512 => "SHA512",
            Self::Blake2b => "BLAKE2B",
            Self::Sha256 => "SHA256",
        }
    }

    fn hex_digits(self) -> usize {
        match self {
            Self::Sha256 => 64,
            Self::Sha512 | Self::Blake2b => 128,
        }
    }
}

/// One listed file: how its line writes the hash and the name.
#[derive(Clone, Debug)]
struct Line {
    file: usize,
    /// Seeds the hash digits, so every line of the file has its own hash.
    hash_seed: u64,
    upper: bool,
    /// `*` before the name, as `sha512sum --binary` writes it.
    binary: bool,
    /// A directory part, which is not part of the file name.
    prefix: &'static str,
    separator: &'static str,
}

/// A section: its header, with whether a blank line precedes it (`None` for plain `sha512sum`
/// output before any header), and its lines.
#[derive(Clone, Debug)]
struct Section {
    header: Option<(Algorithm, bool)>,
    lines: Vec<Line>,
}

#[derive(Clone, Debug)]
struct Digests {
    files: Vec<String>,
    sections: Vec<Section>,
    signed: bool,
    /// Which lines of the signed text get a dash-escape they do not need (RFC 4880 allows any).
    escapes: Vec<bool>,
    /// A line inside the signature block that looks like a SHA512 entry of the first file.
    decoy_in_signature: bool,
    crlf: bool,
    final_newline: bool,
}

fn hex(seed: u64, digits: usize, upper: bool) -> String {
    let mut state = seed | 1;
    let mut out = String::with_capacity(digits);
    for _ in 0..digits {
        // xorshift: the digits need only differ between lines, not be good randomness.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let digit = (state % 16) as u32;
        let c = char::from_digit(digit, 16).expect("a hex digit");
        out.push(if upper { c.to_ascii_uppercase() } else { c });
    }
    out
}

impl Section {
    fn algorithm(&self) -> Algorithm {
        self.header
            .map_or(Algorithm::Sha512, |(algorithm, _)| algorithm)
    }
}

impl Digests {
    fn hash_of(&self, section: &Section, line: &Line) -> String {
        hex(line.hash_seed, section.algorithm().hex_digits(), line.upper)
    }

    /// The SHA512 each file has in the text, lowercased: from a SHA512 section, or from a line
    /// before any header.
    fn expected(&self) -> BTreeMap<String, String> {
        let mut expected = BTreeMap::new();
        for section in &self.sections {
            if section.algorithm() != Algorithm::Sha512 {
                continue;
            }
            for line in &section.lines {
                expected
                    .entry(self.files[line.file].clone())
                    .or_insert_with(|| self.hash_of(section, line).to_ascii_lowercase());
            }
        }
        expected
    }

    fn render(&self) -> String {
        let mut body = Vec::new();
        for section in &self.sections {
            if let Some((algorithm, blank_before)) = section.header {
                if blank_before {
                    body.push(String::new());
                }
                body.push(format!("# {} HASH", algorithm.header()));
            }
            for line in &section.lines {
                body.push(format!(
                    "{}{}{}{}{}",
                    self.hash_of(section, line),
                    line.separator,
                    if line.binary { "*" } else { "" },
                    line.prefix,
                    self.files[line.file]
                ));
            }
        }
        let mut lines = Vec::new();
        if self.signed {
            lines.extend(
                ["-----BEGIN PGP SIGNED MESSAGE-----", "Hash: SHA512", ""].map(String::from),
            );
            for (i, line) in body.into_iter().enumerate() {
                let escape = line.starts_with('-') || self.escapes.get(i).copied().unwrap_or(false);
                lines.push(if escape { format!("- {line}") } else { line });
            }
            lines.extend(["-----BEGIN PGP SIGNATURE-----", ""].map(String::from));
            lines.push("iQIzBAEBCgAdFiEEw0bQ+3Yk3pJdZ7vFf9fKlZ2xZ8sFAmV0AAAACgkQf9fKlZ2x".into());
            if self.decoy_in_signature {
                lines.push(format!("{}  {}", hex(7, 128, false), self.files[0]));
            }
            lines.push("=AbCd".into());
            lines.push("-----END PGP SIGNATURE-----".into());
        } else {
            lines = body;
        }
        let ending = if self.crlf { "\r\n" } else { "\n" };
        let mut text = lines.join(ending);
        if self.final_newline {
            text.push_str(ending);
        }
        text
    }
}

fn file_names() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set(
        prop_oneof![
            "stage3-[a-z0-9]{1,8}-(openrc|systemd)-2026[0-9]{4}T[0-9]{6}Z\\.tar\\.(xz|bz2|zst)",
            "[a-z0-9][a-zA-Z0-9._+-]{0,20}",
        ],
        1..6,
    )
    .prop_map(|names| names.into_iter().collect())
}

fn line(files: usize) -> impl Strategy<Value = Line> {
    (
        0..files,
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        select(vec!["", "", "./", "dist/", "/var/tmp/releases/amd64/"]),
        select(vec!["  ", " ", "\t", "   "]),
    )
        .prop_map(|(file, hash_seed, upper, binary, prefix, separator)| Line {
            file,
            hash_seed,
            upper,
            binary,
            prefix,
            separator,
        })
}

fn section(files: usize, headed: bool) -> impl Strategy<Value = Section> {
    let algorithm = select(vec![
        Algorithm::Sha512,
        Algorithm::Blake2b,
        Algorithm::Sha256,
    ]);
    (algorithm, any::<bool>(), vec(line(files), 0..5)).prop_map(move |(algorithm, blank, lines)| {
        Section {
            header: headed.then_some((algorithm, blank)),
            lines,
        }
    })
}

fn digests() -> impl Strategy<Value = Digests> {
    file_names().prop_flat_map(|files| {
        let n = files.len();
        (
            Just(files),
            proptest::option::of(section(n, false)),
            vec(section(n, true), 0..6),
            any::<bool>(),
            vec(any::<bool>(), 40),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(files, bare, headed, signed, escapes, decoy, crlf, final_newline)| {
                    let mut digests = Digests {
                        files,
                        sections: bare.into_iter().chain(headed).collect(),
                        signed,
                        escapes,
                        decoy_in_signature: decoy && signed,
                        crlf,
                        final_newline,
                    };
                    keep_one_sha512_per_file(&mut digests);
                    digests
                },
            )
    })
}

/// A file listed twice under SHA512 would make "the right hash" ambiguous.
fn keep_one_sha512_per_file(digests: &mut Digests) {
    let mut seen = vec![false; digests.files.len()];
    for section in &mut digests.sections {
        if section.algorithm() == Algorithm::Sha512 {
            section
                .lines
                .retain(|line| !std::mem::replace(&mut seen[line.file], true));
        }
    }
}

/// Names to look up: every listed file, and names close to them that are not listed.
fn queries(digests: &Digests) -> Vec<String> {
    let mut queries = Vec::new();
    for name in &digests.files {
        queries.push(name.clone());
        queries.push(format!("{name}.asc"));
        queries.push(format!("*{name}"));
        queries.push(format!("dist/{name}"));
        queries.push(name[..name.len() - 1].to_owned());
        queries.push(name.to_ascii_uppercase());
    }
    queries.extend(["", "dist", "HASH", "SHA512"].map(String::from));
    queries
}

proptest! {
    #![proptest_config(crate::cases(1024))]

    /// Each file's SHA512 is found whatever the layout, and no other hash is ever returned: not
    /// another section's, another file's, nor a line inside the signature.
    #[test]
    fn the_sha512_of_the_right_file_is_found_and_nothing_else(digests in digests()) {
        let text = digests.render();
        let expected = digests.expected();
        let mut summary = String::new();
        for query in queries(&digests) {
            let found = expected_sha512(&text, &query);
            let wanted = Ok(expected.get(&query).cloned());
            if found != wanted {
                let _ = writeln!(summary, "{query:?}: found {found:?}, expected {wanted:?}");
            }
        }
        prop_assert!(summary.is_empty(), "{}in:\n{}", summary, text);
    }
}

proptest! {
    #![proptest_config(crate::cases(2048))]

    /// A DIGESTS file is downloaded data: anything at all is read without a panic, what is
    /// returned is always a SHA512 in lowercase hex, and a malformed line is one the text has.
    #[test]
    fn arbitrary_text_never_panics(
        text in prop_oneof![
            any::<String>(),
            "([#a-fA-F0-9 *./\t\r\n-]|SHA512|BLAKE2B|HASH|-----BEGIN PGP SIGNATURE-----|- ){0,80}",
        ],
        name in prop_oneof![any::<String>(), "[a-f0-9./*]{0,6}"],
    ) {
        match expected_sha512(&text, &name) {
            Ok(None) => {}
            Ok(Some(hash)) => prop_assert!(
                hash.len() == 128 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                "{:?} is not a SHA512",
                hash
            ),
            Err(malformed) => {
                prop_assert!((1..=text.lines().count()).contains(&malformed.line), "{:?}", malformed)
            }
        }
    }
}
