//! Names of volumes and snapshots: one rule for every backend, strict enough for ZFS dataset
//! names, btrfs subvolumes and plain directories alike, and never a path.

use std::fmt;

/// The longest name accepted. ZFS allows 255 bytes for a whole dataset path; this leaves room for
/// the pool, the workdir dataset and the kind.
pub const MAX_LEN: usize = 64;

/// Why a name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameError {
    Empty,
    TooLong,
    BadFirst,
    BadChar(char),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("a name cannot be empty"),
            Self::TooLong => write!(f, "a name is at most {MAX_LEN} characters"),
            Self::BadFirst => f.write_str("a name starts with a letter or a digit"),
            Self::BadChar(c) => write!(
                f,
                "{c:?} is not allowed; use letters, digits, '.', '_' and '-'"
            ),
        }
    }
}

impl std::error::Error for NameError {}

/// Checks a volume or snapshot name: `[A-Za-z0-9][A-Za-z0-9._-]*`, at most [`MAX_LEN`] long.
/// So `.`, `..`, `a/b`, hidden names and names starting with `-` are all refused.
pub fn check(name: &str) -> Result<(), NameError> {
    let mut chars = name.chars();
    let first = chars.next().ok_or(NameError::Empty)?;
    // Characters, as the message says: a short name of multi-byte characters is refused for
    // those characters, not for its length in bytes.
    if name.chars().count() > MAX_LEN {
        return Err(NameError::TooLong);
    }
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadFirst);
    }
    match chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        Some(c) => Err(NameError::BadChar(c)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "gentoo",
            "stage3-amd64-20261124",
            "a",
            "x_1.2",
            &"a".repeat(MAX_LEN),
        ] {
            assert_eq!(check(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_paths_and_hidden_names() {
        assert_eq!(check(""), Err(NameError::Empty));
        assert_eq!(check("."), Err(NameError::BadFirst));
        assert_eq!(check(".."), Err(NameError::BadFirst));
        assert_eq!(check("../x"), Err(NameError::BadFirst));
        assert_eq!(check(".hidden"), Err(NameError::BadFirst));
        assert_eq!(check("-rf"), Err(NameError::BadFirst));
        assert_eq!(check("a/b"), Err(NameError::BadChar('/')));
        assert_eq!(check("a@b"), Err(NameError::BadChar('@')));
        assert_eq!(check("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(check("é"), Err(NameError::BadFirst));
        assert_eq!(check(&"a".repeat(MAX_LEN + 1)), Err(NameError::TooLong));
        assert_eq!(
            check(&"é".repeat(MAX_LEN / 2 + 1)),
            Err(NameError::BadFirst)
        );
    }
}
