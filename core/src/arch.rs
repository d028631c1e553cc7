//! Architectures: Gentoo's names for them, how their programs say which they are (the ELF
//! header's class, byte order and machine), and what the host runs natively.
//!
//! A stage records the architecture of its programs when it is imported; a root whose programs
//! the host cannot run natively runs them through qemu-user (see [`crate::chroot::binfmt`]).

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use goblin::elf::header::{EM_386, EM_AARCH64, EM_ARM, EM_PPC64, EM_RISCV, EM_X86_64};
use rustix::fs::{Mode, OFlags};

use crate::files::in_root::RootDir;
use crate::storage::StorageError;

/// One architecture, as the tools around it name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arch {
    /// Gentoo's name (`ARCH`, keywords, profiles): amd64, arm64, …
    pub gentoo: &'static str,
    /// What `uname -m` says on it.
    pub machine: &'static str,
    /// Its qemu-user emulator and binfmt handler: `qemu-{qemu}`.
    pub qemu: &'static str,
    /// The kernel's `ARCH=`.
    pub kernel: &'static str,
    /// Debian's cross toolchain prefix (`CROSS_COMPILE=`).
    pub cross_prefix: &'static str,
    /// The ELF class (64-bit), byte order (little-endian) and machine of its programs.
    elf: (bool, bool, u16),
}

/// The architectures autogentoo knows the programs of.
pub const ARCHES: &[Arch] = &[
    Arch {
        gentoo: "amd64",
        machine: "x86_64",
        qemu: "x86_64",
        kernel: "x86",
        cross_prefix: "x86_64-linux-gnu-",
        elf: (true, true, EM_X86_64),
    },
    Arch {
        gentoo: "x86",
        machine: "i686",
        qemu: "i386",
        kernel: "x86",
        cross_prefix: "i686-linux-gnu-",
        elf: (false, true, EM_386),
    },
    Arch {
        gentoo: "arm64",
        machine: "aarch64",
        qemu: "aarch64",
        kernel: "arm64",
        cross_prefix: "aarch64-linux-gnu-",
        elf: (true, true, EM_AARCH64),
    },
    Arch {
        gentoo: "arm",
        machine: "armv7l",
        qemu: "arm",
        kernel: "arm",
        cross_prefix: "arm-linux-gnueabihf-",
        elf: (false, true, EM_ARM),
    },
    Arch {
        gentoo: "riscv",
        machine: "riscv64",
        qemu: "riscv64",
        kernel: "riscv",
        cross_prefix: "riscv64-linux-gnu-",
        elf: (true, true, EM_RISCV),
    },
    Arch {
        gentoo: "ppc64",
        machine: "ppc64le",
        qemu: "ppc64le",
        kernel: "powerpc",
        cross_prefix: "powerpc64le-linux-gnu-",
        elf: (true, true, EM_PPC64),
    },
];

/// Programs a stage or root is expected to hold, in the order they are looked at: the first
/// that is an ELF file says what the tree's architecture is.
const PROGRAMS: &[&str] = &[
    "bin/busybox",
    "bin/sh",
    "usr/bin/env",
    "bin/ls",
    "usr/bin/ls",
    "sbin/init",
    "usr/lib/systemd/systemd",
];

impl Arch {
    /// The architecture Gentoo calls `name`.
    pub fn named(name: &str) -> Option<Self> {
        ARCHES.iter().copied().find(|a| a.gentoo == name)
    }

    /// The architecture whose kernel is built with `ARCH=name` (`x86` is amd64's); `None` for a
    /// kernel architecture autogentoo does not build.
    pub fn of_kernel(name: &str) -> Option<Self> {
        ARCHES.iter().copied().find(|a| a.kernel == name)
    }

