//! `autogentoo farm input add`

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use autogentoo_farm::api_types::{AddInput, Input, InputKind};
use clap::Args;

use crate::context::Context;
use crate::output;
use crate::remote::RemoteArgs;

/// Hand a stage, kernel sources or a repository snapshot to the farm's hosts
///
/// Upload FILE to the farm server (resuming an upload that stopped; nothing is sent when the
/// server has the same content) and name it: from now on a job whose system uses KIND NAME
/// (its `stage`, its image's `base`, its `kernel`, or its `mounts.repo_image`) carries it by
/// SHA-256, and a host that lacks it fetches and imports it before the build. When the site
/// config names no repository snapshot, jobs carry the newest one added. A stage or kernel is
/// a tarball as `stage import` takes it; a repository snapshot is a SquashFS image as
/// `repo pack` writes it. Adding a name again points it at the new content; hosts that have
/// the farm's older stage or kernel under that name refuse such jobs until it is removed
/// there. Needs the admin role. Prints the input's SHA-256.
#[derive(Args, Debug)]
pub struct InputAddArgs {
    /// stage, kernel or repo
    pub kind: InputKind,

    /// Its name in the site config (a repository snapshot's without `.sqfs`)
    pub name: String,

    /// The tarball or SquashFS image
    pub file: PathBuf,

    #[command(flatten)]
    pub remote: RemoteArgs,
}

pub fn run(ctx: &Context, args: InputAddArgs) -> Result<()> {
    let client = args.remote.require("farm input add")?;
    autogentoo_farm::check_name(&args.name).map_err(anyhow::Error::msg)?;
    let head = autogentoo_farm::inputs::head_of(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    autogentoo_farm::inputs::check_content(args.kind, &head)
        .map_err(|why| anyhow::anyhow!("{}: {why}", args.file.display()))?;
    let sha256 = autogentoo_farm::inputs::sha256_of_file(&args.file)?;
    client.upload_content("/inputs/content", &args.file, &sha256)?;
    let input: Option<Input> = client.put(
        &format!("/inputs/{}/{}", args.kind, args.name),
        &AddInput {
            sha256: sha256.clone(),
        },
    )?;
    if ctx.json {
        output::json(&input);
    } else {
        println!("{sha256}");
    }
    Ok(())
}
