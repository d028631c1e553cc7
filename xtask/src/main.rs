//! Developer tasks: `cargo xtask demo` (the main job on the example site) and `cargo xtask test`
//! (the whole suite). Both install what they need with apt-get, so they work on a fresh machine.

mod demo;
mod host;
mod test;

use anyhow::Result;

const USAGE: &str = "usage: cargo xtask <demo|test [--unit]>
  demo         build autogentoo, make a demo stage from busybox-static and run the pipeline on it
  test         install the suite's prerequisites (apt-get, as root) and run every test tier
  test --unit  only the unit tier (no root, no real filesystems)";

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
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    }
}
