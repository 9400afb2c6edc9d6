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

/// The image for `platform` (`os/arch[/variant]`) that the stored manifest or index
/// `digest` holds: itself when its config is that platform's, or the index's child
/// for it when that child is here.
pub fn platform_image(
    store: &Store,
    digest: &str,
    platform: &str,
) -> anyhow::Result<Option<String>> {
    let matches = |p: &str| manifest::platform_matches(p, platform);
    match store.read_manifest(digest)? {
        Manifest::Index(index) => Ok(index
            .manifests()
            .iter()
            .find(|m| matches(&manifest::platform_of(m.platform().as_ref())))
            .map(|m| digest_of(m).to_owned())
            .filter(|d| store.has_blob(d))),
        Manifest::Image(_) => {
            let image = Image::load(store, digest)?;
            let c = &image.config;
            let mut p = format!(
                "{}/{}",
                c["os"].as_str().unwrap_or_default(),
                c["architecture"].as_str().unwrap_or_default()
            );
            if let Some(v) = c["variant"].as_str() {
                p = format!("{p}/{v}");
            }
            Ok(matches(&p).then(|| digest.to_owned()))
        }
    }
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

    /// The size docker shows for the image: its layers' content (see [`content_size`]).
    pub fn size(&self, store: &Store) -> anyhow::Result<u64> {
        let mut total = 0u64;
        for layer in self.manifest.layers() {
            total = total.saturating_add(content_size(store, layer)?);
        }
        Ok(total)
    }

    /// Docker's image id: the config digest.
    pub fn id(&self) -> &str {
        &self.config_digest
    }

    /// When the image was made, from its config.
    pub fn created(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        crate::human::parse_created(self.config["created"].as_str()?)
    }

    /// `docker image inspect`'s fields, in its order (the daemon's own, such as
    /// `GraphDriver`, and those docker has dropped, such as `ContainerConfig`, left
    /// out).
    pub fn inspect(
        &self,
        store: &Store,
        repo_tags: Vec<String>,
        repo_digests: Vec<String>,
    ) -> anyhow::Result<Inspect> {
        let c = &self.config;
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let present = |v: &Value| (!v.is_null()).then(|| v.clone());
        Ok(Inspect {
            id: self.config_digest.clone(),
            repo_tags,
            repo_digests,
            parent: text(&c["parent"]),
            comment: text(&c["comment"]),
            created: c["created"].clone(),
            docker_version: text(&c["docker_version"]),
            author: text(&c["author"]),
            config: InspectConfig::of(&c["config"]),
            architecture: c["architecture"].clone(),
            variant: present(&c["variant"]),
            os: c["os"].clone(),
            os_version: present(&c["os.version"]),
            size: self.size(store)?,
            root_fs: InspectRootFs {
                kind: c["rootfs"]["type"].clone(),
                layers: c["rootfs"]["diff_ids"].clone(),
            },
        })
    }

    /// `docker history` rows, newest first: the image id on the newest step and
    /// `<missing>` on the others (as docker shows a pulled image), and each step's
    /// layer content size (0 for a step that made no layer).
    pub fn history(&self, store: &Store) -> anyhow::Result<Vec<HistoryRow>> {
        let mut layers = self.manifest.layers().iter();
        let mut rows = Vec::new();
        for step in self.config["history"].as_array().into_iter().flatten() {
            let size = if step["empty_layer"].as_bool().unwrap_or(false) {
                0
            } else {
                layers.next().map_or(Ok(0), |l| content_size(store, l))?
            };
            rows.push(HistoryRow {
                id: None,
                created: crate::human::parse_created(step["created"].as_str().unwrap_or("")),
                created_by: step["created_by"].as_str().unwrap_or_default().to_owned(),
                size,
                comment: step["comment"].as_str().unwrap_or_default().to_owned(),
            });
        }
        rows.reverse();
        if let Some(newest) = rows.first_mut() {
            newest.id = Some(self.config_digest.clone());
        }
        Ok(rows)
    }
}

/// One step of `docker history`.
pub struct HistoryRow {
    /// The image id on the newest step; `None` (`<missing>`) on the others.
    pub id: Option<String>,
    pub created: Option<chrono::DateTime<chrono::Utc>>,
    pub created_by: String,
    pub size: u64,
    pub comment: String,
}

/// `docker image inspect`'s object (fields in docker's order).
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Inspect {
    id: String,
    repo_tags: Vec<String>,
    repo_digests: Vec<String>,
    parent: String,
    comment: String,
    created: Value,
    docker_version: String,
    author: String,
    config: InspectConfig,
    architecture: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<Value>,
    os: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    os_version: Option<Value>,
    size: u64,
    #[serde(rename = "RootFS")]
    root_fs: InspectRootFs,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectRootFs {
    #[serde(rename = "Type")]
    kind: Value,
    layers: Value,
}

/// The image's run configuration as docker's inspect shows it: every field of a
/// container config, those an image never sets empty, the optional ones only when set.
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    hostname: String,
    domainname: String,
    user: Value,
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    exposed_ports: Option<Value>,
    tty: bool,
    open_stdin: bool,
    stdin_once: bool,
    env: Value,
    cmd: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    healthcheck: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args_escaped: Option<Value>,
    image: Value,
    volumes: Value,
    working_dir: Value,
    entrypoint: Value,
    on_build: Value,
    labels: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_signal: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    shell: Option<Value>,
}

