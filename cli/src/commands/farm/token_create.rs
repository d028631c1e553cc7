//! `autogentoo farm token create`

use anyhow::Result;
use autogentoo_farm::api_types::{Token, TokenRequest};
use autogentoo_farm::role::Role;
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// Make an API token for a person
///
/// Make a token with a role: viewer (reads), operator (also submits builds), admin (also
/// keys, hosts, tokens and the audit log). The server keeps only its hash: it is printed here,
/// once. With --server this needs the admin role; without it, the token is written into the
/// farm's database directly (on the server's host, with the database's credentials): how a
/// new farm gets its first admin.
#[derive(Args, Debug)]
pub struct TokenCreateArgs {
    /// Whose token: a name of letters, digits, `-`, `_` and `.`
    pub name: String,

    /// viewer, operator or admin
    #[arg(long, default_value = "viewer")]
    pub role: Role,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: TokenCreateArgs) -> Result<()> {
    autogentoo_farm::check_name(&args.name).map_err(anyhow::Error::msg)?;
    let token: Token = match args.remote.client()? {
        Some(client) => client
            .post(
                "/tokens",
                &TokenRequest {
                    name: args.name.clone(),
                    role: args.role,
                },
            )?
            .expect("POST /tokens answers with the token"),
        None => autogentoo_farm::local::create_token(
            &ctx.database_location()?,
            &args.name,
            args.role,
            &crate::context::started_by(),
        )?,
    };
    if ctx.json {
        output::json(&token);
    } else {
        if !ctx.quiet {
            eprintln!(
                "token '{}' ({}); it is shown only now:",
                token.name, token.role
            );
        }
        println!("{}", token.secret.unwrap_or_default());
    }
    Ok(())
}
