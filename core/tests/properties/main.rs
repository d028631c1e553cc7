//! Property tests of the parsers that users feed by hand or by download: volume names, the site
//! config, DIGESTS files and kernel configs.
//!
//! Every property states how many cases it runs, and all run from one fixed seed: CI tries the
//! same inputs on every run, so a red run is never luck and a failure it reports is reproduced by
//! running the same test again. Nothing is persisted beside the sources. To explore other
//! inputs, set `PROPTEST_RNG_SEED`.

mod digests;
mod kconfig;
mod names;
mod site_config;
mod tar_stream;

use proptest::test_runner::{Config, RngSeed};

/// The seed every property starts from unless `PROPTEST_RNG_SEED` names another.
const SEED: u64 = 0x6167_656e_746f_6f21;

/// A runner configuration for `cases` cases from the fixed seed.
pub fn cases(cases: u32) -> Config {
    let defaults = Config::default();
    let rng_seed = match defaults.rng_seed {
        RngSeed::Random => RngSeed::Fixed(SEED),
        chosen => chosen,
    };
    Config {
        cases,
        rng_seed,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..defaults
    }
}
