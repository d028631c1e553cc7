//! `autogentoo farm token revoke`

use anyhow::Result;
use clap::Args;

use crate::context::Context;
use crate::remote::RemoteArgs;

/// Revoke an API token
///
/// The token stops working at once. Needs the admin role.
#[derive(Args, Debug)]
pub struct TokenRevokeArgs {
    /// The token's name
    pub name: String,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(_ctx: &Context, args: TokenRevokeArgs) -> Result<()> {
    let client = args.remote.require("farm token revoke")?;
    client.post::<_, serde_json::Value>(&format!("/tokens/{}/revoke", args.name), &())?;
    Ok(())
}
