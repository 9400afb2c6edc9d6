//! Manifests and indexes as oci-spec's types. Docker's schema 2 manifests and
//! manifest lists parse as the same types: they differ only in media types.

use std::collections::HashMap;

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::digest::Digest;
use crate::error::OciError;
use crate::media_types::{
    is_index, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_SCHEMA1, OCI_INDEX, OCI_MANIFEST,
};

/// A parsed manifest: one image (or artifact), or an index of manifests.
// Parsed and matched right away, never kept in bulk: boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Manifest {
    Image(ImageManifest),
    Index(ImageIndex),
}

/// A manifest as a registry accepts it on push, with the media type it is stored under.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    pub media_type: String,
    pub manifest: Manifest,
}

fn invalid(msg: impl Into<String>) -> OciError {
    OciError::ManifestInvalid(msg.into())
}

/// Media type parameters (`; charset=…`) are ignored, as the spec says.
fn essence(media_type: &str) -> &str {
    media_type.split(';').next().unwrap_or("").trim()
}

const PUSHABLE: [&str; 4] = [
    OCI_MANIFEST,
    OCI_INDEX,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
];

impl Manifest {
    /// Parses manifest bytes as a client reads them, deciding image or index as the
    /// registry did when it was pushed ([`Manifest::parse_pushed`]): by the manifest's
    /// own `mediaType`, else the one it was served or listed with, else its shape.
    pub fn parse(bytes: &[u8], media_type: Option<&str>) -> Result<Manifest, OciError> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let known = |t: &&str| PUSHABLE.contains(t);
        let declared = value
            .get("mediaType")
            .and_then(|t| t.as_str())
            .filter(known);
        let index = match declared.or(media_type.map(essence).filter(known)) {
            Some(t) => is_index(t),
            None => value.get("manifests").is_some(),
        };
        if index {
            serde_json::from_value(value)
                .map(Manifest::Index)
                .map_err(|e| invalid(format!("invalid image index: {e}")))
        } else {
            serde_json::from_value(value)
                .map(Manifest::Image)
                .map_err(|e| invalid(format!("invalid image manifest: {e}")))
        }
    }

    /// Parses a pushed manifest strictly, as the registry stores it: schema version 2,
    /// a media type it knows (the manifest's own `mediaType`, else the request's
    /// `Content-Type`, else its shape), and the two agreeing when both are given.
    pub fn parse_pushed(content_type: Option<&str>, body: &[u8]) -> Result<Pushed, OciError> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
        let object = value
            .as_object()
            .ok_or_else(|| invalid("a manifest must be a JSON object"))?;
        if object.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
            return Err(invalid(
                "schemaVersion must be 2 (Docker schema 1 manifests are not supported)",
            ));
        }
        let declared = match object.get("mediaType") {
            None => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or_else(|| invalid("mediaType must be a string"))?,
            ),
        };
        let header = content_type
            .map(essence)
            .filter(|c| PUSHABLE.contains(c) || DOCKER_SCHEMA1.contains(c));
        if let (Some(d), Some(h)) = (declared, header) {
            if d != h {
                return Err(invalid(format!(
                    "Content-Type {h} does not match the manifest's mediaType {d}"
                )));
            }
        }
        let shape = match object.contains_key("manifests") {
            true => OCI_INDEX,
            false => OCI_MANIFEST,
        };
        let media_type = declared.or(header).unwrap_or(shape).to_owned();
        if DOCKER_SCHEMA1.contains(&media_type.as_str()) {
            return Err(invalid("Docker schema 1 manifests are not supported"));
        }
        let manifest = match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => Manifest::Image(
                serde_json::from_value(value)
                    .map_err(|e| invalid(format!("invalid image manifest: {e}")))?,
            ),
            OCI_INDEX | DOCKER_MANIFEST_LIST => Manifest::Index(
                serde_json::from_value(value)
                    .map_err(|e| invalid(format!("invalid image index: {e}")))?,
            ),
            other => {
                return Err(invalid(format!(
                    "unsupported manifest media type {other:?}; expected one of {}",
                    PUSHABLE.join(", ")
                )))
            }
        };
        Ok(Pushed {
            media_type,
            manifest,
        })
    }

    /// The manifest this one refers to (a signature's or an SBOM's image).
    pub fn subject(&self) -> Option<&Descriptor> {
        match self {
            Manifest::Image(m) => m.subject().as_ref(),
            Manifest::Index(i) => i.subject().as_ref(),
        }
    }

    pub fn annotations(&self) -> Option<&HashMap<String, String>> {
        match self {
            Manifest::Image(m) => m.annotations().as_ref(),
            Manifest::Index(i) => i.annotations().as_ref(),
        }
    }

    /// The artifact type the referrers API reports: the declared one, else (for an
    /// image manifest) its config's media type.
    pub fn artifact_type(&self) -> Option<String> {
        match self {
            Manifest::Image(m) => Some(
                m.artifact_type()
                    .as_ref()
                    .unwrap_or_else(|| m.config().media_type())
                    .to_string(),
            ),
            Manifest::Index(i) => i.artifact_type().as_ref().map(|t| t.to_string()),
        }
    }
}

