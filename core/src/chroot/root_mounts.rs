//! Mounting what a build root needs — proc, sys, dev, run, the shared caches and the ebuild
//! repository snapshot — and unmounting all of it again in one call.
//!
//! A root is untrusted: every mount target is resolved inside it with `openat2(RESOLVE_IN_ROOT)`
//! and the mount is attached to that resolved directory through its file descriptor (the new
//! mount API's `move_mount`), so a symlink in the root can never move a mount onto the host.
//! What is mounted is read back from `/proc/self/mountinfo`, never from a state file.

use std::ffi::OsString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{
    self, FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MountPropagationFlags,
    MoveMountFlags, OpenTreeFlags, UnmountFlags,
};
use serde::Serialize;

use crate::arch::Arch;
use crate::chroot::loop_device::{self, LoopDevice};
use crate::chroot::mountinfo;
use crate::files::bounded_read::{self, Limit};
use crate::files::in_root::{InnerPath, RootDir};
use crate::site_config::MountsSection;
use crate::storage::workdir::{binpkgs_cache, Layout, CACHES};
use crate::storage::{io_err, Storage, StorageError, VolumeId, VolumeKind};

/// What goes on one mount point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountSource {
    /// A fresh procfs.
    Proc,
    /// A host tree with everything mounted below it (`/sys`, `/dev`), as a slave: mounts come in
    /// from the host, nothing goes back out.
    RecursiveBind { source: PathBuf },
    /// A fresh tmpfs (`/run`).
    Tmpfs,
    /// A bind of a host directory: the shared caches (writable), kernel sources (read-only).
    Bind { source: PathBuf, read_only: bool },
    /// A SquashFS image on a loop device, read-only (the ebuild repository).
    SquashFs { image: PathBuf },
}

/// One mount of the plan: `source` on `target`, a path inside the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedMount {
    pub target: PathBuf,
    pub source: MountSource,
}

/// Everything `root mount` sets up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MountPlan {
    pub mounts: Vec<PlannedMount>,
    /// Copy the host's resolv.conf to `etc/resolv.conf`.
    pub resolv_conf: bool,
}

/// Where the shared pieces come from, as the caller found them in the workdir and site config.
pub struct PlanInputs<'a> {
    pub distfiles: (&'a Path, &'a Path),
    pub binpkgs: (&'a Path, &'a Path),
    /// The repository image and its target; `None` when the workdir has no image yet.
    pub repo: Option<(&'a Path, &'a Path)>,
    pub resolv_conf: bool,
}

impl MountPlan {
    /// The standard plan: proc, sys, dev, run, distfiles, binpkgs, the repository image.
    pub fn standard(inputs: &PlanInputs) -> Self {
        let mut mounts = vec![
            planned("proc", MountSource::Proc),
            planned(
                "sys",
                MountSource::RecursiveBind {
                    source: "/sys".into(),
                },
            ),
            planned(
                "dev",
                MountSource::RecursiveBind {
                    source: "/dev".into(),
                },
            ),
            planned("run", MountSource::Tmpfs),
        ];
        for (source, target) in [inputs.distfiles, inputs.binpkgs] {
            mounts.push(PlannedMount {
                target: target.to_owned(),
                source: MountSource::Bind {
                    source: source.to_owned(),
                    read_only: false,
                },
            });
        }
        if let Some((image, target)) = inputs.repo {
            mounts.push(PlannedMount {
                target: target.to_owned(),
                source: MountSource::SquashFs {
                    image: image.to_owned(),
                },
            });
        }
        Self {
            mounts,
            resolv_conf: inputs.resolv_conf,
        }
    }

    /// The same plan without proc: inside a new PID namespace, its init mounts a procfs of its own.
    pub fn without_proc(mut self) -> Self {
        self.mounts.retain(|m| m.source != MountSource::Proc);
        self
    }
}

fn planned(target: &str, source: MountSource) -> PlannedMount {
    PlannedMount {
        target: target.into(),
        source,
    }
}

