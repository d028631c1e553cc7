//! Kernel configs: the options the pipeline needs in them, and why `make olddefconfig` may drop
//! one.
//!
//! A [`Config`] keeps a `.config` file's lines in order, so a config nothing changed is written
//! back byte for byte and a changed one differs only in the changed lines. [`Requirements`] are
//! the options an EFI-stub kernel with the root in its embedded initramfs needs; [`check`] lists
//! those a config lacks as [`Change`]s and [`apply`] makes them. [`merge`] lays config fragments
//! over a base, later ones winning, as the kernel's `scripts/kconfig/merge_config.sh` does.
//!
//! Kconfig silently drops an option whose dependencies are unmet (on x86, `EFI` depends on
//! `ACPI`), so after `make olddefconfig` [`verify_after_olddefconfig`] checks the config again
//! and explains each missing option from the `depends on` lines of the tree's Kconfig files.
//! That reading is loose — no `select`, no prompt conditions, no `range`, macros taken as true —
//! it is a diagnostic, and says so.

use std::cmp::Ordering;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::files::bounded_read::{self, Limit, ReadError};
use crate::files::in_root::RootDir;
use crate::files::output_file::{self, OutputError, OutputFile};
use crate::site_config::Compression;

/// What every symbol line of a `.config` starts with.
const PREFIX: &str = "CONFIG_";

/// What went wrong with a kernel config or a Kconfig tree.
#[derive(Debug, thiserror::Error)]
pub enum KconfigError {
    #[error("cannot {op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{}: {}: `{}`", .path.display(), .error.line, .error.problem, .error.text)]
    Parse { path: PathBuf, error: ParseError },
    #[error("the initramfs {}: {reason}", .path.display())]
    InitramfsPath { path: PathBuf, reason: &'static str },
    #[error("the kernel command line {0:?} holds a control character (a line break, …), which a kernel config cannot hold; remove it")]
    ControlInCmdline(String),
    #[error("{} is not a kernel source tree: it has no Kconfig file at its top", .0.display())]
    NotKernelTree(PathBuf),
    #[error("{} has no arch/{srcarch} for the architecture '{arch}'; give the kernel's ARCH, like x86_64 or arm64", .tree.display())]
    UnknownArch {
        tree: PathBuf,
        arch: String,
        srcarch: String,
    },
    #[error(transparent)]
    Dropped(DroppedOptions),
    #[error(transparent)]
    Unreadable(#[from] ReadError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{} is a symlink; a kernel config is written over a regular file only: replace the link with the file", .0.display())]
    Symlink(PathBuf),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> KconfigError {
    let path = path.to_owned();
    move |source| KconfigError::Io { op, path, source }
}

/// A line of a config that is not a symbol line, a comment or a blank line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}: `{text}`")]
pub struct ParseError {
    /// Counted from 1.
    pub line: usize,
    pub text: String,
    pub problem: &'static str,
}

/// The value of a symbol, as a `.config` line states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `=y`
    Yes,
    /// `=m`
    Module,
    /// `# CONFIG_X is not set`, or `=n` as fragments may write it.
    No,
    /// `="…"`, held unescaped.
    String(String),
    /// A decimal or `0x` hexadecimal number, as written.
    Number(String),
}

impl Value {
    /// Parses what follows the `=` of a symbol line.
    fn parse(text: &str) -> Result<Self, &'static str> {
        match text {
            "y" => Ok(Self::Yes),
            "m" => Ok(Self::Module),
            "n" => Ok(Self::No),
            _ if text.starts_with('"') => unquote(text).map(Self::String),
            _ if is_number(text) => Ok(Self::Number(text.to_owned())),
            _ => Err("the value is not y, m, n, a number or a quoted string"),
        }
    }

    /// The value as a dependency sees it: y and m are on, anything else is off.
    fn tristate(&self) -> u8 {
        match self {
            Self::Yes => 2,
            Self::Module => 1,
            _ => 0,
        }
    }

    /// The value as a comparison in a Kconfig expression sees it.
    fn as_text(&self) -> &str {
        match self {
            Self::Yes => "y",
            Self::Module => "m",
            Self::No => "n",
            Self::String(text) | Self::Number(text) => text,
        }
    }
}

/// As after the `=` of a `.config` line: `y`, `m`, `n`, `"quoted"`, `123`.
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::String(text) => write!(f, "\"{}\"", escape(text)),
            other => f.write_str(other.as_text()),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Escapes `"` and `\` with a backslash, as Kconfig writes strings (`escape_string_value` in
/// scripts/kconfig/confdata.c).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The contents of a quoted string that makes up the whole of `text`.
fn unquote(text: &str) -> Result<String, &'static str> {
    let mut out = String::new();
    let mut chars = text.strip_prefix('"').unwrap_or(text).chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next().ok_or("the string has no closing quote")?),
            '"' if chars.as_str().is_empty() => return Ok(out),
            '"' => return Err("text follows the closing quote"),
            c => out.push(c),
        }
    }
    Err("the string has no closing quote")
}

fn is_number(text: &str) -> bool {
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        return !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn number(text: &str) -> Option<i64> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => i64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

fn is_symbol_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The line a config holds for `symbol` set to `value`, without its newline.
fn entry_line(symbol: &str, value: &Value) -> String {
    match value {
        Value::No => format!("# {PREFIX}{symbol} is not set"),
        value => format!("{PREFIX}{symbol}={value}"),
    }
}

/// One line of a config: its text as read, with its line ending, and the symbol it sets.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    text: String,
    entry: Option<(String, Value)>,
}

/// A kernel config (`.config` or a fragment), keeping every line as it was read.
///
/// A symbol set twice takes its last value, as in Kconfig. Symbols are named without the
/// `CONFIG_` prefix (`EFI`, not `CONFIG_EFI`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    lines: Vec<Line>,
    /// The line of each symbol's last occurrence.
    index: HashMap<String, usize>,
}

impl Config {
    /// Parses a config: `CONFIG_X=y|m|n|"string"|123|0x1f` lines, `# CONFIG_X is not set`,
    /// other comments and blank lines; anything else is an error naming the line.
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let mut config = Self::default();
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            let line = raw.trim_end_matches('\n').trim_end_matches('\r');
            let error = |problem| ParseError {
                line: i + 1,
                text: line.to_owned(),
                problem,
            };
            let entry = if let Some(assignment) = line.strip_prefix(PREFIX) {
                let (name, value) = assignment
                    .split_once('=')
                    .ok_or_else(|| error("expected CONFIG_NAME=VALUE"))?;
                if !is_symbol_name(name) {
                    return Err(error("not a symbol name"));
                }
                Some((name.to_owned(), Value::parse(value).map_err(error)?))
            } else if line.starts_with('#') || line.trim().is_empty() {
                line.strip_prefix("# ")
                    .and_then(|rest| rest.strip_prefix(PREFIX))
                    .and_then(|rest| rest.strip_suffix(" is not set"))
                    .filter(|name| is_symbol_name(name))
                    .map(|name| (name.to_owned(), Value::No))
            } else {
                return Err(error("not a CONFIG_ line, a comment or a blank line"));
            };
            if let Some((name, _)) = &entry {
                config.index.insert(name.clone(), config.lines.len());
            }
            config.lines.push(Line {
                text: raw.to_owned(),
                entry,
            });
        }
        Ok(config)
    }

    /// Reads and parses the config at `path`.
    pub fn load(path: &Path) -> Result<Self, KconfigError> {
        let text = bounded_read::read_text(path, Limit::KERNEL_CONFIG)?;
        Self::parse_from(&text, path)
    }

    /// Reads `inner` resolved inside `dir` (a build directory a root can write to: a symlink
    /// there must not lead us to a host file).
    pub fn load_in(dir: &RootDir, inner: &Path) -> Result<Self, KconfigError> {
        let bytes = bounded_read::read_in(dir, inner, Limit::KERNEL_CONFIG)?;
        let path = dir.display_path(inner);
        let text = String::from_utf8(bytes).map_err(|_| ReadError::NotText {
            what: Limit::KERNEL_CONFIG.what,
            path: path.clone(),
        })?;
        Self::parse_from(&text, &path)
    }

    fn parse_from(text: &str, path: &Path) -> Result<Self, KconfigError> {
        Self::parse(text).map_err(|error| KconfigError::Parse {
            path: path.to_owned(),
            error,
        })
    }

    /// Writes the config to `path` as kbuild does, keeping the file that was there as
    /// `PATH.old`; both are written as outputs ([`OutputFile`]), so neither is ever seen
    /// half-written. The new file keeps the old one's permission bits (0644 for a new file),
    /// never setuid or setgid. A symlink at `path` is refused: in a build directory a root can
    /// write to, it is the root's, and neither following it nor copying what it leads to aside
    /// would be safe.
    pub fn save(&self, path: &Path) -> Result<(), KconfigError> {
        // Refused before the old file is copied aside: no FILE.old beside a FILE we cannot write.
        output_file::check_target(path)?;
        let mode = match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(KconfigError::Symlink(path.to_owned()))
            }
            Ok(meta) => {
                let old = bounded_read::read(path, Limit::KERNEL_CONFIG)?;
                let mut old_path = path.as_os_str().to_owned();
                old_path.push(".old");
                let mode = meta.permissions().mode() & 0o777;
                write_atomically(Path::new(&old_path), &old, mode)?;
                mode
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0o644,
            Err(e) => return Err(io_err("inspect", path)(e)),
        };
        write_atomically(path, self.to_string().as_bytes(), mode)
    }

    /// The value of `symbol`, if the config states one.
    pub fn get(&self, symbol: &str) -> Option<&Value> {
        let line = &self.lines[*self.index.get(symbol)?];
        line.entry.as_ref().map(|(_, value)| value)
    }

    /// Sets `symbol` to `value`: its line is rewritten in place (earlier duplicates of it are
    /// removed), or a new line is appended when the config does not have the symbol. A line
    /// already stating `value` is left as it is.
    pub fn set(&mut self, symbol: &str, value: Value) {
        let Some(&at) = self.index.get(symbol) else {
            if let Some(last) = self.lines.last_mut() {
                if !last.text.ends_with('\n') {
                    last.text.push('\n');
                }
            }
            self.index.insert(symbol.to_owned(), self.lines.len());
            self.lines.push(Line {
                text: entry_line(symbol, &value) + "\n",
                entry: Some((symbol.to_owned(), value)),
            });
            return;
        };
        if self.get(symbol) == Some(&value) {
            return;
        }
        let old = &self.lines[at].text;
        let ending = &old[old.trim_end_matches(['\n', '\r']).len()..];
        self.lines[at] = Line {
            text: entry_line(symbol, &value) + ending,
            entry: Some((symbol.to_owned(), value)),
        };
        let sets = |line: &Line| line.entry.as_ref().is_some_and(|(name, _)| name == symbol);
        if self.lines[..at].iter().any(sets) {
            let mut i = 0;
            self.lines.retain(|line| {
                i += 1;
                i > at || !sets(line)
            });
            self.reindex();
        }
    }

    /// Sets `symbol` to `# CONFIG_X is not set`.
    pub fn unset(&mut self, symbol: &str) {
        self.set(symbol, Value::No);
    }

    /// Every symbol line, in file order: `(symbol, value)`.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.lines
            .iter()
            .filter_map(|line| line.entry.as_ref().map(|(s, v)| (s.as_str(), v)))
    }

    fn reindex(&mut self) {
        self.index.clear();
        for (i, line) in self.lines.iter().enumerate() {
            if let Some((name, _)) = &line.entry {
                self.index.insert(name.clone(), i);
            }
        }
    }
}

