//! Files and trees we read from and write to places we do not control: whole-file reads with a
//! size limit and a type check, outputs that appear whole or not at all, paths resolved inside
//! an untrusted tree, digests, and hole- and xattr-keeping tree copies.

pub mod bounded_read;
pub mod digests;
pub mod in_root;
pub mod output_file;
pub mod tree_copy;
