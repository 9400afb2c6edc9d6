//! `berth image push`: the config and layers the registry lacks (mounted from another
//! repository of the registry when one of ours has them), then the manifest; for a
//! multi-platform image, every platform's image first, then the index.

use std::collections::HashMap;

use oci_spec::image::ImageManifest;

use super::{progress_bar, short_id, Context};
use crate::image;
use crate::manifest::{digest_of, platform_of, Manifest};
use crate::reference::Reference;
use crate::registry::Registry;

pub(super) async fn push(ctx: &Context, text: &str, quiet: bool) -> anyhow::Result<()> {
    let (r, entry) = ctx.local(text)?;
    let digest = entry.digest();
    let manifest_type = entry.descriptor.media_type().to_string();
    let registry = ctx.registry(&r.registry)?;
    let manifest = ctx.store.read_manifest(digest)?;
    if !quiet {
        println!("The push refers to repository [{}]", r.familiar_name());
    }
    let bars = indicatif::MultiProgress::new();
    let mount_sources = mount_sources(ctx, &r)?;
    let blobs = BlobPush {
        ctx,
        registry: &registry,
        r: &r,
        mount_sources: &mount_sources,
        bars: &bars,
        quiet,
    };
    match manifest {
        Manifest::Index(index) => {
            // A multi-platform image: every platform's image first, by digest, then the index.
            for child in index.manifests() {
                let child_digest = digest_of(child);
                anyhow::ensure!(
                    ctx.store.has_blob(child_digest),
                    "{r} is a multi-platform image whose {} image is not in the local store (berth image pull keeps one platform); push one platform, or load the whole image with berth image load",
                    platform_of(child.platform().as_ref())
                );
                match ctx.store.read_manifest(child_digest)? {
                    Manifest::Image(m) => blobs.push(&m).await?,
                    Manifest::Index(_) => {
                        anyhow::bail!("{r}: manifest {child_digest} is an index inside an index")
                    }
                }
                registry
                    .put_manifest(
                        &r.repository,
                        child_digest,
                        child.media_type().as_ref(),
                        ctx.store.read_blob(child_digest)?,
                    )
                    .await?;
            }
        }
        Manifest::Image(m) => blobs.push(&m).await?,
    }
    let tag = r.reference().to_owned();
    registry
        .put_manifest(
            &r.repository,
            &tag,
            &manifest_type,
            ctx.store.read_blob(digest)?,
        )
        .await?;
    // Now the registry knows the image by this digest (docker's RepoDigests).
    ctx.store
        .set(&r.to_string(), entry.descriptor.clone(), Some(digest))?;
    println!("{tag}: digest: {digest} size: {}", entry.descriptor.size());
    Ok(())
}

/// What uploading an image's blobs needs.
struct BlobPush<'a> {
    ctx: &'a Context,
    registry: &'a Registry,
    r: &'a Reference,
    mount_sources: &'a HashMap<String, String>,
    bars: &'a indicatif::MultiProgress,
    quiet: bool,
}

impl BlobPush<'_> {
    /// Uploads the config and layers of image `manifest` that the registry lacks
    /// (checked with HEAD; mounted from another repository of the registry where one
    /// has them).
    async fn push(&self, manifest: &ImageManifest) -> anyhow::Result<()> {
        let repository = &self.r.repository;
        let blobs = std::iter::once(manifest.config()).chain(manifest.layers());
        for (i, blob) in blobs.map(digest_of).enumerate() {
            // One line per layer, as docker's (the config goes without one).
            let quiet = self.quiet || i == 0;
            if self.registry.has_blob(repository, blob).await? {
                if !quiet {
                    println!("{}: Layer already exists", short_id(blob));
                }
                continue;
            }
            if let Some(from) = self.mount_sources.get(blob) {
                if self.registry.mount_blob(repository, blob, from).await? {
                    if !quiet {
                        println!("{}: Mounted from {from}", short_id(blob));
                    }
                    continue;
                }
            }
            let path = self.ctx.store.blob_path(blob)?;
            let size = std::fs::metadata(&path)?.len();
            let bar = progress_bar(self.bars, blob, size, quiet);
            self.registry
                .upload_blob(repository, blob, &path, &|done| bar.set_position(done))
                .await?;
            bar.finish_and_clear();
            if !quiet {
                println!("{}: Pushed", short_id(blob));
            }
        }
        Ok(())
    }
}

/// For each blob, another repository of the same registry that probably has it: one
/// a local image of that registry (pulled from or pushed to it) uses.
fn mount_sources(ctx: &Context, target: &Reference) -> anyhow::Result<HashMap<String, String>> {
    let mut sources = HashMap::new();
    for entry in ctx.store.entries()? {
        let Ok(other) = ctx.parse(&entry.name) else {
            continue;
        };
        if other.registry != target.registry || other.repository == target.repository {
            continue;
        }
        for blob in image::blobs_of(&ctx.store, entry.digest())? {
            sources
                .entry(blob)
                .or_insert_with(|| other.repository.clone());
        }
    }
    Ok(sources)
}
