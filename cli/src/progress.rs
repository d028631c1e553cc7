//! Progress bars on a terminal, nothing elsewhere: scripts and logs stay clean.

use std::io::IsTerminal;

use autogentoo_core::stage_import::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// A byte-count bar drawn on stderr when it is a terminal and `--quiet` is not given.
pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Bar {
    pub fn new(message: &str, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(message.to_owned());
            bar
        });
        Self { bar }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn start(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }
}
