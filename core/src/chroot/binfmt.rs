//! Running a foreign architecture's programs in a root: the kernel's binfmt_misc hands them to
//! qemu-user. The handler must have the F (fix-binary) flag: the kernel then opens the emulator
//! when the handler is registered, so it runs inside the root's private namespaces and after
//! pivot_root, where the host's `/usr/libexec/qemu-binfmt` is not to be seen.
//!
//! A handler is registered only when the site allows it (`build.binfmt = "register"`), from
//! Debian's qemu-user-static (`/usr/lib/binfmt.d/qemu-ARCH.conf`); otherwise the error says
//! what to run.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::arch::Arch;

/// Where binfmt_misc is mounted.
const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
/// Where Debian's qemu-user-static keeps its handlers' registration lines.
const QEMU_CONFS: &str = "/usr/lib/binfmt.d";

/// What autogentoo may do about a missing handler (`build.binfmt` in the site config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinfmtPolicy {
    /// Check, and say what to run when a handler is missing.
    #[default]
    Check,
    /// Register Debian's qemu-user-static handler when one is missing.
    Register,
}

/// Why a root's programs cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum BinfmtError {
    #[error(
        "the root's programs are {arch} and binfmt_misc is not mounted, so nothing runs them; \
         run `mount -t binfmt_misc binfmt_misc {BINFMT_DIR} && cat {conf} > {BINFMT_DIR}/register`, \
         or set `binfmt = \"register\"` in the site config's [build]",
        conf = conf_path(*arch).display()
    )]
    NotMounted { arch: Arch },
    #[error(
        "no binfmt_misc handler runs {arch} programs; run `cat {conf} > {BINFMT_DIR}/register` \
         (from qemu-user-static), or set `binfmt = \"register\"` in the site config's [build]",
        conf = conf_path(*arch).display()
    )]
    NoHandler { arch: Arch },
    #[error(
        "the binfmt_misc handler '{name}' runs {arch} programs without the F flag, so not inside \
         a root; replace it: `echo -1 > {BINFMT_DIR}/{name} && cat {conf} > {BINFMT_DIR}/register`",
        conf = conf_path(*arch).display()
    )]
    NoFixBinary { arch: Arch, name: String },
    #[error(
        "{} is missing, so {arch} programs cannot be run here; apt-get install qemu-user-static",
        conf_path(*arch).display()
    )]
    NoQemu { arch: Arch },
    #[error("cannot {what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn conf_path(arch: Arch) -> PathBuf {
    Path::new(QEMU_CONFS).join(format!("qemu-{}.conf", arch.qemu))
}

/// One registered handler, as binfmt_misc shows it.
#[derive(Debug, PartialEq, Eq)]
struct Handler {
    name: String,
    enabled: bool,
    flags: String,
    offset: usize,
    magic: Vec<u8>,
    mask: Vec<u8>,
}

impl Handler {
    /// Reads a handler's file (`enabled`, `interpreter …`, `flags: …`, `offset …`, `magic …`,
    /// `mask …`); `None` for an extension handler or what cannot be read as one.
    fn parse(name: &str, text: &str) -> Option<Self> {
        let mut handler = Self {
            name: name.to_owned(),
            enabled: false,
            flags: String::new(),
            offset: 0,
            magic: Vec::new(),
            mask: Vec::new(),
        };
        for line in text.lines() {
            match line.split_once([' ', ':']) {
                _ if line == "enabled" => handler.enabled = true,
                Some(("flags", flags)) => handler.flags = flags.trim().to_owned(),
                Some(("offset", n)) => handler.offset = n.trim().parse().ok()?,
                Some(("magic", hex)) => handler.magic = unhex(hex.trim())?,
                Some(("mask", hex)) => handler.mask = unhex(hex.trim())?,
                _ => {}
            }
        }
        (!handler.magic.is_empty()).then_some(handler)
    }

