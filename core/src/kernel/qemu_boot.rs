//! Booting an EFI-stub image in QEMU with UEFI firmware and watching its serial console, so
//! every image is seen to boot before it ships.
//!
//! The image says which architecture it is for (its PE header's machine field), and that picks
//! the machine: `qemu-system-x86_64 -machine q35` with OVMF for x86_64, `qemu-system-aarch64
//! -machine virt -cpu max` with AAVMF for arm64. The image goes on a throwaway EFI system
//! partition (QEMU's `fat:` drive) as the removable media path (`EFI/BOOT/BOOTX64.EFI`,
//! `BOOTAA64.EFI`), which the firmware boots without any boot entry. QEMU asks for KVM first
//! (for the host's own architecture) and falls back to TCG, so it runs both where KVM works and
//! where it cannot run guests. The console transcript is kept in a log file.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::arch::Arch;
use crate::files::output_file::{self, OutputError, OutputFile};
use crate::storage::{io_err, StorageError};

/// A machine QEMU emulates for one architecture, and the firmware Debian packages for it.
struct Machine {
    /// Gentoo's name of the architecture.
    arch: &'static str,
    qemu: &'static str,
    /// The QEMU package, for the error when `qemu` is missing.
    qemu_package: &'static str,
    args: &'static [&'static str],
    /// Code (read-only) and variables template pairs, in order of preference.
    firmware: &'static [(&'static str, &'static str)],
    firmware_package: &'static str,
}

const MACHINES: &[Machine] = &[
    Machine {
        arch: "amd64",
        qemu: "qemu-system-x86_64",
        qemu_package: "qemu-system-x86",
        args: &["-machine", "q35"],
        // Debian's ovmf: the 4 MiB build first (the current one), then the old 2 MiB one.
        firmware: &[
            (
                "/usr/share/OVMF/OVMF_CODE_4M.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.fd",
            ),
            (
                "/usr/share/OVMF/OVMF_CODE.fd",
                "/usr/share/OVMF/OVMF_VARS.fd",
            ),
        ],
        firmware_package: "ovmf",
    },
    Machine {
        arch: "arm64",
        qemu: "qemu-system-aarch64",
        qemu_package: "qemu-system-arm",
        // Without ACPI tables the firmware hands the kernel QEMU's device tree, which is all an
        // arm64 kernel needs to find its UART: no ACPI in the kernel, unlike x86.
        args: &["-machine", "virt,acpi=off", "-cpu", "max"],
        firmware: &[(
            "/usr/share/AAVMF/AAVMF_CODE.fd",
            "/usr/share/AAVMF/AAVMF_VARS.fd",
        )],
        firmware_package: "qemu-efi-aarch64",
    },
];

impl Machine {
    fn of(arch: Arch) -> Option<&'static Machine> {
        MACHINES.iter().find(|m| m.arch == arch.gentoo)
    }

    fn find_firmware(&self) -> Option<(&'static Path, &'static Path)> {
        self.firmware
            .iter()
            .map(|(code, vars)| (Path::new(*code), Path::new(*vars)))
            .find(|(code, vars)| code.is_file() && vars.is_file())
    }
}

/// The firmware of the host's architecture that is installed: code and variables template.
pub fn find_firmware() -> Option<(&'static Path, &'static Path)> {
    Machine::of(Arch::host()).and_then(Machine::find_firmware)
}

/// What to boot and what to wait for.
pub struct BootRequest<'a> {
    pub image: &'a Path,
    /// Pass as soon as this text appears on the console; without it, pass when the machine
    /// powers itself off.
    pub expect: Option<&'a str>,
    pub timeout: Duration,
    pub memory_mb: u32,
    /// The console transcript.
    pub log: &'a Path,
    /// Each console line as it arrives (for `-v`).
    pub echo: &'a (dyn Fn(&str) + Sync),
}

/// How a boot went.
#[derive(Debug, Serialize)]
pub struct BootReport {
    pub image: PathBuf,
    pub passed: bool,
    pub seconds: f64,
    pub log: PathBuf,
}

/// Why a boot could not be judged at all (a failed boot is a report with `passed: false`).
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("{qemu} not found: apt-get install {package}")]
    NoQemu {
        qemu: &'static str,
        package: &'static str,
    },
    #[error("no UEFI firmware for {arch} ({code}): apt-get install {package}")]
    NoFirmware {
        arch: Arch,
        code: &'static str,
        package: &'static str,
    },
    #[error("{}: not an EFI application (no MZ header); build the kernel with CONFIG_EFI_STUB=y", .0.display())]
    NotEfi(PathBuf),
    #[error("{}: an EFI application for machine {machine:#06x}, which autogentoo does not boot (it boots x86_64 and arm64)", .image.display())]
    UnknownMachine { image: PathBuf, machine: u16 },
    #[error("the image did not print {expected:?} within {seconds} s; the console said (last lines, full log in {}):\n{tail}", .log.display())]
    NotSeen {
        expected: String,
        seconds: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("the machine stopped ({status}) without printing {expected:?}; the console said (last lines, full log in {}):\n{tail}", .log.display())]
    Stopped {
        expected: String,
        status: String,
        log: PathBuf,
        tail: String,
    },
}

