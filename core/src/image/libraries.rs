//! The shared libraries an image tree's programs need, found the way the dynamic loader finds
//! them, and copied from the build root when no package of the image holds them.
//!
//! A slim image is the packages a system names, installed from binary packages into an empty
//! tree. On a Gentoo stage3 the C library is a package like any other and comes with them; on
//! the Portage stand-in stage it is Debian's, declared in the profile's `soname.provided`, so it
//! must come from the build root, as dracut brings a program's libraries into an initramfs. For
//! each ELF program and library of the image: its interpreter (`PT_INTERP`) and each `DT_NEEDED`
//! soname, searched in its `RUNPATH`/`RPATH`, the build root's `ld.so.conf` directories and the
//! loader's defaults for its machine, first in the image, then in the build root. What the build
//! root has is copied with the symlinks that lead to it (`/lib64 -> usr/lib64`, …), so the path
//! the loader will take exists in the image.
//!
//! Both trees are untrusted (emerge and whatever a root's ebuilds ran wrote them): every path is
//! resolved inside its tree (see [`crate::files::in_root`]), and nothing is created outside the image.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use goblin::elf::header::{EM_386, EM_AARCH64, EM_ARM, EM_RISCV, EM_X86_64};
use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;
use thiserror::Error;

use crate::files::bounded_read::{self, Limit, ReadError};
use crate::files::in_root::RootDir;
use crate::site_config::ImageLibraries;
use crate::storage::{io_err, StorageError};

/// Why an image's libraries could not be completed.
#[derive(Debug, Error)]
pub enum LibraryError {
    #[error(
        "{} needs {soname}, which is neither in the image nor in the build root {}",
        program.display(),
        root.display()
    )]
    NotFound {
        program: PathBuf,
        soname: String,
        root: PathBuf,
    },
    #[error(
        "{} needs {soname}, which no package of the image installs (the build root has it at /{}); \
         add the package that provides it to the image, or set `libraries = \"copy\"`",
        program.display(),
        found.display()
    )]
    NotInImage {
        program: PathBuf,
        soname: String,
        found: PathBuf,
    },
    #[error("{} is not an ELF file this can read: {reason}", path.display())]
    BadElf { path: PathBuf, reason: String },
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What [`complete`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LibraryReport {
    /// The ELF files of the image that were inspected.
    pub programs: usize,
    /// The files copied from the build root, as paths inside the image, in the order copied.
    pub copied: Vec<PathBuf>,
}

/// What the loader needs to know of one ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ElfNeeds {
    /// 64-bit and the `e_machine`: a library of another class or machine never satisfies it.
    kind: (bool, u16),
    interpreter: Option<PathBuf>,
    needed: Vec<String>,
    /// `RUNPATH`, or `RPATH` when there is none, with `$ORIGIN` already expanded.
    search: Vec<PathBuf>,
}

/// Makes sure every ELF file of `image` finds its libraries: those the image lacks are copied
/// from `build_root` ([`ImageLibraries::Copy`]) or refused ([`ImageLibraries::Check`]).
///
/// - A soname found in the image (a package of the image installs it) is left alone.
/// - A soname found in neither tree is an error naming the program and the soname.
/// - Copied libraries are inspected in turn: their own needs are met the same way.
/// - Nothing is ever written outside `image`, whatever symlinks either tree holds.
pub fn complete(
    image: &Path,
    build_root: &Path,
    mode: ImageLibraries,
) -> Result<LibraryReport, LibraryError> {
    let image_dir = RootDir::open(image)?;
    let root_dir = RootDir::open(build_root)?;
    let conf_dirs = ld_so_conf(&root_dir)?;
    let mut report = LibraryReport::default();
    let mut queue: VecDeque<(PathBuf, ElfNeeds)> = VecDeque::new();
    for inner in regular_files(image)? {
        if let Some(needs) = elf_needs(&image_dir, &inner)? {
            queue.push_back((inner, needs));
        }
    }
    report.programs = queue.len();
    let mut settled: BTreeSet<(bool, u16, String)> = BTreeSet::new();
    while let Some((program, needs)) = queue.pop_front() {
        let shown = image.join(&program);
        if let Some(interpreter) = &needs.interpreter {
            let key = (
                needs.kind.0,
                needs.kind.1,
                interpreter.display().to_string(),
            );
            if settled.insert(key) && !exists(&image_dir, interpreter) {
                let found = if exists(&root_dir, interpreter) {
                    Some(interpreter.clone())
                } else {
                    None
                };
                let copied = bring(
                    &image_dir,
                    &root_dir,
                    (&shown, &interpreter.display().to_string()),
                    found,
                    mode,
                    &mut report,
                )?;
                if let Some(copied) = copied {
                    if let Some(more) = elf_needs(&image_dir, &copied)? {
                        queue.push_back((copied, more));
                    }
                }
            }
        }
        let dirs: Vec<PathBuf> = needs
            .search
            .iter()
            .cloned()
            .chain(conf_dirs.iter().cloned())
            .chain(default_dirs(needs.kind))
            .collect();
        for soname in &needs.needed {
            let key = (needs.kind.0, needs.kind.1, soname.clone());
            if !settled.insert(key) {
                continue;
            }
            if find(&image_dir, soname, &dirs, needs.kind)?.is_some() {
                continue;
            }
            let found = find(&root_dir, soname, &dirs, needs.kind)?;
            if let Some(copied) = bring(
                &image_dir,
                &root_dir,
                (&shown, soname),
                found,
                mode,
                &mut report,
            )? {
                if let Some(more) = elf_needs(&image_dir, &copied)? {
                    queue.push_back((copied, more));
                }
            }
        }
    }
    Ok(report)
}

