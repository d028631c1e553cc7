//! `autogentoo kernel import`

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use autogentoo_core::stage_import::{import_sealed, ImportRequest};
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::progress::Bar;

/// Import kernel sources (a tarball such as Debian's linux-source or kernel.org's, or a
/// directory) as a read-only kernel volume. Builds never write to it: they build out of tree.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The tarball or directory
    pub source: PathBuf,

    /// Name of the kernel volume
    #[arg(long)]
    pub name: String,
}

pub fn run(ctx: &Context, args: ImportArgs) -> Result<()> {
    let storage = ctx.storage()?;
    let cancel = crate::interrupt::cancel_flag()?;
    let bar = Bar::new(&format!("importing {}", args.name), ctx.quiet);
    let request = ImportRequest {
        source: &args.source,
        name: &args.name,
        digests: None,
        progress: &bar,
        cancel: &cancel,
    };
    let report = import_sealed(&*storage, VolumeKind::Kernel, &request);
    bar.finish();
    let report = report.with_context(|| {
        format!(
            "cannot import kernel '{}' from {}",
            args.name,
            args.source.display()
        )
    })?;
    if ctx.json {
        output::json(&report);
    } else {
        println!("{}", report.volume.path.display());
    }
    Ok(())
}
