//! Test support shared by the backends, packers and end-to-end tests (feature `testkit`): the
//! storage and packer conformance suites and a tree comparison that knows about owners, modes,
//! xattrs and hardlinks.

pub mod cdylib;
pub mod conformance;
pub mod packer_conformance;
pub mod tree;
pub mod zfs_pool;

pub use tree::{assert_same_tree, tree_diff};
