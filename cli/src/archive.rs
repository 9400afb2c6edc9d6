//! `berth image save` / `load`: images as one tar file that both Docker and OCI tools
//! read. `save` writes an OCI image layout plus Docker's `manifest.json` (the layout
//! `docker save` itself writes since Docker 25), so `docker load` and
//! `skopeo copy oci-archive:` both take it. `load` reads such a file, a plain OCI
//! layout archive, or a classic `docker save` archive (uncompressed layer tars, which
//! are compressed on the way in).

use std::io::{Read, Seek, Write};
use std::path::Path;

use flate2::write::GzEncoder;
use oci_spec::image::ImageIndex;
use serde::{Deserialize, Serialize};

use berth_oci::media_types;

use crate::builder::rootfs;
use crate::image::{self, Image};
use crate::inroot::{Kind, Root};
use crate::manifest::{self, digest_of};
use crate::store::{Store, REF_NAME};

/// One image in Docker's `manifest.json` (the archive format `docker save` wrote
/// before OCI layouts; not an OCI type). Fields in the order they are written.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveImage {
    /// The config's path in the archive.
    #[serde(default)]
    config: String,
    /// The layers' paths in the archive (uncompressed or gzip tars).
    #[serde(default)]
    layers: Vec<String>,
    #[serde(default)]
    repo_tags: Vec<String>,
}

/// Writes the images `names` (local names) to `out`.
pub fn save(store: &Store, names: &[String], out: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(out)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
    let mut tar = tar::Builder::new(file);
    let mut index = Vec::new();
    let mut docker = Vec::new();
    let mut written = std::collections::HashSet::new();
    for name in names {
        let entry = store
            .find(name)?
            .ok_or_else(|| anyhow::anyhow!("no such image: {name}"))?;
        let image = Image::load(store, entry.digest())?;
        for blob in image::blobs_of(store, &image.manifest_digest)? {
            if written.insert(blob.clone()) {
                let path = store.blob_path(&blob)?;
                tar.append_path_with_name(&path, blob_name(&blob))?;
            }
        }
        // The platform image itself (for a pulled index, the one child that is here).
        let manifest_size = store.read_blob(&image.manifest_digest)?.len();
        let media_type = image
            .manifest
            .media_type()
            .as_ref()
            .map_or_else(|| media_types::OCI_MANIFEST.to_owned(), ToString::to_string);
        let descriptor =
            manifest::descriptor(&media_type, &image.manifest_digest, manifest_size as u64)?;
        index.push(manifest::annotated(
            descriptor,
            &[(REF_NAME, name), ("io.containerd.image.name", name)],
        ));
        docker.push(DockerArchiveImage {
            config: blob_name(&image.config_digest),
            repo_tags: vec![name.clone()],
            layers: image
                .manifest
                .layers()
                .iter()
                .map(|l| blob_name(digest_of(l)))
                .collect(),
        });
    }
    append_bytes(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut index = manifest::index(index)?;
    index.set_media_type(Some(media_types::OCI_INDEX.into()));
    append_bytes(&mut tar, "index.json", &manifest::to_bytes(&index)?)?;
    append_bytes(&mut tar, "manifest.json", &serde_json::to_vec(&docker)?)?;
    tar.into_inner()?.sync_all()?;
    Ok(())
}

/// Reads an archive into the store; returns the names it added. The archive is
/// unpacked in a temporary directory that every path it names is resolved in (its
/// symbolic links followed inside that directory): a hostile archive can neither
/// write outside it nor have a host file read into the store.
pub fn load(store: &Store, input: &Path) -> anyhow::Result<Vec<String>> {
    let file = std::fs::File::open(input)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", input.display()))?;
    load_from(store, file, &input.display().to_string())
}

/// Reads the archive `input` (an OCI layout or `docker save` tar, as bytes or any
/// reader) into the store, as [`load`] does; `what` names it in messages.
pub fn load_from(store: &Store, input: impl Read, what: &str) -> anyhow::Result<Vec<String>> {
    // Other users kept out: its files keep the archive's modes (setuid ones too).
    let dir = crate::private::tempdir("berth-load-")?;
    let root = Root::open(dir.path())?;
    rootfs::unpack_archive(&root, input)
        .map_err(|e| anyhow::anyhow!("{what} is not an image archive: {e:#}"))?;
    if root.stat(Path::new("index.json"))?.is_some() {
        load_oci(store, &root)
    } else if root.stat(Path::new("manifest.json"))?.is_some() {
        load_docker(store, &root)
    } else {
        anyhow::bail!("{what} has neither index.json nor manifest.json: not an image archive")
    }
}

/// The file `name` names in the archive, open for reading.
fn member(root: &Root, name: &str, named_by: &str) -> anyhow::Result<std::fs::File> {
    anyhow::ensure!(!name.is_empty(), "{named_by} names an empty path");
    match root.stat(Path::new(name))? {
        Some(m) if m.kind == Kind::File => Ok(root.open_read(Path::new(name), true)?),
        Some(_) => anyhow::bail!("{name} (named by {named_by}) is not a file in the archive"),
        None => anyhow::bail!("{name} (named by {named_by}) is not in the archive"),
    }
}

fn read_member(root: &Root, name: &str, named_by: &str) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    member(root, name, named_by)?.read_to_end(&mut out)?;
    Ok(out)
}

