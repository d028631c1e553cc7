//! The core's types to their boundary form and back. Both sides use these: a plugin to answer,
//! the host to ask and to read the answers. What comes back from the other side is checked like
//! any input (names are validated again), so a confused plugin gives an error, not a bad value.

// `ErrorFfi` is the boundary's error type, passed by value with a layout the ABI fixes; errors
// are rare, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, PoisonError};

use abi_stable::std_types::{ROption, RString, RVec, Tuple2};
use autogentoo_core::kernel::{KernelBuilderCapabilities, KernelError, KernelJob, KernelReport};
use autogentoo_core::names::NameError;
use autogentoo_core::pack::{Layer, PackError, PackReport, PackRequest, PackerCapabilities};
use autogentoo_core::registry::StorageSettings;
use autogentoo_core::site_config::Compression;
use autogentoo_core::stage_import::Progress;
use autogentoo_core::storage::{
    Capabilities, PendingVolume, Snapshot, SnapshotId, StorageError, Usage, Volume, VolumeId,
    VolumeKind,
};

use crate::ffi::{
    caps, error_kind, kernel_caps, packer_caps, ErrorFfi, KernelJobFfi, KernelReportFfi, KeyedFfi,
    KindFfi, LayerFfi, PackReportFfi, PackRequestFfi, PackerCapabilitiesFfi, PendingFfi,
    SnapshotFfi, SnapshotIdFfi, UsageFfi, VolumeFfi, VolumeIdFfi,
};
use crate::hooks::Values;

pub fn path_ffi(path: &Path) -> RVec<u8> {
    path.as_os_str().as_bytes().into()
}

pub fn path_from(bytes: &RVec<u8>) -> PathBuf {
    PathBuf::from(OsString::from_vec(bytes.to_vec()))
}

pub fn kind_ffi(kind: VolumeKind) -> KindFfi {
    match kind {
        VolumeKind::Stage => KindFfi::Stage,
        VolumeKind::Root => KindFfi::Root,
        VolumeKind::Kernel => KindFfi::Kernel,
        VolumeKind::Cache => KindFfi::Cache,
    }
}

pub fn kind_from(kind: KindFfi) -> VolumeKind {
    match kind {
        KindFfi::Stage => VolumeKind::Stage,
        KindFfi::Root => VolumeKind::Root,
        KindFfi::Kernel => VolumeKind::Kernel,
        KindFfi::Cache => VolumeKind::Cache,
    }
}

pub fn volume_id_ffi(id: &VolumeId) -> VolumeIdFfi {
    VolumeIdFfi {
        kind: kind_ffi(id.kind()),
        name: id.name().into(),
    }
}

pub fn volume_id_from(id: &VolumeIdFfi) -> Result<VolumeId, StorageError> {
    VolumeId::new(kind_from(id.kind), &id.name)
}

pub fn snapshot_id_ffi(id: &SnapshotId) -> SnapshotIdFfi {
    SnapshotIdFfi {
        volume: volume_id_ffi(id.volume()),
        name: id.name().into(),
    }
}

pub fn snapshot_id_from(id: &SnapshotIdFfi) -> Result<SnapshotId, StorageError> {
    SnapshotId::new(volume_id_from(&id.volume)?, &id.name)
}

pub fn volume_ffi(volume: Volume) -> VolumeFfi {
    VolumeFfi {
        id: volume_id_ffi(&volume.id),
        path: path_ffi(&volume.path),
        origin: volume.origin.as_ref().map(snapshot_id_ffi).into(),
        sealed: volume.sealed,
        created: volume.created,
        properties: volume
            .properties
            .into_iter()
            .map(|(k, v)| Tuple2(k.into(), v.into()))
            .collect(),
    }
}

pub fn volume_from(volume: VolumeFfi) -> Result<Volume, StorageError> {
    Ok(Volume {
        id: volume_id_from(&volume.id)?,
        path: path_from(&volume.path),
        origin: match &volume.origin {
            ROption::RSome(origin) => Some(snapshot_id_from(origin)?),
            ROption::RNone => None,
        },
        sealed: volume.sealed,
        created: volume.created,
        properties: volume
            .properties
            .into_iter()
            .map(|Tuple2(k, v)| (k.into(), v.into()))
            .collect(),
    })
}

