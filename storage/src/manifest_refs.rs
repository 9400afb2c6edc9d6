//! What a pushed manifest says about itself and references, as storage records it
//! (parsing itself is `berth_oci::manifest`'s).

use std::collections::HashMap;

use berth_oci::manifest::{descriptor_digest, Manifest, Pushed};
use berth_oci::media_types::IMAGE_CONFIG_TYPES;

use crate::digest::Digest;
use crate::error::Result;

pub(crate) struct ManifestRefs {
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub subject: Option<Digest>,
    pub annotations: Option<HashMap<String, String>>,
    /// Blobs it references (config and layers), each of which must be in the repository.
    pub blobs: Vec<Digest>,
    /// Manifests an index lists, each of which must be in the repository.
    pub children: Vec<Digest>,
    /// An image manifest's config plus layers, in bytes.
    pub image_size: Option<i64>,
    /// An image manifest's config when it is an image configuration (which names the
    /// platform), with its size.
    pub image_config: Option<(Digest, u64)>,
}

impl ManifestRefs {
    pub fn of(pushed: &Pushed) -> Result<ManifestRefs> {
        let manifest = &pushed.manifest;
        let mut refs = ManifestRefs {
            media_type: pushed.media_type.clone(),
            artifact_type: manifest.artifact_type(),
            subject: manifest.subject().map(descriptor_digest).transpose()?,
            annotations: manifest.annotations().cloned(),
            blobs: Vec::new(),
            children: Vec::new(),
            image_size: None,
            image_config: None,
        };
        match manifest {
            Manifest::Image(m) => {
                let config = descriptor_digest(m.config())?;
                refs.image_config = IMAGE_CONFIG_TYPES
                    .contains(&m.config().media_type().to_string().as_str())
                    .then(|| (config.clone(), m.config().size()));
                refs.image_size = Some(
                    m.layers()
                        .iter()
                        .chain([m.config()])
                        .map(|d| d.size() as i64)
                        .sum(),
                );
                refs.blobs.push(config);
                for layer in m.layers() {
                    // Foreign/non-distributable layers live elsewhere (their `urls`).
                    if layer.urls().as_ref().is_some_and(|u| !u.is_empty()) {
                        continue;
                    }
                    refs.blobs.push(descriptor_digest(layer)?);
                }
            }
            Manifest::Index(i) => {
                refs.children = i
                    .manifests()
                    .iter()
                    .map(descriptor_digest)
                    .collect::<std::result::Result<_, _>>()?;
            }
        }
        Ok(refs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use berth_oci::media_types::{OCI_INDEX, OCI_MANIFEST};

    #[test]
    fn an_image_references_its_config_and_distributable_layers() {
        let cfg = Digest::of(Algorithm::Sha256, b"{}");
        let layer = Digest::of(Algorithm::Sha256, b"layer");
        let foreign = Digest::of(Algorithm::Sha256, b"foreign");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
            "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cfg}","size":2}},
            "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}},
            {{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{foreign}","size":7,"urls":["https://example.com/l"]}}]}}"#
        );
        let pushed = Manifest::parse_pushed(None, body.as_bytes()).unwrap();
        let refs = ManifestRefs::of(&pushed).unwrap();
        assert_eq!(refs.blobs, [cfg.clone(), layer]);
        assert_eq!(refs.image_size, Some(2 + 5 + 7));
        assert_eq!(refs.image_config, Some((cfg, 2)));
        assert!(refs.children.is_empty());
    }

    #[test]
    fn an_index_references_its_manifests_and_a_bad_digest_is_invalid() {
        let child = Digest::of(Algorithm::Sha256, b"child");
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{child}","size":9}}]}}"#
        );
        let refs =
            ManifestRefs::of(&Manifest::parse_pushed(None, body.as_bytes()).unwrap()).unwrap();
        assert_eq!(refs.children, std::slice::from_ref(&child));
        assert_eq!(refs.image_size, None);
        let bad = body.replace(&child.to_string(), "md5:0123");
        // oci-spec may refuse the digest while parsing, or we do while reading it.
        let refused = Manifest::parse_pushed(None, bad.as_bytes())
            .map_err(crate::StorageError::from)
            .and_then(|p| ManifestRefs::of(&p));
        assert!(refused.is_err());
    }
}
