//! The `autogentoo` binary: a shim over the library in this crate.

fn main() -> std::process::ExitCode {
    autogentoo_cli::main()
}
