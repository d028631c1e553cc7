//! The kernel's own list of mounts (`/proc/self/mountinfo`): the only source of truth for what
//! is mounted where, so nothing we keep can go stale.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// Mount points at or below `path`, deepest first, as the kernel lists them.
pub fn mounts_below(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    let text = std::fs::read("/proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = text
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(|field| PathBuf::from(OsString::from_vec(unescape(field))))
        .filter(|point| point.starts_with(path))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    points.dedup();
    Ok(points)
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
    fn the_root_mount_is_listed() {
        assert!(mounts_below(Path::new("/"))
            .unwrap()
            .contains(&PathBuf::from("/")));
        assert!(mounts_below(Path::new("/nonexistent-autogentoo"))
            .unwrap()
            .is_empty());
    }
}
