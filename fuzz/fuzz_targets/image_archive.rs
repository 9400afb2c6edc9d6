//! Image archives as `berth image load` reads them (`berth_cli::archive::load_from`: a
//! `docker save` or OCI-layout tar, made of arbitrary bytes): loading never panics and
//! never writes outside the store and its own temporary directory; whatever it loads
//! is listed in the store afterwards.

#![no_main]

use std::sync::LazyLock;

use berth_cli::archive::load_from;
use berth_cli::store::Store;
use libfuzzer_sys::fuzz_target;

struct Place {
    store: Store,
    /// A file beside the store that no archive may change.
    victim: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

static PLACE: LazyLock<Place> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"untouched").unwrap();
    Place {
        store: Store::open(&dir.path().join("store")).unwrap(),
        victim,
        _dir: dir,
    }
});

fuzz_target!(|data: &[u8]| {
    let place = &*PLACE;
    if let Ok(loaded) = load_from(&place.store, data, "the archive") {
        for name in loaded {
            let entry = place.store.find(&name).unwrap();
            assert!(entry.is_some(), "{name} loaded but not in the store");
        }
    }
    assert_eq!(std::fs::read(&place.victim).unwrap(), b"untouched");
});
