//! `autogentoo kernel config`

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use autogentoo_core::kernel::kconfig::{self, Config, KconfigError, Requirements};
use autogentoo_core::site_config::Compression;
use clap::Args;
use serde::Serialize;

use crate::args::CompressionArg;
use crate::context::Context;
use crate::output;

/// Check or set the options the pipeline needs in a kernel config, and show the diff
///
/// Check or set, in a kernel config, the options the pipeline needs: the embedded initramfs
/// and its decompressor, the EFI stub, devtmpfs and the built-in command line. Prints what has
/// to change as diff lines: `-` the line FILE has, `+` the line it needs. `--check` fails if
/// anything has to; `--write` makes the changes, keeping the previous file as FILE.old.
#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// The kernel config (a .config or a fragment)
    pub file: PathBuf,

    /// Exit 1 if any option needs changing
    #[arg(long, conflicts_with = "write")]
    pub check: bool,

    /// Make the changes in FILE (written atomically), keeping the previous file as FILE.old
    #[arg(long)]
    pub write: bool,

    /// Take the command line from this system of the site config
    #[arg(long)]
    pub system: Option<String>,

    /// The initramfs archive the kernel embeds (CONFIG_INITRAMFS_SOURCE), named *.cpio.gz,
    /// *.cpio.zst or *.cpio
    #[arg(long, value_name = "PATH")]
    pub initramfs: Option<PathBuf>,

    /// The initramfs compression, whose decompressor the kernel needs [default: pack.compression]
    #[arg(long, value_enum)]
    pub compression: Option<CompressionArg>,

    /// The built-in kernel command line; empty for none [default: the system's cmdline]
    #[arg(long, value_name = "TEXT")]
    pub cmdline: Option<String>,

    /// With --check, for a FILE made by `make olddefconfig`: explain each missing option from
    /// the Kconfig files of this kernel source tree (a loose reading of their dependencies)
    #[arg(long, value_name = "DIR", requires = "check")]
    pub source: Option<PathBuf>,

    /// The kernel architecture whose Kconfig files --source reads, and whose requirements
    /// apply [default: the system's with --system, else the host's]
    #[arg(long)]
    pub arch: Option<String>,
}

#[derive(Serialize)]
struct Report<'a> {
    changes: &'a [kconfig::Change],
    /// With --source, each missing option and why.
    dropped: Vec<DroppedReport>,
}

#[derive(Serialize)]
struct DroppedReport {
    symbol: String,
    message: String,
}

pub fn run(ctx: &Context, args: ConfigArgs) -> Result<()> {
    let system = match &args.system {
        Some(name) => Some(ctx.config.system(name)?),
        None => None,
    };
    let cmdline = match &args.cmdline {
        Some(text) => Some(text.as_str()),
        None => system.and_then(|s| s.cmdline.as_deref()),
    };
    let compression = args
        .compression
        .map(Compression::from)
        .unwrap_or(ctx.config.pack.compression);
    let initramfs = match &args.initramfs {
        Some(path) => Some(
            std::path::absolute(path)
                .with_context(|| format!("cannot resolve the initramfs path {}", path.display()))?,
        ),
        None => None,
    };
    // The named one, else the system's (Gentoo's names are among those `source_arch` takes),
    // else the host's.
    let arch = match (&args.arch, system) {
        (Some(arch), _) => arch.as_str(),
        (None, Some(system)) => system.arch(&ctx.config.build),
        (None, None) => std::env::consts::ARCH,
    };
    let requirements =
        Requirements::new(initramfs.as_deref(), compression, cmdline)?.for_arch(arch);
    let mut config = Config::load(&args.file)?;
    let missing = match &args.source {
        Some(tree) => {
            match kconfig::verify_after_olddefconfig(&config, &requirements, tree, arch) {
                Ok(()) => None,
                Err(KconfigError::Dropped(options)) => Some(options),
                Err(other) => return Err(other.into()),
            }
        }
        None => None,
    };
    let changes = if args.write {
        kconfig::apply(&mut config, &requirements)
    } else {
        kconfig::check(&config, &requirements)
    };
    let dropped = missing
        .as_ref()
        .map_or(&[][..], |options| options.dropped());
    if ctx.json {
        output::json(&Report {
            changes: &changes,
            dropped: dropped
                .iter()
                .map(|d| DroppedReport {
                    symbol: d.symbol.clone(),
                    message: d.to_string(),
                })
                .collect(),
        });
    } else {
        print!("{}", kconfig::render_diff(&changes));
    }
    if let Some(options) = missing {
        let file = args.file.display();
        return Err(anyhow::Error::new(options)
            .context(format!("{file} does not have what the pipeline needs")));
    }
    if args.write && !changes.is_empty() {
        config.save(&args.file)?;
        tracing::info!(
            "wrote {} ({} changes), the previous one as {}.old",
            args.file.display(),
            changes.len(),
            args.file.display()
        );
    }
    if args.check && !changes.is_empty() {
        let n = changes.len();
        let (noun, verb) = if n == 1 {
            ("option", "needs")
        } else {
            ("options", "need")
        };
        bail!(
            "{n} {noun} in {} {verb} changing; run with --write",
            args.file.display()
        );
    }
    Ok(())
}
