//! Which plugin directories and libraries may be opened, decided on the files themselves.
//!
//! Opening a library runs its constructors as us (root, as a rule) before any check of its
//! contents, so only root or the user running us may be able to change what is opened: the
//! library, the directory it is in, and every directory above, up to `/`, as sudo demands of
//! its plugins. A path checked now and opened later could lead somewhere else by then, so
//! nothing here goes by path twice: `/` is opened, and every name below it is opened from the
//! directory before it without following symbolic links, checked through its descriptor, and
//! used as the next step; a link on the way is checked too, then read and resolved here, one
//! name at a time, in the same way. The library's descriptor is what is then loaded
//! ([`autogentoo_plugin_api::host::load_file`]).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{FileType, Mode, OFlags};

/// The most symbolic links one resolution follows: the kernel's own limit (`ELOOP`).
const MAX_LINKS: u32 = 40;

/// Why a plugin directory or library is not opened.
#[derive(Debug)]
pub enum Distrust {
    /// Writable by others than its owner.
    Writable {
        subject: Subject,
        mode: u32,
        /// Whether making it sticky would do (a directory above the plugin's own).
        sticky_would_do: bool,
    },
    /// Owned by someone other than root or the user running us. A symbolic link has no mode
    /// worth showing (always 0777).
    Owner {
        subject: Subject,
        uid: u32,
        mode: Option<u32>,
    },
    /// A name on the way is not a directory, or the plugin directory is not one.
    NotADirectory(PathBuf),
    /// More than [`MAX_LINKS`] symbolic links on the way.
    TooManyLinks(PathBuf),
    /// A file could not be opened, inspected or read.
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// What a refusal is about. The failure it becomes names the directory or library as the user
/// listed it; this names what on its way, or behind it, is to blame.
#[derive(Debug)]
pub enum Subject {
    /// The directory or library itself.
    It,
    /// A directory on the way to it.
    Above(PathBuf),
    /// The file a symbolic link to a library leads to.
    Target(PathBuf),
    /// The directory of that file.
    TargetDir(PathBuf),
    /// A symbolic link followed on the way.
    Link(PathBuf),
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::It => f.write_str("it"),
            Self::Above(path) => write!(f, "the directory {} above it", path.display()),
            Self::Target(path) => write!(f, "its target {}", path.display()),
            Self::TargetDir(path) => {
                write!(f, "the directory of its target, {},", path.display())
            }
            Self::Link(path) => write!(f, "the symbolic link {} on its way", path.display()),
        }
    }
}

