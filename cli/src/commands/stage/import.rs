//! `autogentoo stage import`

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use autogentoo_core::stage_import::{import_stage, ImportRequest};
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::progress::Bar;

/// Import a stage3 tarball (.tar, .tar.gz, .tar.xz, .tar.bz2, .tar.zst) or a directory as a
/// read-only stage, keeping numeric owners, modes, mtimes, xattrs, device nodes and hardlinks.
/// Nothing appears until the import is complete; an interrupted import leaves nothing behind.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The tarball or directory
    pub source: PathBuf,

    /// Name of the new stage
    #[arg(long)]
    pub name: String,

    /// A Gentoo DIGESTS file; the tarball's SHA512 must match its line
    #[arg(long, value_name = "FILE")]
    pub digests: Option<PathBuf>,
}

pub fn run(ctx: &Context, args: ImportArgs) -> Result<()> {
    let storage = ctx.storage()?;
    let cancel = crate::interrupt::cancel_flag()?;
    let bar = Bar::new(&format!("importing {}", args.name), ctx.quiet);
    let request = ImportRequest {
        source: &args.source,
        name: &args.name,
        digests: args.digests.as_deref(),
        progress: &bar,
        cancel: &cancel,
    };
    let report = import_stage(&*storage, &request);
    bar.finish();
    let report = report.with_context(|| {
        format!(
            "cannot import stage '{}' from {}",
            args.name,
            args.source.display()
        )
    })?;
    if ctx.json {
        output::json(&report);
    } else {
        println!("{}", report.volume.path.display());
    }
    tracing::info!(
        "imported {} entries, {} of file data",
        report.entries,
        output::bytes(report.bytes)
    );
    Ok(())
}