/// The config's text, exactly as read apart from the lines changed since.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.lines
            .iter()
            .try_for_each(|line| f.write_str(&line.text))
    }
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KconfigError> {
    let mut output = OutputFile::create(path)?.with_mode(mode);
    output.write_all(bytes).map_err(io_err("write", path))?;
    output.commit()?;
    Ok(())
}

/// Lays `configs` over each other in order, the first being the base: a symbol takes its value
/// from the last config that states it, as with `scripts/kconfig/merge_config.sh`. The result
/// keeps the base's lines, changed in place; symbols the base lacks are appended in order.
pub fn merge<'a>(configs: impl IntoIterator<Item = &'a Config>) -> Config {
    let mut configs = configs.into_iter();
    let mut merged = configs.next().cloned().unwrap_or_default();
    for fragment in configs {
        for (symbol, value) in fragment.entries() {
            merged.set(symbol, value.clone());
        }
    }
    merged
}

/// One option the pipeline needs: `symbol` must have `value`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Requirement {
    pub symbol: String,
    pub value: Value,
}

/// The options the pipeline needs in a kernel config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirements {
    list: Vec<Requirement>,
}

impl Requirements {
    /// What a kernel needs to boot as an EFI stub with the root in its embedded initramfs:
    /// - always `BLK_DEV_INITRD`, `DEVTMPFS`, `EFI` and `EFI_STUB`;
    /// - the `initramfs` archive as `INITRAMFS_SOURCE`. It is already compressed, and kbuild
    ///   must not compress it again: usr/Makefile takes a single `*.cpio.*` file as it is ("use
    ///   it directly as an initramfs, and avoid double compression": `compress-y := copy`),
    ///   whatever `INITRAMFS_COMPRESSION_*` says, so that choice needs no setting. The path
    ///   must therefore be absolute (kbuild runs in the build directory), one word (kbuild
    ///   splits the option at spaces) and named `*.cpio.*` (`*.cpio` when uncompressed);
    /// - the decompressor of `compression`: `RD_GZIP` or `RD_ZSTD`;
    /// - a non-empty `cmdline` built in: `CMDLINE_BOOL` and `CMDLINE`; one with a control
    ///   character, which a config line cannot hold, is refused.
    pub fn new(
        initramfs: Option<&Path>,
        compression: Compression,
        cmdline: Option<&str>,
    ) -> Result<Self, KconfigError> {
        let mut list = Vec::new();
        let mut need = |symbol: &str, value| {
            list.push(Requirement {
                symbol: symbol.to_owned(),
                value,
            })
        };
        need("BLK_DEV_INITRD", Value::Yes);
        if let Some(path) = initramfs {
            let source = initramfs_source(path, compression)?;
            need("INITRAMFS_SOURCE", Value::String(source));
        }
        match compression {
            Compression::Gzip => need("RD_GZIP", Value::Yes),
            Compression::Zstd => need("RD_ZSTD", Value::Yes),
            Compression::Xz => need("RD_XZ", Value::Yes),
            Compression::None => {}
        }
        need("DEVTMPFS", Value::Yes);
        need("EFI", Value::Yes);
        need("EFI_STUB", Value::Yes);
        if let Some(cmdline) = cmdline.filter(|c| !c.is_empty()) {
            // A config is one option a line and Kconfig escapes only `"` and `\`: a line break
            // would end the string and leave a line that neither kbuild nor we can read back.
            if cmdline.chars().any(char::is_control) {
                return Err(KconfigError::ControlInCmdline(cmdline.to_owned()));
            }
            need("CMDLINE_BOOL", Value::Yes);
            need("CMDLINE", Value::String(cmdline.to_owned()));
        }
        Ok(Self { list })
    }

    /// The requirements for a kernel of `arch` (the kernel's ARCH, or its directory under
    /// `arch/`). x86 turns a built-in command line on with `CMDLINE_BOOL`; arm64 and riscv
    /// always have `CMDLINE`, and `CMDLINE_FORCE` makes it the one the kernel and its EFI stub
    /// use, whatever the firmware passes.
    pub fn for_arch(mut self, arch: &str) -> Self {
        if source_arch(arch) != "x86" {
            for requirement in &mut self.list {
                if requirement.symbol == "CMDLINE_BOOL" {
                    requirement.symbol = "CMDLINE_FORCE".to_owned();
                }
            }
        }
        self
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Requirement> {
        self.list.iter()
    }

    /// The requirements as a config fragment, one line each.
    pub fn as_fragment(&self) -> Config {
        let mut fragment = Config::default();
        for requirement in &self.list {
            fragment.set(&requirement.symbol, requirement.value.clone());
        }
        fragment
    }
}

/// `path` as `INITRAMFS_SOURCE`, checked against what usr/Makefile does with it.
fn initramfs_source(path: &Path, compression: Compression) -> Result<String, KconfigError> {
    let refuse = |reason| KconfigError::InitramfsPath {
        path: path.to_owned(),
        reason,
    };
    let text = path
        .to_str()
        .ok_or_else(|| refuse("the path is not UTF-8, which a kernel config cannot hold"))?;
    if !path.is_absolute() {
        return Err(refuse(
            "the path must be absolute: kbuild would look for it from the build directory",
        ));
    }
    if text.chars().any(char::is_whitespace) {
        return Err(refuse(
            "kbuild splits CONFIG_INITRAMFS_SOURCE at spaces: give a path without any",
        ));
    }
    // usr/Makefile: `ifeq ($(words $(subst .cpio.,$(space),$(ramfs-input))),2)` passes the file
    // through; any other name is read as a directory or a gen_init_cpio list.
    let named_right = match compression {
        Compression::None => text.ends_with(".cpio"),
        Compression::Gzip | Compression::Zstd | Compression::Xz => {
            text.matches(".cpio.").count() == 1
        }
    };
    if !named_right {
        return Err(refuse(match compression {
            Compression::None => {
                "kbuild takes an uncompressed archive as it is only when it is named *.cpio"
            }
            _ => {
                "kbuild takes a compressed archive as it is only when `.cpio.` occurs once in \
                 its path, as in initramfs.cpio.gz"
            }
        }));
    }
    Ok(text.to_owned())
}

/// A symbol whose value must change for a config to meet the requirements.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub symbol: String,
    /// The value the config states, `None` when it has no line for the symbol.
    pub old: Option<Value>,
    pub new: Value,
}