impl fmt::Display for Distrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const WHY: &str = "and whoever can change a plugin runs code as autogentoo";
        match self {
            Self::Writable {
                subject,
                mode,
                sticky_would_do,
            } => {
                let who = match mode & 0o022 {
                    0o020 => "its group",
                    0o002 => "everyone",
                    _ => "its group and everyone",
                };
                let sticky = if *sticky_would_do {
                    ", or sticky (chmod +t)"
                } else {
                    ""
                };
                write!(
                    f,
                    "not loaded: {subject} is writable by {who} (mode {mode:04o}), {WHY}; make \
                     it writable by root only (chmod go-w){sticky}"
                )
            }
            Self::Owner { subject, uid, mode } => {
                let mode = mode.map(|m| format!(" (mode {m:04o})")).unwrap_or_default();
                let fix = if matches!(subject, Subject::Link(_)) {
                    "make root its owner (chown -h root)"
                } else {
                    "make root its owner (chown root)"
                };
                write!(
                    f,
                    "not loaded: {subject} belongs to uid {uid}{mode}, {WHY}; {fix}"
                )
            }
            Self::NotADirectory(path) => {
                write!(f, "not loaded: {} is not a directory", path.display())
            }
            Self::TooManyLinks(path) => write!(
                f,
                "not loaded: more than {MAX_LINKS} symbolic links on the way to {}",
                path.display()
            ),
            Self::Io {
                action,
                path,
                source,
            } => write!(f, "cannot {action} {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for Distrust {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(rustix::io::Errno) -> Distrust {
    let path = path.to_owned();
    move |errno| Distrust::Io {
        action,
        path,
        source: errno.into(),
    }
}

/// What the checks read of an open file.
#[derive(Clone, Copy, Debug)]
struct Meta {
    kind: FileType,
    mode: u32,
    uid: u32,
    /// Device and inode: which file it is.
    id: (u64, u64),
}

impl Meta {
    fn of(fd: &OwnedFd, path: &Path) -> Result<Self, Distrust> {
        let stat = rustix::fs::fstat(fd).map_err(io_error("inspect", path))?;
        Ok(Self {
            kind: FileType::from_raw_mode(stat.st_mode),
            mode: stat.st_mode & 0o7777,
            uid: stat.st_uid,
            id: (stat.st_dev, stat.st_ino),
        })
    }

    fn owner_trusted(&self) -> bool {
        self.uid == 0 || self.uid == rustix::process::geteuid().as_raw()
    }

    /// The rule for a plugin directory, a library, and the directory a linked library is in:
    /// only the owner, root or us, may write to it.
    fn check_own(&self, subject: Subject) -> Result<(), Distrust> {
        self.check(subject, false)
    }

    /// The rule for a directory above: as [`Self::check_own`], except that others may write
    /// to it when it is sticky (as `/tmp` is). In a sticky directory only an entry's owner (and
    /// the directory's, and root) may rename or remove the entry, so others may add names of
    /// their own there but cannot move or replace the one on our way, which is root's or ours:
    /// what we reach through it stays what its owner put there. A name on our way that someone
    /// else added is theirs, and refused as such.
    fn check_above(&self, path: &Path) -> Result<(), Distrust> {
        self.check(Subject::Above(path.to_owned()), true)
    }

    fn check(&self, subject: Subject, sticky_would_do: bool) -> Result<(), Distrust> {
        let sticky = self.mode & 0o1000 != 0;
        if self.mode & 0o022 != 0 && !(sticky_would_do && sticky) {
            return Err(Distrust::Writable {
                subject,
                mode: self.mode,
                sticky_would_do,
            });
        }
        if !self.owner_trusted() {
            return Err(Distrust::Owner {
                subject,
                uid: self.uid,
                mode: Some(self.mode),
            });
        }
        Ok(())
    }
}

/// One step of a resolution.
enum Step {
    Root,
    Up,
    Name(OsString),
}

/// The steps of `path`, last first (a stack: the next step is popped from the end).
fn steps_reversed(path: &Path) -> Vec<Step> {
    let mut steps: Vec<Step> = path
        .components()
        .filter_map(|component| match component {
            Component::RootDir => Some(Step::Root),
            Component::ParentDir => Some(Step::Up),
            Component::Normal(name) => Some(Step::Name(name.to_owned())),
            // No prefixes on Unix; `.` changes nothing.
            Component::Prefix(_) | Component::CurDir => None,
        })
        .collect();
    steps.reverse();
    steps
}

/// One file on a walk: its descriptor (`O_PATH`, enough to look at it and to open names
/// below it), what it is, and its path as resolved, for messages.
#[derive(Clone)]
struct Level {
    fd: Rc<OwnedFd>,
    meta: Meta,
    path: PathBuf,
}

/// A file reached from `/` one name at a time, with every directory on the way checked by
/// [`Meta::check_above`] and every symbolic link on the way checked and resolved here. The
/// last level is what was reached, not yet checked: what it must be depends on what the
/// caller wanted.
#[derive(Clone)]
struct Walk {
    levels: Vec<Level>,
}

impl Walk {
    fn root() -> Result<Self, Distrust> {
        let path = Path::new("/");
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_error("open", path))?;
        let meta = Meta::of(&fd, path)?;
        meta.check_above(path)?;
        Ok(Self {
            levels: vec![Level {
                fd: Rc::new(fd),
                meta,
                path: path.to_owned(),
            }],
        })
    }

    fn last(&self) -> &Level {
        self.levels.last().expect("a walk starts at /")
    }

    /// Goes on along `path` (from `/` if it is absolute) and returns the number of symbolic
    /// links followed. Each name is opened relative to the directory before it without
    /// following a link, so the walk goes exactly where the checks looked; close-on-exec, so
    /// that no child we start holds a plugin open.
    fn follow(&mut self, path: &Path) -> Result<u32, Distrust> {
        let mut pending = steps_reversed(path);
        let mut links = 0;
        while let Some(step) = pending.pop() {
            let name = match step {
                Step::Root => {
                    *self = Self::root()?;
                    continue;
                }
                Step::Up => {
                    // `/..` is `/`, as for the kernel.
                    if self.levels.len() > 1 {
                        self.levels.pop();
                    }
                    continue;
                }
                Step::Name(name) => name,
            };
            let dir = self.last();
            let path = dir.path.join(&name);
            let fd = rustix::fs::openat(
                &*dir.fd,
                name.as_os_str(),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_error("open", &path))?;
            let meta = Meta::of(&fd, &path)?;
            if meta.kind == FileType::Symlink {
                // Who may replace the link was settled by its directory's check; who owns
                // it matters where others may add names (a sticky directory).
                if !meta.owner_trusted() {
                    return Err(Distrust::Owner {
                        subject: Subject::Link(path),
                        uid: meta.uid,
                        mode: None,
                    });
                }
                links += 1;
                if links > MAX_LINKS {
                    return Err(Distrust::TooManyLinks(path));
                }
                // Read through the descriptor: the very link just checked.
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())
                    .map_err(io_error("read the symbolic link", &path))?;
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                pending.extend(steps_reversed(target));
                continue;
            }
            if !pending.is_empty() {
                if meta.kind != FileType::Directory {
                    return Err(Distrust::NotADirectory(path));
                }
                meta.check_above(&path)?;
            }
            self.levels.push(Level {
                fd: Rc::new(fd),
                meta,
                path,
            });
        }
        Ok(links)
    }
}

