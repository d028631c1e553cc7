//! Comparing two directory trees entry by entry, for tests of anything that copies, clones,
//! imports or packs a root: "the same tree" means the same names, types, modes, owners, times,
//! contents, device numbers, symlink targets, xattrs and hardlinks.
//!
//! It reads both trees with its own plain code rather than sharing helpers with
//! [`crate::files::tree_copy`], so that a bug there cannot hide itself here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

/// Which properties [`tree_diff_with`] compares; names, types, modes, owners, contents, device
/// numbers and symlink targets are always compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeDiffOptions {
    /// Modification times, to the second.
    pub mtime: bool,
    /// The nanoseconds of modification times too (formats such as cpio keep only seconds).
    pub mtime_nsec: bool,
    /// Extended attributes, names and values.
    pub xattrs: bool,
    /// Which paths share an inode.
    pub hardlinks: bool,
}

impl Default for TreeDiffOptions {
    /// Everything compared.
    fn default() -> Self {
        Self {
            mtime: true,
            mtime_nsec: true,
            xattrs: true,
            hardlinks: true,
        }
    }
}

/// Differences between two trees, one line each ("usr/bin/ping: mode 104755 != 100755"), in path
/// order; empty when the trees are the same. Compares everything in [`TreeDiffOptions`].
pub fn tree_diff(a: &Path, b: &Path) -> Vec<String> {
    tree_diff_with(a, b, &TreeDiffOptions::default())
}

/// Panics listing the first 50 differences between two trees.
#[track_caller]
pub fn assert_same_tree(a: &Path, b: &Path) {
    let diffs = tree_diff(a, b);
    if diffs.is_empty() {
        return;
    }
    let mut message = format!("{} and {} differ:", a.display(), b.display());
    for line in diffs.iter().take(50) {
        message.push_str("\n  ");
        message.push_str(line);
    }
    if diffs.len() > 50 {
        message.push_str(&format!("\n  … and {} more", diffs.len() - 50));
    }
    panic!("{message}");
}

/// [`tree_diff`] comparing only what `opts` asks for.
pub fn tree_diff_with(a: &Path, b: &Path, opts: &TreeDiffOptions) -> Vec<String> {
    let mut diffs = Vec::new();
    let side_a = Side::scan(a, opts, &mut diffs);
    let side_b = Side::scan(b, opts, &mut diffs);
    let contents = compare_contents(&side_a, &side_b);
    let paths: BTreeSet<&PathBuf> = side_a.entries.keys().chain(side_b.entries.keys()).collect();
    for rel in paths {
        let shown = show(rel);
        match (side_a.entries.get(rel), side_b.entries.get(rel)) {
            (Some(_), None) => diffs.push(format!("{shown}: only in {}", a.display())),
            (None, Some(_)) => diffs.push(format!("{shown}: only in {}", b.display())),
            (Some(x), Some(y)) => {
                let before = diffs.len();
                compare_entry((a, x), (b, y), opts, &mut diffs);
                if let Some(content) = contents.get(rel) {
                    diffs.push(content.clone());
                }
                if opts.hardlinks {
                    let (links_a, links_b) = (side_a.linked_to(rel, x), side_b.linked_to(rel, y));
                    if links_a != links_b {
                        diffs.push(format!(
                            "linked to {} != {}",
                            show_list(&links_a),
                            show_list(&links_b)
                        ));
                    }
                }
                for line in &mut diffs[before..] {
                    *line = format!("{shown}: {line}");
                }
            }
            (None, None) => unreachable!("every path comes from one of the sides"),
        }
    }
    diffs
}

/// One tree's entries by relative path, the root being the empty path.
struct Side {
    root: PathBuf,
    entries: BTreeMap<PathBuf, Entry>,
    /// Paths of non-directories sharing an inode, for those with more than one name.
    inodes: HashMap<(u64, u64), Vec<PathBuf>>,
}

