//! `autogentoo kernel list`

use anyhow::Result;
use autogentoo_core::storage::VolumeKind;
use clap::Args;

use crate::commands::volume;
use crate::context::Context;

/// List the imported kernel sources
///
/// List the imported kernel sources: name, import time, source.
#[derive(Args, Debug)]
pub struct ListArgs {}

pub fn run(ctx: &Context, _args: ListArgs) -> Result<()> {
    volume::print_list(ctx, VolumeKind::Kernel)
}