impl Change {
    /// The change as diff lines: `-` the line the config has (if any), `+` the line it needs.
    pub fn diff_lines(&self) -> Vec<String> {
        let old = self
            .old
            .as_ref()
            .map(|old| format!("-{}", entry_line(&self.symbol, old)));
        let new = format!("+{}", entry_line(&self.symbol, &self.new));
        old.into_iter().chain([new]).collect()
    }
}

/// One line: `CONFIG_EFI=y (was: # CONFIG_EFI is not set)`.
impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let old = match &self.old {
            Some(old) => entry_line(&self.symbol, old),
            None => "absent".to_owned(),
        };
        write!(f, "{} (was: {old})", entry_line(&self.symbol, &self.new))
    }
}

/// The changes as a unified-diff-like text, one line per removed or added line.
pub fn render_diff(changes: &[Change]) -> String {
    changes
        .iter()
        .flat_map(Change::diff_lines)
        .map(|line| line + "\n")
        .collect()
}

/// The requirements `config` does not meet, in the requirements' order.
pub fn check(config: &Config, requirements: &Requirements) -> Vec<Change> {
    requirements
        .iter()
        .filter(|r| config.get(&r.symbol) != Some(&r.value))
        .map(|r| Change {
            symbol: r.symbol.clone(),
            old: config.get(&r.symbol).cloned(),
            new: r.value.clone(),
        })
        .collect()
}

/// Makes `config` meet the requirements; returns what changed.
pub fn apply(config: &mut Config, requirements: &Requirements) -> Vec<Change> {
    let changes = check(config, requirements);
    for change in &changes {
        config.set(&change.symbol, change.new.clone());
    }
    changes
}

/// Checks a config made by `make olddefconfig` against the requirements. Each option it lacks
/// is explained from the Kconfig files of `kconfig_tree` for `arch` (the kernel's `ARCH`, like
/// `x86_64`, or its source directory name, like `x86`): which of its dependencies are unmet
/// and what to add. Errors: [`KconfigError::Dropped`] listing them; a tree without a top
/// Kconfig or without the architecture's directory, even when nothing is missing.
pub fn verify_after_olddefconfig(
    config: &Config,
    requirements: &Requirements,
    kconfig_tree: &Path,
    arch: &str,
) -> Result<(), KconfigError> {
    let srcarch = source_arch(arch);
    if !kconfig_tree.join("Kconfig").is_file() {
        return Err(KconfigError::NotKernelTree(kconfig_tree.to_owned()));
    }
    if !kconfig_tree.join("arch").join(srcarch).is_dir() {
        return Err(KconfigError::UnknownArch {
            tree: kconfig_tree.to_owned(),
            arch: arch.to_owned(),
            srcarch: srcarch.to_owned(),
        });
    }
    let missing = check(config, requirements);
    if missing.is_empty() {
        return Ok(());
    }
    let tree = KconfigTree::scan(kconfig_tree, srcarch)?;
    let dropped = missing
        .into_iter()
        .map(|change| tree.explain(config, change, srcarch))
        .collect();
    Err(KconfigError::Dropped(DroppedOptions::new(dropped)))
}

/// The directory under `arch/` of an architecture: the kernel Makefile's SRCARCH for its ARCH
/// (x86_64 and i386 are x86, sparc64 is sparc, …), also taking the names `uname -m` and Rust
/// give (aarch64 is arm64, riscv64 is riscv, …).
pub fn source_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "i386" | "i686" | "amd64" => "x86",
        "aarch64" => "arm64",
        "sparc32" | "sparc64" => "sparc",
        "parisc64" => "parisc",
        "sh64" => "sh",
        "powerpc64" | "powerpc64le" | "ppc64" | "ppc64le" => "powerpc",
        "riscv32" | "riscv64" => "riscv",
        "loongarch64" => "loongarch",
        "s390x" => "s390",
        "mips64" | "mips64el" | "mipsel" => "mips",
        other => other,
    }
}

/// A required option a config lacks after `make olddefconfig`, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub symbol: String,
    pub wanted: Value,
    /// What the config states instead, `None` when it has no line for the symbol.
    pub found: Option<Value>,
    pub cause: DropCause,
}

/// Why an option is missing, as far as a loose reading of the Kconfig files tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DropCause {
    /// Its dependencies are unmet: `depends` shows the unmet part of them; `faults` says what
    /// to change, each inner list a set of alternatives of which one is enough.
    Unmet {
        depends: String,
        faults: Vec<Vec<Fault>>,
    },
    /// No Kconfig file of the tree defines it for the architecture `srcarch`.
    Undefined { srcarch: String },
    /// Its dependencies are met, but it has no prompt: only a `select` or its default sets it.
    NoPrompt,
    /// Its dependencies look met: it was never set, or something this reading does not follow
    /// (a choice, a prompt's condition, a range) turned it off.
    DependenciesMet,
}

/// Why a dependency does not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The symbol is neither y nor m, and should be.
    NotSet(String),
    /// The symbol is y or m, and should not be.
    Set(String),
    /// This comparison does not hold.
    Fails(String),
}

impl Dropped {
    fn state(&self) -> String {
        let option = format!("{PREFIX}{}", self.symbol);
        match &self.found {
            None | Some(Value::No) => format!("{option} is not set"),
            Some(found) => format!("{option} is {found}, not {}", self.wanted),
        }
    }
}

/// One line: what is missing, why, and what to add, e.g. `CONFIG_EFI was dropped by make
/// olddefconfig: it depends on ACPI, which is not set; add CONFIG_ACPI=y to the kernel config`.
impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let symbol = &self.symbol;
        let dropped = match &self.found {
            None | Some(Value::No) => format!("{PREFIX}{symbol} was dropped by make olddefconfig"),
            Some(found) => format!(
                "{PREFIX}{symbol} is {found} after make olddefconfig, not {}",
                self.wanted
            ),
        };
        match &self.cause {
            DropCause::Unmet { depends, faults } => {
                write!(f, "{dropped}: it depends on {depends}, ")?;
                if faults == &[vec![Fault::NotSet(depends.clone())]] {
                    f.write_str("which is not set")?;
                } else {
                    write!(f, "and {}", describe_faults(faults))?;
                }
                match advice(faults) {
                    Some(advice) => write!(f, "; add {advice} to the kernel config"),
                    None => f.write_str("; change the kernel config so that it holds"),
                }
            }
            DropCause::Undefined { srcarch } => write!(
                f,
                "{}, and no Kconfig file of this kernel defines {symbol} for arch/{srcarch}: \
                 this kernel does not have the option",
                self.state()
            ),
            DropCause::NoPrompt => write!(
                f,
                "{dropped}: {symbol} has no prompt, so only a select from another option or \
                 its default sets it; enable an option that selects it"
            ),
            DropCause::DependenciesMet => write!(
                f,
                "{}, though its dependencies look met; set {} in the kernel config before \
                 make olddefconfig",
                self.state(),
                entry_line(symbol, &self.wanted)
            ),
        }
    }
}

/// `ACPI and PCI are not set, X86_32 is set`
fn describe_faults(faults: &[Vec<Fault>]) -> String {
    let mut not_set = Vec::new();
    let mut set = Vec::new();
    let mut fails = Vec::new();
    for fault in faults.iter().flatten() {
        let (list, name) = match fault {
            Fault::NotSet(name) => (&mut not_set, name),
            Fault::Set(name) => (&mut set, name),
            Fault::Fails(text) => (&mut fails, text),
        };
        if !list.contains(&name.as_str()) {
            list.push(name.as_str());
        }
    }
    let verb = |list: &[&str]| if list.len() == 1 { "is" } else { "are" };
    let mut parts = Vec::new();
    if !not_set.is_empty() {
        parts.push(format!("{} {} not set", and_list(&not_set), verb(&not_set)));
    }
    if !set.is_empty() {
        parts.push(format!("{} {} set", and_list(&set), verb(&set)));
    }
    parts.extend(fails.iter().map(|text| format!("`{text}` does not hold")));
    parts.join(", ")
}

/// `CONFIG_ACPI=y and one of CONFIG_PCI=y, CONFIG_ISA=y`; `None` when only comparisons fail.
fn advice(faults: &[Vec<Fault>]) -> Option<String> {
    let mut groups: Vec<String> = Vec::new();
    for group in faults {
        let items: Vec<String> = group
            .iter()
            .filter_map(|fault| match fault {
                Fault::NotSet(name) => Some(entry_line(name, &Value::Yes)),
                Fault::Set(name) => Some(entry_line(name, &Value::No)),
                Fault::Fails(_) => None,
            })
            .collect();
        let text = match items.as_slice() {
            [] => continue,
            [one] => one.clone(),
            many => format!("one of {}", many.join(", ")),
        };
        if !groups.contains(&text) {
            groups.push(text);
        }
    }
    (!groups.is_empty()).then(|| groups.join(" and "))
}

