//! What a slim image holds: the packages installed in a tree (Portage's `/var/db/pkg`) and the
//! shared libraries their programs need.

pub mod libraries;
pub mod vdb;
