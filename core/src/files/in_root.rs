//! Paths inside an untrusted tree, resolved as if that tree were `/`.
//!
//! A stage tarball or a build root is data we do not trust: a symlink in it may point at `/etc`
//! on the host, and a path may climb with `..`. Every lookup here goes through `openat2` with
//! `RESOLVE_IN_ROOT`, so symlinks and `..` are resolved inside the tree the way a chroot would
//! see them, and nothing we create or write can land outside it.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, StatxFlags};
use rustix::io::Errno;

use crate::storage::{io_err, StorageError};

/// A directory treated as the root for every path resolved through it.
pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
    /// The mount the root directory is on: we create only there, never inside a filesystem
    /// mounted into the root (a bound host /dev, say).
    mount_id: u64,
}

/// A path inside a root, checked to be relative and free of `..`; `components` is never empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InnerPath {
    components: Vec<OsString>,
}

impl InnerPath {
    /// Parses a path from an archive or a config: leading `/` and `./` are dropped, `..` is
    /// refused (`None`), and the root itself is `Some` with no components.
    pub fn parse(raw: &[u8]) -> Option<Self> {
        let mut components = Vec::new();
        for component in Path::new(OsStr::from_bytes(raw)).components() {
            match component {
                Component::Normal(name) => components.push(name.to_owned()),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => return None,
            }
        }
        Some(Self { components })
    }

    /// True for the root itself.
    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// How deep the path is: 0 for the root.
    pub fn depth(&self) -> usize {
        self.components.len()
    }

    /// The parent and the last component; `None` for the root.
    pub fn split_last(&self) -> Option<(&[OsString], &OsStr)> {
        let (last, parent) = self.components.split_last()?;
        Some((parent, last.as_os_str()))
    }

    /// The path relative to the root, for messages and `openat2`.
    pub fn relative(&self) -> PathBuf {
        if self.components.is_empty() {
            PathBuf::from(".")
        } else {
            self.components.iter().collect()
        }
    }
}

