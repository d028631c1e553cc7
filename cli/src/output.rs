//! Printing results and errors: plain text for people, JSON (`--json`) for scripts.
//!
//! Under `--json` a command that succeeds prints one JSON document on stdout, and a failure
//! prints one JSON object on stderr: `{"error": …, "causes": […], "exit_code": N}`, with names
//! whole. For people, a cause is one line, and a name too long to read is shortened in the
//! middle.

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use serde::Serialize;

/// Prints `value` as one JSON document on stdout.
pub fn json<T: Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).expect("output serialises")
    );
}

/// The exit code of a usage error, as clap gives it.
const USAGE: u8 = 2;

/// The longest word (a run without spaces, like a path) a message shows whole to people.
const LONGEST_WORD: usize = 160;

/// What a failure says to a script.
#[derive(Serialize)]
struct ErrorDocument<'a> {
    error: &'a str,
    causes: &'a [String],
    exit_code: u8,
}

/// Prints an error: one line per cause for people, one JSON object with `json`, saying the
/// process exits with `exit_code`. A cause whose text the line above already holds (an error
/// that shows its source inline) is not repeated.
pub fn print_error(err: &anyhow::Error, json: bool, exit_code: u8) {
    let mut lines: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if lines
            .last()
            .is_some_and(|previous| previous.contains(&text))
        {
            continue;
        }
        lines.push(text);
    }
    if json {
        print_error_document(&lines[0], &lines[1..], exit_code);
        return;
    }
    for (i, text) in lines.iter().enumerate() {
        // A message may span lines (a console's last lines); each is shortened on its own.
        let shown: Vec<String> = text.lines().map(for_people).collect();
        if i == 0 {
            eprintln!("error: {}", shown.join("\n"));
        } else {
            eprintln!("  caused by: {}", shown.join("\n"));
        }
    }
}

fn print_error_document(error: &str, causes: &[String], exit_code: u8) {
    let document = ErrorDocument {
        error,
        causes,
        exit_code,
    };
    eprintln!(
        "{}",
        serde_json::to_string(&document).expect("an error document serialises")
    );
}

/// A command line clap refused (or `--help`, `--version`, which it reports the same way).
pub fn usage_error(err: clap::Error, json: bool) -> ExitCode {
    use clap::error::ErrorKind;
    // Help asked for is output; help shown for a missing subcommand is a usage error, which a
    // script asking for JSON gets as JSON.
    let informational = matches!(
        err.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    ) || (err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        && !json);
    if informational || !json {
        // clap prints and knows the exit code (0 for help, 2 for a usage error).
        let _ = err.print();
        return ExitCode::from(err.exit_code().clamp(0, 255) as u8);
    }
    let rendered = err.render().to_string();
    if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let usage = rendered
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or("");
        print_error_document("a subcommand is missing", &[usage.trim().to_owned()], USAGE);
        return ExitCode::from(USAGE);
    }
    let mut lines = rendered
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"));
    let error = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_owned();
    let causes: Vec<String> = lines.map(str::to_owned).collect();
    print_error_document(&error, &causes, USAGE);
    ExitCode::from(USAGE)
}

/// Whether the command line asks for JSON, read before clap has parsed it (so that a usage
/// error can be reported as JSON too).
pub fn json_requested(args: impl Iterator<Item = OsString>) -> bool {
    args.skip(1)
        .take_while(|arg| arg != "--")
        .any(|arg| arg == "--json")
}

/// Whether log lines on stderr get colours: only on a terminal, and never with `NO_COLOR` set
/// (<https://no-color.org>).
pub fn colour_on_stderr() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// The longest line a message shows people, once its words are shortened.
const LONGEST_LINE: usize = 600;

/// One line of a message as people see it: control characters (a terminal escape in a name
/// from a tarball, say) shown as `\xHH` rather than acted on by the terminal, long words
/// shortened ([`shorten_words`]), and a line still too long shortened in the middle.
fn for_people(line: &str) -> String {
    let mut escaped = String::with_capacity(line.len());
    for c in line.chars() {
        if c.is_control() && c != '\t' {
            escaped.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            escaped.push(c);
        }
    }
    let shown = shorten_words(&escaped);
    let chars = shown.chars().count();
    if chars <= LONGEST_LINE {
        return shown;
    }
    let keep = LONGEST_LINE / 2 - 10;
    let mut out: String = shown.chars().take(keep).collect();
    out.push_str(&format!("…[{} more]…", chars - 2 * keep));
    out.extend(shown.chars().skip(chars - keep));
    out
}

/// `text` with every word longer than [`LONGEST_WORD`] shortened in the middle, so that a
/// 5,000-character entry name does not make a 5 KB error line. Both ends stay: a path's start
/// says where, its end what.
pub fn shorten_words(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(4 * LONGEST_WORD));
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let chars = word.chars().count();
        if chars <= LONGEST_WORD {
            out.push_str(word);
            continue;
        }
        let keep = LONGEST_WORD / 2 - 2;
        out.extend(word.chars().take(keep));
        out.push_str(&format!("…[{} more]…", chars - 2 * keep));
        out.extend(word.chars().skip(chars - keep));
    }
    out
}

pub use autogentoo_core::civil_time::timestamp;

/// Human-readable bytes (binary units).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// For commands that only print what they read (`builds list`, `builds log`, …): a reader that
/// closes our stdout early (`| head`) ends us quietly, as it does `cat`, instead of the
/// broken-pipe panic Rust's default gives. Not for commands that change things: a closed
/// stdout must not stop a build half-way.
pub fn end_on_closed_stdout() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: the default action has no handler to run; nothing else in this process sets
    // SIGPIPE's disposition.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_words_are_shortened_in_the_middle_and_short_ones_kept() {
        let name = format!("usr/{}/bin", "a".repeat(5000));
        let line = format!("entry '{name}' climbs out of the stage with '..'");
        let shown = shorten_words(&line);
        assert!(shown.len() < 400, "{} bytes", shown.len());
        assert!(shown.starts_with("entry 'usr/aaa"), "{shown}");
        assert!(
            shown.contains("aaa/bin' climbs out of the stage with '..'"),
            "{shown}"
        );
        assert!(shown.contains("more]"), "{shown}");
        assert_eq!(shorten_words("a short line"), "a short line");
    }

    #[test]
    fn control_characters_are_shown_not_obeyed_and_long_lines_cut() {
        let shown = for_people("entry 'a\u{1b}[2Jb' is bad");
        assert_eq!(shown, "entry 'a\\x1b[2Jb' is bad");
        let spaced = format!("entry '{}' is bad", "a b ".repeat(1000));
        let shown = for_people(&spaced);
        assert!(
            shown.chars().count() <= LONGEST_LINE + 40,
            "{}",
            shown.len()
        );
        assert!(shown.ends_with("' is bad"), "{shown}");
    }

    #[test]
    fn json_is_found_before_the_command_separator_only() {
        let args = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>().into_iter();
        assert!(json_requested(args(&[
            "autogentoo",
            "--json",
            "root",
            "list"
        ])));
        assert!(json_requested(args(&[
            "autogentoo",
            "root",
            "list",
            "--json"
        ])));
        assert!(!json_requested(args(&[
            "autogentoo",
            "root",
            "run",
            "x",
            "--",
            "--json"
        ])));
    }

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
