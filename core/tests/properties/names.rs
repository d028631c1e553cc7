//! Volume and snapshot names: `names::check` is what stands between a user's argument and a
//! path, a ZFS dataset or a btrfs subvolume.

use std::ffi::OsStr;
use std::path::{Component, Path};

use autogentoo_core::names::{check, NameError, MAX_LEN};
use proptest::prelude::*;

/// The grammar as the README states it, written out without looking at `check`:
/// `[A-Za-z0-9][A-Za-z0-9._-]*`, at most 64 characters.
fn in_grammar(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.chars().count() <= 64 && first.is_ascii_alphanumeric() && chars.all(allowed_after_first)
}

fn allowed_after_first(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Strings near the grammar's edges as well as anything at all: wrong first characters, path
/// separators, the length limit, and multi-byte characters that make bytes and characters
/// disagree about the length.
fn candidates() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[A-Za-z0-9._/ @-]{0,8}",
        "[A-Za-z0-9._-]{0,70}",
        "[A-Za-z0-9][A-Za-z0-9._-]{58,68}",
        "[A-Za-z0-9]\\PC{0,70}",
        "[a-zé.-]{20,70}",
        "\\.{1,3}(/[a-z]{0,3}){0,2}",
    ]
}

fn grammar() -> impl Strategy<Value = String> {
    "[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
}

proptest! {
    #![proptest_config(crate::cases(4096))]

    /// `check` agrees with the documented grammar on every string.
    #[test]
    fn check_accepts_exactly_the_documented_grammar(name in candidates()) {
        prop_assert_eq!(check(&name).is_ok(), in_grammar(&name), "{:?}", name);
    }

    /// The reason given for a refusal is true of the name, since it is all the user is told.
    #[test]
    fn a_refusal_gives_a_true_reason(name in candidates()) {
        match check(&name) {
            Ok(()) => {}
            Err(NameError::Empty) => prop_assert!(name.is_empty()),
            Err(NameError::TooLong) => prop_assert!(
                name.chars().count() > MAX_LEN,
                "{:?} ({} characters) refused as longer than {}",
                name,
                name.chars().count(),
                MAX_LEN
            ),
            Err(NameError::BadFirst) => {
                let first = name.chars().next();
                prop_assert!(first.is_some_and(|c| !c.is_ascii_alphanumeric()), "{:?}", name);
            }
            Err(NameError::BadChar(c)) => {
                prop_assert!(!allowed_after_first(c), "{:?}: {:?}", name, c);
                prop_assert!(name.chars().skip(1).any(|x| x == c), "{:?}: {:?}", name, c);
            }
        }
    }
}

proptest! {
    #![proptest_config(crate::cases(1024))]

    /// Whatever `check` accepts is one plain path component below any directory: never `.`,
    /// `..`, a separator, a hidden name or something a command would take for an option.
    #[test]
    fn an_accepted_name_is_one_safe_path_component(
        name in prop_oneof![grammar(), candidates()],
    ) {
        if check(&name).is_err() {
            return Ok(());
        }
        let parts: Vec<Component> = Path::new(&name).components().collect();
        prop_assert_eq!(parts, vec![Component::Normal(OsStr::new(&name))]);
        let base = Path::new("/var/lib/autogentoo/roots");
        let joined = base.join(&name);
        prop_assert_eq!(joined.parent(), Some(base));
        prop_assert_eq!(joined.file_name(), Some(OsStr::new(&name)));
        prop_assert!(!name.starts_with('.') && !name.starts_with('-'), "{:?}", name);
        prop_assert!(name.len() <= MAX_LEN && name.is_ascii(), "{:?}", name);
    }
}
