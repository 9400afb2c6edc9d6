//! Images in the local store: what they are made of, importing a root filesystem,
//! and the views `ls`, `inspect` and `history` print.

use std::io::Read;
use std::path::Path;

use flate2::write::GzEncoder;
use oci_spec::image::ImageManifest;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use berth_oci::media_types::{OCI_CONFIG, OCI_LAYER_GZIP};

use crate::manifest::{self, digest_of, Manifest};
use crate::store::Store;

/// Every blob an image's manifest names (itself, config, layers; for an index, its
/// children's too, where present).
pub fn blobs_of(store: &Store, manifest_digest: &str) -> anyhow::Result<Vec<String>> {
    let mut out = vec![manifest_digest.to_owned()];
    match store.read_manifest(manifest_digest)? {
        Manifest::Index(index) => {
            for child in index.manifests() {
                if store.has_blob(digest_of(child)) {
                    out.extend(blobs_of(store, digest_of(child))?);
                }
            }
        }
        Manifest::Image(image) => {
            out.push(digest_of(image.config()).to_owned());
            out.extend(image.layers().iter().map(|l| digest_of(l).to_owned()));
        }
    }
    Ok(out)
}

/// The platform image a listed entry stands for: its manifest and config.
pub struct Image {
    pub manifest_digest: String,
    pub manifest: ImageManifest,
    pub config_digest: String,
    /// The image configuration as JSON, not oci-spec's `ImageConfiguration`: that type
    /// drops the fields it does not know (Docker's `Healthcheck`, `Shell`, `OnBuild`,
    /// `container_config`, …), keeps labels in a `HashMap` (so it would serialize in a
    /// different order each time) and rewrites `ExposedPorts` and `Volumes`. A config
    /// that `build` extends must keep every field of its base and serialize the same
    /// way each time, and `inspect` shows the fields as they are.
    pub config: Value,
}

impl Image {
    /// Loads the image `manifest_digest` names (for an index, the first child present).
    pub fn load(store: &Store, manifest_digest: &str) -> anyhow::Result<Image> {
        let manifest = match store.read_manifest(manifest_digest)? {
            Manifest::Image(manifest) => manifest,
            Manifest::Index(index) => {
                let child = index
                    .manifests()
                    .iter()
                    .map(digest_of)
                    .find(|d| store.has_blob(d))
                    .ok_or_else(|| {
                        anyhow::anyhow!("no platform of this index is in the local store")
                    })?;
                return Image::load(store, child);
            }
        };
        let config_digest = digest_of(manifest.config()).to_owned();
        let config = store.read_config(&config_digest)?;
        Ok(Image {
            manifest_digest: manifest_digest.to_owned(),
            manifest,
            config_digest,
            config,
        })
    }

    /// Compressed size: the config and layers as stored and transferred.
    pub fn size(&self) -> u64 {
        let layers: u64 = self.manifest.layers().iter().map(|l| l.size()).sum();
        layers + self.manifest.config().size()
    }

    /// Docker's image id: the config digest.
    pub fn id(&self) -> &str {
        &self.config_digest
    }

    /// `docker image inspect`'s fields.
    pub fn inspect(&self, names: &[String], repo_digests: &[String]) -> Value {
        let c = &self.config;
        json!({
            "Id": self.config_digest,
            "RepoTags": names,
            "RepoDigests": repo_digests,
            "Created": c["created"],
            "Author": c["author"],
            "Architecture": c["architecture"],
            "Variant": c["variant"],
            "Os": c["os"],
            "Size": self.size(),
            "Config": {
                "User": c["config"]["User"],
                "Env": c["config"]["Env"],
                "Cmd": c["config"]["Cmd"],
                "Entrypoint": c["config"]["Entrypoint"],
                "WorkingDir": c["config"]["WorkingDir"],
                "ExposedPorts": c["config"]["ExposedPorts"],
                "Labels": c["config"]["Labels"],
                "Volumes": c["config"]["Volumes"],
            },
            "RootFS": {
                "Type": c["rootfs"]["type"],
                "Layers": c["rootfs"]["diff_ids"],
            },
            "Manifest": self.manifest_digest,
        })
    }

    /// `docker history` rows, newest first: (layer id or `<missing>`, created,
    /// created_by, size, comment). Empty-layer steps have size 0.
    pub fn history(&self) -> Vec<[String; 5]> {
        let layers = self.manifest.layers();
        let mut next_layer = 0;
        let mut rows = Vec::new();
        for step in self.config["history"].as_array().into_iter().flatten() {
            let empty = step["empty_layer"].as_bool().unwrap_or(false);
            let (id, size) = if empty {
                ("<missing>".to_owned(), 0)
            } else {
                let layer = layers.get(next_layer);
                next_layer += 1;
                (
                    layer.map_or("<missing>", digest_of).to_owned(),
                    layer.map_or(0, |l| l.size()),
                )
            };
            rows.push([
                id,
                step["created"].as_str().unwrap_or_default().to_owned(),
                step["created_by"].as_str().unwrap_or_default().to_owned(),
                size.to_string(),
                step["comment"].as_str().unwrap_or_default().to_owned(),
            ]);
        }
        rows.reverse();
        rows
    }
}

/// `berth image import`: a root filesystem tarball becomes a one-layer image.
pub fn import(store: &Store, rootfs: &Path, name: &str) -> anyhow::Result<String> {
    let mut input = std::fs::File::open(rootfs)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", rootfs.display()))?;
    // Check it is a tar archive before storing anything.
    tar::Archive::new(std::fs::File::open(rootfs)?)
        .entries()?
        .next()
        .transpose()
        .map_err(|e| anyhow::anyhow!("{} is not a tar archive: {e}", rootfs.display()))?;
    let mut layer = GzEncoder::new(store.blob_writer()?, flate2::Compression::default());
    let mut diff = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        diff.update(&buf[..n]);
        std::io::Write::write_all(&mut layer, &buf[..n])?;
    }
    let writer = layer.finish()?;
    let layer_size = writer.size();
    let layer_digest = writer.finish(None)?;
    let diff_id = format!("sha256:{}", hex::encode(diff.finalize()));
    let created = created_now();
    let config = json!({
        "created": created,
        "architecture": host_architecture(),
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        "history": [{
            "created": created,
            "created_by": format!("berth image import {}", rootfs.display()),
            "comment": "Imported from a root filesystem tarball",
        }],
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = store.put_blob(&config_bytes)?;
    let manifest = manifest::image_manifest(
        manifest::descriptor(OCI_CONFIG, &config_digest, config_bytes.len() as u64)?,
        vec![manifest::descriptor(
            OCI_LAYER_GZIP,
            &layer_digest,
            layer_size,
        )?],
    )?;
    store.set(name, manifest::put(store, &manifest)?)?;
    Ok(config_digest)
}

/// `SOURCE_DATE_EPOCH` when set (reproducible images), else now.
pub fn created_now() -> String {
    let now = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .unwrap_or_else(chrono::Utc::now);
    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The OCI name of this machine's architecture.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm",
        other => other,
    }
}