/// `A`, `A and B`, `A, B and C`
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The required options a config lacks after `make olddefconfig`, each explained; as an error,
/// one line each in its chain of causes.
#[derive(Debug)]
pub struct DroppedOptions {
    dropped: Vec<Dropped>,
    lines: Option<Box<DroppedLine>>,
}

impl DroppedOptions {
    fn new(dropped: Vec<Dropped>) -> Self {
        let lines = dropped.iter().rev().fold(None, |next, dropped| {
            Some(Box::new(DroppedLine {
                text: dropped.to_string(),
                next,
            }))
        });
        Self { dropped, lines }
    }

    pub fn dropped(&self) -> &[Dropped] {
        &self.dropped
    }
}

impl fmt::Display for DroppedOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.dropped.len();
        let (noun, verb) = if n == 1 {
            ("option", "is")
        } else {
            ("options", "are")
        };
        write!(
            f,
            "{n} {noun} the pipeline needs {verb} missing after make olddefconfig (explained \
             from a loose reading of the Kconfig files)"
        )
    }
}

impl std::error::Error for DroppedOptions {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.lines.as_deref().map(|line| line as _)
    }
}

/// One explanation in the chain of a [`DroppedOptions`] error.
#[derive(Debug)]
struct DroppedLine {
    text: String,
    next: Option<Box<DroppedLine>>,
}

impl fmt::Display for DroppedLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for DroppedLine {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.next.as_deref().map(|line| line as _)
    }
}

/// A Kconfig expression, as in a `depends on` or `if` line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expr {
    Symbol(String),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Operand, CompareOp, Operand),
    /// A macro such as `$(cc-option,…)`, or text this reading does not parse: taken as true.
    Opaque(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Operand {
    Word(String),
    Quoted(String),
    Macro(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CompareOp {
    Equal,
    Unequal,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
}

impl CompareOp {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Equal => ordering.is_eq(),
            Self::Unequal => ordering.is_ne(),
            Self::Less => ordering.is_lt(),
            Self::LessEqual => ordering.is_le(),
            Self::Greater => ordering.is_gt(),
            Self::GreaterEqual => ordering.is_ge(),
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Equal => "=",
            Self::Unequal => "!=",
            Self::Less => "<",
            Self::LessEqual => "<=",
            Self::Greater => ">",
            Self::GreaterEqual => ">=",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    Not,
    And,
    Or,
    Compare(CompareOp),
    Operand(Operand),
}

fn tokenize(text: &str) -> Option<Vec<Token>> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let mut next_is = |want: char| chars.next_if(|&(_, c)| c == want).is_some();
        let token = match c {
            c if c.is_whitespace() => continue,
            '(' => Token::Open,
            ')' => Token::Close,
            '!' if next_is('=') => Token::Compare(CompareOp::Unequal),
            '!' => Token::Not,
            '&' if next_is('&') => Token::And,
            '|' if next_is('|') => Token::Or,
            '=' => Token::Compare(CompareOp::Equal),
            '<' if next_is('=') => Token::Compare(CompareOp::LessEqual),
            '<' => Token::Compare(CompareOp::Less),
            '>' if next_is('=') => Token::Compare(CompareOp::GreaterEqual),
            '>' => Token::Compare(CompareOp::Greater),
            '"' | '\'' => {
                let mut value = String::new();
                loop {
                    match chars.next()?.1 {
                        '\\' => value.push(chars.next()?.1),
                        end if end == c => break,
                        other => value.push(other),
                    }
                }
                Token::Operand(Operand::Quoted(value))
            }
            '$' if chars.next_if(|&(_, c)| c == '(').is_some() => {
                let mut depth = 1;
                let end = loop {
                    let (i, c) = chars.next()?;
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    if depth == 0 {
                        break i + 1;
                    }
                };
                Token::Operand(Operand::Macro(text[at..end].to_owned()))
            }
            c if c.is_ascii_alphanumeric() || c == '_' => {
                let mut end = at + 1;
                while let Some((i, _)) =
                    chars.next_if(|&(_, c)| c.is_ascii_alphanumeric() || "_-.".contains(c))
                {
                    end = i + 1;
                }
                Token::Operand(Operand::Word(text[at..end].to_owned()))
            }
            _ => return None,
        };
        tokens.push(token);
    }
    Some(tokens)
}

/// Parses a Kconfig expression; what it cannot parse is [`Expr::Opaque`].
fn parse_expr(text: &str) -> Expr {
    let parsed = tokenize(text).and_then(|tokens| {
        let mut parser = ExprParser { tokens, at: 0 };
        let expr = parser.or()?;
        (parser.at == parser.tokens.len()).then_some(expr)
    });
    parsed.unwrap_or_else(|| Expr::Opaque(text.trim().to_owned()))
}

/// Recursive descent over Kconfig's grammar: `||` binds loosest, then `&&`, then `!`, then
/// comparisons.
struct ExprParser {
    tokens: Vec<Token>,
    at: usize,
}

impl ExprParser {
    fn eat(&mut self, token: &Token) -> bool {
        let found = self.tokens.get(self.at) == Some(token);
        self.at += usize::from(found);
        found
    }

    fn or(&mut self) -> Option<Expr> {
        let mut expr = self.and()?;
        while self.eat(&Token::Or) {
            expr = Expr::Or(Box::new(expr), Box::new(self.and()?));
        }
        Some(expr)
    }

    fn and(&mut self) -> Option<Expr> {
        let mut expr = self.unary()?;
        while self.eat(&Token::And) {
            expr = Expr::And(Box::new(expr), Box::new(self.unary()?));
        }
        Some(expr)
    }

    fn unary(&mut self) -> Option<Expr> {
        if self.eat(&Token::Not) {
            return Some(Expr::Not(Box::new(self.unary()?)));
        }
        if self.eat(&Token::Open) {
            let expr = self.or()?;
            return self.eat(&Token::Close).then_some(expr);
        }
        let left = self.operand()?;
        if let Some(Token::Compare(op)) = self.tokens.get(self.at).cloned() {
            self.at += 1;
            return Some(Expr::Compare(left, op, self.operand()?));
        }
        Some(match left {
            Operand::Word(word) => Expr::Symbol(word),
            other => Expr::Opaque(render_operand(&other)),
        })
    }

    fn operand(&mut self) -> Option<Operand> {
        match self.tokens.get(self.at) {
            Some(Token::Operand(operand)) => {
                self.at += 1;
                Some(operand.clone())
            }
            _ => None,
        }
    }
}

fn is_constant(word: &str) -> bool {
    matches!(word, "y" | "m" | "n")
}

/// The tristate value of `expr` under `config`: 0 (n), 1 (m) or 2 (y).
fn tristate(expr: &Expr, config: &Config) -> u8 {
    match expr {
        Expr::Symbol(name) => match name.as_str() {
            "y" => 2,
            "m" => 1,
            "n" => 0,
            name => config.get(name).map_or(0, Value::tristate),
        },
        Expr::Not(inner) => 2 - tristate(inner, config),
        Expr::And(a, b) => tristate(a, config).min(tristate(b, config)),
        Expr::Or(a, b) => tristate(a, config).max(tristate(b, config)),
        Expr::Compare(left, op, right) => {
            let (Some(left), Some(right)) = (
                operand_value(left, right, config),
                operand_value(right, left, config),
            ) else {
                return 2;
            };
            let ordering = match (number(&left), number(&right)) {
                (Some(a), Some(b)) => a.cmp(&b),
                _ => left.cmp(&right),
            };
            if op.holds(ordering) {
                2
            } else {
                0
            }
        }
        Expr::Opaque(_) => 2,
    }
}

/// What a comparison sees of `operand` (`other` is the other side); `None` for a macro.
fn operand_value(operand: &Operand, other: &Operand, config: &Config) -> Option<String> {
    Some(match operand {
        Operand::Word(word) if is_constant(word) || is_number(word) => word.clone(),
        Operand::Word(word) => match config.get(word) {
            Some(value) => value.as_text().to_owned(),
            // An unset tristate compares as n, an unset string or number as empty.
            None => match other {
                Operand::Quoted(_) => String::new(),
                Operand::Word(word) if is_number(word) => String::new(),
                _ => "n".to_owned(),
            },
        },
        Operand::Quoted(text) => text.clone(),
        Operand::Macro(_) => return None,
    })
}

/// What would make `expr` hold (`want`) or not, as a list of faults to fix, each inner list a
/// set of alternatives. Empty when `expr` already is as wanted or nothing in it can change.
fn blame(expr: &Expr, want: bool, config: &Config) -> Vec<Vec<Fault>> {
    if (tristate(expr, config) > 0) == want {
        return Vec::new();
    }
    let flag = |name: &str, on: bool| {
        vec![vec![if on {
            Fault::NotSet(name.to_owned())
        } else {
            Fault::Set(name.to_owned())
        }]]
    };
    match expr {
        Expr::Symbol(name) if !is_constant(name) => flag(name, want),
        Expr::Symbol(_) | Expr::Opaque(_) => Vec::new(),
        Expr::Not(inner) => blame(inner, !want, config),
        Expr::And(a, b) | Expr::Or(a, b) => {
            let mut faults = blame(a, want, config);
            faults.extend(blame(b, want, config));
            // An `&&` that should hold needs every side fixed; an `||` any one of them.
            if matches!(expr, Expr::And(..)) == want {
                faults
            } else {
                let mut alternatives: Vec<Fault> = Vec::new();
                for fault in faults.into_iter().flatten() {
                    if !alternatives.contains(&fault) {
                        alternatives.push(fault);
                    }
                }
                if alternatives.is_empty() {
                    Vec::new()
                } else {
                    vec![alternatives]
                }
            }
        }
        Expr::Compare(Operand::Word(name), op, Operand::Word(value))
            if !is_constant(name)
                && is_constant(value)
                && matches!(op, CompareOp::Equal | CompareOp::Unequal) =>
        {
            let on = (*op == CompareOp::Equal) != (value == "n");
            flag(name, on == want)
        }
        Expr::Compare(..) => {
            let text = render(expr, 0);
            vec![vec![Fault::Fails(if want {
                text
            } else {
                format!("!({text})")
            })]]
        }
    }
}

fn precedence(expr: &Expr) -> u8 {
    match expr {
        Expr::Or(..) => 1,
        Expr::And(..) => 2,
        Expr::Not(_) => 3,
        Expr::Compare(..) => 4,
        Expr::Symbol(_) | Expr::Opaque(_) => 5,
    }
}

/// `expr` as Kconfig text, parenthesised where it binds looser than `min`.
fn render(expr: &Expr, min: u8) -> String {
    let text = match expr {
        Expr::Symbol(name) | Expr::Opaque(name) => name.clone(),
        Expr::Not(inner) => format!("!{}", render(inner, 5)),
        Expr::And(a, b) => format!("{} && {}", render(a, 2), render(b, 2)),
        Expr::Or(a, b) => format!("{} || {}", render(a, 1), render(b, 1)),
        Expr::Compare(left, op, right) => format!(
            "{} {} {}",
            render_operand(left),
            op.text(),
            render_operand(right)
        ),
    };
    if precedence(expr) < min {
        format!("({text})")
    } else {
        text
    }
}

fn render_operand(operand: &Operand) -> String {
    match operand {
        Operand::Word(text) | Operand::Macro(text) => text.clone(),
        Operand::Quoted(text) => format!("\"{}\"", escape(text)),
    }
}

/// The top-level `&&` terms of `expr`.
fn conjuncts(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::And(a, b) => {
            let mut terms = conjuncts(a);
            terms.extend(conjuncts(b));
            terms
        }
        other => vec![other],
    }
}

