//! The shared conformance suite on a fresh file-backed pool of a zfs-fuse daemon (or of the
//! ZFS the machine runs).

use autogentoo_backend_zfs::ZfsStorage;
use autogentoo_core::storage::Storage;
use autogentoo_core::testkit::conformance::Fixture;
use autogentoo_core::testkit::zfs_pool::Pool;

fn fresh_store() -> Fixture {
    let pool = Pool::new(256);
    let storage = ZfsStorage::open(&pool.mountpoint, Some(&pool.name)).expect("open");
    storage.init().expect("init");
    Fixture {
        storage: Box::new(storage),
        guard: Box::new(pool),
    }
}

autogentoo_core::storage_conformance!(fresh_store);
