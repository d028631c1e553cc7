//! `autogentoo stage list`

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::commands::volume;
use crate::context::Context;

/// List the imported stages
///
/// List the imported stages: name, import time, the architecture of its programs (`-` when
/// none was found), source.
#[derive(Args, Debug)]
pub struct ListArgs {}

pub fn run(ctx: &Context, _args: ListArgs) -> Result<()> {
    volume::print_list(ctx, VolumeKind::Stage)
}