    /// The make target of its EFI-stub kernel, and where kbuild leaves it under `arch/ARCH/boot`.
    pub fn kernel_image(self) -> &'static str {
        match self.kernel {
            "x86" => "bzImage",
            _ => "Image",
        }
    }

    /// The removable-media path UEFI firmware boots on it: `EFI/BOOT/{name}`.
    pub fn efi_boot_file(self) -> Option<&'static str> {
        match self.gentoo {
            "amd64" => Some("BOOTX64.EFI"),
            "x86" => Some("BOOTIA32.EFI"),
            "arm64" => Some("BOOTAA64.EFI"),
            "arm" => Some("BOOTARM.EFI"),
            "riscv" => Some("BOOTRISCV64.EFI"),
            _ => None,
        }
    }

    /// The machine field of a PE/COFF (EFI) image built for it.
    pub fn pe_machine(self) -> Option<u16> {
        match self.gentoo {
            "amd64" => Some(0x8664),
            "x86" => Some(0x014c),
            "arm64" => Some(0xaa64),
            "arm" => Some(0x01c2),
            "riscv" => Some(0x5064),
            _ => None,
        }
    }

    /// The architecture of an EFI application, from its PE header's machine field.
    pub fn of_pe_machine(machine: u16) -> Option<Self> {
        ARCHES
            .iter()
            .copied()
            .find(|a| a.pe_machine() == Some(machine))
    }

    /// The architecture this program runs on.
    pub fn host() -> Self {
        let machine = match std::env::consts::ARCH {
            "x86" => "i686",
            "arm" => "armv7l",
            "powerpc64" => "ppc64le",
            other => other,
        };
        ARCHES
            .iter()
            .copied()
            .find(|a| a.machine == machine)
            .expect("autogentoo runs on an architecture it knows")
    }

    /// The architecture of a program, from its ELF header: `None` when `header` is not one of
    /// an architecture in [`ARCHES`].
    pub fn of_elf(header: &[u8]) -> Option<Self> {
        if header.len() < 20 || &header[..4] != b"\x7fELF" {
            return None;
        }
        let is_64 = header[4] == 2;
        let little = header[5] == 1;
        let machine = if little {
            u16::from_le_bytes([header[18], header[19]])
        } else {
            u16::from_be_bytes([header[18], header[19]])
        };
        ARCHES
            .iter()
            .copied()
            .find(|a| a.elf == (is_64, little, machine))
    }

    /// The ELF class (64-bit), byte order (little-endian) and machine of its programs.
    pub(crate) fn elf(self) -> (bool, bool, u16) {
        self.elf
    }

    /// Whether the host runs this architecture's programs without an emulator.
    pub fn is_native(self) -> bool {
        let host = Self::host();
        // An x86_64 kernel runs i686 programs, as Gentoo's multilib does.
        self == host || (host.gentoo == "amd64" && self.gentoo == "x86")
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.gentoo)
    }
}

/// The architecture of the tree at `root` and the program that says so (`bin/busybox`, …),
/// read through the tree's own symlinks, never outside it; `None` when none of the usual
/// programs is there, or none is an ELF file of a known architecture.
pub fn of_tree(root: &Path) -> Result<Option<(Arch, &'static str)>, StorageError> {
    let dir = RootDir::open(root)?;
    for program in PROGRAMS {
        let Ok(fd) = dir.open_at(Path::new(program), OFlags::RDONLY, Mode::empty()) else {
            continue;
        };
        let mut header = [0u8; 64];
        let read = read_prefix(fd, &mut header);
        if let Some(arch) = Arch::of_elf(&header[..read]) {
            return Ok(Some((arch, program)));
        }
    }
    Ok(None)
}

/// Reads what fits of the start of a file; a file that cannot be read reads as empty.
fn read_prefix(fd: OwnedFd, buffer: &mut [u8]) -> usize {
    let mut file = std::fs::File::from(fd);
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => filled += n,
        }
    }
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(is_64: bool, little: bool, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = if is_64 { 2 } else { 1 };
        h[5] = if little { 1 } else { 2 };
        let m = if little {
            machine.to_le_bytes()
        } else {
            machine.to_be_bytes()
        };
        h[18..20].copy_from_slice(&m);
        h
    }

    #[test]
    fn elf_headers_name_their_architecture() {
        assert_eq!(
            Arch::of_elf(&header(true, true, EM_X86_64)).unwrap().gentoo,
            "amd64"
        );
        assert_eq!(
            Arch::of_elf(&header(true, true, EM_AARCH64))
                .unwrap()
                .gentoo,
            "arm64"
        );
        assert_eq!(
            Arch::of_elf(&header(false, true, EM_386)).unwrap().gentoo,
            "x86"
        );
        assert_eq!(
            Arch::of_elf(&header(true, true, EM_RISCV)).unwrap().gentoo,
            "riscv"
        );
        // Big-endian ppc64 and 32-bit aarch64 are not what these names mean.
        assert_eq!(Arch::of_elf(&header(true, false, EM_PPC64)), None);
        assert_eq!(Arch::of_elf(&header(false, true, EM_AARCH64)), None);
        assert_eq!(Arch::of_elf(b"#!/bin/sh\n"), None);
        assert_eq!(Arch::of_elf(b"\x7fELF"), None);
    }

    #[test]
    fn the_host_is_native_and_others_are_not() {
        let host = Arch::host();
        assert!(host.is_native());
        assert_eq!(Arch::named(host.gentoo), Some(host));
        let other = ARCHES.iter().find(|a| a.kernel != host.kernel).unwrap();
        assert!(!other.is_native());
    }

    #[test]
    fn a_tree_is_known_by_its_programs_through_its_own_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("bin")).unwrap();
        assert_eq!(of_tree(root).unwrap(), None);
        // /bin/sh links to busybox, absolutely: resolved inside the tree.
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/busybox"), header(true, true, EM_AARCH64)).unwrap();
        std::os::unix::fs::symlink("/usr/bin/busybox", root.join("bin/sh")).unwrap();
        let (arch, program) = of_tree(root).unwrap().unwrap();
        assert_eq!((arch.gentoo, program), ("arm64", "bin/sh"));
        // A link that climbs out finds nothing of the host's.
        std::fs::remove_file(root.join("bin/sh")).unwrap();
        std::os::unix::fs::symlink("../../../../proc/self/exe", root.join("bin/sh")).unwrap();
        assert_eq!(of_tree(root).unwrap(), None);
    }
}