/// The standard plan for a root of this workdir whose programs are of `arch`, with the
/// targets and the repository image the site config names (the newest image when it names
/// none; no repository mount when the workdir has no image yet). The binary packages are the
/// arch's own ([`binpkgs_cache`]).
pub fn plan_for(
    storage: &dyn Storage,
    layout: &Layout,
    mounts: &MountsSection,
    arch: Option<Arch>,
) -> Result<MountPlan, StorageError> {
    let distfiles = storage.path(&VolumeId::new(VolumeKind::Cache, CACHES[0])?)?;
    let binpkgs = binpkgs_cache(storage, arch)?;
    let image = match &mounts.repo_image {
        Some(name) => {
            let image = layout.repos().join(format!("{name}.sqfs"));
            if !image.is_file() {
                return Err(StorageError::NotFound(format!(
                    "repository image '{name}' ({})",
                    image.display()
                )));
            }
            Some(image)
        }
        None => newest_repo_image(&layout.repos())?,
    };
    Ok(MountPlan::standard(&PlanInputs {
        distfiles: (&distfiles, &mounts.distfiles),
        binpkgs: (&binpkgs, &mounts.binpkgs),
        repo: image.as_deref().map(|image| (image, mounts.repo.as_path())),
        resolv_conf: mounts.resolv_conf,
    }))
}

/// Where `kernel mount` puts things inside a root: the sources (read-only), the build
/// directory (`make O=`), and the directory holding the initramfs the config names.
pub const KERNEL_SOURCE_TARGET: &str = "usr/src/linux";
pub const KERNEL_BUILD_TARGET: &str = "usr/src/linux-build";
pub const INITRAMFS_TARGET: &str = "usr/src/initramfs";

/// The binds of `kernel mount`.
pub fn kernel_plan(source: &Path, build_dir: &Path, initramfs_dir: &Path) -> MountPlan {
    let bind = |source: &Path, target: &str, read_only| PlannedMount {
        target: target.into(),
        source: MountSource::Bind {
            source: source.to_owned(),
            read_only,
        },
    };
    MountPlan {
        mounts: vec![
            bind(source, KERNEL_SOURCE_TARGET, true),
            bind(build_dir, KERNEL_BUILD_TARGET, false),
            bind(initramfs_dir, INITRAMFS_TARGET, true),
        ],
        resolv_conf: false,
    }
}

/// Where the image tree of a slim image is bound inside its build root while emerge installs
/// into it (`emerge --root=/var/lib/autogentoo/image`).
pub const IMAGE_TARGET: &str = "var/lib/autogentoo/image";

/// The bind of an image tree, writable, at [`IMAGE_TARGET`].
pub fn image_plan(image_dir: &Path) -> MountPlan {
    MountPlan {
        mounts: vec![PlannedMount {
            target: IMAGE_TARGET.into(),
            source: MountSource::Bind {
                source: image_dir.to_owned(),
                read_only: false,
            },
        }],
        resolv_conf: false,
    }
}

/// The newest SquashFS image (`*.sqfs`, by modification time) in `repos`, if any.
pub fn newest_repo_image(repos: &Path) -> Result<Option<PathBuf>, StorageError> {
    let entries = match fs::read_dir(repos) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", repos)(e)),
    };
    let mut newest: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in entries {
        let entry = entry.map_err(io_err("read", repos))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "sqfs") {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .map_err(io_err("inspect", &path))?;
        if newest
            .as_ref()
            .is_none_or(|(t, p)| (modified, &path) > (*t, p))
        {
            newest = Some((modified, path));
        }
    }
    Ok(newest.map(|(_, p)| p))
}

/// What `mount_all` did with each planned mount.
#[derive(Debug, Default, Serialize)]
pub struct MountReport {
    /// Host paths mounted now.
    pub mounted: Vec<PathBuf>,
    /// Host paths that were mounted already.
    pub already: Vec<PathBuf>,
}

/// Mounts the plan into `root`, skipping mount points that are mounted already (so mounting a
/// mounted root is a no-op, and a half-mounted one is completed). If a mount fails, the ones
/// this call made are unmounted again before the error is returned.
pub fn mount_all(root: &Path, plan: &MountPlan) -> Result<MountReport, StorageError> {
    let dir = RootDir::open(root)?;
    let mut report = MountReport::default();
    let result = mount_each(&dir, plan, &mut report);
    if result.is_err() {
        for point in report.mounted.iter().rev() {
            if let Some(inner) = point.strip_prefix(root).ok().map(Path::to_owned) {
                let undone = mount_handle(&dir, root, &root.join(inner))
                    .ok()
                    .flatten()
                    .map(|(path, _fd)| {
                        mount::unmount(&path, UnmountFlags::NOFOLLOW | UnmountFlags::DETACH)
                    });
                if !matches!(undone, Some(Ok(()))) {
                    tracing::warn!("could not undo the mount on {}", point.display());
                }
            }
        }
    }
    result.map(|()| report)
}

