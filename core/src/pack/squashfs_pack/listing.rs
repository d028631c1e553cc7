//! The images in `repos/`, as `repo list` shows them: each one's superblock, read without
//! backhand so that images made by any tool are listed.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{PackError, IMAGE_SUFFIX};
use crate::storage::io_err;

/// The name of a superblock's compressor id, for images made by any tool.
pub fn compressor_name(id: u16) -> String {
    match id {
        1 => "gzip".to_owned(),
        2 => "lzma".to_owned(),
        3 => "lzo".to_owned(),
        4 => "xz".to_owned(),
        5 => "lz4".to_owned(),
        6 => "zstd".to_owned(),
        other => format!("unknown ({other})"),
    }
}

/// The fields of a SquashFS 4.0 superblock that a listing shows (all little-endian).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub inode_count: u32,
    pub mkfs_time: u32,
    pub block_size: u32,
    pub compression: u16,
    pub bytes_used: u64,
}

impl Superblock {
    /// The superblock's size, at the start of the image.
    pub const SIZE: usize = 96;

    /// Parses the superblock; the error says why it is not SquashFS 4.0.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < Self::SIZE {
            return Err(format!("{} bytes, shorter than a superblock", bytes.len()));
        }
        if &bytes[0..4] != b"hsqs" {
            return Err("no 'hsqs' magic".to_owned());
        }
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let (major, minor) = (u16_at(28), u16_at(30));
        if (major, minor) != (4, 0) {
            return Err(format!("SquashFS version {major}.{minor}"));
        }
        Ok(Self {
            inode_count: u32_at(4),
            mkfs_time: u32_at(8),
            block_size: u32_at(12),
            compression: u16_at(20),
            bytes_used: u64_at(40),
        })
    }
}

/// One image in `repos/`, as `repo list` shows it.
#[derive(Debug, Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub path: PathBuf,
    /// The file's size in bytes.
    pub size: u64,
    /// The superblock's mkfs time, in seconds since 1970.
    pub date: u32,
    /// The superblock's inode count.
    pub entries: u32,
    pub compression: String,
    pub block_size: u32,
}

/// A `*.sqfs` file of `repos/` that is not an image.
#[derive(Debug)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skipping {}: not a SquashFS 4.0 image ({})",
            self.path.display(),
            self.reason
        )
    }
}

/// The images in `repos/` (files named `NAME.sqfs`), sorted by name, and the `*.sqfs` files
/// that are not SquashFS 4.0. A missing `repos/` has no images.
pub fn list_images(repos: &Path) -> Result<(Vec<ImageInfo>, Vec<Skipped>), PackError> {
    let entries = match std::fs::read_dir(repos) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(io_err("read", repos)(e).into()),
    };
    let mut images = Vec::new();
    let mut skipped = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("read", repos))?;
        let file_name = entry.file_name();
        let Some(name) = file_name
            .to_str()
            .and_then(|n| n.strip_suffix(IMAGE_SUFFIX))
            .filter(|n| !n.is_empty() && !n.starts_with('.'))
        else {
            continue;
        };
        let path = entry.path();
        match read_image_info(&path) {
            Ok((size, superblock)) => images.push(ImageInfo {
                name: name.to_owned(),
                path,
                size,
                date: superblock.mkfs_time,
                entries: superblock.inode_count,
                compression: compressor_name(superblock.compression),
                block_size: superblock.block_size,
            }),
            Err(reason) => skipped.push(Skipped { path, reason }),
        }
    }
    images.sort_by(|a, b| a.name.cmp(&b.name));
    skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((images, skipped))
}

/// The size and superblock of the image at `path`; the error says why it is not one.
fn read_image_info(path: &Path) -> Result<(u64, Superblock), String> {
    let file = File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let size = file.metadata().map_err(|e| e.to_string())?.len();
    let mut bytes = [0; Superblock::SIZE];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read it: {e}")),
        }
    }
    Superblock::parse(&bytes[..filled]).map(|superblock| (size, superblock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superblocks_are_parsed_and_checked() {
        let mut bytes = [0u8; 96];
        bytes[0..4].copy_from_slice(b"hsqs");
        bytes[4..8].copy_from_slice(&7u32.to_le_bytes());
        bytes[8..12].copy_from_slice(&1_700_000_000u32.to_le_bytes());
        bytes[12..16].copy_from_slice(&131_072u32.to_le_bytes());
        bytes[20..22].copy_from_slice(&6u16.to_le_bytes());
        bytes[28..30].copy_from_slice(&4u16.to_le_bytes());
        bytes[40..48].copy_from_slice(&4096u64.to_le_bytes());
        assert_eq!(
            Superblock::parse(&bytes),
            Ok(Superblock {
                inode_count: 7,
                mkfs_time: 1_700_000_000,
                block_size: 131_072,
                compression: 6,
                bytes_used: 4096,
            })
        );
        assert!(Superblock::parse(&bytes[..95]).is_err());
        let mut v3 = bytes;
        v3[28..30].copy_from_slice(&3u16.to_le_bytes());
        assert!(Superblock::parse(&v3).unwrap_err().contains("3.0"));
        let mut not = bytes;
        not[0..4].copy_from_slice(b"sqsh");
        assert!(Superblock::parse(&not).unwrap_err().contains("magic"));
    }
}