/// Copies `found` (a path inside the build root) into the image, or refuses, as `mode` says;
/// returns the path of the copied file inside the image.
fn bring(
    image: &RootDir,
    root: &RootDir,
    (program, soname): (&Path, &str),
    found: Option<PathBuf>,
    mode: ImageLibraries,
    report: &mut LibraryReport,
) -> Result<Option<PathBuf>, LibraryError> {
    let Some(found) = found else {
        return Err(LibraryError::NotFound {
            program: program.to_owned(),
            soname: soname.to_owned(),
            root: root.path().to_owned(),
        });
    };
    match mode {
        ImageLibraries::Check => Err(LibraryError::NotInImage {
            program: program.to_owned(),
            soname: soname.to_owned(),
            found,
        }),
        ImageLibraries::Copy => {
            let file = copy_with_links(root, image, &found, &mut report.copied)?;
            if exists(image, &found) {
                return Ok(Some(file));
            }
            // The image has links of its own on the way (a `lib64` of a package, say) that lead
            // elsewhere than the root's: the file goes where the image's links lead.
            let parts = components(&found);
            let (name, dir) = parts.split_last().expect("a library path has a name");
            copy_file(root, image, dir, name, &file)?;
            report.copied.push(found.clone());
            Ok(Some(found))
        }
    }
}

/// Whether `inner` leads to something inside `tree`.
fn exists(tree: &RootDir, inner: &Path) -> bool {
    tree.open_at(&relative(inner), OFlags::PATH, Mode::empty())
        .is_ok()
}

