//! The shared conformance suite on a fresh `dir` store in a temporary directory.

use autogentoo_backend_dir::DirStorage;
use autogentoo_core::storage::Storage;
use autogentoo_core::testkit::conformance::Fixture;

fn fresh_store() -> Fixture {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let storage = DirStorage::open(tmp.path()).expect("open");
    storage.init().expect("init");
    // Reopen so the capabilities are probed on the initialised workdir, as the CLI does.
    let storage = DirStorage::open(tmp.path()).expect("reopen");
    Fixture {
        storage: Box::new(storage),
        guard: Box::new(tmp),
    }
}

autogentoo_core::storage_conformance!(fresh_store);