struct Entry {
    meta: Metadata,
    link_target: Option<Vec<u8>>,
    /// Sorted by name.
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Side {
    /// Reads a whole tree; what cannot be read becomes a line in `diffs`.
    fn scan(root: &Path, opts: &TreeDiffOptions, diffs: &mut Vec<String>) -> Self {
        let mut side = Side {
            root: root.to_owned(),
            entries: BTreeMap::new(),
            inodes: HashMap::new(),
        };
        let mut pending = vec![PathBuf::new()];
        while let Some(rel) = pending.pop() {
            let path = root.join(&rel);
            let entry = match Entry::read(&path, opts) {
                Ok(entry) => entry,
                Err(err) => {
                    diffs.push(format!(
                        "{}: cannot read {}: {err}",
                        show(&rel),
                        path.display()
                    ));
                    continue;
                }
            };
            if entry.meta.is_dir() {
                match fs::read_dir(&path).and_then(|list| list.collect::<io::Result<Vec<_>>>()) {
                    Ok(list) => {
                        pending.extend(list.iter().map(|child| rel.join(child.file_name())))
                    }
                    Err(err) => diffs.push(format!(
                        "{}: cannot list {}: {err}",
                        show(&rel),
                        path.display()
                    )),
                }
            } else if entry.meta.nlink() > 1 {
                let names = side
                    .inodes
                    .entry((entry.meta.dev(), entry.meta.ino()))
                    .or_default();
                names.push(rel.clone());
            }
            side.entries.insert(rel, entry);
        }
        for names in side.inodes.values_mut() {
            names.sort();
        }
        side
    }

    /// The other paths of this tree that share `rel`'s inode.
    fn linked_to(&self, rel: &Path, entry: &Entry) -> Vec<&Path> {
        let names = self.inodes.get(&(entry.meta.dev(), entry.meta.ino()));
        names
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .filter(|name| *name != rel)
            .collect()
    }
}

impl Entry {
    fn read(path: &Path, opts: &TreeDiffOptions) -> io::Result<Self> {
        let meta = fs::symlink_metadata(path)?;
        let link_target = if meta.file_type().is_symlink() {
            Some(rustix::fs::readlink(path, Vec::new())?.into_bytes())
        } else {
            None
        };
        let xattrs = if opts.xattrs {
            read_xattrs(path)?
        } else {
            Vec::new()
        };
        Ok(Self {
            meta,
            link_target,
            xattrs,
        })
    }
}

fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    // A filesystem without xattrs (zfs-fuse, ramfs) holds none.
    let size = match rustix::fs::llistxattr_query(path) {
        Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
        other => other?,
    };
    let mut names = vec![0; size];
    let len = rustix::fs::llistxattr(path, &mut names)?;
    names.truncate(len);
    let mut xattrs = Vec::new();
    for name in names.split(|&b| b == 0).filter(|name| !name.is_empty()) {
        let mut value = vec![0; rustix::fs::lgetxattr_query(path, name)?];
        let len = rustix::fs::lgetxattr(path, name, &mut value)?;
        value.truncate(len);
        xattrs.push((name.to_vec(), value));
    }
    xattrs.sort();
    Ok(xattrs)
}

/// Everything but contents and hardlinks, without the path prefix.
fn compare_entry(
    (a, x): (&Path, &Entry),
    (b, y): (&Path, &Entry),
    opts: &TreeDiffOptions,
    diffs: &mut Vec<String>,
) {
    let (mx, my) = (&x.meta, &y.meta);
    if mx.file_type() != my.file_type() {
        diffs.push(format!("type {} != {}", type_name(mx), type_name(my)));
        return;
    }
    if mx.mode() != my.mode() {
        diffs.push(format!("mode {:o} != {:o}", mx.mode(), my.mode()));
    }
    if mx.uid() != my.uid() {
        diffs.push(format!("uid {} != {}", mx.uid(), my.uid()));
    }
    if mx.gid() != my.gid() {
        diffs.push(format!("gid {} != {}", mx.gid(), my.gid()));
    }
    let nsec_differs = opts.mtime_nsec && mx.mtime_nsec() != my.mtime_nsec();
    if opts.mtime && (mx.mtime() != my.mtime() || nsec_differs) {
        let (tx, ty) = (mx.mtime(), my.mtime());
        diffs.push(format!(
            "mtime {tx}.{:09} != {ty}.{:09}",
            mx.mtime_nsec(),
            my.mtime_nsec()
        ));
    }
    if mx.is_file() && mx.len() != my.len() {
        diffs.push(format!("size {} != {}", mx.len(), my.len()));
    }
    let device = mx.file_type().is_char_device() || mx.file_type().is_block_device();
    if device && mx.rdev() != my.rdev() {
        diffs.push(format!(
            "rdev {} != {}",
            show_rdev(mx.rdev()),
            show_rdev(my.rdev())
        ));
    }
    if x.link_target != y.link_target {
        let target = |t: &Option<Vec<u8>>| {
            String::from_utf8_lossy(t.as_deref().unwrap_or_default()).into_owned()
        };
        diffs.push(format!(
            "symlink target {:?} != {:?}",
            target(&x.link_target),
            target(&y.link_target)
        ));
    }
    if x.xattrs != y.xattrs {
        compare_xattrs((a, &x.xattrs), (b, &y.xattrs), diffs);
    }
}

