//! The `zfs` storage backend: the workdir is a dataset (`tank/autogentoo`, mounted at the
//! workdir), volumes are its child datasets by kind (`tank/autogentoo/roots/web`), snapshots are
//! ZFS snapshots, and a root is a `zfs clone` of its stage's `@imported` snapshot — constant
//! time whatever the stage's size. Metadata lives in user properties (`org.autogentoo:*`).
//!
//! It drives the `zfs` command with `-H` output rather than libzfs: the bindings need libzfs
//! headers to build at all, and the command is the interface both implementations keep stable.
//! It works with OpenZFS 2.x and with zfs-fuse 0.7 (pool version 23). What differs, and how we
//! cope:
//! - zfs-fuse's `zfs list` has no `-p`; `zfs get -Hp` works in both, so all reading goes
//!   through `zfs get`.
//! - zfs-fuse stores no xattrs; the capability probe finds out and stage import refuses a stage
//!   that has them before writing anything.
//! - zfs-fuse refuses to rename a mounted dataset ("dataset is busy"), and its unmount takes a
//!   moment: a pending volume is unmounted, renamed with retries, then mounted.
//! - zfs-fuse has no lz4 compression; we set no compression property at all and inherit the
//!   pool's.
//! - Both print "-" for an unset property; zfs-fuse can list a dataset as mounted that the
//!   kernel does not show, so mounts are checked in `/proc/self/mountinfo`.

mod command;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use autogentoo_core::chroot::mountinfo;
use autogentoo_core::registry::StorageSettings;
use autogentoo_core::storage::{
    check_property, check_seal, io_err, Capabilities, PendingVolume, Snapshot, SnapshotId, Storage,
    StorageError, Usage, Volume, VolumeId, VolumeKind,
};

use command::{run, run_patiently, CallError, Failure};

/// The name this backend registers under.
pub const NAME: &str = "zfs";

/// Our user properties: `org.autogentoo:KEY`.
const PROPERTY_PREFIX: &str = "org.autogentoo:";
/// On a sealed volume: the name of its seal snapshot.
const SEALED: &str = "org.autogentoo:sealed";
/// Where pending volumes are filled before they are renamed into view.
const PENDING: &str = "pending";

/// The `zfs` backend over one workdir dataset.
pub struct ZfsStorage {
    dataset: String,
    workdir: PathBuf,
    capabilities: Capabilities,
    /// The dataset is not there yet; [`Storage::init`] creates it, mounted at the workdir, and
    /// until then every other operation says so.
    missing: AtomicBool,
}

/// Opens the `zfs` backend; the registry's factory.
pub fn open(settings: &StorageSettings) -> Result<Box<dyn Storage>, StorageError> {
    Ok(Box::new(ZfsStorage::open(
        &settings.workdir,
        settings.dataset.as_deref(),
    )?))
}

/// A dataset's properties, as `zfs get -Hp` lists them (local ones only for user properties).
type Properties = BTreeMap<String, String>;

fn zfs(args: &[&str]) -> Result<String, StorageError> {
    run("zfs", args).map_err(CallError::into_storage)
}