fn load_oci(store: &Store, root: &Root) -> anyhow::Result<Vec<String>> {
    let blobs = Path::new("blobs/sha256");
    let names = match root.stat(blobs)? {
        Some(m) if m.is_dir() => root.read_dir(blobs)?,
        _ => anyhow::bail!("the archive has no blobs/sha256 directory"),
    };
    for name in names {
        let hex = name.to_string_lossy();
        anyhow::ensure!(
            hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
            "blobs/sha256/{hex} in the archive is not named by a sha256 digest"
        );
        let digest = format!("sha256:{hex}");
        if !store.has_blob(&digest) {
            let mut w = store.blob_writer()?;
            std::io::copy(
                &mut member(root, &format!("blobs/sha256/{hex}"), "the OCI layout")?,
                &mut w,
            )?;
            w.finish(Some(&digest))?;
        }
    }
    let index: ImageIndex =
        serde_json::from_slice(&read_member(root, "index.json", "the archive")?)
            .map_err(|e| anyhow::anyhow!("index.json in the archive is not valid: {e}"))?;
    let mut names = Vec::new();
    for descriptor in index.manifests() {
        let name = manifest::annotation(descriptor, "io.containerd.image.name")
            .or_else(|| manifest::annotation(descriptor, REF_NAME))
            .ok_or_else(|| anyhow::anyhow!("an image in the archive has no name"))?;
        let name =
            crate::reference::Reference::parse(name, crate::reference::DOCKER_HUB)?.to_string();
        let digest = digest_of(descriptor);
        anyhow::ensure!(
            store.has_blob(digest),
            "the archive lacks blob {digest} (the manifest of {name})"
        );
        // Every blob must have arrived before the name is listed.
        image::blobs_of(store, digest)?.iter().try_for_each(|b| {
            anyhow::ensure!(store.has_blob(b), "the archive lacks blob {b}");
            Ok(())
        })?;
        store.set(&name, descriptor.clone(), None)?;
        names.push(name);
    }
    Ok(names)
}

fn load_docker(store: &Store, root: &Root) -> anyhow::Result<Vec<String>> {
    let images: Vec<DockerArchiveImage> =
        serde_json::from_slice(&read_member(root, "manifest.json", "the archive")?)
            .map_err(|e| anyhow::anyhow!("manifest.json in the archive is not valid: {e}"))?;
    let mut names = Vec::new();
    for image in images {
        let config = read_member(root, &image.config, "manifest.json")?;
        let config_digest = store.put_blob(&config)?;
        let mut layers = Vec::new();
        for layer in &image.layers {
            let file = member(root, layer, "manifest.json")?;
            let (digest, size) = store_compressed(store, file)?;
            layers.push(manifest::descriptor(
                media_types::OCI_LAYER_GZIP,
                &digest,
                size,
            )?);
        }
        let config =
            manifest::descriptor(media_types::OCI_CONFIG, &config_digest, config.len() as u64)?;
        let descriptor = manifest::put(store, &manifest::image_manifest(config, layers)?)?;
        for tag in &image.repo_tags {
            let name =
                crate::reference::Reference::parse(tag, crate::reference::DOCKER_HUB)?.to_string();
            store.set(&name, descriptor.clone(), None)?;
            names.push(name);
        }
    }
    Ok(names)
}

/// Stores a layer file gzip-compressed (as is when it already is); returns (digest, size).
fn store_compressed(store: &Store, mut file: std::fs::File) -> anyhow::Result<(String, u64)> {
    let mut magic = [0u8; 2];
    let gzipped = file.read(&mut magic)? == 2 && magic == [0x1f, 0x8b];
    file.rewind()?;
    if gzipped {
        let mut w = store.blob_writer()?;
        std::io::copy(&mut file, &mut w)?;
        let size = w.size();
        return Ok((w.finish(None)?, size));
    }
    let mut gz = GzEncoder::new(store.blob_writer()?, flate2::Compression::default());
    std::io::copy(&mut file, &mut gz)?;
    let w = gz.finish()?;
    let size = w.size();
    Ok((w.finish(None)?, size))
}

fn blob_name(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    bytes: &[u8],
) -> anyhow::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, name, bytes)?;
    Ok(())
}