    /// Whether the kernel hands a program whose file starts with `header` to this handler.
    fn matches(&self, header: &[u8]) -> bool {
        let Some(bytes) = header.get(self.offset..self.offset + self.magic.len()) else {
            return false;
        };
        bytes
            .iter()
            .zip(&self.magic)
            .enumerate()
            .all(|(i, (b, m))| {
                let mask = self.mask.get(i).copied().unwrap_or(0xff);
                b & mask == m & mask
            })
    }
}

fn unhex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The first bytes of an executable of `arch`, as its ELF header has them (a position
/// independent one: handlers mask the low bit of the type).
fn sample_header(arch: Arch) -> [u8; 20] {
    let (is_64, little, machine) = arch.elf();
    let mut header = [0u8; 20];
    header[..4].copy_from_slice(b"\x7fELF");
    header[4] = if is_64 { 2 } else { 1 };
    header[5] = if little { 1 } else { 2 };
    header[6] = 1;
    let (kind, machine) = if little {
        (3u16.to_le_bytes(), machine.to_le_bytes())
    } else {
        (3u16.to_be_bytes(), machine.to_be_bytes())
    };
    header[16..18].copy_from_slice(&kind);
    header[18..20].copy_from_slice(&machine);
    header
}

/// The enabled handler that runs `arch`'s programs, if any; `Ok(None)` also when binfmt_misc
/// is mounted and none does. `Err(NotMounted)` when it is not mounted.
fn handler_for(arch: Arch, dir: &Path) -> Result<Option<Handler>, BinfmtError> {
    if !dir.join("register").exists() {
        return Err(BinfmtError::NotMounted { arch });
    }
    let io = |what, path: &Path| {
        let path = path.to_owned();
        move |source| BinfmtError::Io { what, path, source }
    };
    let header = sample_header(arch);
    let mut entries: Vec<_> = fs::read_dir(dir)
        .map_err(io("list", dir))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "register" && name != "status")
        .collect();
    entries.sort();
    for name in entries {
        let path = dir.join(&name);
        let Ok(text) = fs::read_to_string(&path) else {
            continue; // removed meanwhile
        };
        if let Some(handler) = Handler::parse(&name, &text) {
            if handler.enabled && handler.matches(&header) {
                return Ok(Some(handler));
            }
        }
    }
    Ok(None)
}

/// Makes sure `arch`'s programs run here: natively, or through a binfmt_misc handler with the
/// F flag, registered from qemu-user-static when `policy` allows it. Returns the handler's name
/// for a foreign arch.
pub fn ensure(arch: Arch, policy: BinfmtPolicy) -> Result<Option<String>, BinfmtError> {
    if arch.is_native() {
        return Ok(None);
    }
    let dir = Path::new(BINFMT_DIR);
    let found = match handler_for(arch, dir) {
        Err(BinfmtError::NotMounted { .. }) if policy == BinfmtPolicy::Register => {
            mount_binfmt_misc(dir)?;
            handler_for(arch, dir)?
        }
        other => other?,
    };
    let handler = match (found, policy) {
        (Some(handler), _) => handler,
        (None, BinfmtPolicy::Check) => return Err(BinfmtError::NoHandler { arch }),
        (None, BinfmtPolicy::Register) => {
            register(arch, dir)?;
            handler_for(arch, dir)?.ok_or(BinfmtError::NoHandler { arch })?
        }
    };
    if !handler.flags.contains('F') {
        return Err(BinfmtError::NoFixBinary {
            arch,
            name: handler.name,
        });
    }
    Ok(Some(handler.name))
}

/// An architecture this host can build for, and how its programs run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Runnable {
    /// Gentoo's name.
    pub arch: &'static str,
    /// `native`, or the binfmt_misc handler (with the F flag) that runs them through qemu-user.
    pub through: String,
}

