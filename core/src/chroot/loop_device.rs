//! Loop devices, for mounting SquashFS images of the ebuild repository.
//!
//! Devices are attached read-only with `LO_FLAGS_AUTOCLEAR`: the kernel detaches one when the
//! last user goes, so an unmount — or the end of a private mount namespace, even after SIGKILL —
//! frees it with nothing of ours left to run.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::ioctl::{self, Ioctl, IoctlOutput, NoArg, Opcode, Setter};

use crate::storage::{io_err, StorageError};

const LOOP_CTL_GET_FREE: Opcode = 0x4C82;
const LOOP_CONFIGURE: Opcode = 0x4C0A;
const LOOP_CLR_FD: Opcode = 0x4C01;
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// `LOOP_CTL_GET_FREE` returns the device number as the ioctl's result.
struct GetFree;

// SAFETY: the opcode takes no argument and returns a device number or an error.
unsafe impl Ioctl for GetFree {
    type Output = u32;
    const IS_MUTATING: bool = false;

    fn opcode(&self) -> Opcode {
        LOOP_CTL_GET_FREE
    }

    fn as_ptr(&mut self) -> *mut std::ffi::c_void {
        std::ptr::null_mut()
    }

    unsafe fn output_from_ptr(
        out: IoctlOutput,
        _: *mut std::ffi::c_void,
    ) -> rustix::io::Result<u32> {
        Ok(out as u32)
    }
}

/// An attached loop device. Its file is held open until [`LoopDevice::release`] or drop; while
/// nothing else uses the device, closing it detaches it (autoclear).
pub struct LoopDevice {
    file: File,
    path: PathBuf,
}

impl LoopDevice {
    /// Attaches `image` read-only to a free loop device.
    pub fn attach(image: &Path) -> Result<Self, StorageError> {
        let backing = File::open(image).map_err(io_err("open", image))?;
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .map_err(|e| missing_loop_support(e, "/dev/loop-control"))?;
        // Another process may take the device between GET_FREE and CONFIGURE: ask again.
        for _ in 0..32 {
            // SAFETY: GetFree matches LOOP_CTL_GET_FREE's contract.
            let number = unsafe { ioctl::ioctl(&control, GetFree) }.map_err(|e| {
                io_err("find a free loop device through", "/dev/loop-control")(e.into())
            })?;
            let path = PathBuf::from(format!("/dev/loop{number}"));
            let file = OpenOptions::new()
                .read(true)
                .open(&path)
                .map_err(|e| missing_loop_support(e, &path))?;
            // SAFETY: loop_info64 is plain integers and byte arrays; all zeroes is its empty value.
            let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
            info.flags = LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR;
            let name = image.as_os_str().as_encoded_bytes();
            let len = name.len().min(info.file_name.len() - 1);
            info.file_name[..len].copy_from_slice(&name[..len]);
            let config = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info,
                reserved: [0; 8],
            };
            // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which LoopConfig mirrors.
            match unsafe { ioctl::ioctl(&file, Setter::<LOOP_CONFIGURE, LoopConfig>::new(config)) }
            {
                Ok(()) => return Ok(Self { file, path }),
                Err(Errno::BUSY) => continue,
                Err(e) => return Err(io_err("attach a loop device for", image)(e.into())),
            }
        }
        Err(io_err("attach a loop device for", image)(
            std::io::Error::other("every free loop device was taken by others; try again"),
        ))
    }

    /// The device node, e.g. `/dev/loop3`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lets go of the device: once a mount holds it, the kernel detaches it when that goes.
    pub fn release(self) {
        drop(self.file);
    }
}

/// Detaches a loop device that somebody attached without autoclear. A device that is already
/// free, or still in use, is left as it is.
pub fn detach(device: &Path) -> Result<(), StorageError> {
    let file = match File::open(device) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("open", device)(e)),
    };
    // SAFETY: LOOP_CLR_FD takes no argument.
    match unsafe { ioctl::ioctl(&file, NoArg::<LOOP_CLR_FD>::new()) } {
        Ok(()) | Err(Errno::NXIO) | Err(Errno::BUSY) => Ok(()),
        Err(e) => Err(io_err("detach", device)(e.into())),
    }
}

fn missing_loop_support(err: std::io::Error, path: impl AsRef<Path>) -> StorageError {
    if err.kind() == std::io::ErrorKind::NotFound {
        StorageError::MissingPrerequisite {
            what: format!("loop device support ({})", path.as_ref().display()),
            hint: "load the loop module or use a kernel with CONFIG_BLK_DEV_LOOP".into(),
        }
    } else {
        io_err("open", path.as_ref())(err)
    }
}