/// A descriptor's digest, checked against the digest grammar Berth accepts.
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest, OciError> {
    d.digest()
        .to_string()
        .parse()
        .map_err(|e: OciError| invalid(format!("descriptor digest: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;

    #[test]
    fn pushed_manifests_are_checked_for_version_type_and_shape() {
        let cfg = Digest::of(Algorithm::Sha256, b"{}");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":2}},"layers":[]}}"#
        );
        let p = Manifest::parse_pushed(Some(OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(p.media_type, OCI_MANIFEST);
        assert_eq!(
            p.manifest.artifact_type().as_deref(),
            Some("application/vnd.oci.image.config.v1+json")
        );
        let invalid = |r: Result<Pushed, OciError>| matches!(r, Err(OciError::ManifestInvalid(_)));
        // The header and the manifest's own type disagree.
        assert!(invalid(Manifest::parse_pushed(
            Some(OCI_INDEX),
            body.as_bytes()
        )));
        // A charset parameter does not matter.
        let with_charset = format!("{OCI_MANIFEST}; charset=utf-8");
        assert!(Manifest::parse_pushed(Some(&with_charset), body.as_bytes()).is_ok());
        assert!(invalid(Manifest::parse_pushed(None, b"not json")));
        assert!(invalid(Manifest::parse_pushed(None, b"[]")));
        assert!(invalid(Manifest::parse_pushed(
            None,
            br#"{"schemaVersion":1}"#
        )));
        assert!(invalid(Manifest::parse_pushed(
            None,
            br#"{"schemaVersion":2,"mediaType":7}"#
        )));
        assert!(invalid(Manifest::parse_pushed(
            None,
            br#"{"schemaVersion":2,"mediaType":"text/plain"}"#
        )));
        let no_layers = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x/y","digest":"{cfg}","size":2}}}}"#
        );
        assert!(invalid(Manifest::parse_pushed(None, no_layers.as_bytes())));
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        let p = Manifest::parse_pushed(None, index).unwrap();
        assert_eq!(p.media_type, OCI_INDEX);
        assert!(matches!(p.manifest, Manifest::Index(_)));
    }

    #[test]
    fn clients_read_a_manifest_as_the_registry_stored_it() {
        let cfg = Digest::of(Algorithm::Sha256, b"{}");
        // An image manifest that also carries a `manifests` array (found by fuzzing).
        let body = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":2}},"layers":[],"manifests":[]}}"#
        );
        let pushed = Manifest::parse_pushed(Some(OCI_MANIFEST), body.as_bytes()).unwrap();
        assert_eq!(pushed.media_type, OCI_MANIFEST);
        let pulled = Manifest::parse(body.as_bytes(), Some(&pushed.media_type)).unwrap();
        assert_eq!(pulled, pushed.manifest);
        // Its own mediaType decides over the one it is listed with.
        let typed = body.replacen('{', &format!(r#"{{"mediaType":"{OCI_MANIFEST}","#), 1);
        assert!(matches!(
            Manifest::parse(typed.as_bytes(), Some(OCI_INDEX)),
            Ok(Manifest::Image(_))
        ));
    }

    #[test]
    fn clients_parse_by_listed_type_or_shape() {
        let index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert!(matches!(
            Manifest::parse(index, None),
            Ok(Manifest::Index(_))
        ));
        assert!(Manifest::parse(b"{", None).is_err());
    }
}