impl ZfsStorage {
    /// Opens the dataset mounted at `workdir` (or `dataset`, which must be mounted there).
    pub fn open(workdir: &Path, dataset: Option<&str>) -> Result<Self, StorageError> {
        if !command::available("zfs") {
            return Err(StorageError::MissingPrerequisite {
                what: "the zfs command".into(),
                hint: "install zfsutils-linux (OpenZFS) or zfs-fuse".into(),
            });
        }
        let listing = run(
            "zfs",
            &["get", "-H", "-p", "-o", "name,value", "mountpoint"],
        )
        .map_err(|e| StorageError::MissingPrerequisite {
            what: "a running ZFS".into(),
            hint: format!(
                "`{}` said: {}; start the zfs-fuse daemon or load the zfs module",
                e.command, e.stderr
            ),
        })?;
        let mounted: Vec<(String, PathBuf)> = listing
            .lines()
            .filter_map(|line| line.split_once('\t'))
            .filter(|(name, _)| !name.contains('@'))
            .map(|(name, point)| (name.to_owned(), PathBuf::from(point)))
            .collect();
        let mut create_on_init = false;
        let dataset = match dataset {
            Some(name) if !mounted.iter().any(|(n, _)| n == name) => {
                // `workdir init` makes it, as a child of an existing dataset or pool.
                let parent = name.rsplit_once('/').map(|(parent, _)| parent);
                if !parent.is_some_and(|parent| mounted.iter().any(|(n, _)| n == parent)) {
                    return Err(StorageError::NotFound(format!(
                        "ZFS dataset '{name}' (storage.zfs_dataset), and its parent, which `workdir init` would create it in,"
                    )));
                }
                create_on_init = true;
                name.to_owned()
            }
            Some(name) => {
                let (_, point) = mounted
                    .iter()
                    .find(|(n, _)| n == name)
                    .expect("listed, as the arm above checked");
                if point != workdir {
                    return Err(StorageError::Unsupported {
                        message: format!(
                            "ZFS dataset '{name}' is mounted at {}, not at the workdir {}; pass --workdir {}",
                            point.display(),
                            workdir.display(),
                            point.display()
                        ),
                    });
                }
                name.to_owned()
            }
            None => mounted
                .iter()
                .find(|(_, point)| point == workdir)
                .map(|(name, _)| name.clone())
                .ok_or_else(|| StorageError::MissingPrerequisite {
                    what: format!("a ZFS dataset mounted at {}", workdir.display()),
                    hint: format!(
                        "create one (`zfs create -o mountpoint={} POOL/autogentoo`) or set storage.zfs_dataset",
                        workdir.display()
                    ),
                })?,
        };
        let mut storage = Self {
            dataset,
            workdir: workdir.to_owned(),
            capabilities: Capabilities {
                cheap_clone: true,
                cheap_snapshot: true,
                enforced_read_only: true,
                xattrs: false,
                special_files: true,
                shared_blocks: true,
            },
            missing: AtomicBool::new(create_on_init),
        };
        // Until the dataset exists there is nothing to probe; without xattrs is the safe guess.
        if !create_on_init {
            storage.capabilities.xattrs = storage.probe_xattrs()?;
        }
        Ok(storage)
    }