fn mount_each(
    dir: &RootDir,
    plan: &MountPlan,
    report: &mut MountReport,
) -> Result<(), StorageError> {
    for planned in &plan.mounts {
        let target = resolve_target(dir, &planned.target)?;
        let host_path = fd_path(&target)?;
        if mountinfo::is_mount_point(&host_path)
            .map_err(io_err("read the mounts of", &host_path))?
        {
            report.already.push(host_path);
            continue;
        }
        // A symlink in the root may lead into a filesystem we mounted there (the host's /dev):
        // a mount there would sit on a host directory.
        if !dir.on_root_mount(&target)? {
            return Err(StorageError::Unsupported {
                message: format!(
                    "mount target {} leads out of the root's own filesystem (to {}); fix the symlink in the root",
                    planned.target.display(),
                    host_path.display()
                ),
            });
        }
        attach(&planned.source, &target, &host_path)?;
        report.mounted.push(host_path);
    }
    if plan.resolv_conf {
        copy_resolv_conf(dir)?;
    }
    Ok(())
}

/// Mounts a fresh procfs on the root's `proc` (inside a new PID namespace, one that shows it).
pub fn mount_proc(root: &Path) -> Result<(), StorageError> {
    let dir = RootDir::open(root)?;
    let target = resolve_target(&dir, Path::new("proc"))?;
    let host_path = fd_path(&target)?;
    attach(&MountSource::Proc, &target, &host_path)
}

/// Opens the mount point inside the root, creating missing directories inside it.
fn resolve_target(dir: &RootDir, target: &Path) -> Result<OwnedFd, StorageError> {
    let inner = InnerPath::parse(target.as_os_str().as_encoded_bytes())
        .filter(|p| !p.is_root())
        .ok_or_else(|| StorageError::Unsupported {
            message: format!(
                "mount target '{}' must be a path inside the root, without '..'",
                target.display()
            ),
        })?;
    let components: Vec<OsString> = inner.relative().iter().map(|c| c.to_owned()).collect();
    dir.dir(&components, true)
}

/// The host path the kernel gives an open directory, for mountinfo and messages.
fn fd_path(fd: &OwnedFd) -> Result<PathBuf, StorageError> {
    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
    fs::read_link(&link).map_err(io_err("resolve", link))
}

