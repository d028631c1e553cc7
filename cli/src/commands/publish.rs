//! `autogentoo publish`

use anyhow::Result;
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// Publish a recorded build
///
/// Point WORKDIR/published/SYSTEM (or, with --tag, published/SYSTEM@TAG) at a build's kept
/// results in WORKDIR/out/SYSTEM/N, atomically: a reader sees the old build or the new one,
/// never neither. Only a build that succeeded can be published; a published build is never
/// purged. With --server, a farm's build, published in the server's directory (operator
/// role).
#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The system
    pub system: String,

    /// The build's number
    pub number: i64,

    /// Publish under this tag as well as the build's number (`stable`, `2026-12`)
    #[arg(long, value_parser = tag)]
    pub tag: Option<String>,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: PublishArgs) -> Result<()> {
    let publication: autogentoo_db::Publication = match args.remote.client()? {
        Some(client) => client
            .post(
                &format!("/builds/{}/{}/publish", args.system, args.number),
                &autogentoo_farm::api_types::PublishRequest {
                    tag: args.tag.clone(),
                },
            )?
            .expect("POST …/publish answers with the publication"),
        None => ctx.database()?.publish(
            &args.system,
            args.number,
            args.tag.as_deref(),
            &crate::context::started_by(),
            &ctx.layout().published(),
        )?,
    };
    if ctx.json {
        output::json(&publication);
    } else {
        println!("{}", publication.link.display());
    }
    Ok(())
}

/// A tag is a name as volumes have (letters, digits, `.`, `_`, `-`).
fn tag(text: &str) -> Result<String, String> {
    autogentoo_core::names::check(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}
