//! Kernel configs: the pipeline reads a user's `.config`, sets what it needs, and writes it back
//! for kbuild, so every option must survive the trip and setting twice must change nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use autogentoo_core::kernel::kconfig::{
    apply, check, merge, Config, KconfigError, Requirements, Value,
};
use autogentoo_core::site_config::Compression;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// Symbols the requirements touch, mixed with others so that configs often state them already.
const KNOWN: &[&str] = &[
    "BLK_DEV_INITRD",
    "INITRAMFS_SOURCE",
    "RD_GZIP",
    "RD_ZSTD",
    "RD_XZ",
    "DEVTMPFS",
    "EFI",
    "EFI_STUB",
    "CMDLINE_BOOL",
    "CMDLINE",
    "64BIT",
    "MODULES",
];

fn symbol() -> impl Strategy<Value = String> {
    prop_oneof![select(KNOWN).prop_map(str::to_owned), "[A-Za-z0-9_]{1,16}",]
}

/// Any value a `.config` line can state. Strings hold anything but a line break, quotes and
/// backslashes included.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Yes),
        Just(Value::Module),
        Just(Value::No),
        "[^\n]{0,24}".prop_map(Value::String),
        "[\"\\\\ a=#]{0,8}".prop_map(Value::String),
        "-?[0-9]{1,10}".prop_map(Value::Number),
        "0[xX][0-9a-fA-F]{1,8}".prop_map(Value::Number),
    ]
}

/// One line of a generated config.
#[derive(Clone, Debug)]
enum Line {
    /// `CONFIG_X=VALUE`; `n` as fragments write it.
    Set(String, Value),
    /// `# CONFIG_X is not set`
    NotSet(String),
    Comment(String),
    Blank(String),
}

#[derive(Clone, Debug)]
struct Generated {
    lines: Vec<(Line, bool)>,
    final_newline: bool,
}

fn escaped(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect()
}

impl Generated {
    /// The text, written the way kbuild writes configs, without using the code under test.
    fn text(&self) -> String {
        let mut text = String::new();
        for (i, (line, crlf)) in self.lines.iter().enumerate() {
            match line {
                Line::Set(symbol, Value::String(s)) => {
                    text.push_str(&format!("CONFIG_{symbol}=\"{}\"", escaped(s)))
                }
                Line::Set(symbol, Value::Number(n)) => {
                    text.push_str(&format!("CONFIG_{symbol}={n}"))
                }
                Line::Set(symbol, value) => {
                    let letter = match value {
                        Value::Yes => "y",
                        Value::Module => "m",
                        _ => "n",
                    };
                    text.push_str(&format!("CONFIG_{symbol}={letter}"));
                }
                Line::NotSet(symbol) => text.push_str(&format!("# CONFIG_{symbol} is not set")),
                Line::Comment(comment) => text.push_str(comment),
                Line::Blank(blank) => text.push_str(blank),
            }
            if i + 1 < self.lines.len() || self.final_newline {
                text.push_str(if *crlf { "\r\n" } else { "\n" });
            }
        }
        text
    }

    /// Every option in file order.
    fn entries(&self) -> Vec<(String, Value)> {
        self.lines
            .iter()
            .filter_map(|(line, _)| match line {
                Line::Set(symbol, value) => Some((symbol.clone(), value.clone())),
                Line::NotSet(symbol) => Some((symbol.clone(), Value::No)),
                _ => None,
            })
            .collect()
    }
}

fn line() -> impl Strategy<Value = Line> {
    prop_oneof![
        6 => (symbol(), value()).prop_map(|(s, v)| Line::Set(s, v)),
        2 => symbol().prop_map(Line::NotSet),
        1 => prop_oneof![
            Just("#".to_owned()),
            "# [a-z][^\n]{0,20}",
            Just("# Automatically generated file; DO NOT EDIT.".to_owned()),
        ]
        .prop_map(Line::Comment),
        1 => "[ \t]{0,3}".prop_map(Line::Blank),
    ]
}

fn generated() -> impl Strategy<Value = Generated> {
    (vec((line(), any::<bool>()), 0..24), any::<bool>()).prop_map(|(lines, final_newline)| {
        Generated {
            lines,
            final_newline,
        }
    })
}

/// What `kernel build` and `kernel config` make requirements from: an archive path that kbuild
/// takes as it is, any compression, and maybe a command line, with quotes and backslashes or
/// with any characters at all.
#[derive(Clone, Debug)]
struct Needs {
    initramfs: Option<PathBuf>,
    compression: Compression,
    cmdline: Option<String>,
}

impl Needs {
    fn requirements(&self) -> Result<Requirements, KconfigError> {
        Requirements::new(
            self.initramfs.as_deref(),
            self.compression,
            self.cmdline.as_deref(),
        )
    }
}

