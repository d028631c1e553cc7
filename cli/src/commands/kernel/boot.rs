//! `autogentoo kernel boot`

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result};
use autogentoo_core::kernel::qemu_boot::{boot, BootRequest};
use clap::Args;

use crate::context::Context;
use crate::output;

/// Boot an EFI image in QEMU/OVMF and check what it prints
///
/// Boot an EFI-stub image in QEMU with OVMF firmware and a serial console, and pass when TEXT
/// appears on it (or, without --expect, when the machine powers itself off). KVM is used where
/// it runs guests, TCG elsewhere. The console transcript goes to IMAGE.boot.log.
#[derive(Args, Debug)]
pub struct BootArgs {
    /// The EFI image (a kernel built with CONFIG_EFI_STUB)
    pub image: PathBuf,

    /// Text the booted system must print
    #[arg(long, value_name = "TEXT")]
    pub expect: Option<String>,

    /// Seconds to wait before giving up
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,

    /// Memory of the virtual machine, in MiB
    #[arg(long, default_value_t = 512)]
    pub memory: u32,
}

pub fn run(ctx: &Context, args: BootArgs) -> Result<()> {
    let mut log = args.image.clone().into_os_string();
    log.push(".boot.log");
    let log = PathBuf::from(log);
    let verbose = tracing::enabled!(tracing::Level::INFO);
    let echo = move |line: &str| {
        if verbose {
            eprintln!("{line}");
        }
    };
    let request = BootRequest {
        image: &args.image,
        expect: args.expect.as_deref(),
        timeout: Duration::from_secs(args.timeout),
        memory_mb: args.memory,
        log: &log,
        echo: &echo,
    };
    let report = boot(&request)
        .with_context(|| format!("{} did not boot as expected", args.image.display()))?;
    if ctx.json {
        output::json(&report);
    } else {
        println!("booted {} in {:.1} s", args.image.display(), report.seconds);
    }
    Ok(())
}
