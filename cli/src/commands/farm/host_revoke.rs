//! `autogentoo farm host revoke`

use anyhow::Result;
use clap::Args;

use crate::context::Context;
use crate::remote::RemoteArgs;

/// Revoke a build host
///
/// The host's credential and its jobs' credentials stop working at once, and the jobs it ran
/// go back to the queue for other hosts. It can join again only with a new enrollment key
/// and another name. Needs the admin role.
#[derive(Args, Debug)]
pub struct HostRevokeArgs {
    /// The host's name
    pub name: String,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(_ctx: &Context, args: HostRevokeArgs) -> Result<()> {
    let client = args.remote.require("farm host revoke")?;
    client.post::<_, serde_json::Value>(&format!("/hosts/{}/revoke", args.name), &())?;
    Ok(())
}
