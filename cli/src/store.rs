//! The local image store: an OCI image layout (`oci-layout`, `index.json`,
//! `blobs/sha256/<hex>`) under `$BERTH_HOME`, blobs shared by all images. An image is
//! an `index.json` entry whose `org.opencontainers.image.ref.name` annotation is its
//! full reference (`registry/repository:tag`).
//!
//! Blobs are written to a temporary file, checked against their digest and renamed
//! into place; `index.json` is replaced by rename under a lock, after every blob it
//! names is in place, so an interrupted command never leaves a half-written image
//! listed.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageIndex};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::manifest::{self, Manifest};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The digest the image's registry knows it by, set by `pull` and `push` (docker's
/// `RepoDigests`); an image built, imported, loaded or tagged into another
/// repository has none.
pub const REPO_DIGEST: &str = "io.berth.image.repo-digest";

pub struct Store {
    root: PathBuf,
}

/// One listed image: its name and the manifest descriptor.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub descriptor: Descriptor,
}

impl Entry {
    /// The digest of the image's manifest (or index).
    pub fn digest(&self) -> &str {
        manifest::digest_of(&self.descriptor)
    }

    /// See [`REPO_DIGEST`].
    pub fn repo_digest(&self) -> Option<&str> {
        manifest::annotation(&self.descriptor, REPO_DIGEST)
    }
}

impl Store {
    pub fn open(root: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(root.join("blobs/sha256"))?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let store = Store {
            root: root.to_owned(),
        };
        if !root.join("index.json").exists() {
            store.write_index(&manifest::index(Vec::new())?)?;
        }
        Ok(store)
    }

    /// Where `berth image build` keeps the results of its steps (beside the layout).
    pub fn build_cache_dir(&self) -> PathBuf {
        self.root.parent().unwrap_or(&self.root).join("build-cache")
    }

    /// Where `RUN --mount=type=cache` directories are kept between builds.
    pub fn cache_mounts_dir(&self) -> PathBuf {
        self.root
            .parent()
            .unwrap_or(&self.root)
            .join("build-cache-mounts")
    }

    /// Where the content sizes of layers are kept once counted (see
    /// `image::content_size`), beside the layout.
    pub fn content_sizes_dir(&self) -> PathBuf {
        self.root.parent().unwrap_or(&self.root).join("layer-sizes")
    }

