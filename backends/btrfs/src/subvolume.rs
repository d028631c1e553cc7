//! The btrfs subvolume ioctls this backend needs, from the kernel's
//! `include/uapi/linux/btrfs.h`: create, snapshot, delete, and the read-only flag.
//!
//! Each operation that makes or deletes a subvolume is addressed as the kernel addresses it: an
//! open parent directory plus a single name in it.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::{self, Errno};
use rustix::ioctl::{self, opcode, Getter, Opcode, Setter};

/// `BTRFS_IOCTL_MAGIC`.
const MAGIC: u8 = 0x94;

/// `BTRFS_IOC_SUBVOL_CREATE`: `_IOW(0x94, 14, struct btrfs_ioctl_vol_args)`.
const SUBVOL_CREATE: Opcode = opcode::write::<VolArgs>(MAGIC, 14);
/// `BTRFS_IOC_SNAP_DESTROY`: `_IOW(0x94, 15, struct btrfs_ioctl_vol_args)`.
const SNAP_DESTROY: Opcode = opcode::write::<VolArgs>(MAGIC, 15);
/// `BTRFS_IOC_SNAP_CREATE_V2`: `_IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)`.
const SNAP_CREATE_V2: Opcode = opcode::write::<VolArgsV2>(MAGIC, 23);
/// `BTRFS_IOC_SUBVOL_GETFLAGS`: `_IOR(0x94, 25, __u64)`.
const SUBVOL_GETFLAGS: Opcode = opcode::read::<u64>(MAGIC, 25);
/// `BTRFS_IOC_SUBVOL_SETFLAGS`: `_IOW(0x94, 26, __u64)`.
const SUBVOL_SETFLAGS: Opcode = opcode::write::<u64>(MAGIC, 26);

/// `BTRFS_SUBVOL_RDONLY`, in the subvolume flags and in a snapshot request.
const SUBVOL_RDONLY: u64 = 1 << 1;

/// `BTRFS_FIRST_FREE_OBJECTID`: the inode number of every subvolume's top directory, and of no
/// other directory on btrfs.
const SUBVOLUME_ROOT_INO: u64 = 256;

