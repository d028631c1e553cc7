//! `cargo xtask install [--prefix DIR] [--destdir DIR] [--debug]`: builds the release binary (the
//! debug one with `--debug`, as the test of this step does, which has it already) and installs
//! it with its shell completions and manual pages, where bash-completion, zsh, fish and man look
//! under the prefix. The scripts and pages come from the built binary itself (`autogentoo
//! completions SHELL`, `autogentoo man --dir DIR`), so they always describe the binary installed.
//! `--destdir` stages the tree under another directory, as packagers do.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use autogentoo_core::files::output_file::OutputFile;

use crate::host::{self, cargo};

/// The options; `--prefix` defaults to /usr/local.
pub struct Options {
    pub prefix: PathBuf,
    pub destdir: Option<PathBuf>,
    /// Install the debug build instead of the release one.
    pub debug: bool,
}

impl Options {
    /// Parses `[--prefix DIR] [--destdir DIR] [--debug]`, the directories also as `--name=DIR`.
    pub fn parse(args: &[&str]) -> Result<Self> {
        let mut options = Self {
            prefix: PathBuf::from("/usr/local"),
            destdir: None,
            debug: false,
        };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            if *arg == "--debug" {
                options.debug = true;
                continue;
            }
            let (name, value) = match arg.split_once('=') {
                Some((name, value)) => (name, value),
                None => (
                    *arg,
                    *args
                        .next()
                        .with_context(|| format!("{arg} needs a directory"))?,
                ),
            };
            match name {
                "--prefix" => options.prefix = PathBuf::from(value),
                "--destdir" => options.destdir = Some(PathBuf::from(value)),
                _ => bail!("unknown option {name}"),
            }
        }
        if !options.prefix.is_absolute() {
            bail!(
                "--prefix {} is not absolute: give the path the files will have once installed",
                options.prefix.display()
            );
        }
        Ok(options)
    }

    /// Where the prefix is written: below `--destdir` when given.
    fn root(&self) -> PathBuf {
        match &self.destdir {
            Some(destdir) => destdir.join(
                self.prefix
                    .strip_prefix("/")
                    .expect("the prefix was checked to be absolute"),
            ),
            None => self.prefix.clone(),
        }
    }
}

/// Each shell the binary writes completions for, and where that shell looks under a prefix.
const COMPLETIONS: &[(&str, &str)] = &[
    ("bash", "share/bash-completion/completions/autogentoo"),
    ("zsh", "share/zsh/site-functions/_autogentoo"),
    ("fish", "share/fish/vendor_completions.d/autogentoo.fish"),
];

pub fn run(options: &Options) -> Result<()> {
    // The same commands as `cargo xtask demo` (release) and `cargo xtask test` (debug), so one
    // build serves both.
    let mut build = cargo();
    build.args(["build", "--package", "autogentoo-cli"]);
    if !options.debug {
        build.arg("--release");
    }
    host::run(&mut build)?;
    let profile = if options.debug { "debug" } else { "release" };
    let built = host::target_dir().join(profile).join("autogentoo");
    let root = options.root();

    let binary = root.join("bin/autogentoo");
    let contents = fs::read(&built).with_context(|| format!("cannot read {}", built.display()))?;
    place(&binary, &contents, 0o755)?;
    println!("{}", binary.display());

    for (shell, path) in COMPLETIONS {
        let output = Command::new(&built)
            .args(["completions", shell])
            .output()
            .with_context(|| format!("cannot run {}", built.display()))?;
        if !output.status.success() {
            bail!(
                "`autogentoo completions {shell}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let path = root.join(path);
        place(&path, &output.stdout, 0o644)?;
        println!("{}", path.display());
    }

    let man_dir = root.join("share/man/man1");
    host::run(Command::new(&built).arg("man").arg("--dir").arg(&man_dir))?;
    println!("{}/autogentoo*.1", man_dir.display());
    Ok(())
}

/// Writes `path` with `contents` and `mode` as autogentoo writes its outputs: unnamed until
/// whole, then renamed over what was there, so a running binary is replaced, not overwritten,
/// and a killed install leaves nothing half-written.
fn place(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut output = OutputFile::create(path)?.with_mode(mode);
    output
        .write_all(contents)
        .with_context(|| format!("cannot write {}", path.display()))?;
    output.commit()?;
    Ok(())
}