fn attach(source: &MountSource, target: &OwnedFd, host_path: &Path) -> Result<(), StorageError> {
    let fail = |op: &'static str| move |e: Errno| io_err(op, host_path)(e.into());
    let private = MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV;
    let (tree, slave) = match source {
        MountSource::Proc => (
            new_fs(
                "proc",
                &[],
                &[],
                private | MountAttrFlags::MOUNT_ATTR_NOEXEC,
            )
            .map_err(fail("mount proc on"))?,
            false,
        ),
        MountSource::Tmpfs => (
            new_fs("tmpfs", &[("mode", "755")], &[], private).map_err(fail("mount tmpfs on"))?,
            false,
        ),
        MountSource::RecursiveBind { source } => (clone_tree(source, true)?, true),
        MountSource::Bind { source, .. } => (clone_tree(source, false)?, true),
        MountSource::SquashFs { image } => {
            let device = LoopDevice::attach(image)?;
            let device_path = device.path().to_string_lossy().into_owned();
            // "ro" opens the device read-only, as the loop device is; the mount flag alone would not.
            let attrs = private | MountAttrFlags::MOUNT_ATTR_RDONLY;
            let tree = new_fs("squashfs", &[("source", &device_path)], &["ro"], attrs).map_err(|e| {
                if e == Errno::INVAL {
                    StorageError::Corrupt(format!(
                        "{} is not a SquashFS image or is damaged; make it again with `autogentoo repo pack`",
                        image.display()
                    ))
                } else {
                    io_err("mount the SquashFS image", image)(e.into())
                }
            })?;
            // The mount holds the device now; autoclear detaches it when the mount goes.
            device.release();
            (tree, false)
        }
    };
    mount::move_mount(
        &tree,
        "",
        target,
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(fail("attach a mount on"))?;
    if slave {
        // A clone of a shared host mount joins its peer group, and an unmount in the root would
        // then propagate to the host (the old scripts' lost /dev/pts). As a slave it only
        // receives. The tree's own descriptor names the new mount's root.
        let path = format!("/proc/self/fd/{}", tree.as_raw_fd());
        mount::mount_change(
            &path,
            MountPropagationFlags::DOWNSTREAM | MountPropagationFlags::REC,
        )
        .map_err(fail("make a slave mount of"))?;
    }
    if let MountSource::Bind {
        read_only: true, ..
    } = source
    {
        let path = format!("/proc/self/fd/{}", tree.as_raw_fd());
        mount::mount_remount(&path, MountFlags::BIND | MountFlags::RDONLY, "")
            .map_err(fail("make read-only the bind on"))?;
    }
    Ok(())
}

/// A new, detached filesystem of type `fstype` with string options and flags.
fn new_fs(
    fstype: &str,
    options: &[(&str, &str)],
    flags: &[&str],
    attrs: MountAttrFlags,
) -> Result<OwnedFd, Errno> {
    let fs = mount::fsopen(fstype, FsOpenFlags::FSOPEN_CLOEXEC)?;
    for (key, value) in options {
        mount::fsconfig_set_string(&fs, *key, *value)?;
    }
    for flag in flags {
        mount::fsconfig_set_flag(&fs, *flag)?;
    }
    mount::fsconfig_create(&fs)?;
    mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
}

/// A detached copy of the host tree at `source` (with its submounts when `recursive`).
fn clone_tree(source: &Path, recursive: bool) -> Result<OwnedFd, StorageError> {
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    mount::open_tree(rustix::fs::CWD, source, flags).map_err(|e| io_err("bind", source)(e.into()))
}

/// A root's resolv.conf, as we are willing to read it.
const RESOLV_CONF: Limit = Limit {
    what: "resolv.conf",
    max_bytes: 1 << 20,
};

/// Replaces `etc/resolv.conf` inside the root with a copy of the host's. The copy is written
/// under a temporary name and renamed over the old entry, so a symlink there (even one pointing
/// at a host file) is replaced, never followed.
fn copy_resolv_conf(dir: &RootDir) -> Result<(), StorageError> {
    let host = Path::new("/etc/resolv.conf");
    let contents = match fs::read(host) {
        Ok(contents) => contents,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("read", host)(e)),
    };
    let etc = dir.dir(&[OsString::from("etc")], true)?;
    let shown = dir.display_path(Path::new("etc/resolv.conf"));
    if !dir.on_root_mount(&etc)? {
        return Err(StorageError::Unsupported {
            message: format!(
                "{} leads out of the root's own filesystem; fix the symlink in the root or set mounts.resolv_conf = false",
                dir.display_path(Path::new("etc")).display()
            ),
        });
    }
    // The same contents already there: leave the file (and the root's mtimes) alone. What the
    // root has there is read as a regular file of resolv.conf's size at most, resolved inside
    // the root: a fifo, a device or a huge file is simply not the same.
    let current = bounded_read::read_in(dir, Path::new("etc/resolv.conf"), RESOLV_CONF).ok();
    if current.as_deref() == Some(contents.as_slice()) {
        return Ok(());
    }
    let temp = format!(".resolv.conf.autogentoo.{}", std::process::id());
    let file = rustix::fs::openat(
        &etc,
        temp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .map_err(|e| io_err("create", &shown)(e.into()))?;
    let mut file = fs::File::from(file);
    std::io::Write::write_all(&mut file, &contents).map_err(io_err("write", &shown))?;
    rustix::fs::fchmod(&file, Mode::from_raw_mode(0o644))
        .map_err(|e| io_err("chmod", &shown)(e.into()))?;
    rustix::fs::renameat(&etc, temp.as_str(), &etc, "resolv.conf")
        .map_err(|e| io_err("replace", &shown)(e.into()))
}

/// A process that keeps a mount busy, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
    /// `cwd`, `root`, `exe`, `fd`, or `map`.
    pub how: &'static str,
}

/// Why `umount_all` could not finish.
#[derive(Debug, thiserror::Error)]
pub enum UmountError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{} is busy{}; stop those processes or use --lazy", .point.display(), describe_holders(.holders))]
    Busy {
        point: PathBuf,
        holders: Vec<Holder>,
    },
}

fn describe_holders(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return String::new();
    }
    let list: Vec<String> = holders
        .iter()
        .map(|h| format!("PID {} ({}, {})", h.pid, h.command, h.how))
        .collect();
    format!(", held by {}", list.join(", "))
}

/// What `umount_all` did.
#[derive(Debug, Default, Serialize)]
pub struct UmountReport {
    pub unmounted: Vec<PathBuf>,
    /// Loop devices detached after their mount went (those attached without autoclear).
    pub detached: Vec<PathBuf>,
}

