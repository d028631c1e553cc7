//! `autogentoo repo list`

use anyhow::Result;
use autogentoo_core::pack::squashfs_pack::list_images;
use clap::Args;

use crate::context::Context;
use crate::output;

/// List the SquashFS images of the repository
///
/// List the SquashFS images in WORKDIR/repos, by name: name, size, date (the image time) and
/// entries (inodes). A `*.sqfs` file that is not SquashFS 4.0 is skipped with a warning.
#[derive(Args, Debug)]
pub struct ListArgs {}

pub fn run(ctx: &Context, _args: ListArgs) -> Result<()> {
    let (images, skipped) = list_images(&ctx.layout().repos())?;
    for skip in &skipped {
        tracing::warn!("{skip}");
    }
    if ctx.json {
        output::json(&images);
        return Ok(());
    }
    for image in images {
        println!(
            "{}\t{}\t{}\t{}",
            image.name,
            output::bytes(image.size),
            output::timestamp(i64::from(image.date)),
            image.entries
        );
    }
    Ok(())
}
