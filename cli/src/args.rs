//! Value types of options that several commands take.

use autogentoo_core::site_config::Compression;
use clap::ValueEnum;

/// `--compression` of `root pack` and `kernel config`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum CompressionArg {
    Gzip,
    Zstd,
    Xz,
    None,
}

impl From<CompressionArg> for Compression {
    fn from(arg: CompressionArg) -> Self {
        match arg {
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Zstd => Compression::Zstd,
            CompressionArg::Xz => Compression::Xz,
            CompressionArg::None => Compression::None,
        }
    }
}