impl InspectConfig {
    fn of(c: &Value) -> InspectConfig {
        let text = |key: &str| json!(c[key].as_str().unwrap_or_default());
        let present = |key: &str| (!c[key].is_null()).then(|| c[key].clone());
        InspectConfig {
            hostname: String::new(),
            domainname: String::new(),
            user: text("User"),
            attach_stdin: false,
            attach_stdout: false,
            attach_stderr: false,
            exposed_ports: present("ExposedPorts"),
            tty: false,
            open_stdin: false,
            stdin_once: false,
            env: c["Env"].clone(),
            cmd: c["Cmd"].clone(),
            healthcheck: present("Healthcheck"),
            args_escaped: present("ArgsEscaped"),
            image: text("Image"),
            volumes: c["Volumes"].clone(),
            working_dir: text("WorkingDir"),
            entrypoint: c["Entrypoint"].clone(),
            on_build: c["OnBuild"].clone(),
            labels: c["Labels"].clone(),
            stop_signal: present("StopSignal"),
            shell: present("Shell"),
        }
    }
}

/// The size of a layer's content as docker counts it for `docker images` and
/// `docker history`: its files' sizes and its symbolic links' target lengths (not
/// the tar's headers, directories or hard links). Counted by reading the layer once,
/// then kept in the store's content-size directory. A layer berth cannot read as a
/// tar stream (say, zstd, or not a tar at all) counts its stored size, kept too, so
/// a hostile layer costs one reading.
pub fn content_size(store: &Store, layer: &oci_spec::image::Descriptor) -> anyhow::Result<u64> {
    let digest = digest_of(layer);
    let blob = store.blob_path(digest)?;
    let kept = store
        .content_sizes_dir()
        .join(blob.file_name().expect("a blob path ends in its hex"));
    if let Some(size) = std::fs::read_to_string(&kept)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return Ok(size);
    }
    let file = std::fs::File::open(&blob)
        .map_err(|e| anyhow::anyhow!("layer {digest} is missing from the local store: {e}"))?;
    let size = count_content(file).unwrap_or(layer.size());
    std::fs::create_dir_all(store.content_sizes_dir())?;
    let mut tmp = tempfile::NamedTempFile::new_in(store.content_sizes_dir())?;
    std::io::Write::write_all(&mut tmp, size.to_string().as_bytes())?;
    tmp.persist(&kept)?;
    Ok(size)
}

fn count_content(layer: impl Read) -> anyhow::Result<u64> {
    let mut archive = tar::Archive::new(crate::builder::rootfs::decompressed(layer)?);
    let mut size = 0u64;
    // Raw entries: PAX and GNU long-name records are skipped, not read into memory
    // (a hostile layer can make them any size); sizes are the headers' own.
    for entry in archive.entries()?.raw(true) {
        let entry = entry?;
        let header = entry.header();
        let counted = match header.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => header.size()?,
            tar::EntryType::Symlink => header
                .link_name_bytes()
                .map_or(0, |target| target.len() as u64),
            _ => 0,
        };
        // A header may claim any size it does not carry: never overflow.
        size = size.saturating_add(counted);
    }
    Ok(size)
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
    store.set(name, manifest::put(store, &manifest)?, None)?;
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

/// An id or digest as docker shows it: its first 12 hex digits.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.char_indices()
        .nth(12)
        .map_or(hex, |(end, _)| &hex[..end])
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

#[cfg(test)]
mod tests {
    use super::count_content;

    fn header(kind: tar::EntryType, path: &str, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_path(path).unwrap();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    #[test]
    fn content_is_files_and_link_targets_as_docker_counts_it() {
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header(tar::EntryType::Directory, "bin/", 0), &[][..])
            .unwrap();
        b.append(
            &header(tar::EntryType::Regular, "bin/busybox", 5),
            &b"12345"[..],
        )
        .unwrap();
        let mut link = header(tar::EntryType::Symlink, "bin/sh", 0);
        link.set_link_name("busybox").unwrap();
        link.set_cksum();
        b.append(&link, &[][..]).unwrap();
        let mut hard = header(tar::EntryType::Link, "bin/again", 0);
        hard.set_link_name("bin/busybox").unwrap();
        hard.set_cksum();
        b.append(&hard, &[][..]).unwrap();
        // A PAX record (here 1 MiB) is skipped, never held: only the file after it counts.
        let pax = vec![b'x'; 1 << 20];
        b.append(
            &header(tar::EntryType::XHeader, "PaxHeaders/x", pax.len() as u64),
            &pax[..],
        )
        .unwrap();
        b.append(&header(tar::EntryType::Regular, "x", 3), &b"abc"[..])
            .unwrap();
        let tar = b.into_inner().unwrap();
        assert_eq!(count_content(&tar[..]).unwrap(), 5 + 7 + 3);
        // The same, gzipped.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        assert_eq!(count_content(&gz.finish().unwrap()[..]).unwrap(), 15);
    }

    #[test]
    fn a_header_claiming_more_than_the_layer_holds_is_an_error_not_a_size() {
        let mut bytes = header(tar::EntryType::Regular, "huge", u64::MAX >> 1)
            .as_bytes()
            .to_vec();
        bytes.extend_from_slice(&[0; 1024]);
        assert!(count_content(&bytes[..]).is_err());
    }
}
