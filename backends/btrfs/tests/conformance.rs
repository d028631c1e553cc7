//! The shared conformance suite on the btrfs backend, each case on its own scratch btrfs (a
//! sparse loop-mounted image, torn down by the fixture's guard even when the case fails).

mod support;

use autogentoo_core::testkit::conformance::Fixture;
use autogentoo_tests::ScratchBtrfs;
use support::store_in;

fn fresh_store() -> Fixture {
    let scratch = ScratchBtrfs::new().expect("a scratch btrfs");
    let storage = store_in(&scratch).expect("the btrfs backend on it");
    Fixture {
        storage,
        guard: Box::new(scratch),
    }
}

autogentoo_core::storage_conformance!(fresh_store);
