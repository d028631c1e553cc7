//! `autogentoo farm token list`

use anyhow::Result;
use autogentoo_farm::api_types::Token;
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// List the API tokens
///
/// List the farm's API tokens: name, role, when and by whom made, and when revoked. Their
/// secrets are not kept, so not shown. Needs the admin role.
#[derive(Args, Debug)]
pub struct TokenListArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: TokenListArgs) -> Result<()> {
    let tokens: Vec<Token> = args.remote.require("farm token list")?.get("/tokens")?;
    if ctx.json {
        output::json(&tokens);
        return Ok(());
    }
    for token in tokens {
        let revoked = token
            .revoked_at
            .map_or_else(|| "-".to_owned(), |at| output::timestamp(at / 1000));
        println!(
            "{}\t{}\t{}\t{}\t{revoked}",
            token.name,
            token.role,
            output::timestamp(token.created_at / 1000),
            token.created_by
        );
    }
    Ok(())
}