    /// Whether files on the dataset keep extended attributes (OpenZFS does, zfs-fuse does not).
    fn probe_xattrs(&self) -> Result<bool, StorageError> {
        let probe = self
            .workdir
            .join(format!(".autogentoo-probe.{}", std::process::id()));
        let file = std::fs::File::create(&probe).map_err(io_err("create", &probe))?;
        let ok = rustix::fs::fsetxattr(
            &file,
            "user.autogentoo.probe",
            b"1",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        drop(file);
        std::fs::remove_file(&probe).map_err(io_err("remove", &probe))?;
        Ok(ok)
    }

    /// Refuses to work on a dataset that `workdir init` has yet to create.
    fn ready(&self) -> Result<(), StorageError> {
        if self.missing.load(Ordering::Relaxed) {
            return Err(StorageError::MissingPrerequisite {
                what: format!("the ZFS dataset {} (storage.zfs_dataset)", self.dataset),
                hint: "run `autogentoo workdir init`, which creates it".into(),
            });
        }
        Ok(())
    }

    fn kind_dataset(&self, kind: VolumeKind) -> String {
        format!("{}/{}", self.dataset, kind.plural())
    }

    fn dataset_of(&self, id: &VolumeId) -> String {
        format!("{}/{}", self.kind_dataset(id.kind()), id.name())
    }

    fn snapshot_of(&self, id: &SnapshotId) -> String {
        format!("{}@{}", self.dataset_of(id.volume()), id.name())
    }

    /// The properties of `root` and, with `recursive`, everything below it (snapshots too).
    fn properties(
        &self,
        root: &str,
        recursive: bool,
    ) -> Result<BTreeMap<String, Properties>, StorageError> {
        let mut args = vec!["get", "-H", "-p", "-o", "name,property,value,source"];
        if recursive {
            args.push("-r");
        }
        args.extend(["all", root]);
        let text = match run("zfs", &args) {
            Ok(text) => text,
            Err(e) if e.failure == Failure::Missing => return Ok(BTreeMap::new()),
            Err(e) => return Err(e.into_storage()),
        };
        let mut out: BTreeMap<String, Properties> = BTreeMap::new();
        for line in text.lines() {
            let mut fields = line.splitn(4, '\t');
            let (Some(name), Some(property), Some(value), source) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            // A user property set on a parent shows up as inherited on every child: only the
            // dataset's own count.
            if property.contains(':') && source.is_some_and(|s| !s.starts_with("local")) {
                continue;
            }
            out.entry(name.to_owned())
                .or_default()
                .insert(property.to_owned(), value.to_owned());
        }
        Ok(out)
    }

    /// The snapshot a clone came from, from its `origin` property.
    fn origin(&self, origin: &str) -> Option<SnapshotId> {
        let (dataset, snapshot) = origin.split_once('@')?;
        let rest = dataset.strip_prefix(&self.dataset)?.strip_prefix('/')?;
        let (plural, name) = rest.split_once('/')?;
        let kind = VolumeKind::ALL.into_iter().find(|k| k.plural() == plural)?;
        SnapshotId::new(VolumeId::new(kind, name).ok()?, snapshot).ok()
    }

    fn volume(&self, id: &VolumeId, props: &Properties) -> Volume {
        let user = props
            .iter()
            .filter(|(k, _)| k.as_str() != SEALED)
            .filter_map(|(k, v)| Some((k.strip_prefix(PROPERTY_PREFIX)?.to_owned(), v.clone())))
            .collect();
        Volume {
            id: id.clone(),
            path: props
                .get("mountpoint")
                .map(PathBuf::from)
                .unwrap_or_else(|| self.workdir.join(id.kind().plural()).join(id.name())),
            origin: props.get("origin").and_then(|o| self.origin(o)),
            sealed: props.contains_key(SEALED),
            created: props
                .get("creation")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            properties: user,
        }
    }

    /// A volume's own properties and its snapshots' (name → properties), or `NotFound`.
    fn describe(
        &self,
        id: &VolumeId,
    ) -> Result<(Properties, Vec<(String, Properties)>), StorageError> {
        let dataset = self.dataset_of(id);
        let mut all = self.properties(&dataset, true)?;
        let own = all
            .remove(&dataset)
            .ok_or_else(|| StorageError::NotFound(id.to_string()))?;
        let prefix = format!("{dataset}@");
        let mut snapshots: Vec<(String, Properties)> = all
            .into_iter()
            .filter_map(|(name, props)| Some((name.strip_prefix(&prefix)?.to_owned(), props)))
            .collect();
        // Creation times have one-second steps; the transaction group orders within a second.
        snapshots.sort_by_key(|(_, props)| {
            props
                .get("createtxg")
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0)
        });
        Ok((own, snapshots))
    }

    /// Destroys a dataset (and its snapshots), unmounting it first: zfs-fuse is slow to let go.
    fn destroy_dataset(&self, dataset: &str, path: &Path) -> Result<(), StorageError> {
        let mounts =
            mountinfo::mounts_under(path).map_err(io_err("read the mounts under", path))?;
        if !mounts.is_empty() {
            return Err(StorageError::Unsupported {
                message: format!("{} has mounts below it; unmount them first", path.display()),
            });
        }
        let _ = run("zfs", &["umount", dataset]);
        run_patiently("zfs", &["destroy", "-r", dataset]).map_err(CallError::into_storage)?;
        Ok(())
    }

    fn pending_name(&self, id: &VolumeId) -> String {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}/{PENDING}/{}.{}.{}.{n}",
            self.dataset,
            id.kind(),
            id.name(),
            std::process::id()
        )
    }

    fn mountpoint(&self, dataset: &str) -> Result<PathBuf, StorageError> {
        let out = zfs(&["get", "-H", "-o", "value", "mountpoint", dataset])?;
        Ok(PathBuf::from(out.trim()))
    }
}

