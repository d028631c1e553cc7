//! `cargo xtask test`: formatting, lints, then every test tier.
//!
//! Tiers: *unit* (pure logic, no root) and *real* (root, real filesystems, real GNU tools). On
//! the project's machines and in CI every tier runs; `--unit` is for a quick local loop.

use anyhow::{bail, Result};

use crate::host::{self, cargo};

/// What the real tier drives: GNU tar and the compressors, xattr and capability tools.
const PACKAGES: &[&str] = &[
    "tar",
    "xz-utils",
    "zstd",
    "bzip2",
    "gzip",
    "attr",
    "libcap2-bin",
    "busybox-static",
    "squashfs-tools",
];

pub fn run(unit_only: bool) -> Result<()> {
    host::run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    if unit_only {
        return host::run(cargo().args(["test", "--workspace", "--lib"]));
    }
    if !host::is_root() {
        bail!("the real tier mounts, makes device nodes and sets file capabilities: run `cargo xtask test` as root (or `cargo xtask test --unit`)");
    }
    host::ensure_packages(PACKAGES)?;
    host::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    host::run(cargo().args(["build", "--package", "autogentoo-cli"]))?;
    let bin = host::target_dir().join("debug/autogentoo");
    host::run(
        cargo()
            .args(["test", "--workspace"])
            .env("AUTOGENTOO_BIN", bin),
    )
}
