//! Manifests, indexes and descriptors as oci-spec's types (Docker's schema 2
//! manifests and manifest lists parse as the same types: they differ only in media
//! types). Image configurations are not here: they stay JSON (see `image::Image::config`
//! for why).
//!
//! A manifest's digest is always that of the bytes stored and sent; the bytes the CLI
//! writes for a manifest come from [`to_bytes`].

use std::collections::HashMap;
use std::str::FromStr;

use oci_spec::image::{
    Descriptor, ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType,
    Platform,
};
use serde::Serialize;

use berth_oci::media_types::{self, OCI_MANIFEST};

use crate::store::Store;

pub use berth_oci::manifest::Manifest;

/// The bytes the CLI stores a manifest, index or descriptor list as: compact JSON with
/// every object's keys in sorted order. oci-spec keeps annotations in a `HashMap`,
/// whose order changes from run to run; going through `serde_json::Value` (sorted
/// maps) makes the same manifest always the same bytes, so builds stay reproducible,
/// and gives the bytes berth wrote before it used typed manifests (same digests).
pub fn to_bytes(value: &impl Serialize) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&serde_json::to_value(value)?)?)
}

/// Like [`to_bytes`], indented (the local store's `index.json`).
pub fn to_bytes_pretty(value: &impl Serialize) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec_pretty(&serde_json::to_value(value)?)?)
}

/// A descriptor of the blob `digest` (`sha256:…`) of `size` bytes.
pub fn descriptor(media_type: &str, digest: &str, size: u64) -> anyhow::Result<Descriptor> {
    let digest = oci_spec::image::Digest::from_str(digest)
        .map_err(|e| anyhow::anyhow!("invalid digest {digest:?}: {e}"))?;
    Ok(Descriptor::new(MediaType::from(media_type), size, digest))
}

/// A descriptor's digest as text (`sha256:…`).
pub fn digest_of(descriptor: &Descriptor) -> &str {
    descriptor.digest().as_ref()
}

/// A layer as an OCI manifest describes it: Docker's layer media types (the same
/// bytes) become their OCI equivalents; any other type is kept.
pub fn as_oci_layer(layer: &Descriptor) -> Descriptor {
    let oci = match layer.media_type().to_string().as_str() {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => media_types::OCI_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.diff.tar" => "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        }
        _ => return layer.clone(),
    };
    let mut layer = layer.clone();
    layer.set_media_type(MediaType::from(oci));
    layer
}

/// An OCI image manifest of `config` and `layers`.
pub fn image_manifest(
    config: Descriptor,
    layers: Vec<Descriptor>,
) -> anyhow::Result<ImageManifest> {
    Ok(ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .build()?)
}

/// An index of `manifests` (no media type of its own, as the local store's index.json).
pub fn index(manifests: Vec<Descriptor>) -> anyhow::Result<ImageIndex> {
    Ok(ImageIndexBuilder::default()
        .schema_version(2u32)
        .manifests(manifests)
        .build()?)
}

/// An OCI image index of `manifests`, to push (its media type set).
pub fn index_of(manifests: Vec<Descriptor>) -> anyhow::Result<ImageIndex> {
    Ok(ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()?)
}

/// `descriptor` with the platform an image `config` (JSON) names.
pub fn with_platform(
    mut descriptor: Descriptor,
    config: &serde_json::Value,
) -> anyhow::Result<Descriptor> {
    let text = |key: &str| config[key].as_str().unwrap_or_default().to_owned();
    let mut platform = oci_spec::image::PlatformBuilder::default()
        .os(oci_spec::image::Os::from(text("os").as_str()))
        .architecture(oci_spec::image::Arch::from(text("architecture").as_str()))
        .build()?;
    if let Some(variant) = config["variant"].as_str() {
        platform.set_variant(Some(variant.to_owned()));
    }
    descriptor.set_platform(Some(platform));
    Ok(descriptor)
}

/// Stores `manifest`; returns its descriptor (digest and size of the stored bytes).
pub fn put(store: &Store, manifest: &ImageManifest) -> anyhow::Result<Descriptor> {
    let bytes = to_bytes(manifest)?;
    let digest = store.put_blob(&bytes)?;
    descriptor(OCI_MANIFEST, &digest, bytes.len() as u64)
}

/// `descriptor` with `annotations` (and no others).
pub fn annotated(mut descriptor: Descriptor, annotations: &[(&str, &str)]) -> Descriptor {
    let map: HashMap<String, String> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    descriptor.set_annotations(Some(map));
    descriptor
}

/// An annotation of `descriptor`.
pub fn annotation<'a>(descriptor: &'a Descriptor, key: &str) -> Option<&'a str> {
    descriptor
        .annotations()
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// `os/architecture[/variant]` of an index entry (`/` when it names none).
pub fn platform_of(platform: Option<&Platform>) -> String {
    let Some(p) = platform else {
        return "/".to_owned();
    };
    let mut s = format!("{}/{}", p.os(), p.architecture());
    if let Some(v) = p.variant() {
        s.push('/');
        s.push_str(v);
    }
    s
}

/// Whether platform `found` (`os/arch[/variant]`) is the `wanted` one: the same, or
/// a variant of it when `wanted` names none (`linux/arm` takes `linux/arm/v7`).
pub fn platform_matches(found: &str, wanted: &str) -> bool {
    found == wanted || found.starts_with(&format!("{wanted}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn docker_manifests_parse_as_image_manifests() {
        let docker = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"{DIGEST}","size":7}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{DIGEST}","size":9}}]}}"#
        );
        let Manifest::Image(m) = Manifest::parse(docker.as_bytes(), None).unwrap() else {
            panic!("an image manifest");
        };
        assert_eq!(m.layers()[0].size(), 9);
        assert_eq!(
            m.config().media_type().to_string(),
            media_types::DOCKER_CONFIG
        );
    }

    #[test]
    fn indexes_are_told_by_type_or_content() {
        let list = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{DIGEST}","size":3,
            "platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        let Manifest::Index(i) = Manifest::parse(list.as_bytes(), None).unwrap() else {
            panic!("an index");
        };
        assert_eq!(
            platform_of(i.manifests()[0].platform().as_ref()),
            "linux/arm64/v8"
        );
        assert!(Manifest::parse(b"{}", Some(media_types::OCI_INDEX)).is_err());
    }

    #[test]
    fn written_manifests_are_the_bytes_of_sorted_json() {
        let config = descriptor(media_types::OCI_CONFIG, DIGEST, 7).unwrap();
        let layer = descriptor(media_types::OCI_LAYER_GZIP, DIGEST, 9).unwrap();
        let bytes = to_bytes(&image_manifest(config, vec![layer]).unwrap()).unwrap();
        let expected = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": media_types::OCI_CONFIG, "digest": DIGEST, "size": 7},
            "layers": [{"mediaType": media_types::OCI_LAYER_GZIP, "digest": DIGEST, "size": 9}],
        }))
        .unwrap();
        assert_eq!(bytes, expected);
        let annotated = annotated(
            descriptor(OCI_MANIFEST, DIGEST, 1).unwrap(),
            &[("b", "2"), ("a", "1"), ("c", "3")],
        );
        let text = String::from_utf8(to_bytes(&annotated).unwrap()).unwrap();
        assert!(
            text.starts_with(r#"{"annotations":{"a":"1","b":"2","c":"3"}"#),
            "{text}"
        );
    }
}
