//! Packers: what turns a system's layers — the root, then the site's files — into the archive
//! the kernel unpacks at boot. The pipeline's pack step and `root pack` call the packer the site
//! config names (`pack.packer`); the built-in one is [`crate::pack::initramfs::Newc`], and plugins may
//! add others. What a packer can do is in its [`PackerCapabilities`], which the callers read
//! instead of its name.

pub mod cpio;
pub mod initramfs;
pub mod squashfs_pack;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use serde::Serialize;

use crate::files::output_file::OutputError;
use crate::site_config::{Compression, ConfigError, SiteConfig};
use crate::stage_import::Progress;
use crate::storage::StorageError;

/// Packs layers into one archive.
///
/// The contract, each bullet a case of the packer conformance suite
/// (`autogentoo_core::packer_conformance!`):
///
/// - the archive is a newc cpio (compressed as the request says) that GNU cpio extracts to the
///   merged tree: every layer's entries with their owners, modes, mtimes (clamped to
///   `source_date_epoch` when set), symlinks and hardlinks; a later layer's file replaces an
///   earlier one's, a directory keeps the first layer's owner and mode;
/// - the contents of the first layer's `exclude` directories are left out, the directories
///   themselves stay;
/// - `/dev/console` is always in the archive (the kernel opens it before running init);
/// - a tree without `rdinit`, or whose `rdinit` is not an executable file once followed through
///   symlinks inside the tree (a dangling link, a loop, a link to a non-executable file), is
///   refused with an error naming it, and nothing is written;
/// - a missing layer directory is an error naming it;
/// - a compression outside [`PackerCapabilities::compressions`] is refused before anything is
///   written;
/// - the archive appears whole or not at all: on an error or once `cancel` is set, nothing is
///   left at the output path or beside it, and an archive already there is untouched;
/// - with [`PackerCapabilities::reproducible`], the same inputs give the same bytes;
/// - the layers are only read.
pub trait Packer: Send + Sync {
    /// The name it is registered under.
    fn name(&self) -> &str;

    /// What it can do.
    fn capabilities(&self) -> PackerCapabilities;

    /// Packs `request.layers` into `request.output`.
    fn pack(&self, request: &PackRequest) -> Result<PackReport, PackError>;
}

/// What a packer can do, for the callers to check before they ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PackerCapabilities {
    /// The compressions it writes.
    pub compressions: Vec<Compression>,
    /// The same inputs give the same bytes.
    pub reproducible: bool,
    /// It writes a manifest (which layer supplied each entry) beside the archive.
    pub manifest: bool,
}

impl dyn Packer + '_ {
    /// Refuses a compression the packer does not write, before anything is read or written.
    pub fn check(&self, compression: Compression) -> Result<(), PackError> {
        let capabilities = self.capabilities();
        if capabilities.compressions.contains(&compression) {
            return Ok(());
        }
        Err(PackError::Unsupported {
            packer: self.name().to_owned(),
            compression,
            supported: capabilities.compressions,
        })
    }
}

/// One tree to pack. The first layer is the root; the others are site files.
#[derive(Clone, Debug)]
pub struct Layer {
    /// How the manifest names it: `root:web`, `common`, `hardware/qemu-x86_64`, …
    pub name: String,
    pub path: PathBuf,
    /// Site files are packed as owned by root unless `keep_site_owners`.
    pub site: bool,
}

/// The layers of a root's initramfs: the root, the site's `common/`, then the overlays in
/// order (`KIND/NAME` under the site's overlays/).
pub fn site_layers(
    config: &SiteConfig,
    root_name: &str,
    root_path: &Path,
    overlays: &[String],
) -> Result<Vec<Layer>, ConfigError> {
    let mut layers = vec![Layer {
        name: format!("root:{root_name}"),
        path: root_path.to_owned(),
        site: false,
    }];
    if let Some(common) = config.common_dir() {
        layers.push(Layer {
            name: "common".into(),
            path: common,
            site: true,
        });
    }
    for overlay in overlays {
        layers.push(Layer {
            name: overlay.clone(),
            path: config.overlay_dir(overlay)?,
            site: true,
        });
    }
    Ok(layers)
}

/// What to pack and how.
pub struct PackRequest<'a> {
    pub layers: Vec<Layer>,
    /// Directories of the root layer (relative) whose contents are left out; the directories
    /// themselves stay, as mount points.
    pub exclude: Vec<PathBuf>,
    /// The program the kernel runs from the initramfs, an absolute path inside it.
    pub rdinit: String,
    pub keep_site_owners: bool,
    pub compression: Compression,
    pub level: Option<u32>,
    /// Clamp every mtime to this (the `SOURCE_DATE_EPOCH` convention).
    pub source_date_epoch: Option<u64>,
    pub threads: usize,
    pub output: PathBuf,
    pub progress: &'a dyn Progress,
    pub cancel: &'a AtomicBool,
}

/// What a pack produced.
#[derive(Debug, Serialize)]
pub struct PackReport {
    pub archive: PathBuf,
    /// Beside the archive, when the packer writes one.
    pub manifest: Option<PathBuf>,
    pub sha256: String,
    pub compression: Compression,
    pub entries: u64,
    /// Size of the uncompressed cpio stream.
    pub cpio_bytes: u64,
    /// Size of the archive as written.
    pub archive_bytes: u64,
    /// Entries whose extended attributes (file capabilities, …) were left behind: newc has no
    /// place for them.
    pub dropped_xattrs: u64,
}

/// Why a pack failed; nothing is left at the output path or beside it.
#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{} is {size} bytes; a newc cpio holds files below 4 GiB: exclude it (pack.exclude) or remove it", .path.display())]
    TooLarge { path: PathBuf, size: u64 },
    #[error("the packed tree has no {rdinit} (the program the kernel starts); add one to the root or an overlay, or set pack.rdinit")]
    NoInit { rdinit: String },
    #[error(
        "{rdinit} (from {layer}) is not executable, so the kernel could not start it; chmod +x it"
    )]
    InitNotExecutable { rdinit: String, layer: String },
    #[error("{rdinit} is a symlink to {missing}, which the packed tree does not have, so the kernel could not start it; fix the link or add its target")]
    InitDangling { rdinit: String, missing: String },
    #[error("{rdinit} leads through more than 40 symlinks, so the kernel could not start it; fix the links")]
    InitLoop { rdinit: String },
    #[error(
        "{rdinit} is not a file, so the kernel could not start it; make it the program to run"
    )]
    InitNotAFile { rdinit: String },
    #[error("{} changed while it was packed; pack again when nothing writes to the root", .path.display())]
    Changed { path: PathBuf },
    #[error("writing {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("interrupted; no archive was written")]
    Interrupted,
    #[error(
        "packer '{packer}' does not write {compression} archives; it writes {}: set pack.compression",
        supported.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    Unsupported {
        packer: String,
        compression: Compression,
        supported: Vec<Compression>,
    },
    /// A plugin's packer failed; its message, causes included.
    #[error("{0}")]
    Failed(String),
}