pub fn snapshot_ffi(snapshot: Snapshot) -> SnapshotFfi {
    SnapshotFfi {
        id: snapshot_id_ffi(&snapshot.id),
        created: snapshot.created,
    }
}

pub fn snapshot_from(snapshot: SnapshotFfi) -> Result<Snapshot, StorageError> {
    Ok(Snapshot {
        id: snapshot_id_from(&snapshot.id)?,
        created: snapshot.created,
    })
}

pub fn usage_ffi(usage: Usage) -> UsageFfi {
    UsageFfi {
        total_bytes: usage.total_bytes,
        used_bytes: usage.used_bytes,
        available_bytes: usage.available_bytes,
    }
}

pub fn usage_from(usage: UsageFfi) -> Usage {
    Usage {
        total_bytes: usage.total_bytes,
        used_bytes: usage.used_bytes,
        available_bytes: usage.available_bytes,
    }
}

pub fn pending_ffi(pending: PendingVolume) -> PendingFfi {
    PendingFfi {
        id: volume_id_ffi(&pending.id),
        path: path_ffi(&pending.path),
        token: pending.token.into(),
    }
}

pub fn pending_from(pending: PendingFfi) -> Result<PendingVolume, StorageError> {
    Ok(PendingVolume {
        id: volume_id_from(&pending.id)?,
        path: path_from(&pending.path),
        token: pending.token.into(),
    })
}

/// A field of [`Capabilities`].
type Field = fn(&mut Capabilities) -> &mut bool;

const CAPABILITY_BITS: [(u64, Field); 6] = [
    (caps::CHEAP_CLONE, |c| &mut c.cheap_clone),
    (caps::CHEAP_SNAPSHOT, |c| &mut c.cheap_snapshot),
    (caps::ENFORCED_READ_ONLY, |c| &mut c.enforced_read_only),
    (caps::XATTRS, |c| &mut c.xattrs),
    (caps::SPECIAL_FILES, |c| &mut c.special_files),
    (caps::SHARED_BLOCKS, |c| &mut c.shared_blocks),
];

pub fn capabilities_ffi(mut capabilities: Capabilities) -> u64 {
    CAPABILITY_BITS
        .iter()
        .filter(|(_, field)| *field(&mut capabilities))
        .fold(0, |bits, (bit, _)| bits | bit)
}

pub fn capabilities_from(bits: u64) -> Capabilities {
    let mut capabilities = Capabilities::default();
    for (bit, field) in CAPABILITY_BITS {
        *field(&mut capabilities) = bits & bit != 0;
    }
    capabilities
}

pub fn settings_ffi(settings: &StorageSettings) -> KeyedFfi {
    let mut values = Values::default();
    values.set("workdir", &settings.workdir);
    if let Some(dataset) = &settings.dataset {
        values.set("dataset", dataset);
    }
    keyed_ffi(&values)
}

pub fn settings_from(keyed: &KeyedFfi) -> StorageSettings {
    let values = keyed_from(keyed);
    StorageSettings {
        workdir: values
            .path("workdir")
            .map(Path::to_owned)
            .unwrap_or_default(),
        dataset: values.text("dataset").map(str::to_owned),
    }
}

pub fn keyed_ffi(values: &Values) -> KeyedFfi {
    values
        .iter()
        .map(|(key, value)| Tuple2(key.into(), value.as_bytes().into()))
        .collect()
}

pub fn keyed_from(keyed: &KeyedFfi) -> Values {
    let mut values = Values::default();
    for Tuple2(key, value) in keyed {
        values.set(key, OsString::from_vec(value.to_vec()));
    }
    values
}

impl ErrorFfi {
    pub fn new(kind: u32, what: impl Into<RString>) -> Self {
        Self {
            kind,
            what: what.into(),
            detail: RString::new(),
            path: RVec::new(),
            errno: 0,
            dependants: RVec::new(),
        }
    }

    fn detail(mut self, detail: impl Into<RString>) -> Self {
        self.detail = detail.into();
        self
    }
}