/// Boots the image and waits for the expected text (or a clean power-off).
pub fn boot(request: &BootRequest) -> Result<BootReport, BootError> {
    // The log first: an output that cannot be written is refused before anything else.
    output_file::check_target(request.log)?;
    let arch = check_efi(request.image)?;
    let machine = Machine::of(arch).ok_or(BootError::UnknownMachine {
        image: request.image.to_owned(),
        machine: arch.pe_machine().unwrap_or_default(),
    })?;
    let (code, vars_template) = machine.find_firmware().ok_or(BootError::NoFirmware {
        arch,
        code: machine.firmware[0].0,
        package: machine.firmware_package,
    })?;
    let scratch = tempfile::Builder::new()
        .prefix("autogentoo-boot.")
        .tempdir()
        .map_err(io_err(
            "create a temporary directory in",
            std::env::temp_dir(),
        ))?;
    let esp = scratch.path().join("esp");
    let boot_dir = esp.join("EFI/BOOT");
    fs::create_dir_all(&boot_dir).map_err(io_err("create", &boot_dir))?;
    let boot_file = arch
        .efi_boot_file()
        .expect("a machine's arch has a boot file");
    fs::copy(request.image, boot_dir.join(boot_file)).map_err(io_err("copy", request.image))?;
    let vars = scratch.path().join("vars.fd");
    fs::copy(vars_template, &vars).map_err(io_err("copy", vars_template))?;

    // KVM where it really runs guests: /dev/kvm can exist on a host that cannot run one (QEMU
    // then stops with "KVM internal error"); such a boot is tried again under TCG. Another
    // architecture's machine is always emulated.
    let kvm = arch.kernel == Arch::host().kernel
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
    if kvm {
        match run_qemu(request, machine, code, &vars, &esp, "kvm") {
            Err(BootError::Stopped { tail, .. } | BootError::NotSeen { tail, .. })
                if tail.contains("KVM") =>
            {
                fs::copy(vars_template, &vars).map_err(io_err("copy", vars_template))?;
            }
            other => return other,
        }
    }
    run_qemu(request, machine, code, &vars, &esp, "tcg")
}

fn run_qemu(
    request: &BootRequest,
    machine: &Machine,
    code: &Path,
    vars: &Path,
    esp: &Path,
    accel: &str,
) -> Result<BootReport, BootError> {
    let mut qemu = Command::new(machine.qemu);
    qemu.args(machine.args)
        .args(["-accel", accel, "-m"])
        .arg(request.memory_mb.to_string())
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            code.display()
        ))
        .arg("-drive")
        .arg(format!(
            "if=pflash,format=raw,unit=1,file={}",
            vars.display()
        ))
        .arg("-drive")
        .arg(format!("format=raw,file=fat:rw:{}", esp.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // A machine left running after we are killed would hold the image and a core.
    crate::chroot::root_run::tie_to_us(&mut qemu)?;
    let started = Instant::now();
    let mut child = qemu.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => BootError::NoQemu {
            qemu: machine.qemu,
            package: machine.qemu_package,
        },
        _ => io_err("start", machine.qemu)(e).into(),
    })?;
    let result = watch(&mut child, request, started);
    // Whatever happened, the machine goes: by its own PID.
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// Checks that `image` is an EFI application (a PE/COFF file) and returns the architecture its
/// header names.
fn check_efi(image: &Path) -> Result<Arch, BootError> {
    let mut head = vec![0u8; 4096];
    let mut file = File::open(image).map_err(io_err("open", image))?;
    let mut read = 0;
    while read < head.len() {
        match std::io::Read::read(&mut file, &mut head[read..]).map_err(io_err("read", image))? {
            0 => break,
            n => read += n,
        }
    }
    head.truncate(read);
    let not_efi = || BootError::NotEfi(image.to_owned());
    if !head.starts_with(b"MZ") {
        return Err(not_efi());
    }
    let pe = head
        .get(0x3c..0x40)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(not_efi)?;
    let machine = match head.get(pe..pe + 6) {
        Some([b'P', b'E', 0, 0, lo, hi]) => u16::from_le_bytes([*lo, *hi]),
        _ => return Err(not_efi()),
    };
    Arch::of_pe_machine(machine).ok_or(BootError::UnknownMachine {
        image: image.to_owned(),
        machine,
    })
}