fn all_of(terms: Vec<Expr>) -> Option<Expr> {
    terms
        .into_iter()
        .reduce(|a, b| Expr::And(Box::new(a), Box::new(b)))
}

/// One `config`/`menuconfig` entry: the conditions it sits under (`if` blocks, menus and
/// choices, also those around the `source` lines that lead to its file) and its own
/// `depends on` lines.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Definition {
    depends: Vec<Expr>,
    prompt: bool,
}

/// A `source` line: the file it names (from the top of the tree) and the conditions it sits
/// under.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Source {
    path: PathBuf,
    conditions: Vec<Expr>,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct KconfigFile {
    definitions: Vec<(String, Definition)>,
    sources: Vec<Source>,
}

/// The symbol definitions of a kernel tree for one architecture.
struct KconfigTree {
    definitions: HashMap<String, Vec<Definition>>,
}

impl KconfigTree {
    /// Reads every `Kconfig*` file under `top`, leaving out other architectures' and kconfig's
    /// own test cases. The conditions around a `source` line reach the file it names.
    fn scan(top: &Path, srcarch: &str) -> Result<Self, KconfigError> {
        let mut files = HashMap::new();
        for rel in kconfig_files(top, srcarch)? {
            let path = top.join(&rel);
            let bytes = fs::read(&path).map_err(io_err("read", &path))?;
            let file = parse_kconfig(&String::from_utf8_lossy(&bytes), &rel, srcarch);
            files.insert(rel, file);
        }
        let mut inherited: HashMap<PathBuf, Vec<Expr>> = HashMap::new();
        let mut todo = VecDeque::from([PathBuf::from("Kconfig")]);
        inherited.insert(PathBuf::from("Kconfig"), Vec::new());
        while let Some(rel) = todo.pop_front() {
            let Some(file) = files.get(&rel) else {
                continue;
            };
            for source in &file.sources {
                if !inherited.contains_key(&source.path) {
                    let mut conditions = inherited[&rel].clone();
                    conditions.extend(source.conditions.iter().cloned());
                    inherited.insert(source.path.clone(), conditions);
                    todo.push_back(source.path.clone());
                }
            }
        }
        let mut definitions: HashMap<String, Vec<Definition>> = HashMap::new();
        for (rel, file) in files {
            let outer = inherited.get(&rel).cloned().unwrap_or_default();
            for (symbol, mut definition) in file.definitions {
                let mut depends = outer.clone();
                depends.append(&mut definition.depends);
                definition.depends = depends;
                definitions.entry(symbol).or_default().push(definition);
            }
        }
        Ok(Self { definitions })
    }

    /// Why `config` does not meet `change`.
    fn explain(&self, config: &Config, change: Change, srcarch: &str) -> Dropped {
        let cause = match self.definitions.get(&change.symbol) {
            None => DropCause::Undefined {
                srcarch: srcarch.to_owned(),
            },
            Some(definitions) => {
                // A symbol defined more than once is visible when any definition is.
                let mut each: Vec<Expr> = Vec::new();
                let mut unconditional = false;
                for definition in definitions {
                    match all_of(definition.depends.clone()) {
                        Some(expr) if !each.contains(&expr) => each.push(expr),
                        Some(_) => {}
                        None => unconditional = true,
                    }
                }
                let depends = each
                    .into_iter()
                    .reduce(|a, b| Expr::Or(Box::new(a), Box::new(b)))
                    .filter(|expr| !unconditional && tristate(expr, config) == 0);
                match depends {
                    Some(expr) => DropCause::Unmet {
                        depends: conjuncts(&expr)
                            .into_iter()
                            .filter(|term| tristate(term, config) == 0)
                            .map(|term| render(term, 2))
                            .collect::<Vec<_>>()
                            .join(" && "),
                        faults: blame(&expr, true, config),
                    },
                    None if !definitions.iter().any(|d| d.prompt) => DropCause::NoPrompt,
                    None => DropCause::DependenciesMet,
                }
            }
        };
        Dropped {
            symbol: change.symbol,
            wanted: change.new,
            found: change.old,
            cause,
        }
    }
}

/// The `Kconfig*` files under `top`, relative to it.
fn kconfig_files(top: &Path, srcarch: &str) -> Result<Vec<PathBuf>, KconfigError> {
    let arch = Path::new("arch");
    // kconfig's test cases define symbols of their own.
    let tests = Path::new("scripts/kconfig/tests");
    let mut files = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let dir = top.join(&rel);
        for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let entry = entry.map_err(io_err("read", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            let path = rel.join(&*name);
            let kind = entry
                .file_type()
                .map_err(io_err("read", &top.join(&path)))?;
            if kind.is_dir() {
                let other_arch = rel == arch && *name != *srcarch;
                if !other_arch && path != tests {
                    todo.push(path);
                }
            } else if kind.is_file() && name.starts_with("Kconfig") {
                files.push(path);
            }
        }
    }
    Ok(files)
}

/// Columns of leading whitespace, tabs to the next multiple of 8, as Kconfig counts them for
/// help text.
fn indentation(line: &str) -> usize {
    let mut column = 0;
    for c in line.chars() {
        match c {
            ' ' => column += 1,
            '\t' => column = (column / 8 + 1) * 8,
            _ => break,
        }
    }
    column
}

/// `line` up to a `#` outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// A block a Kconfig entry can sit in.
enum Block {
    If(Expr),
    Menu(Vec<Expr>),
    Choice(Vec<Expr>),
}

/// What a `depends on` line belongs to.
enum Owner {
    Nothing,
    Definition(usize),
    Block,
}

