//! Manifests and indexes (berth-oci's `Manifest`, on oci-spec's types): as the registry
//! parses a pushed one (`parse_pushed`, with any Content-Type) and as a client parses
//! a pulled one (`parse`). Nothing panics; what the registry accepts has one of the
//! four manifest media types and the shape that type says, a client reading it with
//! that media type sees the same manifest, and every accessor and descriptor digest
//! check answers.
//!
//! The first byte picks the Content-Type (none, the four manifest types, a schema-1
//! type, one with parameters, or a foreign one), the rest is the body.

#![no_main]

use berth_oci::manifest::{descriptor_digest, Manifest};
use berth_oci::media_types::*;
use libfuzzer_sys::fuzz_target;

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

fn inspect(manifest: &Manifest) {
    let _ = (
        manifest.subject(),
        manifest.annotations(),
        manifest.artifact_type(),
    );
    match manifest {
        Manifest::Image(m) => {
            let _ = descriptor_digest(m.config());
            for d in m.layers().iter().chain(m.subject()) {
                let _ = descriptor_digest(d);
            }
        }
        Manifest::Index(i) => {
            for d in i.manifests().iter().chain(i.subject()) {
                let _ = descriptor_digest(d);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[kind as usize % CONTENT_TYPES.len()];
    if let Ok(pulled) = Manifest::parse(body, content_type) {
        inspect(&pulled);
    }
    let Ok(pushed) = Manifest::parse_pushed(content_type, body) else {
        return;
    };
    let media_type = pushed.media_type.as_str();
    match &pushed.manifest {
        Manifest::Image(_) => assert!([OCI_MANIFEST, DOCKER_MANIFEST].contains(&media_type)),
        Manifest::Index(_) => assert!(is_index(media_type)),
    }
    inspect(&pushed.manifest);
    let pulled = Manifest::parse(body, Some(media_type));
    assert_eq!(
        pulled.as_ref(),
        Ok(&pushed.manifest),
        "stored as {media_type}, read back differently: {:?}",
        String::from_utf8_lossy(body)
    );
});