/// `struct btrfs_ioctl_vol_args`: `__s64 fd; char name[BTRFS_PATH_NAME_MAX + 1]` (4087 + 1).
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_vol_args_v2`, with its first union (qgroup inheritance, unused here) as
/// the four words it spans and its second as the name (`BTRFS_SUBVOL_NAME_MAX + 1` = 4040).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; 4040],
}

// Both structures are exactly 4096 bytes in the kernel's header; the size is part of the opcode.
const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);

/// Whether `path` is the top directory of a subvolume (not following a final symlink).
pub fn is_subvolume(path: &Path) -> io::Result<bool> {
    let st = rustix::fs::lstat(path)?;
    Ok(FileType::from_raw_mode(st.st_mode) == FileType::Directory
        && st.st_ino == SUBVOLUME_ROOT_INO)
}

/// Creates an empty, writable subvolume at `path`.
pub fn create(path: &Path) -> io::Result<()> {
    let (parent, name) = open_parent(path)?;
    let args = VolArgs {
        fd: 0,
        name: name_field(name)?,
    };
    // SAFETY: BTRFS_IOC_SUBVOL_CREATE reads a `struct btrfs_ioctl_vol_args`, which VolArgs mirrors
    // (size checked above); the name is NUL-terminated within its field.
    unsafe { ioctl::ioctl(&parent, Setter::<SUBVOL_CREATE, VolArgs>::new(args)) }
}

/// Makes `dst` a snapshot of the subvolume whose top directory is `src`: read-only, or writable.
pub fn snapshot(src: &Path, dst: &Path, read_only: bool) -> io::Result<()> {
    let source = open_dir(src)?;
    let (parent, name) = open_parent(dst)?;
    let args = VolArgsV2 {
        fd: source.as_raw_fd().into(),
        transid: 0,
        flags: if read_only { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name: name_field(name)?,
    };
    // SAFETY: BTRFS_IOC_SNAP_CREATE_V2 reads a `struct btrfs_ioctl_vol_args_v2`, which VolArgsV2
    // mirrors (size checked above); `fd` stays open for the whole call; no flag asks the kernel
    // to follow the qgroup pointer or to write a transid back.
    unsafe { ioctl::ioctl(&parent, Setter::<SNAP_CREATE_V2, VolArgsV2>::new(args)) }
}

/// Deletes the subvolume whose top directory is `path`, with everything in it. A subvolume
/// holding other subvolumes is refused with `ENOTEMPTY`.
pub fn delete(path: &Path) -> io::Result<()> {
    let (parent, name) = open_parent(path)?;
    let args = VolArgs {
        fd: 0,
        name: name_field(name)?,
    };
    // SAFETY: BTRFS_IOC_SNAP_DESTROY reads a `struct btrfs_ioctl_vol_args`, which VolArgs mirrors
    // (size checked above); the name is NUL-terminated within its field.
    unsafe { ioctl::ioctl(&parent, Setter::<SNAP_DESTROY, VolArgs>::new(args)) }
}

/// Makes the subvolume whose top directory is `path` read-only or writable, keeping its other
/// flags. Returns whether it was read-only before.
pub fn set_read_only(path: &Path, read_only: bool) -> io::Result<bool> {
    let dir = open_dir(path)?;
    // SAFETY: BTRFS_IOC_SUBVOL_GETFLAGS writes one `__u64` into the buffer Getter provides.
    let flags = unsafe { ioctl::ioctl(&dir, Getter::<SUBVOL_GETFLAGS, u64>::new()) }?;
    let was_read_only = flags & SUBVOL_RDONLY != 0;
    if was_read_only != read_only {
        let flags = flags ^ SUBVOL_RDONLY;
        // SAFETY: BTRFS_IOC_SUBVOL_SETFLAGS reads one `__u64` through the pointer Setter passes.
        unsafe { ioctl::ioctl(&dir, Setter::<SUBVOL_SETFLAGS, u64>::new(flags)) }?;
    }
    Ok(was_read_only)
}

fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The directory `path` is in, opened, and `path`'s last component.
fn open_parent(path: &Path) -> io::Result<(OwnedFd, &OsStr)> {
    let name = path.file_name().ok_or(Errno::INVAL)?;
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    Ok((open_dir(parent)?, name))
}

/// `name` in a zeroed, NUL-terminated name field of `N` bytes.
fn name_field<const N: usize>(name: &OsStr) -> io::Result<[u8; N]> {
    let bytes = name.as_bytes();
    if bytes.len() >= N {
        return Err(Errno::NAMETOOLONG);
    }
    let mut field = [0; N];
    field[..bytes.len()].copy_from_slice(bytes);
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values `<linux/btrfs.h>` gives these macros on x86_64 and aarch64, as printed by a C
    /// program including the header.
    #[test]
    fn opcodes_match_the_kernel_header() {
        assert_eq!(SUBVOL_CREATE, 0x5000_940e);
        assert_eq!(SNAP_DESTROY, 0x5000_940f);
        assert_eq!(SNAP_CREATE_V2, 0x5000_9417);
        assert_eq!(SUBVOL_GETFLAGS, 0x8008_9419);
        assert_eq!(SUBVOL_SETFLAGS, 0x4008_941a);
    }

    #[test]
    fn names_are_nul_terminated_and_bounded() {
        let field: [u8; 8] = name_field(OsStr::new("abc")).unwrap();
        assert_eq!(&field, b"abc\0\0\0\0\0");
        let too_long = name_field::<4>(OsStr::new("abcd"));
        assert_eq!(too_long, Err(Errno::NAMETOOLONG));
    }
}