/// A plugin directory, open, checked, and with every directory above it checked.
pub struct PluginDir {
    walk: Walk,
}

/// A plugin library, open (`O_PATH`) and checked, to be loaded through its descriptor.
pub struct Library {
    pub file: OwnedFd,
    /// Device and inode, so that a library found twice is loaded once.
    pub id: (u64, u64),
}

impl PluginDir {
    /// Opens the plugin directory `path` (relative to the current directory if it is
    /// relative) and checks it and every directory above it.
    pub fn open(path: &Path) -> Result<Self, Distrust> {
        let mut walk = Walk::root()?;
        if path.is_relative() {
            let here = std::env::current_dir().map_err(|source| Distrust::Io {
                action: "find the current directory to resolve",
                path: path.to_owned(),
                source,
            })?;
            walk.follow(&here)?;
        }
        walk.follow(path)?;
        let dir = walk.last();
        if dir.meta.kind != FileType::Directory {
            return Err(Distrust::NotADirectory(path.to_owned()));
        }
        dir.meta.check_own(Subject::It)?;
        Ok(Self { walk })
    }

    /// The names of its `*.so` entries, sorted: the order plugins load in.
    pub fn library_names(&self) -> Result<Vec<OsString>, Distrust> {
        let dir = self.walk.last();
        let listing = rustix::fs::openat(
            &*dir.fd,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(rustix::fs::Dir::new)
        .map_err(io_error("read the plugin directory", &dir.path))?;
        let mut names = Vec::new();
        for entry in listing {
            let entry = entry.map_err(io_error("read the plugin directory", &dir.path))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if Path::new(name).extension() == Some(OsStr::new("so")) {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Opens and checks its library `name`, following a symbolic link, if it is one, to a
    /// file whose directory is then checked too. `None` when `name` is no regular file (any
    /// more), which is passed over, as such names always were.
    pub fn library(&self, name: &OsStr) -> Result<Option<Library>, Distrust> {
        let mut walk = self.walk.clone();
        let links = match walk.follow(Path::new(name)) {
            Ok(links) => links,
            Err(Distrust::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        let file = walk.levels.pop().expect("a walk to a file has it last");
        if file.meta.kind != FileType::RegularFile {
            return Ok(None);
        }
        if links == 0 {
            file.meta.check_own(Subject::It)?;
        } else {
            file.meta.check_own(Subject::Target(file.path.clone()))?;
            let dir = walk.last();
            dir.meta.check_own(Subject::TargetDir(dir.path.clone()))?;
        }
        let id = file.meta.id;
        let fd = Rc::try_unwrap(file.fd)
            .or_else(|shared| shared.try_clone())
            .map_err(|source| Distrust::Io {
                action: "keep open",
                path: file.path,
                source,
            })?;
        Ok(Some(Library { file: fd, id }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn refusal(path: &Path) -> String {
        match PluginDir::open(path) {
            Ok(_) => panic!("{} was accepted", path.display()),
            Err(e) => e.to_string(),
        }
    }

    /// Every directory above a plugin directory counts, up to `/`: writable by others only
    /// when sticky, owned by root or us, and links on the way owned by root or us.
    #[test]
    fn directories_above_a_plugin_directory_are_checked() {
        let top = tempfile::tempdir().unwrap();
        let above = top.path().join("above");
        let plugins = above.join("mid/plugins");
        fs::create_dir_all(&plugins).unwrap();
        chmod(&above, 0o777);
        let said = refusal(&plugins);
        assert!(
            said.contains(&format!("{} above it", above.display()))
                && said.contains("writable by its group and everyone (mode 0777)"),
            "{said}"
        );
        chmod(&above, 0o775);
        assert!(refusal(&plugins).contains("by its group (mode 0775)"));
        chmod(&above, 0o1777);
        PluginDir::open(&plugins).expect("below a sticky directory");
        // Sticky is no excuse for the plugin directory itself: anyone could add a library.
        chmod(&plugins, 0o1777);
        let said = refusal(&plugins);
        assert!(
            said.starts_with("not loaded: it is writable by its group and everyone (mode 1777)"),
            "{said}"
        );
        chmod(&plugins, 0o755);
        chmod(&above, 0o755);
        rustix::fs::chown(&above, Some(rustix::fs::Uid::from_raw(4242)), None).unwrap();
        let said = refusal(&plugins);
        assert!(said.contains("belongs to uid 4242 (mode 0755)"), "{said}");
        rustix::fs::chown(&above, Some(rustix::fs::Uid::ROOT), None).unwrap();
        PluginDir::open(&plugins).expect("below directories of root's");

        // A link on the way is followed, `..` in its target taken from where the link is; in a
        // sticky directory, only a link of root's (or ours) is.
        chmod(&above, 0o1777);
        let link = above.join("link");
        symlink("mid/../mid", &link).unwrap();
        PluginDir::open(&link.join("plugins")).expect("through a link of root's");
        rustix::fs::chownat(
            rustix::fs::CWD,
            &link,
            Some(rustix::fs::Uid::from_raw(4242)),
            None,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .unwrap();
        let said = refusal(&link.join("plugins"));
        assert!(
            said.contains(&format!("symbolic link {} on its way", link.display()))
                && said.contains("belongs to uid 4242, "),
            "{said}"
        );
    }

    /// What is listed and opened is the directory that was checked, even when another takes
    /// its name afterwards; and a library is checked through its own descriptor.
    #[test]
    fn the_directory_checked_is_the_one_read() {
        let top = tempfile::tempdir().unwrap();
        let plugins = top.path().join("plugins");
        fs::create_dir(&plugins).unwrap();
        fs::write(plugins.join("libchecked.so"), "").unwrap();
        let checked = PluginDir::open(&plugins).unwrap();
        fs::rename(&plugins, top.path().join("moved")).unwrap();
        fs::create_dir(&plugins).unwrap();
        fs::write(plugins.join("libswapped.so"), "").unwrap();
        assert_eq!(checked.library_names().unwrap(), ["libchecked.so"]);
        assert!(checked
            .library(OsStr::new("libswapped.so"))
            .unwrap()
            .is_none());

        chmod(&top.path().join("moved/libchecked.so"), 0o666);
        let said = match checked.library(OsStr::new("libchecked.so")) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a library writable by everyone was accepted"),
        };
        assert!(
            said.starts_with("not loaded: it is writable by its group and everyone (mode 0666)"),
            "{said}"
        );
    }
}
