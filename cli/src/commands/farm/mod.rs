//! `autogentoo farm …`: a farm's enrollment keys, API tokens, build hosts, inputs, jobs and
//! audit log.

pub mod audit;
pub mod host_list;
pub mod host_revoke;
pub mod input_add;
pub mod input_list;
pub mod job_cancel;
pub mod job_list;
pub mod key_create;
pub mod token_create;
pub mod token_list;
pub mod token_revoke;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum FarmCommand {
    /// One-time enrollment keys for build hosts
    #[command(subcommand)]
    Key(KeyCommand),
    /// API tokens for people, with their roles
    #[command(subcommand)]
    Token(TokenCommand),
    /// The enrolled build hosts
    #[command(subcommand)]
    Host(HostCommand),
    /// The stages, kernel sources and repository snapshots the farm hands to its hosts
    #[command(subcommand)]
    Input(InputCommand),
    /// The jobs: list them, cancel one
    #[command(subcommand)]
    Job(JobCommand),
    Audit(audit::AuditArgs),
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    Create(key_create::KeyCreateArgs),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    Create(token_create::TokenCreateArgs),
    List(token_list::TokenListArgs),
    Revoke(token_revoke::TokenRevokeArgs),
}

#[derive(Subcommand, Debug)]
pub enum HostCommand {
    List(host_list::HostListArgs),
    Revoke(host_revoke::HostRevokeArgs),
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    List(job_list::JobListArgs),
    Cancel(job_cancel::JobCancelArgs),
}

#[derive(Subcommand, Debug)]
pub enum InputCommand {
    Add(input_add::InputAddArgs),
    List(input_list::InputListArgs),
}

/// A duration such as `90s`, `15m`, `1h` or `2d`, in seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration such as 90s, 15m, 1h or 2d"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "`{text}` is not a duration such as 90s, 15m, 1h or 2d"
            ))
        }
    };
    Ok(n * scale)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_have_units() {
        assert_eq!(parse_duration("1h"), Ok(3600));
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("10"), Ok(10));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
