//! `autogentoo builds …`: the builds the database recorded.

pub mod diff;
pub mod keep;
pub mod list;
pub mod log;
pub mod purge;
pub mod show;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BuildsCommand {
    List(list::ListArgs),
    Show(show::ShowArgs),
    Log(log::LogArgs),
    Diff(diff::DiffArgs),
    Keep(keep::KeepArgs),
    Purge(purge::PurgeArgs),
}

/// A duration in milliseconds, for people: `850 ms`, `12.3 s`, `4 min 05 s`.
pub fn duration(ms: i64) -> String {
    match ms {
        ..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => format!("{} min {:02} s", ms / 60_000, ms % 60_000 / 1000),
    }
}