/// The definitions and `source` lines of one Kconfig file (`rel` from the top of the tree).
fn parse_kconfig(text: &str, rel: &Path, srcarch: &str) -> KconfigFile {
    let mut file = KconfigFile::default();
    let mut blocks: Vec<Block> = Vec::new();
    let mut owner = Owner::Nothing;
    // Inside help text: `Some(None)` until its first line sets the indentation.
    let mut help: Option<Option<usize>> = None;
    let conditions = |blocks: &[Block]| -> Vec<Expr> {
        blocks
            .iter()
            .flat_map(|block| match block {
                Block::If(expr) => std::slice::from_ref(expr),
                Block::Menu(depends) | Block::Choice(depends) => depends.as_slice(),
            })
            .cloned()
            .collect()
    };
    let mut lines = text.lines();
    while let Some(first) = lines.next() {
        let mut line = first.to_owned();
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some(next) => line.push_str(next),
                None => break,
            }
        }
        if let Some(indent) = help {
            if line.trim().is_empty() {
                continue;
            }
            // Help text ends at the first line indented less than its first line; a first
            // line without indentation means there was none.
            match indent {
                None if indentation(&line) > 0 => {
                    help = Some(Some(indentation(&line)));
                    continue;
                }
                Some(indent) if indentation(&line) >= indent => continue,
                _ => help = None,
            }
        }
        let code = strip_comment(&line).trim();
        let (keyword, rest) = code
            .split_once(char::is_whitespace)
            .map_or((code, ""), |(k, r)| (k, r.trim()));
        match keyword {
            "config" | "menuconfig" => {
                file.definitions.push((
                    rest.to_owned(),
                    Definition {
                        depends: conditions(&blocks),
                        prompt: false,
                    },
                ));
                owner = Owner::Definition(file.definitions.len() - 1);
            }
            "menu" => {
                blocks.push(Block::Menu(Vec::new()));
                owner = Owner::Block;
            }
            "choice" => {
                blocks.push(Block::Choice(Vec::new()));
                owner = Owner::Block;
            }
            "if" => {
                blocks.push(Block::If(parse_expr(rest)));
                owner = Owner::Nothing;
            }
            "endif" | "endmenu" | "endchoice" => {
                blocks.pop();
                owner = Owner::Nothing;
            }
            "source" | "osource" | "rsource" | "orsource" => {
                let relative = keyword.ends_with("rsource");
                if let Some(path) = source_path(rest, relative, rel, srcarch) {
                    file.sources.push(Source {
                        path,
                        conditions: conditions(&blocks),
                    });
                }
                owner = Owner::Nothing;
            }
            "comment" | "mainmenu" => owner = Owner::Nothing,
            "depends" => {
                let Some(expr) = rest.strip_prefix("on").filter(|e| {
                    e.starts_with(char::is_whitespace) || e.starts_with(['(', '!', '$'])
                }) else {
                    continue;
                };
                let expr = parse_expr(expr);
                match (&owner, blocks.last_mut()) {
                    (Owner::Definition(i), _) => file.definitions[*i].1.depends.push(expr),
                    (Owner::Block, Some(Block::Menu(depends) | Block::Choice(depends))) => {
                        depends.push(expr)
                    }
                    _ => {}
                }
            }
            "bool" | "tristate" | "string" | "int" | "hex" | "prompt" => {
                if let Owner::Definition(i) = owner {
                    if rest.starts_with(['"', '\'']) {
                        file.definitions[i].1.prompt = true;
                    }
                }
            }
            "help" | "---help---" => help = Some(None),
            _ => {}
        }
    }
    file
}

/// The file a `source` line names, from the top of the tree; `None` when it uses a macro other
/// than `$(SRCARCH)`.
fn source_path(rest: &str, relative: bool, rel: &Path, srcarch: &str) -> Option<PathBuf> {
    let quoted = rest.strip_prefix('"')?.split('"').next()?;
    let named = quoted.replace("$(SRCARCH)", srcarch);
    if named.contains("$(") {
        return None;
    }
    let path = if relative {
        rel.parent().unwrap_or(Path::new("")).join(named)
    } else {
        PathBuf::from(named)
    };
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                normal.pop();
            }
            Component::Normal(part) => normal.push(part),
            _ => {}
        }
    }
    Some(normal)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
#
# Automatically generated file; DO NOT EDIT.
# Linux/x86 6.1.0 Kernel Configuration
#
CONFIG_CC_VERSION_TEXT=\"gcc (Debian 12.2.0-14) 12.2.0\"
CONFIG_GCC_VERSION=120200
CONFIG_PHYSICAL_START=0x1000000

