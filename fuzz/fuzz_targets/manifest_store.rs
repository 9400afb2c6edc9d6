//! Manifests and indexes as a client PUTs them, all the way through storage
//! (`Storage::put_manifest` on SQLite in a temporary directory: parsing, reading the
//! references, checking them, storing): any body with any Content-Type is either
//! stored or refused as the client's mistake (invalid manifest, unknown blob, bad
//! digest, too large), never a panic or an internal error. A stored manifest reads
//! back byte for byte. (The `manifest` target fuzzes the parser alone, faster.)
//!
//! The first byte picks the Content-Type (none, the four manifest types, a schema-1
//! type, or one with parameters), the rest is the body.

#![no_main]

use std::sync::LazyLock;

use berth_config::{Config, MinFree};
use berth_oci::media_types::*;
use berth_oci::Reference;
use berth_storage::{Storage, StorageError};
use libfuzzer_sys::fuzz_target;

struct Registry {
    runtime: tokio::runtime::Runtime,
    storage: Storage,
    _dir: tempfile::TempDir,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(dir.path());
    config.min_free = MinFree::Bytes(0);
    config.limits.max_manifest_bytes = 64 * 1024;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let storage = runtime.block_on(Storage::open(&config)).unwrap();
    Registry {
        runtime,
        storage,
        _dir: dir,
    }
});

const CONTENT_TYPES: [Option<&str>; 8] = [
    None,
    Some(OCI_MANIFEST),
    Some(OCI_INDEX),
    Some(DOCKER_MANIFEST),
    Some(DOCKER_MANIFEST_LIST),
    Some(DOCKER_SCHEMA1[0]),
    Some("application/vnd.oci.image.index.v1+json; charset=utf-8"),
    Some("text/plain"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[kind as usize % CONTENT_TYPES.len()];
    let registry = &*REGISTRY;
    let reference = Reference::Tag("t".into());
    let put = registry.runtime.block_on(registry.storage.put_manifest(
        "fuzz/app",
        &reference,
        content_type,
        body,
        &[],
    ));
    match put {
        Ok(put) => {
            let stored = registry
                .runtime
                .block_on(
                    registry
                        .storage
                        .manifest("fuzz/app", &Reference::Digest(put.digest)),
                )
                .unwrap();
            assert_eq!(&stored.content[..], body);
        }
        Err(
            StorageError::ManifestInvalid(_)
            | StorageError::ManifestBlobUnknown { .. }
            | StorageError::ManifestTooLarge { .. }
            | StorageError::DigestInvalid(_)
            | StorageError::Oci(_),
        ) => {}
        Err(e) => panic!(
            "{content_type:?} {:?}: {e:?}",
            String::from_utf8_lossy(body)
        ),
    }
});