type Xattrs = [(Vec<u8>, Vec<u8>)];

fn compare_xattrs((a, x): (&Path, &Xattrs), (b, y): (&Path, &Xattrs), diffs: &mut Vec<String>) {
    let (x, y): (BTreeMap<_, _>, BTreeMap<_, _>) =
        (x.iter().cloned().collect(), y.iter().cloned().collect());
    for name in x.keys().chain(y.keys()).collect::<BTreeSet<_>>() {
        let shown = String::from_utf8_lossy(name);
        match (x.get(name), y.get(name)) {
            (Some(vx), Some(vy)) if vx != vy => {
                diffs.push(format!(
                    "xattr {shown} \"{}\" != \"{}\"",
                    vx.escape_ascii(),
                    vy.escape_ascii()
                ));
            }
            (Some(_), None) => diffs.push(format!("xattr {shown} only in {}", a.display())),
            (None, Some(_)) => diffs.push(format!("xattr {shown} only in {}", b.display())),
            _ => {}
        }
    }
}

/// The first differing byte of each pair of same-sized regular files, by path, read in parallel.
fn compare_contents(a: &Side, b: &Side) -> HashMap<PathBuf, String> {
    let pairs: Vec<&PathBuf> = a
        .entries
        .iter()
        .filter(|(rel, x)| {
            b.entries.get(*rel).is_some_and(|y| {
                x.meta.is_file()
                    && y.meta.is_file()
                    && x.meta.len() == y.meta.len()
                    && x.meta.len() > 0
            })
        })
        .map(|(rel, _)| rel)
        .collect();
    pairs
        .par_iter()
        .filter_map(|rel| {
            let message = match first_difference(&a.root.join(rel), &b.root.join(rel)) {
                Ok(None) => return None,
                Ok(Some(offset)) => format!("content differs at byte {offset}"),
                Err(err) => format!("cannot compare contents: {err}"),
            };
            Some((PathBuf::clone(rel), message))
        })
        .collect()
}

fn first_difference(a: &Path, b: &Path) -> io::Result<Option<u64>> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    let (mut ba, mut bb) = (vec![0; 256 * 1024], vec![0; 256 * 1024]);
    let mut offset = 0;
    loop {
        let (na, nb) = (fill(&mut fa, &mut ba)?, fill(&mut fb, &mut bb)?);
        if ba[..na] != bb[..nb] {
            let at = ba[..na].iter().zip(&bb[..nb]).position(|(x, y)| x != y);
            return Ok(Some(offset + at.unwrap_or(na.min(nb)) as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        offset += na as u64;
    }
}

/// Reads until `buf` is full or the file ends, so that both files are compared in equal blocks.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..])? {
            0 => break,
            n => len += n,
        }
    }
    Ok(len)
}

fn show(rel: &Path) -> String {
    if rel.as_os_str().is_empty() {
        ".".to_owned()
    } else {
        rel.display().to_string()
    }
}

fn show_list(paths: &[&Path]) -> String {
    let shown: Vec<String> = paths.iter().map(|path| show(path)).collect();
    format!("[{}]", shown.join(", "))
}

fn show_rdev(rdev: u64) -> String {
    format!("{}:{}", rustix::fs::major(rdev), rustix::fs::minor(rdev))
}