    pub fn blob_path(&self, digest: &str) -> anyhow::Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| anyhow::anyhow!("unsupported digest {digest} (only sha256)"))?;
        Ok(self.root.join("blobs/sha256").join(hex))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.exists())
    }

    pub fn read_blob(&self, digest: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        std::fs::read(&path)
            .map_err(|e| anyhow::anyhow!("blob {digest} is missing from the local store: {e}"))
    }

    /// An image configuration, as JSON (see `image::Image::config` for why).
    pub fn read_config(&self, digest: &str) -> anyhow::Result<Value> {
        Ok(serde_json::from_slice(&self.read_blob(digest)?)?)
    }

    /// The manifest or index `digest` (told apart by its content).
    pub fn read_manifest(&self, digest: &str) -> anyhow::Result<Manifest> {
        Manifest::parse(&self.read_blob(digest)?, None)
            .map_err(|e| anyhow::anyhow!("manifest {digest} is not valid: {e}"))
    }

    /// Stores `bytes`; returns their digest.
    pub fn put_blob(&self, bytes: &[u8]) -> anyhow::Result<String> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes)?;
        w.finish(None)
    }

    /// A writer for a new blob (temporary file until [`BlobWriter::finish`]).
    pub fn blob_writer(&self) -> anyhow::Result<BlobWriter> {
        let file = tempfile::NamedTempFile::new_in(self.root.join("blobs"))?;
        Ok(BlobWriter {
            file,
            hasher: Sha256::new(),
            size: 0,
            dir: self.root.join("blobs/sha256"),
        })
    }

    pub fn entries(&self) -> anyhow::Result<Vec<Entry>> {
        let index = self.read_index()?;
        Ok(index
            .manifests()
            .iter()
            .filter_map(|d| {
                Some(Entry {
                    name: manifest::annotation(d, REF_NAME)?.to_owned(),
                    descriptor: d.clone(),
                })
            })
            .collect())
    }

    pub fn find(&self, name: &str) -> anyhow::Result<Option<Entry>> {
        Ok(self.entries()?.into_iter().find(|e| e.name == name))
    }

    /// Points `name` at the manifest `descriptor` (replacing what it named before),
    /// known to the registry as `repo_digest` (see [`REPO_DIGEST`]).
    pub fn set(
        &self,
        name: &str,
        descriptor: Descriptor,
        repo_digest: Option<&str>,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.has_blob(manifest::digest_of(&descriptor)),
            "manifest is not in the local store"
        );
        let mut annotations = vec![(REF_NAME, name)];
        annotations.extend(repo_digest.map(|d| (REPO_DIGEST, d)));
        let descriptor = manifest::annotated(descriptor, &annotations);
        self.update_index(|manifests| {
            manifests.retain(|d| manifest::annotation(d, REF_NAME) != Some(name));
            manifests.push(descriptor);
        })
    }

    /// Removes `name`; true if it was there.
    pub fn remove(&self, name: &str) -> anyhow::Result<bool> {
        let mut found = false;
        self.update_index(|manifests| {
            let before = manifests.len();
            manifests.retain(|d| manifest::annotation(d, REF_NAME) != Some(name));
            found = manifests.len() != before;
        })?;
        Ok(found)
    }

    /// Deletes blobs no listed image uses; returns how many bytes were freed.
    pub fn prune(&self) -> anyhow::Result<u64> {
        let _lock = self.lock()?;
        let mut used = std::collections::HashSet::new();
        for entry in self.entries()? {
            for d in crate::image::blobs_of(self, entry.digest())? {
                used.insert(d);
            }
        }
        let mut freed = 0;
        for file in std::fs::read_dir(self.root.join("blobs/sha256"))? {
            let file = file?;
            let digest = format!("sha256:{}", file.file_name().to_string_lossy());
            if !used.contains(&digest) {
                freed += file.metadata()?.len();
                std::fs::remove_file(file.path())?;
            }
        }
        Ok(freed)
    }

    fn read_index(&self) -> anyhow::Result<ImageIndex> {
        serde_json::from_slice(&std::fs::read(self.root.join("index.json"))?)
            .map_err(|e| anyhow::anyhow!("the local store's index.json is not valid: {e}"))
    }

    fn write_index(&self, index: &ImageIndex) -> anyhow::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&self.root)?;
        tmp.write_all(&manifest::to_bytes_pretty(index)?)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.root.join("index.json"))?;
        Ok(())
    }

    fn update_index(&self, change: impl FnOnce(&mut Vec<Descriptor>)) -> anyhow::Result<()> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        change(&mut manifests);
        index.set_manifests(manifests);
        self.write_index(&index)
    }

    /// One berth process changes the index at a time.
    fn lock(&self) -> anyhow::Result<File> {
        let file = File::create(self.root.join(".lock"))?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
        Ok(file)
    }
}

pub struct BlobWriter {
    file: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
    dir: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Moves the blob into place after checking it is `expected` (when given).
    pub fn finish(self, expected: Option<&str>) -> anyhow::Result<String> {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        if let Some(expected) = expected {
            anyhow::ensure!(
                digest == expected,
                "content has digest {digest}, not {expected}: the download was corrupted or the registry sent something else"
            );
        }
        self.file.as_file().sync_all()?;
        self.file
            .persist(self.dir.join(digest.trim_start_matches("sha256:")))?;
        Ok(digest)
    }

    pub fn size(&self) -> u64 {
        self.size
    }
}