impl RootDir {
    /// Opens `path` as a root. The path itself is trusted (it is ours: a volume's directory).
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let fd = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err("open", path)(e.into()))?;
        let mount_id = mount_id(&fd).map_err(|e| io_err("inspect", path)(e.into()))?;
        Ok(Self {
            fd,
            path: path.to_owned(),
            mount_id,
        })
    }

    /// Whether `fd` is on the root's own mount, not on one mounted inside it.
    pub fn on_root_mount(&self, fd: &OwnedFd) -> Result<bool, StorageError> {
        let id = mount_id(fd).map_err(|e| io_err("inspect", self.path.clone())(e.into()))?;
        Ok(id == self.mount_id)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The root's path on the host, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The host path of `inner` as the host would see it if nothing in between were a symlink:
    /// for messages only, never for opening.
    pub fn display_path(&self, inner: &Path) -> PathBuf {
        self.path.join(inner)
    }

    /// Opens `inner` (resolved inside the root) with `flags`.
    pub fn open_at(&self, inner: &Path, flags: OFlags, mode: Mode) -> Result<OwnedFd, Errno> {
        let how = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
        loop {
            match rustix::fs::openat2(&self.fd, inner, flags | OFlags::CLOEXEC, mode, how) {
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                other => return other,
            }
        }
    }

    /// Opens the directory made of `components` (resolved inside the root), creating missing
    /// directories with mode 0755 when `create` is set. A dangling symlink on the way is
    /// followed inside the root and its target created there, as a chroot would see it.
    pub fn dir(&self, components: &[OsString], create: bool) -> Result<OwnedFd, StorageError> {
        self.dir_within(components, create, 0)
    }

    fn dir_within(
        &self,
        components: &[OsString],
        create: bool,
        links: usize,
    ) -> Result<OwnedFd, StorageError> {
        let rel: PathBuf = if components.is_empty() {
            PathBuf::from(".")
        } else {
            components.iter().collect()
        };
        let fail = |op, e: Errno| io_err(op, self.display_path(&rel))(e.into());
        let flags = OFlags::DIRECTORY | OFlags::RDONLY;
        match self.open_at(&rel, flags, Mode::empty()) {
            Ok(fd) => Ok(fd),
            Err(Errno::NOENT) if create && !components.is_empty() => {
                let (last, parent) = components.split_last().expect("not empty");
                let parent_fd = self.dir_within(parent, true, links)?;
                if !self.on_root_mount(&parent_fd)? {
                    return Err(StorageError::Unsupported {
                        message: format!(
                            "{} leads into a filesystem mounted inside the root; refusing to create directories there",
                            self.display_path(&rel).display()
                        ),
                    });
                }
                match rustix::fs::mkdirat(&parent_fd, last.as_os_str(), Mode::from_raw_mode(0o755))
                {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        // Something is there but does not lead to a directory: a symlink to a
                        // missing one, made here. Anything else fails when reopened below.
                        if let Ok(target) =
                            rustix::fs::readlinkat(&parent_fd, last.as_os_str(), Vec::new())
                        {
                            if links >= MAX_LINKS {
                                return Err(fail("follow", Errno::LOOP));
                            }
                            let target = self.link_target(&parent_fd, target.as_bytes())?;
                            self.dir_within(&target, true, links + 1)?;
                        }
                    }
                    Err(e) => return Err(fail("create directory", e)),
                }
                self.open_at(&rel, flags, Mode::empty())
                    .map_err(|e| fail("open directory", e))
            }
            Err(e) => Err(fail("open directory", e)),
        }
    }

    /// Where a symlink in the directory `parent` points, as components inside the root.
    fn link_target(&self, parent: &OwnedFd, target: &[u8]) -> Result<Vec<OsString>, StorageError> {
        let mut out: Vec<OsString> = Vec::new();
        if !target.starts_with(b"/") {
            let link = format!("/proc/self/fd/{}", parent.as_raw_fd());
            let real = std::fs::read_link(&link).map_err(io_err("resolve", &link))?;
            let inside = real.strip_prefix(&self.path).unwrap_or(Path::new(""));
            out.extend(inside.iter().map(OsString::from));
        }
        for component in Path::new(OsStr::from_bytes(target)).components() {
            match component {
                Component::Normal(name) => out.push(name.to_owned()),
                Component::ParentDir => {
                    out.pop();
                }
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        Ok(out)
    }
}

/// The id of the mount an open file is on.
fn mount_id(fd: &OwnedFd) -> Result<u64, Errno> {
    let stx = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)?;
    Ok(stx.stx_mnt_id)
}

/// How many symlinks one lookup may follow, as the kernel's own limit.
const MAX_LINKS: usize = 40;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Option<PathBuf> {
        InnerPath::parse(s.as_bytes()).map(|p| p.relative())
    }

    #[test]
    fn archive_paths_are_made_relative() {
        assert_eq!(parse("./usr/bin/"), Some(PathBuf::from("usr/bin")));
        assert_eq!(parse("/etc/passwd"), Some(PathBuf::from("etc/passwd")));
        assert_eq!(parse("./"), Some(PathBuf::from(".")));
        assert_eq!(parse("a/../../etc"), None);
        assert_eq!(parse(".."), None);
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("etc/up")).unwrap();
        let dir = RootDir::open(&root).unwrap();
        let name = |s: &str| OsString::from(s);
        // The absolute symlink means `outside` inside the root, where it does not exist yet:
        // it is created there, and nothing appears on the host.
        dir.dir(&[name("escape"), name("sub")], true).unwrap();
        let inside = root.join(outside.strip_prefix("/").unwrap());
        assert!(inside.join("sub").is_dir());
        assert_eq!(
            std::fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing created outside"
        );
        std::os::unix::fs::symlink("../../../../../elsewhere", root.join("etc/climb")).unwrap();
        dir.dir(&[name("etc"), name("climb")], true).unwrap();
        assert!(
            root.join("elsewhere").is_dir(),
            "'..' in a link target stops at the root"
        );
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(
            dir.dir(&[name("loop")], true).is_err(),
            "a symlink loop is an error"
        );
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        dir.dir(&[name("etc-link"), name("sub")], true).unwrap();
        assert!(
            root.join("etc/sub").is_dir(),
            "an absolute symlink resolves inside the root"
        );
        dir.dir(&[name("etc"), name("up"), name("x")], true)
            .unwrap();
        assert!(root.join("x").is_dir(), "'..' stops at the root");
    }
}
