//! Developer tasks: `cargo xtask demo` (the main job on the example site), `cargo xtask test`
//! (the whole suite), both installing what they need with apt-get so that they work on a fresh
//! machine, and `cargo xtask install` (the binary, its completions and manual pages).

mod demo;
mod host;
mod install;
mod test;

use anyhow::Result;

const USAGE: &str =
    "usage: cargo xtask <demo|test [--unit]|install [--prefix DIR] [--destdir DIR] [--debug]>
  demo         build autogentoo, make a demo stage from busybox-static and run the pipeline on it
  test         install the suite's prerequisites (apt-get, as root) and run every test tier
  test --unit  only the unit tier (no root, no real filesystems)
  install      build the release binary and install it, its bash, zsh and fish completions and
               its manual pages under --prefix (default /usr/local), staged below --destdir
               (--debug: the debug build instead)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["demo"] => demo::run(),
        ["test"] => test::run(false),
        ["test", "--unit"] => test::run(true),
        ["install", options @ ..] => match install::Options::parse(options) {
            Ok(options) => install::run(&options),
            Err(e) => {
                eprintln!("error: {e:#}\n{USAGE}");
                std::process::exit(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
