//! The `image` step of `build`, for a system with `[systems.NAME.image]`: an image tree holding
//! only the packages the system names and their runtime dependencies, installed from the binary
//! packages its build root made, plus the libraries their programs need from the build root.
//! The initramfs is then packed from the image's base, this tree and the site files, never from
//! the build root with its toolchain.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use autogentoo_core::chroot::root_mounts::IMAGE_TARGET;
use autogentoo_core::files::in_root::RootDir;
use autogentoo_core::files::output_file;
use autogentoo_core::image::libraries::{self, LibraryReport};
use autogentoo_core::image::vdb::{self, Installed};
use autogentoo_core::site_config::ImageConfig;

use super::step_log::StepLog;
use crate::context::Context;

/// The image tree of a system, in its output directory.
pub fn tree(out_dir: &Path) -> PathBuf {
    out_dir.join("image")
}

/// The list of the image's packages, one `CATEGORY/PF:SLOT USE="…"` line each.
pub fn package_list(out_dir: &Path) -> PathBuf {
    out_dir.join("image.packages")
}

/// What the step made.
pub struct ImageReport {
    pub tree: PathBuf,
    pub packages: Vec<Installed>,
    pub libraries: LibraryReport,
}

/// Installs the image's packages into a fresh tree with emerge inside root `root_name` (at
/// `root_path`), completes its libraries, and puts it in place of the previous tree. The
/// emerge's output goes to `out_dir/image.log`; an interrupted step leaves the previous tree
/// or none, never a half-made one in its place.
pub fn build(
    ctx: &Context,
    image: &ImageConfig,
    root_name: &str,
    root_path: &Path,
    out_dir: &Path,
) -> Result<ImageReport> {
    let tree = tree(out_dir);
    let staging = out_dir.join(".image.new");
    remove_tree(&staging)?;
    fs::create_dir_all(&staging)
        .with_context(|| format!("cannot create the image tree {}", staging.display()))?;

    let target = format!("/{IMAGE_TARGET}");
    let mut emerge = vec![
        "emerge".to_owned(),
        "--usepkgonly".into(),
        "--root-deps=rdeps".into(),
        format!("--root={target}"),
    ];
    emerge.extend(image.packages.iter().cloned());
    let mut log = StepLog::create(out_dir, "image", ctx.verbose)?;
    let mut run = ctx.reinvoke();
    run.args(["root", "run", root_name, "--image"])
        .arg(&staging)
        .arg("--")
        .args(&emerge);
    log.run(run, &emerge.join(" "), root_name)?;

    let libraries = libraries::complete(&staging, root_path, image.libraries)
        .with_context(|| format!("the image of root '{root_name}' is incomplete"))?;
    let packages = vdb::installed(&RootDir::open(&staging)?)?;
    let mut list = String::new();
    for package in &packages {
        list.push_str(&format!("{package}\n"));
    }
    output_file::write(&package_list(out_dir), list.as_bytes())?;

    let old = out_dir.join(".image.old");
    remove_tree(&old)?;
    if tree.exists() {
        fs::rename(&tree, &old)
            .with_context(|| format!("cannot move the previous image tree {}", tree.display()))?;
    }
    fs::rename(&staging, &tree)
        .with_context(|| format!("cannot put the image tree in place at {}", tree.display()))?;
    remove_tree(&old)?;
    Ok(ImageReport {
        tree,
        packages,
        libraries,
    })
}

/// Removes a tree of ours under the output directory, if it is there (never following a
/// symlink in it).
fn remove_tree(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            fs::remove_dir_all(path).with_context(|| format!("cannot remove {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    }
}