/// The first `DIR/soname` in `tree` that is an ELF library of `kind`, as the path searched.
fn find(
    tree: &RootDir,
    soname: &str,
    dirs: &[PathBuf],
    kind: (bool, u16),
) -> Result<Option<PathBuf>, LibraryError> {
    if soname.contains('/') {
        // A soname with a slash is a path, taken as it is.
        let path = relative(Path::new(soname));
        return Ok(exists(tree, &path).then_some(path));
    }
    for dir in dirs {
        let candidate = relative(&dir.join(soname));
        if !exists(tree, &candidate) {
            continue;
        }
        // As the loader does, a file of another class or machine, or no ELF file at all, is
        // passed over for the next directory.
        match elf_needs(tree, &candidate) {
            Ok(Some(needs)) if needs.kind == kind => return Ok(Some(candidate)),
            Ok(_)
            | Err(LibraryError::Read(ReadError::NotRegular { .. }))
            | Err(LibraryError::BadElf { .. }) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(None)
}

/// Reads `inner` in `tree` and returns what it needs, or `None` when it is not an ELF file.
fn elf_needs(tree: &RootDir, inner: &Path) -> Result<Option<ElfNeeds>, LibraryError> {
    let (file, len) = bounded_read::open_regular_in(tree, inner, Limit::PROGRAM.what)?;
    let shown = tree.display_path(inner);
    let mut magic = [0u8; 4];
    let mut file = file;
    match file.read_exact(&mut magic) {
        Ok(()) if &magic == b"\x7fELF" => {}
        Ok(()) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(io_err("read", &shown)(e).into()),
    }
    if len > Limit::PROGRAM.max_bytes {
        return Err(ReadError::TooLarge {
            what: Limit::PROGRAM.what,
            path: shown,
            max_bytes: Limit::PROGRAM.max_bytes,
        }
        .into());
    }
    let mut bytes = magic.to_vec();
    file.take(Limit::PROGRAM.max_bytes)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", &shown))?;
    parse_elf(&bytes, inner)
        .map(Some)
        .map_err(|reason| LibraryError::BadElf {
            path: shown,
            reason,
        })
}

/// What the ELF file `inner` needs at run time (nothing, for a static program).
fn parse_elf(bytes: &[u8], inner: &Path) -> Result<ElfNeeds, String> {
    let elf = goblin::elf::Elf::parse(bytes).map_err(|e| e.to_string())?;
    let origin = Path::new("/").join(inner.parent().unwrap_or(Path::new("")));
    let expand = |entry: &str| -> Vec<PathBuf> {
        entry
            .split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| {
                let dir = dir
                    .replace("${ORIGIN}", &origin.display().to_string())
                    .replace("$ORIGIN", &origin.display().to_string());
                PathBuf::from(dir)
            })
            .collect()
    };
    let search = if elf.runpaths.is_empty() {
        elf.rpaths.iter().flat_map(|r| expand(r)).collect()
    } else {
        elf.runpaths.iter().flat_map(|r| expand(r)).collect()
    };
    Ok(ElfNeeds {
        kind: (elf.is_64, elf.header.e_machine),
        interpreter: elf.interpreter.map(PathBuf::from),
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        search,
    })
}

/// The directories the loader searches by default for ELF files of `kind`, as Debian's and
/// Gentoo's glibc do: the multiarch directories, then lib64 (64-bit), then lib.
fn default_dirs((is_64, machine): (bool, u16)) -> Vec<PathBuf> {
    let triple = match machine {
        EM_X86_64 => Some("x86_64-linux-gnu"),
        EM_AARCH64 => Some("aarch64-linux-gnu"),
        EM_RISCV if is_64 => Some("riscv64-linux-gnu"),
        EM_386 => Some("i386-linux-gnu"),
        EM_ARM => Some("arm-linux-gnueabihf"),
        _ => None,
    };
    let mut dirs = Vec::new();
    if let Some(triple) = triple {
        dirs.push(PathBuf::from("/lib").join(triple));
        dirs.push(PathBuf::from("/usr/lib").join(triple));
    }
    if is_64 {
        dirs.push("/lib64".into());
        dirs.push("/usr/lib64".into());
    }
    dirs.push("/lib".into());
    dirs.push("/usr/lib".into());
    dirs
}

/// The directories of `etc/ld.so.conf` in `tree`, with its `include`s of `DIR/*.conf` (the
/// form every distribution uses); a tree without the file has none.
fn ld_so_conf(tree: &RootDir) -> Result<Vec<PathBuf>, LibraryError> {
    let mut dirs = Vec::new();
    let mut files: VecDeque<PathBuf> = VecDeque::from([PathBuf::from("etc/ld.so.conf")]);
    let mut read = 0;
    while let Some(file) = files.pop_front() {
        read += 1;
        if read > 256 {
            break;
        }
        let text = match bounded_read::read_in(tree, &file, Limit::LIBRARY_PATHS) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(ReadError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                continue
            }
            Err(other) => return Err(other.into()),
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some(pattern) = line.strip_prefix("include") {
                let pattern = Path::new(pattern.trim());
                let pattern = if pattern.is_absolute() {
                    pattern.to_owned()
                } else {
                    Path::new("/etc").join(pattern)
                };
                files.extend(included(tree, &pattern));
            } else if line.starts_with('/') {
                dirs.push(PathBuf::from(line));
            }
        }
    }
    Ok(dirs)
}

/// The files an `include DIR/*.conf` line names, sorted as glob(3) sorts them.
fn included(tree: &RootDir, pattern: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
        return Vec::new();
    };
    let name = name.to_string_lossy();
    let Some(suffix) = name.strip_prefix('*') else {
        return vec![relative(pattern)];
    };
    let Ok(fd) = tree.open_at(
        &relative(dir),
        OFlags::DIRECTORY | OFlags::RDONLY,
        Mode::empty(),
    ) else {
        return Vec::new();
    };
    let Ok(entries) = rustix::fs::Dir::read_from(&fd) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| OsStr::from_bytes(entry.file_name().to_bytes()).to_owned())
        .filter(|file| file.as_bytes().ends_with(suffix.as_bytes()) && file.as_bytes()[0] != b'.')
        .map(|file| relative(&dir.join(file)))
        .collect();
    out.sort();
    out
}