/// The architectures whose roots this host can run and build, as things stand (nothing is
/// registered): natively, or through a handler with the F flag. What a farm routes systems by.
pub fn runnable() -> Vec<Runnable> {
    let dir = Path::new(BINFMT_DIR);
    crate::arch::ARCHES
        .iter()
        .filter_map(|arch| {
            let through = if arch.is_native() {
                "native".to_owned()
            } else {
                match handler_for(*arch, dir) {
                    Ok(Some(handler)) if handler.flags.contains('F') => handler.name,
                    _ => return None,
                }
            };
            Some(Runnable {
                arch: arch.gentoo,
                through,
            })
        })
        .collect()
}

fn mount_binfmt_misc(dir: &Path) -> Result<(), BinfmtError> {
    tracing::info!("mounting binfmt_misc on {}", dir.display());
    rustix::mount::mount(
        "binfmt_misc",
        dir,
        "binfmt_misc",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .map_err(|e| BinfmtError::Io {
        what: "mount binfmt_misc on",
        path: dir.to_owned(),
        source: e.into(),
    })
}

/// Registers qemu-user-static's handler for `arch` (its line, with the F flag Debian gives it).
fn register(arch: Arch, dir: &Path) -> Result<(), BinfmtError> {
    let conf = conf_path(arch);
    let text = match fs::read_to_string(&conf) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(BinfmtError::NoQemu { arch })
        }
        Err(source) => {
            return Err(BinfmtError::Io {
                what: "read",
                path: conf,
                source,
            })
        }
    };
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(':'))
        .ok_or(BinfmtError::NoQemu { arch })?;
    tracing::info!("registering the binfmt_misc handler of {}", conf.display());
    let register = dir.join("register");
    fs::write(&register, line).map_err(|source| BinfmtError::Io {
        what: "register a handler in",
        path: register,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN_AARCH64: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
        flags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n\
        mask ffffffffffffff00fffffffffffffffffeffffff\n";

    #[test]
    fn a_handler_runs_the_programs_its_magic_and_mask_match() {
        let handler = Handler::parse("qemu-aarch64", DEBIAN_AARCH64).unwrap();
        assert!(handler.enabled);
        assert_eq!(handler.flags, "POCF");
        let arm64 = Arch::named("arm64").unwrap();
        let riscv = Arch::named("riscv").unwrap();
        assert!(handler.matches(&sample_header(arm64)));
        assert!(!handler.matches(&sample_header(riscv)));
        assert!(!handler.matches(b"\x7fELF"));
        // An extension handler (jar files) is not one of ours.
        assert_eq!(
            Handler::parse(
                "jar",
                "enabled\ninterpreter /usr/bin/jexec\nflags: \nextension .jar\n"
            ),
            None
        );
    }

    #[test]
    fn a_missing_handler_says_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let arm64 = Arch::named("arm64").unwrap();
        let unmounted = handler_for(arm64, dir.path()).unwrap_err();
        assert!(unmounted
            .to_string()
            .contains("mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc"));
        fs::write(dir.path().join("register"), "").unwrap();
        fs::write(dir.path().join("status"), "enabled\n").unwrap();
        assert_eq!(handler_for(arm64, dir.path()).unwrap(), None);
        fs::write(dir.path().join("qemu-aarch64"), DEBIAN_AARCH64).unwrap();
        let found = handler_for(arm64, dir.path()).unwrap().unwrap();
        assert_eq!(found.name, "qemu-aarch64");
        fs::write(
            dir.path().join("qemu-aarch64"),
            DEBIAN_AARCH64.replace("enabled", "disabled"),
        )
        .unwrap();
        assert_eq!(handler_for(arm64, dir.path()).unwrap(), None);
        assert_eq!(
            BinfmtError::NoHandler { arch: arm64 }.to_string(),
            "no binfmt_misc handler runs arm64 programs; run `cat \
             /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register` (from \
             qemu-user-static), or set `binfmt = \"register\"` in the site config's [build]"
        );
    }
}