/// Reads the console until the text appears, the machine stops, or time runs out.
fn watch(
    child: &mut Child,
    request: &BootRequest,
    started: Instant,
) -> Result<BootReport, BootError> {
    let stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = mpsc::channel::<String>();
    let tx_err = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx_err.send(format!("qemu: {line}")).is_err() {
                return;
            }
        }
    });
    // The transcript appears when the boot is over, whole, whatever its outcome.
    let mut log = OutputFile::create(request.log)?;
    let result = transcribe(child, request, started, &rx, &mut log);
    log.commit()?;
    result
}

/// Copies the console into the log until the text appears, the machine stops, or time runs out.
fn transcribe(
    child: &mut Child,
    request: &BootRequest,
    started: Instant,
    rx: &mpsc::Receiver<String>,
    log: &mut OutputFile,
) -> Result<BootReport, BootError> {
    let mut tail: Vec<String> = Vec::new();
    let report = |passed| BootReport {
        image: request.image.to_owned(),
        passed,
        seconds: started.elapsed().as_secs_f64(),
        log: request.log.to_owned(),
    };
    loop {
        let left = request.timeout.saturating_sub(started.elapsed());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => {
                // Firmware output carries escape sequences; the log keeps the text.
                let clean: String = strip_escapes(&line);
                writeln!(log, "{clean}").map_err(io_err("write", request.log))?;
                (request.echo)(&clean);
                if request.expect.is_some_and(|text| clean.contains(text)) {
                    return Ok(report(true));
                }
                // QEMU does not exit when KVM fails: it halts the guest and waits.
                if clean.contains("KVM internal error") {
                    return Err(BootError::Stopped {
                        expected: request.expect.unwrap_or("a clean power-off").to_owned(),
                        status: "KVM could not run the guest".into(),
                        log: request.log.to_owned(),
                        tail: clean,
                    });
                }
                tail.push(clean);
                if tail.len() > 20 {
                    tail.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().map_err(io_err("wait for", "the machine"))?;
                return match request.expect {
                    None if status.success() => Ok(report(true)),
                    expected => Err(BootError::Stopped {
                        expected: expected.unwrap_or("a clean power-off").to_owned(),
                        status: status.to_string(),
                        log: request.log.to_owned(),
                        tail: tail.join("\n"),
                    }),
                };
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(BootError::NotSeen {
                    expected: request.expect.unwrap_or("a clean power-off").to_owned(),
                    seconds: request.timeout.as_secs(),
                    log: request.log.to_owned(),
                    tail: tail.join("\n"),
                });
            }
        }
    }
}

/// Removes ANSI escape sequences and carriage returns.
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ … final byte in @..~
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_stripped() {
        assert_eq!(
            strip_escapes("\u{1b}[2J\u{1b}[01;01HBdsDxe: loading\r"),
            "BdsDxe: loading"
        );
        assert_eq!(strip_escapes("plain"), "plain");
    }

    #[test]
    fn a_file_without_an_mz_header_is_not_efi() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("vmlinux");
        fs::write(&image, b"\x7fELF").unwrap();
        assert!(matches!(check_efi(&image), Err(BootError::NotEfi(_))));
    }

    /// A PE header at `offset` naming `machine`, as an EFI stub kernel starts.
    fn pe_image(offset: u32, machine: u16) -> Vec<u8> {
        let mut image = vec![0u8; 512];
        image[..2].copy_from_slice(b"MZ");
        image[0x3c..0x40].copy_from_slice(&offset.to_le_bytes());
        let at = offset as usize;
        image[at..at + 4].copy_from_slice(b"PE\0\0");
        image[at + 4..at + 6].copy_from_slice(&machine.to_le_bytes());
        image
    }

    #[test]
    fn an_image_names_its_machine_and_so_the_firmware() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image.efi");
        fs::write(&image, pe_image(0x40, 0xaa64)).unwrap();
        let arch = check_efi(&image).unwrap();
        assert_eq!(arch.gentoo, "arm64");
        assert_eq!(Machine::of(arch).unwrap().qemu, "qemu-system-aarch64");
        fs::write(&image, pe_image(0x80, 0x8664)).unwrap();
        assert_eq!(check_efi(&image).unwrap().gentoo, "amd64");
        // A machine we know no firmware for, and a header that points past the file.
        fs::write(&image, pe_image(0x80, 0x0200)).unwrap();
        assert!(matches!(
            check_efi(&image),
            Err(BootError::UnknownMachine {
                machine: 0x0200,
                ..
            })
        ));
        let mut cut = pe_image(0x80, 0x8664);
        cut[0x3c..0x40].copy_from_slice(&9000u32.to_le_bytes());
        fs::write(&image, cut).unwrap();
        assert!(matches!(check_efi(&image), Err(BootError::NotEfi(_))));
    }
}
