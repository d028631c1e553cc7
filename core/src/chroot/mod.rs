//! Working inside a root: the mounts it gets (proc, sys, dev, run, the caches, the repository
//! snapshot on a loop device), running commands in private namespaces, the locks that keep two
//! commands from fighting over one root, and reading the mount table to take it all down.

pub mod binfmt;
pub mod loop_device;
pub mod mountinfo;
pub mod root_lock;
pub mod root_mounts;
pub mod root_run;
