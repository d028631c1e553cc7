//! `autogentoo farm key create`

use anyhow::Result;
use autogentoo_farm::api_types::{Key, KeyRequest};
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// Make a one-time enrollment key for a build host
///
/// Make a key a build host enrolls with once (`autogentoo worker --enroll-key-file`), before it
/// expires. The server keeps only its hash: it is printed here, once. Needs the admin role.
#[derive(Args, Debug)]
pub struct KeyCreateArgs {
    /// How long it is good for: 90s, 15m, 1h, 2d
    #[arg(long, default_value = "1h", value_parser = super::parse_duration)]
    pub expires: u64,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: KeyCreateArgs) -> Result<()> {
    let client = args.remote.require("farm key create")?;
    let key: Key = client
        .post(
            "/keys",
            &KeyRequest {
                expires_in: args.expires,
            },
        )?
        .expect("POST /keys answers with the key");
    if ctx.json {
        output::json(&key);
    } else {
        if !ctx.quiet {
            eprintln!(
                "enrollment key {} (good once, until {}); it is shown only now:",
                key.id,
                output::timestamp(key.expires_at / 1000)
            );
        }
        println!("{}", key.secret);
    }
    Ok(())
}