impl Storage for ZfsStorage {
    fn backend_name(&self) -> &str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn init(&self) -> Result<(), StorageError> {
        if self.missing.load(Ordering::Relaxed) {
            let mountpoint = format!("mountpoint={}", self.workdir.display());
            match run("zfs", &["create", "-o", &mountpoint, &self.dataset]) {
                Ok(_) => {}
                Err(e) if e.failure == Failure::Exists => {}
                Err(e) => return Err(e.into_storage()),
            }
            self.missing.store(false, Ordering::Relaxed);
        }
        for child in VolumeKind::ALL.iter().map(|k| k.plural()).chain([PENDING]) {
            let dataset = format!("{}/{child}", self.dataset);
            match run("zfs", &["create", "-p", &dataset]) {
                Ok(_) => {}
                Err(e) if e.failure == Failure::Exists => {}
                Err(e) => return Err(e.into_storage()),
            }
        }
        Ok(())
    }

    fn usage(&self) -> Result<Usage, StorageError> {
        self.ready()?;
        let out = zfs(&[
            "get",
            "-H",
            "-p",
            "-o",
            "value",
            "used,available",
            &self.dataset,
        ])?;
        let mut values = out.lines().map(|v| v.trim().parse::<u64>().unwrap_or(0));
        let used = values.next().unwrap_or(0);
        let available = values.next().unwrap_or(0);
        Ok(Usage {
            total_bytes: used + available,
            used_bytes: used,
            available_bytes: available,
        })
    }

    fn create(&self, id: &VolumeId) -> Result<Volume, StorageError> {
        self.ready()?;
        match run("zfs", &["create", &self.dataset_of(id)]) {
            Ok(_) => self.get(id),
            Err(e) if e.failure == Failure::Exists => {
                Err(StorageError::AlreadyExists(id.to_string()))
            }
            Err(e) if e.failure == Failure::Missing => Err(StorageError::MissingPrerequisite {
                what: format!("an initialised workdir in dataset {}", self.dataset),
                hint: "run `autogentoo workdir init` first".into(),
            }),
            Err(e) => Err(e.into_storage()),
        }
    }

    fn create_pending(&self, id: &VolumeId) -> Result<PendingVolume, StorageError> {
        self.ready()?;
        if self.get(id).is_ok() {
            return Err(StorageError::AlreadyExists(id.to_string()));
        }
        let dataset = self.pending_name(id);
        zfs(&["create", &dataset])?;
        Ok(PendingVolume {
            id: id.clone(),
            path: self.mountpoint(&dataset)?,
            token: dataset,
        })
    }

    fn commit(&self, pending: PendingVolume) -> Result<Volume, StorageError> {
        self.ready()?;
        let target = self.dataset_of(&pending.id);
        if self.get(&pending.id).is_ok() {
            let id = pending.id.clone();
            self.discard(pending)?;
            return Err(StorageError::AlreadyExists(id.to_string()));
        }
        // zfs-fuse renames only unmounted datasets.
        let _ = run("zfs", &["umount", &pending.token]);
        match run_patiently("zfs", &["rename", &pending.token, &target]) {
            Ok(_) => {}
            Err(e) if e.failure == Failure::Exists => {
                let id = pending.id.clone();
                self.discard(pending)?;
                return Err(StorageError::AlreadyExists(id.to_string()));
            }
            Err(e) => return Err(e.into_storage()),
        }
        match run_patiently("zfs", &["mount", &target]) {
            Ok(_) => {}
            // OpenZFS mounted it on rename already.
            Err(e) if e.stderr.contains("already mounted") => {}
            Err(e) => return Err(e.into_storage()),
        }
        self.get(&pending.id)
    }