pub fn error_ffi(error: StorageError) -> ErrorFfi {
    use error_kind::*;
    match error {
        StorageError::NotFound(what) => ErrorFfi::new(NOT_FOUND, what),
        StorageError::AlreadyExists(what) => ErrorFfi::new(ALREADY_EXISTS, what),
        StorageError::HasDependants { what, dependants } => ErrorFfi {
            dependants: dependants.iter().map(volume_id_ffi).collect(),
            ..ErrorFfi::new(HAS_DEPENDANTS, what)
        },
        StorageError::ReadOnly(what) => ErrorFfi::new(READ_ONLY, what),
        StorageError::InvalidName { what, name, reason } => ErrorFfi {
            path: name_error_code(reason).into_bytes().into(),
            ..ErrorFfi::new(INVALID_NAME, what).detail(name)
        },
        StorageError::InvalidProperty(what) => ErrorFfi::new(INVALID_PROPERTY, what),
        StorageError::MissingPrerequisite { what, hint } => {
            ErrorFfi::new(MISSING_PREREQUISITE, what).detail(hint)
        }
        StorageError::Unsupported { message } => ErrorFfi::new(UNSUPPORTED, message),
        StorageError::Io { op, path, source } => ErrorFfi {
            path: path_ffi(&path),
            errno: source.raw_os_error().unwrap_or(0),
            ..ErrorFfi::new(IO, op).detail(source.to_string())
        },
        StorageError::Command { command, stderr } => ErrorFfi::new(COMMAND, command).detail(stderr),
        StorageError::Corrupt(what) => ErrorFfi::new(CORRUPT, what),
    }
}

/// The storage error `error` stands for. A panic, or a kind this host does not know, becomes
/// `Unsupported` with a message naming the plugin and the call.
pub fn error_from(error: ErrorFfi, plugin: &str, call: &str) -> StorageError {
    use error_kind::*;
    let what: String = error.what.into();
    let detail: String = error.detail.into();
    match error.kind {
        NOT_FOUND => StorageError::NotFound(what),
        ALREADY_EXISTS => StorageError::AlreadyExists(what),
        HAS_DEPENDANTS => {
            let dependants: Result<Vec<VolumeId>, StorageError> =
                error.dependants.iter().map(volume_id_from).collect();
            match dependants {
                Ok(dependants) => StorageError::HasDependants { what, dependants },
                Err(bad) => bad,
            }
        }
        READ_ONLY => StorageError::ReadOnly(what),
        INVALID_NAME => StorageError::InvalidName {
            what: intern(&what),
            name: detail,
            reason: name_error_from(&String::from_utf8_lossy(&error.path)),
        },
        INVALID_PROPERTY => StorageError::InvalidProperty(what),
        MISSING_PREREQUISITE => StorageError::MissingPrerequisite { what, hint: detail },
        UNSUPPORTED => StorageError::Unsupported { message: what },
        IO => StorageError::Io {
            op: intern(&what),
            path: path_from(&error.path),
            source: match error.errno {
                0 => std::io::Error::other(detail),
                errno => std::io::Error::from_raw_os_error(errno),
            },
        },
        COMMAND => StorageError::Command {
            command: what,
            stderr: detail,
        },
        CORRUPT => StorageError::Corrupt(what),
        PANICKED => StorageError::Unsupported {
            message: format!("plugin '{plugin}' panicked in {call}: {what}"),
        },
        _ => StorageError::Unsupported {
            message: format!("plugin '{plugin}' failed in {call}: {what}"),
        },
    }
}

fn name_error_code(reason: NameError) -> String {
    match reason {
        NameError::Empty => "empty".into(),
        NameError::TooLong => "too-long".into(),
        NameError::BadFirst => "bad-first".into(),
        NameError::BadChar(c) => format!("bad-char:{c}"),
    }
}

fn name_error_from(code: &str) -> NameError {
    match code {
        "empty" => NameError::Empty,
        "too-long" => NameError::TooLong,
        other => other
            .strip_prefix("bad-char:")
            .and_then(|c| c.chars().next())
            .map_or(NameError::BadFirst, NameError::BadChar),
    }
}

