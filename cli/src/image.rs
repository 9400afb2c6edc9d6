//! Images in the local store: what they are made of, importing a root filesystem,
//! and the views `ls`, `inspect` and `history` print.

use std::io::Read;
use std::path::Path;

use flate2::write::GzEncoder;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use berth_oci::media_types::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};

use crate::store::Store;

/// Every blob an image's manifest names (itself, config, layers; for an index, its
/// children's too, where present).
pub fn blobs_of(store: &Store, manifest_digest: &str) -> anyhow::Result<Vec<String>> {
    let mut out = vec![manifest_digest.to_owned()];
    let manifest = store.read_json(manifest_digest)?;
    if let Some(children) = manifest["manifests"].as_array() {
        for child in children {
            let d = child["digest"].as_str().unwrap_or_default();
            if store.has_blob(d) {
                out.extend(blobs_of(store, d)?);
            }
        }
    }
    if let Some(d) = manifest["config"]["digest"].as_str() {
        out.push(d.to_owned());
    }
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        out.push(layer["digest"].as_str().unwrap_or_default().to_owned());
    }
    Ok(out)
}

/// The platform image a listed entry stands for: its manifest and config.
pub struct Image {
    pub manifest_digest: String,
    pub manifest: Value,
    pub config_digest: String,
    pub config: Value,
}

impl Image {
    /// Loads the image `manifest_digest` names (for an index, the first child present).
    pub fn load(store: &Store, manifest_digest: &str) -> anyhow::Result<Image> {
        let manifest = store.read_json(manifest_digest)?;
        if let Some(children) = manifest["manifests"].as_array() {
            let child = children
                .iter()
                .filter_map(|c| c["digest"].as_str())
                .find(|d| store.has_blob(d))
                .ok_or_else(|| {
                    anyhow::anyhow!("no platform of this index is in the local store")
                })?;
            return Image::load(store, child);
        }
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("manifest {manifest_digest} has no config"))?
            .to_owned();
        let config = store.read_json(&config_digest)?;
        Ok(Image {
            manifest_digest: manifest_digest.to_owned(),
            manifest,
            config_digest,
            config,
        })
    }

    /// Compressed size: the config and layers as stored and transferred.
    pub fn size(&self) -> u64 {
        let layers: u64 = self.manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["size"].as_u64())
            .sum();
        layers + self.manifest["config"]["size"].as_u64().unwrap_or(0)
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
        let layers: Vec<&Value> = self.manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
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
                    layer
                        .and_then(|l| l["digest"].as_str())
                        .unwrap_or("<missing>")
                        .to_owned(),
                    layer.and_then(|l| l["size"].as_u64()).unwrap_or(0),
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
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config_bytes.len() },
        "layers": [{ "mediaType": OCI_LAYER_GZIP, "digest": layer_digest, "size": layer_size }],
    });
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_digest = store.put_blob(&manifest_bytes)?;
    store.set(
        name,
        json!({ "mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest_bytes.len() }),
    )?;
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
