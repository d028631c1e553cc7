//! Booting an EFI-stub image in QEMU with OVMF firmware and watching its serial console, so
//! every image is seen to boot before it ships.
//!
//! The image goes on a throwaway EFI system partition (QEMU's `fat:` drive) as the removable
//! media path `EFI/BOOT/BOOTX64.EFI`, which OVMF boots without any boot entry. QEMU asks for
//! KVM first and falls back to TCG, so it runs both where KVM works and where it cannot run
//! guests. The console transcript is kept in a log file.

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::files::output_file::{self, OutputError, OutputFile};
use crate::storage::{io_err, StorageError};

/// Where Debian's ovmf package puts the firmware: code (read-only) and a variables template,
/// in the order [`boot`] prefers them. Read through [`find_firmware`], by `boot` and by
/// `doctor` alike, so that both look for the same files.
const FIRMWARE: &[(&str, &str)] = &[
    (
        "/usr/share/OVMF/OVMF_CODE_4M.fd",
        "/usr/share/OVMF/OVMF_VARS_4M.fd",
    ),
    (
        "/usr/share/OVMF/OVMF_CODE.fd",
        "/usr/share/OVMF/OVMF_VARS.fd",
    ),
];

/// The firmware [`boot`] uses on this host, as (code, variables template): the first pair of
/// Debian's ovmf package that is present.
pub fn find_firmware() -> Option<(&'static Path, &'static Path)> {
    FIRMWARE
        .iter()
        .map(|(code, vars)| (Path::new(*code), Path::new(*vars)))
        .find(|(code, vars)| code.is_file() && vars.is_file())
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
    #[error("{} not found: install qemu-system-x86", .0)]
    NoQemu(String),
    #[error("no OVMF firmware in /usr/share/OVMF: install the ovmf package")]
    NoFirmware,
    #[error("{}: not an EFI application (no MZ header); build the kernel with CONFIG_EFI_STUB=y", .0.display())]
    NotEfi(PathBuf),
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

const QEMU: &str = "qemu-system-x86_64";

/// Boots the image and waits for the expected text (or a clean power-off).
pub fn boot(request: &BootRequest) -> Result<BootReport, BootError> {
    check_efi(request.image)?;
    output_file::check_target(request.log)?;
    let (code, vars_template) = find_firmware().ok_or(BootError::NoFirmware)?;
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
    fs::copy(request.image, boot_dir.join("BOOTX64.EFI")).map_err(io_err("copy", request.image))?;
    let vars = scratch.path().join("vars.fd");
    fs::copy(vars_template, &vars).map_err(io_err("copy", vars_template))?;

    // KVM where it really runs guests: /dev/kvm can exist on a host that cannot run one (QEMU
    // then stops with "KVM internal error"); such a boot is tried again under TCG.
    let kvm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if kvm {
        match run_qemu(request, code, &vars, &esp, "kvm") {
            Err(BootError::Stopped { tail, .. } | BootError::NotSeen { tail, .. })
                if tail.contains("KVM") =>
            {
                fs::copy(vars_template, &vars).map_err(io_err("copy", vars_template))?;
            }
            other => return other,
        }
    }
    run_qemu(request, code, &vars, &esp, "tcg")
}

fn run_qemu(
    request: &BootRequest,
    code: &Path,
    vars: &Path,
    esp: &Path,
    accel: &str,
) -> Result<BootReport, BootError> {
    let mut qemu = Command::new(QEMU);
    qemu.args(["-machine", "q35", "-accel", accel, "-m"])
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
        std::io::ErrorKind::NotFound => BootError::NoQemu(QEMU.into()),
        _ => io_err("start", QEMU)(e).into(),
    })?;
    let result = watch(&mut child, request, started);
    // Whatever happened, the machine goes: by its own PID.
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn check_efi(image: &Path) -> Result<(), BootError> {
    let mut head = [0u8; 2];
    let mut file = File::open(image).map_err(io_err("open", image))?;
    std::io::Read::read_exact(&mut file, &mut head).map_err(io_err("read", image))?;
    if &head != b"MZ" {
        return Err(BootError::NotEfi(image.to_owned()));
    }
    Ok(())
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
                let status = child.wait().map_err(io_err("wait for", QEMU))?;
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
}