/// Every regular file under `top`, as paths relative to it; symlinks are not followed.
fn regular_files(top: &Path) -> Result<Vec<PathBuf>, LibraryError> {
    let mut out = Vec::new();
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        let full = top.join(&dir);
        let mut entries: Vec<_> = std::fs::read_dir(&full)
            .map_err(io_err("read", &full))?
            .collect::<Result<_, _>>()
            .map_err(io_err("read", &full))?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let inner = dir.join(entry.file_name());
            let kind = entry
                .file_type()
                .map_err(io_err("inspect", top.join(&inner)))?;
            if kind.is_dir() {
                dirs.push(inner);
            } else if kind.is_file() {
                out.push(inner);
            }
        }
    }
    Ok(out)
}

/// Copies `inner` from `from` into `to` at the same path, recreating every symlink met on the
/// way (in `to`, where nothing is there yet) and the directories; returns the path of the
/// regular file at its end. The copy keeps the file's permission bits, less setuid and setgid.
fn copy_with_links(
    from: &RootDir,
    to: &RootDir,
    inner: &Path,
    copied: &mut Vec<PathBuf>,
) -> Result<PathBuf, LibraryError> {
    let mut done: Vec<OsString> = Vec::new();
    let mut todo: VecDeque<OsString> = components(inner).into();
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            done.pop();
            continue;
        }
        let here: PathBuf = done.iter().chain([&name]).collect();
        let shown = from.display_path(&here);
        let located = from
            .open_at(&here, OFlags::PATH | OFlags::NOFOLLOW, Mode::empty())
            .map_err(|e| io_err("open", &shown)(e.into()))?;
        let st = rustix::fs::fstat(&located).map_err(|e| io_err("inspect", &shown)(e.into()))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => {
                links += 1;
                if links > 40 {
                    return Err(io_err("follow", &shown)(Errno::LOOP.into()).into());
                }
                let target = rustix::fs::readlinkat(&located, "", Vec::new())
                    .map_err(|e| io_err("read the link", &shown)(e.into()))?;
                let parent = to.dir(&done, true)?;
                match rustix::fs::symlinkat(target.as_c_str(), &parent, name.as_os_str()) {
                    Ok(()) => copied.push(here.clone()),
                    Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(
                            io_err("create the link", to.display_path(&here))(e.into()).into()
                        )
                    }
                }
                let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                if target.is_absolute() {
                    done.clear();
                }
                for part in components(target).into_iter().rev() {
                    todo.push_front(part);
                }
            }
            FileType::Directory => {
                to.dir(&[done.clone(), vec![name.clone()]].concat(), true)?;
                done.push(name);
            }
            FileType::RegularFile if todo.is_empty() => {
                copy_file(from, to, &done, &name, &here)?;
                copied.push(here.clone());
                return Ok(here);
            }
            _ => {
                return Err(LibraryError::BadElf {
                    path: shown,
                    reason: "not a regular file".into(),
                })
            }
        }
    }
    Err(LibraryError::BadElf {
        path: from.display_path(inner),
        reason: "leads to a directory".into(),
    })
}

/// Copies the regular file `source` of `from` to `dir/name` in `to`, unless something is already
/// there.
fn copy_file(
    from: &RootDir,
    to: &RootDir,
    dir: &[OsString],
    name: &OsStr,
    source: &Path,
) -> Result<(), LibraryError> {
    let inner: PathBuf = dir.iter().map(OsString::as_os_str).chain([name]).collect();
    let (mut source, _) = bounded_read::open_regular_in(from, source, Limit::PROGRAM.what)?;
    let mode = source
        .metadata()
        .map_err(io_err("inspect", from.display_path(&inner)))?
        .permissions()
        .mode();
    let parent = to.dir(dir, true)?;
    let shown = to.display_path(&inner);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let created = match rustix::fs::openat(&parent, name, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => fd,
        Err(Errno::EXIST) => return Ok(()),
        Err(e) => return Err(io_err("create", &shown)(e.into()).into()),
    };
    let mut target = File::from(created);
    io::copy(
        &mut (&mut source).take(Limit::PROGRAM.max_bytes),
        &mut target,
    )
    .map_err(io_err("copy into", &shown))?;
    target
        .set_permissions(std::fs::Permissions::from_mode(mode & 0o1777 & !0o6000))
        .map_err(io_err("set the mode of", &shown))?;
    Ok(())
}

fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// `path` without its leading `/`, for lookups relative to a tree's top.
fn relative(path: &Path) -> PathBuf {
    let parts = components(path);
    if parts.is_empty() {
        PathBuf::from(".")
    } else {
        parts.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    /// A build root laid out as Debian's merged /usr: `lib -> usr/lib`, `lib64 -> usr/lib64`,
    /// the loader behind a relative link, and the host's own libc (these tests need a
    /// dynamically linked host, as every machine this builds on is).
    fn build_root(top: &Path) -> PathBuf {
        let root = top.join("root");
        let multiarch = root.join("usr/lib/x86_64-linux-gnu");
        fs::create_dir_all(&multiarch).unwrap();
        fs::create_dir_all(root.join("usr/lib64")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("usr/lib64", root.join("lib64")).unwrap();
        for file in ["libc.so.6", "ld-linux-x86-64.so.2"] {
            fs::copy(
                Path::new("/lib/x86_64-linux-gnu").join(file),
                multiarch.join(file),
            )
            .unwrap();
        }
        symlink(
            "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
            root.join("usr/lib64/ld-linux-x86-64.so.2"),
        )
        .unwrap();
        root
    }

    /// An image holding one dynamically linked program, the host's `true`.
    fn image(top: &Path) -> PathBuf {
        let image = top.join("image");
        fs::create_dir_all(image.join("usr/bin")).unwrap();
        fs::copy("/usr/bin/true", image.join("usr/bin/true")).unwrap();
        image
    }

    #[test]
    fn missing_libraries_come_from_the_build_root_with_their_links() {
        let tmp = tempfile::tempdir().unwrap();
        let root = build_root(tmp.path());
        let image = image(tmp.path());
        let report = complete(&image, &root, ImageLibraries::Copy).unwrap();
        assert_eq!(report.programs, 1);
        // The paths the loader takes exist in the image, as links where the root has links.
        assert_eq!(
            fs::read_link(image.join("lib64")).unwrap(),
            Path::new("usr/lib64")
        );
        assert_eq!(
            fs::read_link(image.join("lib")).unwrap(),
            Path::new("usr/lib")
        );
        for file in ["libc.so.6", "ld-linux-x86-64.so.2"] {
            let copy = image.join("usr/lib/x86_64-linux-gnu").join(file);
            assert_eq!(
                fs::read(&copy).unwrap(),
                fs::read(root.join("usr/lib/x86_64-linux-gnu").join(file)).unwrap()
            );
        }
        assert!(image.join("lib64/ld-linux-x86-64.so.2").is_file());
        // A second run has nothing left to do.
        let again = complete(&image, &root, ImageLibraries::Copy).unwrap();
        assert_eq!(again.copied, Vec::<PathBuf>::new());
    }

    #[test]
    fn check_mode_names_the_program_and_the_library_and_copies_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let root = build_root(tmp.path());
        let image = image(tmp.path());
        let error = complete(&image, &root, ImageLibraries::Check).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("usr/bin/true needs"), "{text}");
        assert!(text.contains("no package of the image installs"), "{text}");
        assert_eq!(
            fs::read_dir(&image).unwrap().count(),
            1,
            "only usr/ is there"
        );
    }

    #[test]
    fn a_library_in_neither_tree_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("empty-root");
        fs::create_dir_all(&root).unwrap();
        let image = image(tmp.path());
        let text = complete(&image, &root, ImageLibraries::Copy)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("neither in the image nor in the build root"),
            "{text}"
        );
    }

    #[test]
    fn links_in_either_tree_never_lead_out_of_it() {
        let tmp = tempfile::tempdir().unwrap();
        let root = build_root(tmp.path());
        let image = image(tmp.path());
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        // The image's lib64 points at a host directory: the loader is created where the link
        // leads inside the image, and nothing appears on the host.
        symlink(&outside, image.join("lib64")).unwrap();
        complete(&image, &root, ImageLibraries::Copy).unwrap();
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
        let inside = image.join(outside.strip_prefix("/").unwrap());
        assert!(inside.join("ld-linux-x86-64.so.2").exists());
    }
}