fn type_name(meta: &Metadata) -> &'static str {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        "directory"
    } else if file_type.is_file() {
        "regular file"
    } else if file_type.is_symlink() {
        "symlink"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_fifo() {
        "fifo"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "unknown type"
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use rustix::fs::{AtFlags, Timespec, Timestamps, XattrFlags, CWD};

    use super::*;

    /// The same small tree, with the same times, whatever `root` is.
    fn make(root: &Path) {
        fs::create_dir_all(root.join("dir/sub")).unwrap();
        fs::write(root.join("dir/file"), "abc").unwrap();
        fs::write(root.join("hard1"), "linked").unwrap();
        fs::hard_link(root.join("hard1"), root.join("dir/hard2")).unwrap();
        fs::write(root.join("mode"), "").unwrap();
        fs::write(root.join("node"), "").unwrap();
        symlink("target", root.join("link")).unwrap();
        rustix::fs::setxattr(root.join("mode"), "user.k", b"v1", XattrFlags::empty())
            .expect("user xattrs on the temporary directory");
        for rel in [
            "dir/file",
            "dir/hard2",
            "mode",
            "node",
            "link",
            "dir/sub",
            "dir",
            "",
        ] {
            set_mtime(&root.join(rel), 1_700_000_000, 5);
        }
    }

    fn set_mtime(path: &Path, sec: i64, nsec: i64) {
        let time = Timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        };
        let times = Timestamps {
            last_access: time,
            last_modification: time,
        };
        rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).unwrap();
    }

    fn two_trees() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        for root in [&a, &b] {
            fs::create_dir(root).unwrap();
            make(root);
        }
        (tmp, a, b)
    }

    #[test]
    fn tree_diff_of_equal_trees_is_empty() {
        let (_tmp, a, b) = two_trees();
        assert_eq!(tree_diff(&a, &b), Vec::<String>::new());
        assert_same_tree(&a, &b);
    }

    #[test]
    fn tree_diff_reports_each_difference() {
        let (_tmp, a, b) = two_trees();
        fs::write(b.join("dir/file"), "abd").unwrap();
        fs::set_permissions(b.join("mode"), fs::Permissions::from_mode(0o4755)).unwrap();
        rustix::fs::setxattr(b.join("mode"), "user.k", b"v2", XattrFlags::empty()).unwrap();
        rustix::fs::setxattr(b.join("mode"), "user.new", b"", XattrFlags::empty()).unwrap();
        fs::remove_file(b.join("node")).unwrap();
        fs::create_dir(b.join("node")).unwrap();
        fs::remove_file(b.join("link")).unwrap();
        symlink("elsewhere", b.join("link")).unwrap();
        fs::remove_file(b.join("dir/hard2")).unwrap();
        fs::write(b.join("dir/hard2"), "linked").unwrap();
        fs::write(b.join("dir/sub/extra"), "").unwrap();
        for rel in [
            "dir/file",
            "dir/hard2",
            "dir/sub",
            "dir",
            "link",
            "mode",
            "node",
            "",
        ] {
            set_mtime(&b.join(rel), 1_700_000_000, 5);
        }
        set_mtime(&b.join("hard1"), 1_700_000_000, 6);

        let expected = [
            "dir/file: content differs at byte 2".to_owned(),
            "dir/hard2: linked to [hard1] != []".to_owned(),
            format!("dir/sub/extra: only in {}", b.display()),
            "hard1: mtime 1700000000.000000005 != 1700000000.000000006".to_owned(),
            "hard1: linked to [dir/hard2] != []".to_owned(),
            "link: symlink target \"target\" != \"elsewhere\"".to_owned(),
            "mode: mode 100644 != 104755".to_owned(),
            "mode: xattr user.k \"v1\" != \"v2\"".to_owned(),
            format!("mode: xattr user.new only in {}", b.display()),
            "node: type regular file != directory".to_owned(),
        ];
        assert_eq!(tree_diff(&a, &b), expected);
    }

    #[test]
    fn tree_diff_with_skips_what_it_is_told_to() {
        let (_tmp, a, b) = two_trees();
        set_mtime(&b.join("dir/file"), 1_700_000_000, 6);
        rustix::fs::setxattr(b.join("mode"), "user.k", b"v2", XattrFlags::empty()).unwrap();
        fs::remove_file(b.join("dir/hard2")).unwrap();
        fs::write(b.join("dir/hard2"), "linked").unwrap();
        set_mtime(&b.join("dir/hard2"), 1_700_000_000, 5);
        set_mtime(&b.join("dir"), 1_700_000_000, 5);

        let seconds_only = TreeDiffOptions {
            mtime_nsec: false,
            xattrs: false,
            hardlinks: false,
            ..TreeDiffOptions::default()
        };
        assert_eq!(tree_diff_with(&a, &b, &seconds_only), Vec::<String>::new());
        assert_eq!(tree_diff(&a, &b).len(), 4);
    }

    #[test]
    #[should_panic(expected = "differ:\n  dir/file: content differs at byte 0")]
    fn assert_same_tree_lists_the_differences() {
        let (_tmp, a, b) = two_trees();
        fs::write(b.join("dir/file"), "xyz").unwrap();
        set_mtime(&b.join("dir/file"), 1_700_000_000, 5);
        assert_same_tree(&a, &b);
    }
}
