//! `autogentoo farm audit`

use anyhow::Result;
use autogentoo_farm::api_types::AuditEntry;
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// Show the farm's audit log
///
/// Every change made through the API (submissions, keys, enrollments, tokens, revocations),
/// newest first: when, who, what, on what. Needs the admin role.
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// At most this many
    #[arg(long, default_value_t = 100)]
    pub limit: u32,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: AuditArgs) -> Result<()> {
    let entries: Vec<AuditEntry> = args
        .remote
        .require("farm audit")?
        .get(&format!("/audit?limit={}", args.limit))?;
    if ctx.json {
        output::json(&entries);
        return Ok(());
    }
    for entry in entries {
        println!(
            "{}\t{}\t{}\t{}\t{}",
            output::timestamp(entry.at / 1000),
            entry.actor,
            entry.action,
            entry.target,
            entry.detail
        );
    }
    Ok(())
}
