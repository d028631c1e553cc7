//! `autogentoo workdir init`

use anyhow::{Context as _, Result};
use autogentoo_core::storage::workdir::{self, Layout};
use clap::Args;

use crate::context::Context;

/// Create the storage layout (safe to run again)
///
/// Create the storage layout (stages, roots, kernels, caches with distfiles and binpkgs, repos,
/// out) in the workdir, and make its top reachable by root only (0700): stages and roots hold
/// device nodes and setuid programs from their tarballs. Existing volumes are left as they are;
/// an existing workdir is tightened.
#[derive(Args, Debug)]
pub struct InitArgs {}

pub fn run(ctx: &Context, _args: InitArgs) -> Result<()> {
    let storage = ctx.storage()?;
    let layout = Layout::new(&ctx.settings.workdir);
    workdir::init(&*storage, &layout)
        .with_context(|| format!("cannot initialise the workdir {}", layout.workdir.display()))?;
    if ctx.json {
        crate::output::json(&serde_json::json!({
            "backend": storage.backend_name(),
            "workdir": layout.workdir,
        }));
    }
    Ok(())
}