#
# General setup
#
CONFIG_BLK_DEV_INITRD=y
CONFIG_INITRAMFS_SOURCE=\"\"
# CONFIG_EFI is not set
CONFIG_FUSE_FS=m
CONFIG_CMDLINE_BOOL=y
CONFIG_CMDLINE=\"say \\\"hi\\\" C:\\\\\"
";

    fn parse(text: &str) -> Config {
        Config::parse(text).expect("the sample parses")
    }

    fn requirements(cmdline: Option<&str>) -> Requirements {
        let initramfs = Path::new("/var/lib/autogentoo/out/web/initramfs.cpio.gz");
        Requirements::new(Some(initramfs), Compression::Gzip, cmdline).expect("valid inputs")
    }

    #[test]
    fn parses_every_kind_of_value() {
        let config = parse(SAMPLE);
        assert_eq!(config.get("BLK_DEV_INITRD"), Some(&Value::Yes));
        assert_eq!(config.get("FUSE_FS"), Some(&Value::Module));
        assert_eq!(config.get("EFI"), Some(&Value::No));
        assert_eq!(
            config.get("GCC_VERSION"),
            Some(&Value::Number("120200".into()))
        );
        assert_eq!(
            config.get("PHYSICAL_START"),
            Some(&Value::Number("0x1000000".into()))
        );
        assert_eq!(
            config.get("INITRAMFS_SOURCE"),
            Some(&Value::String("".into()))
        );
        assert_eq!(
            config.get("CMDLINE"),
            Some(&Value::String(r#"say "hi" C:\"#.into()))
        );
        assert_eq!(config.get("ACPI"), None);
        assert_eq!(config.entries().count(), 9);
        let fragment = parse("CONFIG_X=n\n# CONFIG_Y is not set\n# CONFIGURE me\n");
        assert_eq!(fragment.get("X"), Some(&Value::No));
        assert_eq!(fragment.get("Y"), Some(&Value::No));
        assert_eq!(fragment.entries().count(), 2);
    }

    #[test]
    fn an_unchanged_config_is_written_back_byte_for_byte() {
        for text in [
            SAMPLE,
            "CONFIG_A=y",
            "CONFIG_A=y\r\n# CONFIG_B is not set\r\n",
            "",
            "\n\n",
        ] {
            assert_eq!(parse(text).to_string(), text);
        }
        let mut config = parse(SAMPLE);
        config.set("FUSE_FS", Value::Module);
        config.set("CMDLINE", Value::String(r#"say "hi" C:\"#.into()));
        assert_eq!(
            config.to_string(),
            SAMPLE,
            "setting a value it has changes nothing"
        );
    }

    #[test]
    fn set_rewrites_in_place_and_appends_what_is_new() {
        let mut config = parse("CONFIG_A=y\r\n# CONFIG_B is not set\r\nCONFIG_C=m");
        config.set("B", Value::Yes);
        config.set("A", Value::Number("0x10".into()));
        config.set("D", Value::String("x".into()));
        config.unset("C");
        assert_eq!(
            config.to_string(),
            "CONFIG_A=0x10\r\nCONFIG_B=y\r\n# CONFIG_C is not set\nCONFIG_D=\"x\"\n"
        );
        assert_eq!(config.get("C"), Some(&Value::No));
    }

    #[test]
    fn the_last_duplicate_wins_and_set_removes_the_others() {
        let mut config = parse("CONFIG_A=y\nCONFIG_B=y\nCONFIG_A=m\n");
        assert_eq!(config.get("A"), Some(&Value::Module));
        config.set("A", Value::No);
        assert_eq!(config.to_string(), "CONFIG_B=y\n# CONFIG_A is not set\n");
        config.set("B", Value::Module);
        assert_eq!(config.to_string(), "CONFIG_B=m\n# CONFIG_A is not set\n");
    }

    #[test]
    fn strings_are_quoted_and_escaped_as_kconfig_does() {
        let mut config = Config::default();
        let text = r#"console=ttyS0 msg="a \ b""#;
        config.set("CMDLINE", Value::String(text.into()));
        let written = config.to_string();
        assert_eq!(
            written,
            "CONFIG_CMDLINE=\"console=ttyS0 msg=\\\"a \\\\ b\\\"\"\n"
        );
        assert_eq!(
            parse(&written).get("CMDLINE"),
            Some(&Value::String(text.into()))
        );
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, line, problem) in [
            ("CONFIG_A=y\nCONFIG_B\n", 2, "expected CONFIG_NAME=VALUE"),
            ("CONFIG_A=yes\n", 1, "the value is not y, m, n"),
            ("CONFIG_A=\"open\n", 1, "no closing quote"),
            ("CONFIG_A=\"a\" b\n", 1, "text follows the closing quote"),
            ("\nCONFIG_A-B=y\n", 2, "not a symbol name"),
            ("\n\nEFI=y\n", 3, "not a CONFIG_ line"),
        ] {
            let error = Config::parse(text).expect_err(text);
            assert_eq!(error.line, line, "{text:?}");
            assert!(error.problem.contains(problem), "{text:?}: {error}");
        }
    }

    #[test]
    fn save_keeps_the_old_file_and_its_mode() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join(".config");
        fs::write(&path, "CONFIG_A=y\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).expect("chmod");
        let mut config = Config::load(&path).expect("load");
        config.set("B", Value::Yes);
        config.save(&path).expect("save");
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "CONFIG_A=y\nCONFIG_B=y\n"
        );
        assert_eq!(
            fs::read_to_string(dir.path().join(".config.old")).unwrap(),
            "CONFIG_A=y\n"
        );
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o640);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");

        let error = Config::load(&dir.path().join("missing")).expect_err("a missing file");
        assert!(error.to_string().starts_with("cannot read "), "{error}");
    }

    #[test]
    fn requirements_follow_the_inputs() {
        let symbols = |r: &Requirements| -> Vec<String> {
            r.iter()
                .map(|r| format!("{}={}", r.symbol, r.value))
                .collect()
        };
        assert_eq!(
            symbols(&requirements(Some("console=ttyS0"))),
            [
                "BLK_DEV_INITRD=y",
                "INITRAMFS_SOURCE=\"/var/lib/autogentoo/out/web/initramfs.cpio.gz\"",
                "RD_GZIP=y",
                "DEVTMPFS=y",
                "EFI=y",
                "EFI_STUB=y",
                "CMDLINE_BOOL=y",
                "CMDLINE=\"console=ttyS0\"",
            ]
        );
        let zstd = Requirements::new(
            Some(Path::new("/o/initramfs.cpio.zst")),
            Compression::Zstd,
            Some(""),
        )
        .unwrap();
        assert!(symbols(&zstd).contains(&"RD_ZSTD=y".to_owned()));
        assert!(!symbols(&zstd).iter().any(|s| s.starts_with("CMDLINE")));
        let plain = Requirements::new(None, Compression::None, None).unwrap();
        assert_eq!(
            symbols(&plain),
            ["BLK_DEV_INITRD=y", "DEVTMPFS=y", "EFI=y", "EFI_STUB=y"]
        );
        assert!(Requirements::new(Some(Path::new("/o/a.cpio")), Compression::None, None).is_ok());
    }

    #[test]
    fn initramfs_paths_kbuild_would_misread_are_refused() {
        for (path, compression, reason) in [
            ("out/initramfs.cpio.gz", Compression::Gzip, "absolute"),
            ("/my out/initramfs.cpio.gz", Compression::Gzip, "spaces"),
            (
                "/out/initramfs.gz",
                Compression::Gzip,
                "`.cpio.` occurs once",
            ),
            (
                "/x.cpio.d/initramfs.cpio.gz",
                Compression::Gzip,
                "occurs once",
            ),
            ("/out/initramfs.cpio.zst", Compression::None, "*.cpio"),
        ] {
            let error = Requirements::new(Some(Path::new(path)), compression, None)
                .expect_err(path)
                .to_string();
            assert!(
                error.starts_with(&format!("the initramfs {path}: ")),
                "{error}"
            );
            assert!(error.contains(reason), "{error}");
        }
    }

    #[test]
    fn a_command_line_a_config_line_cannot_hold_is_refused() {
        let error = Requirements::new(None, Compression::Gzip, Some("console=ttyS0\nquiet"))
            .expect_err("a line break");
        assert!(
            matches!(error, KconfigError::ControlInCmdline(_)),
            "{error}"
        );
        assert!(!error.to_string().contains('\n'), "{error}");
    }

    #[test]
    fn apply_makes_what_check_lists_and_the_diff_shows_it() {
        let mut config = parse(SAMPLE);
        let needed = requirements(Some("console=ttyS0"));
        let changes = check(&config, &needed);
        assert_eq!(apply(&mut config, &needed), changes);
        assert_eq!(
            render_diff(&changes),
            "\
-CONFIG_INITRAMFS_SOURCE=\"\"
+CONFIG_INITRAMFS_SOURCE=\"/var/lib/autogentoo/out/web/initramfs.cpio.gz\"
+CONFIG_RD_GZIP=y
+CONFIG_DEVTMPFS=y
-# CONFIG_EFI is not set
+CONFIG_EFI=y
+CONFIG_EFI_STUB=y
-CONFIG_CMDLINE=\"say \\\"hi\\\" C:\\\\\"
+CONFIG_CMDLINE=\"console=ttyS0\"
"
        );
        assert_eq!(
            changes[3].to_string(),
            "CONFIG_EFI=y (was: # CONFIG_EFI is not set)"
        );
        assert_eq!(changes[1].to_string(), "CONFIG_RD_GZIP=y (was: absent)");
        assert_eq!(check(&config, &needed), []);
        assert_eq!(apply(&mut config, &needed), []);
        let text = config.to_string();
        assert!(
            text.contains("\nCONFIG_EFI=y\nCONFIG_FUSE_FS=m\n"),
            "in place: {text}"
        );
        assert!(text.ends_with("CONFIG_RD_GZIP=y\nCONFIG_DEVTMPFS=y\nCONFIG_EFI_STUB=y\n"));
        assert_eq!(
            serde_json::to_value(&changes[0]).unwrap(),
            serde_json::json!({
                "symbol": "INITRAMFS_SOURCE",
                "old": "\"\"",
                "new": "\"/var/lib/autogentoo/out/web/initramfs.cpio.gz\"",
            })
        );
    }

    #[test]
    fn merge_lets_later_fragments_win() {
        let base = parse("# base\nCONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n");
        let first = parse("CONFIG_B=m\nCONFIG_D=\"one\"\n");
        let second = parse("# CONFIG_A is not set\nCONFIG_D=\"two\"\nCONFIG_C=y\n");
        let merged = merge([&base, &first, &second]);
        assert_eq!(
            merged.to_string(),
            "# base\n# CONFIG_A is not set\nCONFIG_B=m\nCONFIG_C=y\nCONFIG_D=\"two\"\n"
        );
        assert_eq!(merge([&base]), base);
        assert_eq!(merge([]), Config::default());
        let fragment = requirements(None).as_fragment();
        assert_eq!(check(&merge([&base, &fragment]), &requirements(None)), []);
    }

    #[test]
    fn expressions_parse_with_kconfig_precedence() {
        let cases = [
            ("ACPI", "ACPI"),
            ("A && B || C", "A && B || C"),
            ("A && (B || C)", "A && (B || C)"),
            ("!(A || B) && !C", "!(A || B) && !C"),
            ("INITRAMFS_SOURCE!=\"\"", "INITRAMFS_SOURCE != \"\""),
            ("!(X86_32 = y) && HZ >= 0x64", "!(X86_32 = y) && HZ >= 0x64"),
            (
                "$(cc-option,-fno-pie) && PCI",
                "$(cc-option,-fno-pie) && PCI",
            ),
            ("A && (", "A && ("),
        ];
        for (text, rendered) in cases {
            assert_eq!(render(&parse_expr(text), 0), rendered, "{text}");
        }
        assert_eq!(parse_expr("A && ("), Expr::Opaque("A && (".into()));
    }

    #[test]
    fn expressions_evaluate_as_tristates() {
        let config =
            parse("CONFIG_A=y\nCONFIG_M=m\n# CONFIG_N is not set\nCONFIG_HZ=250\nCONFIG_S=\"x\"\n");
        for (text, value) in [
            ("A", 2),
            ("M", 1),
            ("N", 0),
            ("ABSENT", 0),
            ("!M", 1),
            ("A && M", 1),
            ("N || M", 1),
            ("A = y", 2),
            ("ABSENT = n", 2),
            ("HZ > 100", 2),
            ("HZ >= 0x100", 0),
            ("S != \"\"", 2),
            ("ABSENT != \"\"", 0),
            ("$(success,true) && N", 0),
            ("$(success,false)", 2),
        ] {
            assert_eq!(tristate(&parse_expr(text), &config), value, "{text}");
        }
    }

    #[test]
    fn blame_names_what_to_change() {
        let config = parse("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_X86_32=y\n");
        let not_set = |s: &str| Fault::NotSet(s.into());
        let set = |s: &str| Fault::Set(s.into());
        let cases = [
            ("A && B", vec![vec![not_set("B")]]),
            ("B && C", vec![vec![not_set("B")], vec![not_set("C")]]),
            ("B || C", vec![vec![not_set("B"), not_set("C")]]),
            ("A && !X86_32", vec![vec![set("X86_32")]]),
            ("!(A && X86_32)", vec![vec![set("A"), set("X86_32")]]),
            ("X86_32 = n", vec![vec![set("X86_32")]]),
            ("B != n", vec![vec![not_set("B")]]),
            ("A && y", vec![]),
            ("n", vec![]),
        ];
        for (text, faults) in cases {
            assert_eq!(blame(&parse_expr(text), true, &config), faults, "{text}");
        }
        assert_eq!(
            blame(&parse_expr("HZ > 100"), true, &config),
            vec![vec![Fault::Fails("HZ > 100".into())]]
        );
    }

    fn dropped(cause: DropCause) -> String {
        Dropped {
            symbol: "EFI".into(),
            wanted: Value::Yes,
            found: None,
            cause,
        }
        .to_string()
    }

    #[test]
    fn each_dropped_option_is_one_line_saying_what_to_add() {
        let unmet = |depends: &str, faults| DropCause::Unmet {
            depends: depends.into(),
            faults,
        };
        let not_set = |s: &str| Fault::NotSet(s.into());
        assert_eq!(
            dropped(unmet("ACPI", vec![vec![not_set("ACPI")]])),
            "CONFIG_EFI was dropped by make olddefconfig: it depends on ACPI, which is not set; \
             add CONFIG_ACPI=y to the kernel config"
        );
        assert_eq!(
            dropped(unmet(
                "ACPI && (PCI || ISA) && !X86_32",
                vec![
                    vec![not_set("ACPI")],
                    vec![not_set("PCI"), not_set("ISA")],
                    vec![Fault::Set("X86_32".into())],
                ]
            )),
            "CONFIG_EFI was dropped by make olddefconfig: it depends on ACPI && (PCI || ISA) \
             && !X86_32, and ACPI, PCI and ISA are not set, X86_32 is set; add CONFIG_ACPI=y \
             and one of CONFIG_PCI=y, CONFIG_ISA=y and # CONFIG_X86_32 is not set to the \
             kernel config"
        );
        assert_eq!(
            dropped(unmet(
                "HZ > 100",
                vec![vec![Fault::Fails("HZ > 100".into())]]
            )),
            "CONFIG_EFI was dropped by make olddefconfig: it depends on HZ > 100, and \
             `HZ > 100` does not hold; change the kernel config so that it holds"
        );
        assert!(dropped(DropCause::Undefined {
            srcarch: "x86".into()
        })
        .starts_with("CONFIG_EFI is not set, and no Kconfig file of this kernel defines EFI"));
        assert!(dropped(DropCause::NoPrompt).contains("EFI has no prompt"));
        assert!(dropped(DropCause::DependenciesMet).ends_with(
            "though its dependencies look met; set CONFIG_EFI=y in the kernel config before \
             make olddefconfig"
        ));
    }

    #[test]
    fn dropped_options_are_an_error_with_one_cause_per_option() {
        let options = DroppedOptions::new(vec![
            Dropped {
                symbol: "EFI".into(),
                wanted: Value::Yes,
                found: None,
                cause: DropCause::NoPrompt,
            },
            Dropped {
                symbol: "CMDLINE".into(),
                wanted: Value::String("a".into()),
                found: Some(Value::String("b".into())),
                cause: DropCause::DependenciesMet,
            },
        ]);
        let error = KconfigError::Dropped(options);
        let mut chain = vec![error.to_string()];
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            chain.push(cause.to_string());
            source = cause.source();
        }
        assert_eq!(chain.len(), 3, "{chain:?}");
        assert!(chain[0].starts_with("2 options the pipeline needs are missing"));
        assert!(chain[1].starts_with("CONFIG_EFI was dropped by make olddefconfig: "));
        assert!(chain[2].starts_with("CONFIG_CMDLINE is \"b\", not \"a\", though"));
    }

    /// A small Kconfig tree: blocks, help text that looks like syntax, `source` under an `if`,
    /// and another architecture that must not count.
    fn write_tree(top: &Path) {
        let files = [
            (
                "Kconfig",
                "mainmenu \"test\"\nsource \"init/Kconfig\"\nsource \"arch/$(SRCARCH)/Kconfig\"\n",
            ),
            (
                "init/Kconfig",
                "config BLK_DEV_INITRD\n\tbool \"initrd\"\n\thelp\n\t  The text\n\n\t  depends on HELP_TEXT\n\nif BLK_DEV_INITRD\nsource \"usr/Kconfig\"\nendif\n\nmenu \"General\"\n\tdepends on MENU_DEP # a comment\n\nconfig IN_MENU\n\tdef_bool y\n\nendmenu\n\nconfig AFTER_MENU\n\tbool \"after\"\n\tdepends on B || \\\n\t  C\n",
            ),
            ("usr/Kconfig", "config RD_GZIP\n\tbool \"gzip\"\n\tdefault y\n"),
            (
                "arch/x86/Kconfig",
                "config EFI\n\tbool \"EFI\"\n\tdepends on ACPI\n\tselect UCS2_STRING\n",
            ),
            ("arch/arm64/Kconfig", "config EFI\n\tbool \"EFI\"\n"),
            ("scripts/kconfig/tests/choice/Kconfig", "config RD_GZIP\n\tbool \"x\"\n"),
        ];
        for (rel, text) in files {
            let path = top.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    #[test]
    fn the_tree_scan_follows_blocks_sources_and_help_text() {
        let dir = tempfile::tempdir().unwrap();
        write_tree(dir.path());
        let tree = KconfigTree::scan(dir.path(), "x86").expect("scan");
        let depends = |symbol: &str| -> Vec<String> {
            let definitions = &tree.definitions[symbol];
            assert_eq!(definitions.len(), 1, "{symbol}: {definitions:?}");
            definitions[0]
                .depends
                .iter()
                .map(|e| render(e, 0))
                .collect()
        };
        assert_eq!(depends("BLK_DEV_INITRD"), Vec::<String>::new());
        assert_eq!(depends("RD_GZIP"), ["BLK_DEV_INITRD"]);
        assert_eq!(depends("IN_MENU"), ["MENU_DEP"]);
        assert_eq!(depends("AFTER_MENU"), ["B || C"]);
        assert_eq!(depends("EFI"), ["ACPI"]);
        assert!(tree.definitions["EFI"][0].prompt);
        assert!(!tree.definitions["IN_MENU"][0].prompt);
        assert!(!tree.definitions.contains_key("HELP_TEXT"));
    }

    #[test]
    fn verification_explains_each_missing_option() {
        let dir = tempfile::tempdir().unwrap();
        write_tree(dir.path());
        let needed = Requirements::new(None, Compression::Gzip, None).unwrap();
        let config = parse("# CONFIG_BLK_DEV_INITRD is not set\nCONFIG_DEVTMPFS=y\n");
        let error = verify_after_olddefconfig(&config, &needed, dir.path(), "x86_64")
            .expect_err("options are missing");
        let KconfigError::Dropped(options) = error else {
            panic!("not a Dropped error: {error}");
        };
        let lines: Vec<String> = options.dropped().iter().map(|d| d.to_string()).collect();
        assert_eq!(
            lines,
            [
                "CONFIG_BLK_DEV_INITRD is not set, though its dependencies look met; set \
                 CONFIG_BLK_DEV_INITRD=y in the kernel config before make olddefconfig",
                "CONFIG_RD_GZIP was dropped by make olddefconfig: it depends on BLK_DEV_INITRD, \
                 which is not set; add CONFIG_BLK_DEV_INITRD=y to the kernel config",
                "CONFIG_EFI was dropped by make olddefconfig: it depends on ACPI, which is not \
                 set; add CONFIG_ACPI=y to the kernel config",
                "CONFIG_EFI_STUB is not set, and no Kconfig file of this kernel defines EFI_STUB \
                 for arch/x86: this kernel does not have the option",
            ]
        );
        let met = parse(
            "CONFIG_BLK_DEV_INITRD=y\nCONFIG_RD_GZIP=y\nCONFIG_DEVTMPFS=y\nCONFIG_EFI=y\n\
             CONFIG_EFI_STUB=y\n",
        );
        verify_after_olddefconfig(&met, &needed, dir.path(), "x86").expect("nothing missing");
        let error = verify_after_olddefconfig(&met, &needed, dir.path(), "riscv64")
            .expect_err("no arch/riscv");
        assert!(error.to_string().contains("has no arch/riscv"), "{error}");
        let error = verify_after_olddefconfig(&met, &needed, &dir.path().join("arch"), "x86")
            .expect_err("not a tree");
        assert!(
            error.to_string().contains("is not a kernel source tree"),
            "{error}"
        );
    }
}