/// The core's errors hold `&'static str` for an operation or a kind of name: the few distinct
/// texts a plugin sends are kept for the life of the process.
fn intern(text: &str) -> &'static str {
    static SEEN: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(known) = seen.get(text) {
        return known;
    }
    let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
    seen.insert(leaked);
    leaked
}

/// A compression by the name both sides print it as.
pub fn compression_from(name: &str) -> Result<Compression, ErrorFfi> {
    [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Xz,
        Compression::None,
    ]
    .into_iter()
    .find(|c| c.to_string() == name)
    .ok_or_else(|| ErrorFfi::new(error_kind::FAILED, format!("unknown compression '{name}'")))
}

pub fn pack_request_ffi(request: &PackRequest) -> PackRequestFfi {
    PackRequestFfi {
        layers: request
            .layers
            .iter()
            .map(|layer| LayerFfi {
                name: layer.name.as_str().into(),
                path: path_ffi(&layer.path),
                site: layer.site,
            })
            .collect(),
        exclude: request.exclude.iter().map(|p| path_ffi(p)).collect(),
        rdinit: request.rdinit.as_str().into(),
        keep_site_owners: request.keep_site_owners,
        compression: request.compression.to_string().into(),
        level: request.level.into(),
        source_date_epoch: request.source_date_epoch.into(),
        threads: request.threads as u64,
        output: path_ffi(&request.output),
        extra: RVec::new(),
    }
}

/// The request a plugin's packer gets: what crossed the boundary, with the host's cancel flag
/// and the plugin side's progress (none: a plugin's pack shows no bar).
pub fn pack_request_from<'a>(
    request: &PackRequestFfi,
    progress: &'a dyn Progress,
    cancel: &'a AtomicBool,
) -> Result<PackRequest<'a>, ErrorFfi> {
    Ok(PackRequest {
        layers: request
            .layers
            .iter()
            .map(|layer| Layer {
                name: layer.name.clone().into(),
                path: path_from(&layer.path),
                site: layer.site,
            })
            .collect(),
        exclude: request.exclude.iter().map(path_from).collect(),
        rdinit: request.rdinit.clone().into(),
        keep_site_owners: request.keep_site_owners,
        compression: compression_from(&request.compression)?,
        level: request.level.into_option(),
        source_date_epoch: request.source_date_epoch.into_option(),
        threads: request.threads.max(1) as usize,
        output: path_from(&request.output),
        progress,
        cancel,
    })
}

pub fn pack_report_ffi(report: PackReport) -> PackReportFfi {
    PackReportFfi {
        archive: path_ffi(&report.archive),
        manifest: report.manifest.as_deref().map(path_ffi).into(),
        sha256: report.sha256.into(),
        compression: report.compression.to_string().into(),
        entries: report.entries,
        cpio_bytes: report.cpio_bytes,
        archive_bytes: report.archive_bytes,
        dropped_xattrs: report.dropped_xattrs,
        extra: RVec::new(),
    }
}

pub fn pack_report_from(report: PackReportFfi) -> Result<PackReport, ErrorFfi> {
    Ok(PackReport {
        archive: path_from(&report.archive),
        manifest: report.manifest.as_ref().map(path_from).into_option(),
        sha256: report.sha256.into(),
        compression: compression_from(&report.compression)?,
        entries: report.entries,
        cpio_bytes: report.cpio_bytes,
        archive_bytes: report.archive_bytes,
        dropped_xattrs: report.dropped_xattrs,
    })
}

pub fn packer_capabilities_ffi(capabilities: PackerCapabilities) -> PackerCapabilitiesFfi {
    let mut bits = 0;
    if capabilities.reproducible {
        bits |= packer_caps::REPRODUCIBLE;
    }
    if capabilities.manifest {
        bits |= packer_caps::MANIFEST;
    }
    PackerCapabilitiesFfi {
        compressions: capabilities
            .compressions
            .iter()
            .map(|c| c.to_string().into())
            .collect(),
        bits,
    }
}

/// A compression this host does not know is left out: the host would not ask for it.
pub fn packer_capabilities_from(capabilities: PackerCapabilitiesFfi) -> PackerCapabilities {
    PackerCapabilities {
        compressions: capabilities
            .compressions
            .iter()
            .filter_map(|name| compression_from(name).ok())
            .collect(),
        reproducible: capabilities.bits & packer_caps::REPRODUCIBLE != 0,
        manifest: capabilities.bits & packer_caps::MANIFEST != 0,
    }
}

