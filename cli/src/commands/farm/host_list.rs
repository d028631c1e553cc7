//! `autogentoo farm host list`

use anyhow::Result;
use autogentoo_farm::api_types::Host;
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// List the enrolled build hosts
///
/// List the farm's build hosts: name, when last seen, what they can build (arches, `*` for
/// those through qemu-user; backends), and when revoked.
#[derive(Args, Debug)]
pub struct HostListArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: HostListArgs) -> Result<()> {
    let hosts: Vec<Host> = args.remote.require("farm host list")?.get("/hosts")?;
    if ctx.json {
        output::json(&hosts);
        return Ok(());
    }
    for host in hosts {
        let seen = host
            .last_seen
            .map_or_else(|| "never".to_owned(), |at| output::timestamp(at / 1000));
        let arches: Vec<String> = host
            .capabilities
            .arches
            .iter()
            .map(|a| format!("{}{}", a.arch, if a.native { "" } else { "*" }))
            .collect();
        let revoked = host.revoked_at.map_or("", |_| "revoked");
        println!(
            "{}\t{seen}\t{}\t{}\t{revoked}",
            host.name,
            arches.join(","),
            host.capabilities.backends.join(",")
        );
    }
    Ok(())
}
