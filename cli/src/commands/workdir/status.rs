//! `autogentoo workdir status`

use anyhow::{Context as _, Result};
use autogentoo_core::chroot::binfmt;
use autogentoo_core::storage::workdir::{self, Layout};
use autogentoo_core::storage::Capabilities;
use clap::Args;

use crate::context::Context;
use crate::output;

/// Show the backend, its capabilities, the volumes and the space used
///
/// Show the backend, what it can do, the volumes of each kind, where the shared caches
/// (distfiles, binpkgs) are, the space used, and the architectures this host can build (natively,
/// or through a qemu-user handler with binfmt_misc's F flag); warn when users other than root
/// can reach into the workdir.
#[derive(Args, Debug)]
pub struct StatusArgs {}

pub fn run(ctx: &Context, _args: StatusArgs) -> Result<()> {
    let storage = ctx.storage()?;
    let layout = Layout::new(&ctx.settings.workdir);
    let status = workdir::status(&*storage, &layout)
        .with_context(|| format!("cannot read the workdir {}", layout.workdir.display()))?;
    if status.open_to_others() {
        tracing::warn!(
            "the workdir {} is mode {:04o}: any local user can reach the device nodes and setuid \
             programs of its stages and roots; run `autogentoo workdir init` to restrict it to root ({:04o})",
            layout.workdir.display(),
            status.top_mode,
            workdir::TOP_MODE
        );
    }
    let arches = binfmt::runnable();
    if ctx.json {
        #[derive(serde::Serialize)]
        struct Shown<'a> {
            #[serde(flatten)]
            status: &'a workdir::Status,
            arches: &'a [binfmt::Runnable],
        }
        output::json(&Shown {
            status: &status,
            arches: &arches,
        });
        return Ok(());
    }
    println!("backend:      {}", status.backend);
    println!("workdir:      {}", status.workdir.display());
    println!("capabilities: {}", describe(&status.capabilities));
    println!(
        "space:        {} used, {} available",
        output::bytes(status.usage.used_bytes),
        output::bytes(status.usage.available_bytes)
    );
    for (kind, names) in &status.volumes {
        let label = format!("{}:", kind.plural());
        if names.is_empty() {
            println!("{label:<13} none");
        } else {
            println!("{label:<13} {} ({})", names.len(), names.join(", "));
        }
    }
    for (cache, path) in &status.caches {
        println!("{:<13} {}", format!("{cache}:"), path.display());
    }
    let arches: Vec<String> = arches
        .iter()
        .map(|r| format!("{} ({})", r.arch, r.through))
        .collect();
    println!("arches:       {}", arches.join(", "));
    Ok(())
}

fn describe(caps: &Capabilities) -> String {
    let flags = [
        (caps.cheap_clone, "cheap clones"),
        (caps.cheap_snapshot, "cheap snapshots"),
        (caps.enforced_read_only, "read-only snapshots"),
        (caps.shared_blocks, "shared blocks"),
        (caps.xattrs, "xattrs"),
        (caps.special_files, "device nodes"),
    ];
    let have: Vec<&str> = flags
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect();
    if have.is_empty() {
        "none".into()
    } else {
        have.join(", ")
    }
}
