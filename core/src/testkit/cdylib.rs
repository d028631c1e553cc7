//! A plugin library for a test to load. `cargo test` builds a package's `cdylib` only when
//! asked, so a test that loads one builds it first: into the target directory and profile the
//! test itself runs from (`TARGET/PROFILE/deps/TEST`), so it matches the program under test.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds the `cdylib` of `package` (a member of the workspace at or above `dir`) if it is not
/// up to date, and returns its path. Panics, with cargo's own output above, when it cannot.
pub fn build_cdylib(package: &str, dir: &Path) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary is in TARGET/PROFILE/deps");
    let target = profile_dir.parent().expect("TARGET/PROFILE");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["build", "--quiet", "--package", package, "--target-dir"])
        .arg(target)
        .current_dir(dir);
    if profile_dir.file_name() == Some(OsStr::new("release")) {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("cargo runs");
    assert!(
        status.success(),
        "cargo build -p {package} failed ({status})"
    );
    let library = profile_dir.join(format!("lib{}.so", package.replace('-', "_")));
    assert!(
        library.is_file(),
        "{} is missing after the build",
        library.display()
    );
    library
}