/// The kind codes of the core's storage errors, which both new interfaces pass on as they are.
fn is_storage_kind(kind: u32) -> bool {
    (error_kind::NOT_FOUND..=error_kind::CORRUPT).contains(&kind)
}

/// An error with its causes on one line, as the host shows it.
pub fn chain_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

pub fn pack_error_ffi(error: PackError) -> ErrorFfi {
    match error {
        PackError::Storage(e) => error_ffi(e),
        PackError::Interrupted => ErrorFfi::new(error_kind::INTERRUPTED, "interrupted"),
        other => ErrorFfi::new(error_kind::FAILED, chain_text(&other)),
    }
}

pub fn pack_error_from(error: ErrorFfi, plugin: &str, call: &str) -> PackError {
    match error.kind {
        kind if is_storage_kind(kind) => PackError::Storage(error_from(error, plugin, call)),
        error_kind::INTERRUPTED => PackError::Interrupted,
        error_kind::PANICKED => PackError::Failed(format!(
            "plugin '{plugin}' panicked in {call}: {}",
            error.what
        )),
        _ => PackError::Failed(format!("plugin '{plugin}': {}", error.what)),
    }
}

pub fn kernel_job_ffi(job: &KernelJob) -> KernelJobFfi {
    KernelJobFfi {
        system: job.system.into(),
        root: job.root.into(),
        root_path: path_ffi(job.root_path),
        source: path_ffi(job.source),
        build_dir: path_ffi(job.build_dir),
        fragments: job.fragments.iter().map(|p| path_ffi(p)).collect(),
        initramfs: path_ffi(job.initramfs),
        compression: job.compression.to_string().into(),
        cmdline: job.cmdline.map(RString::from).into(),
        arch: job.arch.into(),
        jobs: job.jobs,
        out_dir: path_ffi(job.out_dir),
        inputs: job
            .inputs
            .iter()
            .map(|(k, v)| Tuple2(k.as_str().into(), v.as_str().into()))
            .collect(),
        extra: RVec::new(),
    }
}

/// The owned parts of a job, for the plugin's side to lend out as a `KernelJob`.
pub struct KernelJobParts {
    pub system: String,
    pub root: String,
    pub root_path: PathBuf,
    pub source: PathBuf,
    pub build_dir: PathBuf,
    pub fragments: Vec<PathBuf>,
    pub initramfs: PathBuf,
    pub compression: Compression,
    pub cmdline: Option<String>,
    pub arch: String,
    pub jobs: u32,
    pub out_dir: PathBuf,
    pub inputs: Vec<(String, String)>,
}

impl KernelJobParts {
    pub fn job(&self) -> KernelJob<'_> {
        KernelJob {
            system: &self.system,
            root: &self.root,
            root_path: &self.root_path,
            source: &self.source,
            build_dir: &self.build_dir,
            fragments: &self.fragments,
            initramfs: &self.initramfs,
            compression: self.compression,
            cmdline: self.cmdline.as_deref(),
            arch: &self.arch,
            jobs: self.jobs,
            out_dir: &self.out_dir,
            inputs: &self.inputs,
        }
    }
}

