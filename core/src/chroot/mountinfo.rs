//! The kernel's own list of mounts (`/proc/self/mountinfo`): the only source of truth for what
//! is mounted where, so nothing we keep can go stale.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The mount's id; ids grow with mount order.
    pub id: u64,
    pub parent: u64,
    pub point: PathBuf,
    pub fstype: String,
    /// What is mounted: a device (`/dev/loop3`), or the filesystem's name for virtual ones.
    pub source: PathBuf,
    /// It is in a peer group: mounts and unmounts below it propagate to other namespaces.
    pub shared: bool,
}

/// Every mount of this process's mount namespace, in the kernel's order.
pub fn read() -> std::io::Result<Vec<Mount>> {
    let text = std::fs::read("/proc/self/mountinfo")?;
    Ok(text.split(|&b| b == b'\n').filter_map(parse_line).collect())
}

/// Mounts strictly below `path` (not `path` itself), deepest first; of mounts stacked on one
/// point, the newest first. Unmounting in this order never meets a mount with others on it.
pub fn mounts_under(path: &Path) -> std::io::Result<Vec<Mount>> {
    let mut below: Vec<(usize, Mount)> = read()?
        .into_iter()
        .enumerate()
        .filter(|(_, m)| m.point.starts_with(path) && m.point != path)
        .collect();
    below.sort_by_key(|(order, m)| std::cmp::Reverse((m.point.components().count(), *order)));
    Ok(below.into_iter().map(|(_, m)| m).collect())
}

/// Mount points at or below `path`, deepest first.
pub fn mounts_below(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut points: Vec<PathBuf> = read()?
        .into_iter()
        .map(|m| m.point)
        .filter(|point| point.starts_with(path))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    Ok(points)
}

/// Whether something is mounted exactly at `path`.
pub fn is_mount_point(path: &Path) -> std::io::Result<bool> {
    Ok(read()?.iter().any(|m| m.point == path))
}

/// `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL…] - FSTYPE SOURCE SUPER_OPTIONS`
fn parse_line(line: &[u8]) -> Option<Mount> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    let separator = fields.iter().position(|f| *f == b"-")?;
    let text = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
    Some(Mount {
        id: text(fields.first()?).parse().ok()?,
        parent: text(fields.get(1)?).parse().ok()?,
        point: PathBuf::from(OsString::from_vec(unescape(fields.get(4)?))),
        fstype: text(fields.get(separator + 1)?),
        source: PathBuf::from(OsString::from_vec(unescape(fields.get(separator + 2)?))),
        shared: fields
            .get(6..separator)?
            .iter()
            .any(|f| f.starts_with(b"shared:")),
    })
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\012` for a newline, …).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let octal = field
            .get(i + 1..i + 4)
            .filter(|d| field[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(field[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape(br"/mnt/a\040b\012c"), b"/mnt/a b\nc");
        assert_eq!(unescape(br"/plain\"), b"/plain\\");
    }

    #[test]
    fn lines_with_optional_fields_parse() {
        let line = br"36 35 98:0 /mnt1 /mnt/with\040space rw,noatime master:1 shared:2 - squashfs /dev/loop3 ro";
        let mount = parse_line(line).unwrap();
        assert_eq!(mount.id, 36);
        assert_eq!(mount.parent, 35);
        assert_eq!(mount.point, PathBuf::from("/mnt/with space"));
        assert_eq!(mount.fstype, "squashfs");
        assert_eq!(mount.source, PathBuf::from("/dev/loop3"));
        assert!(mount.shared);
        let private = parse_line(b"36 35 98:0 / / rw - ext4 /dev/vda rw").unwrap();
        assert!(!private.shared);
        assert!(parse_line(b"garbage").is_none());
    }

    #[test]
    fn the_root_mount_is_listed() {
        assert!(mounts_below(Path::new("/"))
            .unwrap()
            .contains(&PathBuf::from("/")));
        assert!(mounts_below(Path::new("/nonexistent-autogentoo"))
            .unwrap()
            .is_empty());
        assert!(is_mount_point(Path::new("/")).unwrap());
    }
}