    fn commit_sealed(
        &self,
        pending: PendingVolume,
        snapshot: &str,
        properties: &[(String, String)],
    ) -> Result<Volume, StorageError> {
        check_seal(&pending.id, snapshot, properties)?;
        // Sealed while pending: the rename carries the snapshot and the properties along, so
        // the volume is never listed unsealed.
        let dataset = pending.token.clone();
        let mut settings: Vec<String> = properties
            .iter()
            .map(|(key, value)| format!("{PROPERTY_PREFIX}{key}={value}"))
            .collect();
        settings.push(format!("{SEALED}={snapshot}"));
        let seal = || -> Result<(), StorageError> {
            for setting in &settings {
                zfs(&["set", setting, &dataset])?;
            }
            zfs(&["snapshot", &format!("{dataset}@{snapshot}")])?;
            zfs(&["set", "readonly=on", &dataset])?;
            Ok(())
        };
        if let Err(e) = seal() {
            let _ = self.discard(pending);
            return Err(e);
        }
        self.commit(pending)
    }

    fn discard(&self, pending: PendingVolume) -> Result<(), StorageError> {
        match self.destroy_dataset(&pending.token, &pending.path) {
            Err(StorageError::Command { stderr, .. }) if stderr.contains("does not exist") => {
                Ok(())
            }
            other => other,
        }
    }