fn needs() -> impl Strategy<Value = Needs> {
    let compression = select(vec![
        Compression::Gzip,
        Compression::Zstd,
        Compression::Xz,
        Compression::None,
    ]);
    (
        compression,
        proptest::option::of("(/[a-z0-9_-]{1,8}){1,3}"),
        proptest::option::of(prop_oneof![
            3 => "[ -~]{0,40}",
            1 => vec(any::<char>(), 0..20).prop_map(String::from_iter),
        ]),
    )
        .prop_map(|(compression, dir, cmdline)| {
            let suffix = match compression {
                Compression::Gzip => ".cpio.gz",
                Compression::Zstd => ".cpio.zst",
                Compression::Xz => ".cpio.xz",
                Compression::None => ".cpio",
            };
            Needs {
                initramfs: dir.map(|dir| PathBuf::from(format!("{dir}/initramfs{suffix}"))),
                compression,
                cmdline,
            }
        })
}

/// Each symbol's last value, as Kconfig reads a config that states one twice.
fn last_values(entries: &[(String, Value)]) -> BTreeMap<String, Value> {
    entries.iter().cloned().collect()
}

proptest! {
    #![proptest_config(crate::cases(1024))]

    /// A config read and written back is the same text, and the parser saw every option with
    /// its value: `y`, `m`, `n`, not-set comments, numbers, strings with quotes and escapes.
    #[test]
    fn parsing_then_rendering_keeps_every_option(generated in generated()) {
        let text = generated.text();
        let config = Config::parse(&text).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(config.to_string(), text);
        let entries: Vec<(String, Value)> =
            config.entries().map(|(s, v)| (s.to_owned(), v.clone())).collect();
        prop_assert_eq!(&entries, &generated.entries());
        for (symbol, value) in last_values(&entries) {
            prop_assert_eq!(config.get(&symbol), Some(&value), "{}", symbol);
        }
    }

    /// Values set by the program are written so that kbuild, and we, read the same back.
    #[test]
    fn values_that_are_set_read_back(
        base in generated(),
        sets in vec((symbol(), value()), 0..12),
    ) {
        let mut config = Config::parse(&base.text()).unwrap();
        for (symbol, value) in &sets {
            config.set(symbol, value.clone());
        }
        let reread = Config::parse(&config.to_string())
            .map_err(|e| TestCaseError::fail(format!("{e} in:\n{config}")))?;
        let mut wanted = last_values(&base.entries());
        wanted.extend(sets.iter().cloned());
        for (symbol, value) in &wanted {
            prop_assert_eq!(reread.get(symbol), Some(value), "{}", symbol);
        }
        prop_assert_eq!(reread, config);
    }

    /// Applying the pipeline's requirements leaves nothing to change: `check` finds nothing, a
    /// second `apply` changes nothing, the written config still meets them, and every other
    /// option keeps its value. Only a command line that a config line cannot hold is refused.
    #[test]
    fn apply_is_idempotent(generated in generated(), needs in needs()) {
        let requirements = match needs.requirements() {
            Ok(requirements) => requirements,
            Err(error) => {
                let unwritable = needs.cmdline.as_deref().is_some_and(|c| c.chars().any(char::is_control));
                prop_assert!(
                    unwritable && matches!(error, KconfigError::ControlInCmdline(_)),
                    "{:?} refused: {}",
                    needs,
                    error
                );
                return Ok(());
            }
        };
        let original = Config::parse(&generated.text()).unwrap();
        let mut once = original.clone();
        let changes = apply(&mut once, &requirements);
        prop_assert_eq!(&changes, &check(&original, &requirements));
        prop_assert_eq!(check(&once, &requirements), vec![]);

        let mut twice = once.clone();
        prop_assert_eq!(apply(&mut twice, &requirements), vec![]);
        prop_assert_eq!(twice.to_string(), once.to_string());

        let written = Config::parse(&once.to_string())
            .map_err(|e| TestCaseError::fail(format!("{e} in:\n{once}")))?;
        prop_assert_eq!(check(&written, &requirements), vec![]);

        let required: Vec<&str> = requirements.iter().map(|r| r.symbol.as_str()).collect();
        for (symbol, _) in original.entries() {
            if !required.contains(&symbol) {
                prop_assert_eq!(once.get(symbol), original.get(symbol), "{}", symbol);
            }
        }
        if changes.is_empty() {
            prop_assert_eq!(once.to_string(), original.to_string());
        }
    }

    /// Fragments laid over a base: each symbol has the value of the last config stating it.
    #[test]
    fn merge_takes_each_symbol_from_the_last_config_stating_it(
        configs in vec(generated(), 1..4),
    ) {
        let parsed: Vec<Config> = configs.iter().map(|g| Config::parse(&g.text()).unwrap()).collect();
        let merged = merge(&parsed);
        let mut wanted = BTreeMap::new();
        for generated in &configs {
            wanted.extend(last_values(&generated.entries()));
        }
        let stated: BTreeMap<String, Value> =
            merged.entries().map(|(s, v)| (s.to_owned(), v.clone())).collect();
        prop_assert_eq!(stated.keys().collect::<Vec<_>>(), wanted.keys().collect::<Vec<_>>());
        for (symbol, value) in &wanted {
            prop_assert_eq!(merged.get(symbol), Some(value), "{}", symbol);
        }
    }
}
