//! The build farm: `autogentoo serve` (a REST API over the build database and a queue of build
//! jobs) and `autogentoo worker` (a build host that takes jobs from it). The queue is apalis's
//! PostgreSQL storage, driven by the server on behalf of the hosts: a host holds only its own
//! credential and those of the jobs it runs, never the database's.

pub mod api_types;
pub mod binhost;
pub mod binhost_proxy;
pub mod client;
pub mod inputs;
pub mod local;
pub mod queue;
pub mod role;
pub mod secret;
pub mod server;
pub mod site;
pub mod store;
pub mod tls;
pub mod worker;

/// Checks a host's or a token's name: 1 to 64 of letters, digits, `-`, `_` and `.`, not
/// starting with `.`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a name: use 1 to 64 letters, digits, `-`, `_` and `.`"
        ))
    }
}