/// Unmounts everything below `root` (never `root` itself, which may be the volume's own mount),
/// deepest first, as `/proc/self/mountinfo` lists it. With `lazy`, busy mounts are detached
/// anyway; otherwise the first busy mount is an error naming the processes that hold it.
pub fn umount_all(root: &Path, lazy: bool) -> Result<UmountReport, UmountError> {
    let dir = RootDir::open(root)?;
    let mut report = UmountReport::default();
    let read = || mountinfo::mounts_under(root).map_err(io_err("read the mounts under", root));
    // Slaves first: unmounting a shared mount would propagate to its peers on the host.
    for mount in read()? {
        if let Some(handle) = mount_handle(&dir, root, &mount.point)? {
            let _ = mount::mount_change(&handle.0, MountPropagationFlags::DOWNSTREAM);
        }
    }
    // Mounts can appear while we work (propagation from the host into a slave): go again until
    // none is left, so one call always suffices.
    for _ in 0..8 {
        let mounts = read()?;
        if mounts.is_empty() {
            return Ok(report);
        }
        for mount in mounts {
            let Some(handle) = mount_handle(&dir, root, &mount.point)? else {
                continue;
            };
            let flags = if lazy {
                UnmountFlags::NOFOLLOW | UnmountFlags::DETACH
            } else {
                UnmountFlags::NOFOLLOW
            };
            match mount::unmount(&handle.0, flags) {
                Ok(()) => report.unmounted.push(mount.point.clone()),
                // Gone already: a lazy unmount of its parent took it along.
                Err(Errno::INVAL) | Err(Errno::NOENT) => continue,
                Err(Errno::BUSY) => {
                    let holders = holders(&mount.point);
                    return Err(UmountError::Busy {
                        point: mount.point,
                        holders,
                    });
                }
                Err(e) => return Err(io_err("unmount", &mount.point)(e.into()).into()),
            }
            if mount.fstype == "squashfs" && mount.source.starts_with("/dev/loop") {
                loop_device::detach(&mount.source)?;
                report.detached.push(mount.source);
            }
        }
    }
    let left: Vec<String> = read()?
        .iter()
        .map(|m| m.point.display().to_string())
        .collect();
    Err(StorageError::Unsupported {
        message: format!(
            "mounts keep reappearing under {}: {}",
            root.display(),
            left.join(", ")
        ),
    }
    .into())
}

/// A `/proc/self/fd/N/NAME` path naming the mount at `point`: its parent is resolved inside the
/// root, so a symlink swapped into the root cannot turn an unmount onto a host mount, and only
/// the parent is held open (a descriptor on the mount itself would keep it busy). `None` when
/// the point is no longer where mountinfo said (it went while we worked).
fn mount_handle(
    dir: &RootDir,
    root: &Path,
    point: &Path,
) -> Result<Option<(PathBuf, OwnedFd)>, StorageError> {
    let inner = point
        .strip_prefix(root)
        .expect("mounts_under lists paths below the root");
    let (Some(parent), Some(name)) = (inner.parent(), inner.file_name()) else {
        return Ok(None);
    };
    let parent_rel = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let fd = match dir.open_at(parent_rel, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(e) => return Err(io_err("open", point)(e.into())),
    };
    if Some(fd_path(&fd)?.as_path()) != point.parent() {
        return Err(StorageError::Unsupported {
            message: format!(
                "{} no longer leads to its mount inside the root (a symlink on the way?); unmount it by hand",
                point.display()
            ),
        });
    }
    Ok(Some((
        PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())).join(name),
        fd,
    )))
}

/// Processes whose working directory, root, executable, open files or mapped files are at or
/// below `point`.
pub fn holders(point: &Path) -> Vec<Holder> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let proc = entry.path();
        let command = fs::read_to_string(proc.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let inside =
            |link: PathBuf| fs::read_link(link).is_ok_and(|target| target.starts_with(point));
        let how = if inside(proc.join("cwd")) {
            Some("cwd")
        } else if inside(proc.join("root")) {
            Some("root")
        } else if inside(proc.join("exe")) {
            Some("exe")
        } else if fs::read_dir(proc.join("fd"))
            .is_ok_and(|fds| fds.flatten().any(|fd| inside(fd.path())))
        {
            Some("fd")
        } else if fs::read_to_string(proc.join("maps")).is_ok_and(|maps| {
            maps.lines()
                .filter_map(|line| line.split_whitespace().nth(5))
                .any(|path| Path::new(path).starts_with(point))
        }) {
            Some("map")
        } else {
            None
        };
        if let Some(how) = how {
            found.push(Holder { pid, command, how });
        }
    }
    found
}