    fn sweep_abandoned(&self) -> Result<usize, StorageError> {
        self.ready()?;
        let parent = format!("{}/{PENDING}", self.dataset);
        let listing = match run(
            "zfs",
            &["get", "-H", "-r", "-o", "name,value", "mountpoint", &parent],
        ) {
            Ok(listing) => listing,
            Err(e) if e.failure == Failure::Missing => return Ok(0),
            Err(e) => return Err(e.into_storage()),
        };
        let mut removed = 0;
        for (name, point) in listing.lines().filter_map(|l| l.split_once('\t')) {
            let Some(child) = name.strip_prefix(&parent).and_then(|r| r.strip_prefix('/')) else {
                continue;
            };
            if child.contains('/') || child.contains('@') {
                continue;
            }
            // KIND.NAME.PID.N: the owner is the second field from the end.
            let pid = child.rsplit('.').nth(1).and_then(|p| p.parse::<u32>().ok());
            if !pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists()) {
                self.destroy_dataset(name, Path::new(point))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn snapshot(&self, id: &SnapshotId) -> Result<Snapshot, StorageError> {
        self.ready()?;
        self.describe(id.volume())?;
        match run("zfs", &["snapshot", &self.snapshot_of(id)]) {
            Ok(_) => {}
            Err(e) if e.failure == Failure::Exists => {
                return Err(StorageError::AlreadyExists(id.to_string()))
            }
            Err(e) => return Err(e.into_storage()),
        }
        let (_, snapshots) = self.describe(id.volume())?;
        let created = snapshots
            .iter()
            .find(|(name, _)| name == id.name())
            .and_then(|(_, props)| props.get("creation")?.parse().ok())
            .unwrap_or(0);
        Ok(Snapshot {
            id: id.clone(),
            created,
        })
    }

    fn seal(&self, id: &VolumeId, snapshot: &str) -> Result<Snapshot, StorageError> {
        self.ready()?;
        let snap_id = SnapshotId::new(id.clone(), snapshot)?;
        let (own, _) = self.describe(id)?;
        if own.contains_key(SEALED) {
            return Err(StorageError::AlreadyExists(snap_id.to_string()));
        }
        let taken = self.snapshot(&snap_id)?;
        let dataset = self.dataset_of(id);
        zfs(&["set", "readonly=on", &dataset])?;
        zfs(&["set", &format!("{SEALED}={snapshot}"), &dataset])?;
        Ok(taken)
    }

    fn snapshots(&self, id: &VolumeId) -> Result<Vec<Snapshot>, StorageError> {
        self.ready()?;
        let (_, snapshots) = self.describe(id)?;
        snapshots
            .into_iter()
            .map(|(name, props)| {
                Ok(Snapshot {
                    id: SnapshotId::new(id.clone(), &name)?,
                    created: props
                        .get("creation")
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(0),
                })
            })
            .collect()
    }

    fn clone_snapshot(&self, from: &SnapshotId, id: &VolumeId) -> Result<Volume, StorageError> {
        self.ready()?;
        let (_, snapshots) = self.describe(from.volume())?;
        if !snapshots.iter().any(|(name, _)| name == from.name()) {
            return Err(StorageError::NotFound(from.to_string()));
        }
        match run(
            "zfs",
            &["clone", &self.snapshot_of(from), &self.dataset_of(id)],
        ) {
            Ok(_) => self.get(id),
            Err(e) if e.failure == Failure::Exists => {
                Err(StorageError::AlreadyExists(id.to_string()))
            }
            Err(e) if e.failure == Failure::Missing => {
                Err(StorageError::NotFound(from.to_string()))
            }
            Err(e) => Err(e.into_storage()),
        }
    }

    fn rollback(&self, to: &SnapshotId) -> Result<(), StorageError> {
        self.ready()?;
        let volume = to.volume();
        let (own, snapshots) = self.describe(volume)?;
        if own.contains_key(SEALED) {
            return Err(StorageError::ReadOnly(volume.to_string()));
        }
        let position = snapshots
            .iter()
            .position(|(name, _)| name == to.name())
            .ok_or_else(|| StorageError::NotFound(to.to_string()))?;
        let mut blocking = Vec::new();
        for (name, _) in &snapshots[position + 1..] {
            blocking.extend((self as &dyn Storage).clones_of(volume, Some(name))?);
        }
        if !blocking.is_empty() {
            return Err(StorageError::HasDependants {
                what: format!("a snapshot of {volume} newer than '{}'", to.name()),
                dependants: blocking,
            });
        }
        run_patiently("zfs", &["rollback", "-r", &self.snapshot_of(to)])
            .map_err(CallError::into_storage)?;
        Ok(())
    }

    fn destroy(&self, id: &VolumeId) -> Result<(), StorageError> {
        self.ready()?;
        let volume = self.get(id)?;
        let dependants = (self as &dyn Storage).clones_of(id, None)?;
        if !dependants.is_empty() {
            return Err(StorageError::HasDependants {
                what: id.to_string(),
                dependants,
            });
        }
        self.destroy_dataset(&self.dataset_of(id), &volume.path)
    }

    fn destroy_snapshot(&self, id: &SnapshotId) -> Result<(), StorageError> {
        self.ready()?;
        let (own, snapshots) = self.describe(id.volume())?;
        if !snapshots.iter().any(|(name, _)| name == id.name()) {
            return Err(StorageError::NotFound(id.to_string()));
        }
        if own.get(SEALED).map(String::as_str) == Some(id.name()) {
            return Err(StorageError::ReadOnly(format!(
                "{id} (it goes only with its volume)"
            )));
        }
        let dependants = (self as &dyn Storage).clones_of(id.volume(), Some(id.name()))?;
        if !dependants.is_empty() {
            return Err(StorageError::HasDependants {
                what: id.to_string(),
                dependants,
            });
        }
        run_patiently("zfs", &["destroy", &self.snapshot_of(id)])
            .map_err(CallError::into_storage)?;
        Ok(())
    }

    fn list(&self, kind: VolumeKind) -> Result<Vec<Volume>, StorageError> {
        self.ready()?;
        let parent = self.kind_dataset(kind);
        let all = self.properties(&parent, true)?;
        let mut volumes = Vec::new();
        for (name, props) in &all {
            let Some(child) = name.strip_prefix(&parent).and_then(|r| r.strip_prefix('/')) else {
                continue;
            };
            if child.contains('/') || child.contains('@') {
                continue;
            }
            // Datasets someone else made there, with names we would not give, are not ours.
            if let Ok(id) = VolumeId::new(kind, child) {
                volumes.push(self.volume(&id, props));
            }
        }
        volumes.sort_by(|a, b| a.id.name().cmp(b.id.name()));
        Ok(volumes)
    }

    fn get(&self, id: &VolumeId) -> Result<Volume, StorageError> {
        self.ready()?;
        let (own, _) = self.describe(id)?;
        Ok(self.volume(id, &own))
    }

    fn set_property(&self, id: &VolumeId, key: &str, value: &str) -> Result<(), StorageError> {
        self.ready()?;
        check_property(key, value)?;
        self.describe(id)?;
        zfs(&[
            "set",
            &format!("{PROPERTY_PREFIX}{key}={value}"),
            &self.dataset_of(id),
        ])?;
        Ok(())
    }
}
