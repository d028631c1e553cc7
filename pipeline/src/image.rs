//! The `image` step, for a system with `[systems.NAME.image]`: an image tree holding
//! only the packages the system names and their runtime dependencies, installed from the binary
//! packages its build root made, plus the libraries their programs need from the build root.
//! The initramfs is then packed from the image's base, this tree and the site files, never from
//! the build root with its toolchain.

use std::fs;
use std::path::{Path, PathBuf};

use autogentoo_core::chroot::root_mounts::IMAGE_TARGET;
use autogentoo_core::files::in_root::RootDir;
use autogentoo_core::files::output_file;
use autogentoo_core::image::libraries::{self, LibraryReport};
use autogentoo_core::image::vdb::{self, Installed};
use autogentoo_core::site_config::ImageConfig;

use crate::event::{Observer, StepName};
use crate::hooks::RootRunner;
use crate::step_log::StepLog;
use crate::{PipelineError, ResultExt as _};

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
/// emerge's output goes to `out_dir/image.log` and to `observer`; an interrupted step leaves
/// the previous tree or none, never a half-made one in its place.
pub fn build(
    runner: &dyn RootRunner,
    observer: &mut dyn Observer,
    image: &ImageConfig,
    root_name: &str,
    root_path: &Path,
    out_dir: &Path,
) -> Result<ImageReport, PipelineError> {
    let tree = tree(out_dir);
    let staging = out_dir.join(".image.new");
    remove_tree(&staging)?;
    fs::create_dir_all(&staging)
        .what(|| format!("cannot create the image tree {}", staging.display()))?;

    let target = format!("/{IMAGE_TARGET}");
    let mut emerge = vec![
        "emerge".to_owned(),
        "--usepkgonly".into(),
        "--root-deps=rdeps".into(),
        format!("--root={target}"),
    ];
    emerge.extend(image.packages.iter().cloned());
    let mut log = StepLog::create(out_dir, StepName::Image)?;
    let run = runner.command(root_name, Some(&staging), &emerge);
    log.run(run, &emerge.join(" "), root_name, observer)?;

    let libraries = libraries::complete(&staging, root_path, image.libraries)
        .what(|| format!("the image of root '{root_name}' is incomplete"))?;
    let installed = || {
        format!(
            "cannot read the packages installed in {}",
            staging.display()
        )
    };
    let packages = vdb::installed(&RootDir::open(&staging).what(installed)?).what(installed)?;
    let mut list = String::new();
    for package in &packages {
        list.push_str(&format!("{package}\n"));
    }
    let list_path = package_list(out_dir);
    output_file::write(&list_path, list.as_bytes())
        .what(|| format!("cannot write {}", list_path.display()))?;

    let old = out_dir.join(".image.old");
    remove_tree(&old)?;
    if tree.exists() {
        fs::rename(&tree, &old)
            .what(|| format!("cannot move the previous image tree {}", tree.display()))?;
    }
    fs::rename(&staging, &tree)
        .what(|| format!("cannot put the image tree in place at {}", tree.display()))?;
    remove_tree(&old)?;
    Ok(ImageReport {
        tree,
        packages,
        libraries,
    })
}

/// Removes a tree of ours under the output directory, if it is there (never following a
/// symlink in it).
fn remove_tree(path: &Path) -> Result<(), PipelineError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            fs::remove_dir_all(path).what(|| format!("cannot remove {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).what(|| format!("cannot remove {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).what(|| format!("cannot inspect {}", path.display())),
    }
}