pub fn kernel_job_from(job: &KernelJobFfi) -> Result<KernelJobParts, ErrorFfi> {
    Ok(KernelJobParts {
        system: job.system.clone().into(),
        root: job.root.clone().into(),
        root_path: path_from(&job.root_path),
        source: path_from(&job.source),
        build_dir: path_from(&job.build_dir),
        fragments: job.fragments.iter().map(path_from).collect(),
        initramfs: path_from(&job.initramfs),
        compression: compression_from(&job.compression)?,
        cmdline: job.cmdline.as_ref().map(|c| c.to_string()).into_option(),
        arch: job.arch.clone().into(),
        jobs: job.jobs,
        out_dir: path_from(&job.out_dir),
        inputs: job
            .inputs
            .iter()
            .map(|Tuple2(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    })
}

pub fn kernel_report_ffi(report: KernelReport) -> KernelReportFfi {
    KernelReportFfi {
        image: path_ffi(&report.image),
        config: path_ffi(&report.config),
        system_map: path_ffi(&report.system_map),
        manifest: path_ffi(&report.manifest),
        sha256: report.sha256.into(),
        config_changes: report
            .config_changes
            .into_iter()
            .map(RString::from)
            .collect(),
        extra: RVec::new(),
    }
}

pub fn kernel_report_from(report: KernelReportFfi) -> KernelReport {
    KernelReport {
        image: path_from(&report.image),
        config: path_from(&report.config),
        system_map: path_from(&report.system_map),
        manifest: path_from(&report.manifest),
        sha256: report.sha256.into(),
        config_changes: report
            .config_changes
            .into_iter()
            .map(RString::into_string)
            .collect(),
    }
}

pub fn kernel_capabilities_ffi(capabilities: KernelBuilderCapabilities) -> u64 {
    let mut bits = 0;
    if capabilities.uses_root {
        bits |= kernel_caps::USES_ROOT;
    }
    if capabilities.links_initramfs {
        bits |= kernel_caps::LINKS_INITRAMFS;
    }
    bits
}

pub fn kernel_capabilities_from(bits: u64) -> KernelBuilderCapabilities {
    KernelBuilderCapabilities {
        uses_root: bits & kernel_caps::USES_ROOT != 0,
        links_initramfs: bits & kernel_caps::LINKS_INITRAMFS != 0,
    }
}

pub fn kernel_error_ffi(error: KernelError) -> ErrorFfi {
    match error {
        KernelError::Storage(e) => error_ffi(e),
        other => ErrorFfi::new(error_kind::FAILED, chain_text(&other)),
    }
}

pub fn kernel_error_from(error: ErrorFfi, plugin: &str, call: &str) -> KernelError {
    match error.kind {
        kind if is_storage_kind(kind) => KernelError::Storage(error_from(error, plugin, call)),
        error_kind::PANICKED => KernelError::Failed(format!(
            "plugin '{plugin}' panicked in {call}: {}",
            error.what
        )),
        _ => KernelError::Failed(format!("plugin '{plugin}': {}", error.what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(error: StorageError) -> StorageError {
        error_from(error_ffi(error), "test", "a call")
    }

    #[test]
    fn storage_errors_survive_the_boundary() {
        let root = VolumeId::new(VolumeKind::Root, "web").unwrap();
        let cases = [
            StorageError::NotFound("root 'x'".into()),
            StorageError::AlreadyExists("root 'x'".into()),
            StorageError::HasDependants {
                what: "stage 's'".into(),
                dependants: vec![root],
            },
            StorageError::ReadOnly("stage 's'".into()),
            StorageError::InvalidName {
                what: "root",
                name: "a/b".into(),
                reason: NameError::BadChar('/'),
            },
            StorageError::MissingPrerequisite {
                what: "overlayfs".into(),
                hint: "modprobe overlay".into(),
            },
            StorageError::Io {
                op: "create",
                path: PathBuf::from("/x/y"),
                source: std::io::Error::from_raw_os_error(17),
            },
            StorageError::Command {
                command: "zfs list".into(),
                stderr: "no pool".into(),
            },
        ];
        for error in cases {
            let shown = error.to_string();
            let kind = std::mem::discriminant(&error);
            let back = round_trip(error);
            assert_eq!(back.to_string(), shown);
            assert_eq!(std::mem::discriminant(&back), kind, "{shown}");
        }
    }

    #[test]
    fn a_panic_names_the_plugin_and_the_call() {
        let error = ErrorFfi::new(error_kind::PANICKED, "boom at src/lib.rs:3:5");
        assert_eq!(
            error_from(error, "overlay", "snapshot").to_string(),
            "plugin 'overlay' panicked in snapshot: boom at src/lib.rs:3:5"
        );
    }

    #[test]
    fn capabilities_survive_the_boundary() {
        let capabilities = Capabilities {
            cheap_clone: true,
            xattrs: true,
            shared_blocks: true,
            ..Capabilities::default()
        };
        assert_eq!(
            capabilities_from(capabilities_ffi(capabilities)),
            capabilities
        );
    }
}
