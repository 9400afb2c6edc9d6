//! `berth image pull`: the manifest (for a multi-platform image, this platform's),
//! then the config and layers not already here, a few at a time; the name last.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};

use berth_oci::{Algorithm, Digest};

use super::{progress_bar, short_id, Context};
use crate::image;
use crate::manifest::{self, digest_of, platform_of, Manifest};
use crate::reference::Reference;

/// Parallel layer downloads at most.
const DOWNLOADS: usize = 3;

pub(super) async fn pull(
    ctx: &Context,
    text: &str,
    platform: Option<&str>,
    quiet: bool,
) -> anyhow::Result<()> {
    let r = ctx.parse(text)?;
    let say = |line: String| {
        if !quiet {
            println!("{line}");
        }
    };
    if r.tag_defaulted {
        say("Using default tag: latest".to_owned());
    }
    // docker names the tag, or the whole reference when pulling by digest.
    let pulling = match &r.digest {
        Some(_) => r.to_string(),
        None => r.reference().to_owned(),
    };
    say(format!("{pulling}: Pulling from {}", r.repository));
    let Fetched {
        descriptor,
        top_digest,
        config_digest,
    } = fetch(ctx, &r, platform, quiet).await?;
    let name = r.to_string();
    // As docker: up to date when the name already stood for this image (its config).
    let before = ctx.store.find(&name)?;
    let up_to_date = before
        .and_then(|b| image::Image::load(&ctx.store, b.digest()).ok())
        .is_some_and(|b| b.id() == config_digest);
    ctx.store.set(&name, descriptor, Some(&top_digest))?;
    say(format!("Digest: {top_digest}"));
    say(if up_to_date {
        format!("Status: Image is up to date for {}", r.familiar())
    } else {
        format!("Status: Downloaded newer image for {}", r.familiar())
    });
    println!("{r}");
    Ok(())
}

/// What [`fetch`] stored: the platform image's manifest descriptor, the digest the
/// registry knows the image by (an index's, for a multi-platform image), and the
/// image's config digest (its id).
pub(super) struct Fetched {
    pub descriptor: oci_spec::image::Descriptor,
    pub top_digest: String,
    pub config_digest: String,
}

/// Downloads `r`'s image (for a multi-platform image, `platform`'s, else this
/// machine's) into the store without naming it: the config and the layers not
/// already here, each verified, then the manifest.
pub(super) async fn fetch(
    ctx: &Context,
    r: &Reference,
    platform: Option<&str>,
    quiet: bool,
) -> anyhow::Result<Fetched> {
    let registry = ctx.registry(&r.registry)?;
    let (media_type, bytes) = registry.get_manifest(&r.repository, r.reference()).await?;
    // Pinned by digest, the manifest must be that digest's: a registry answering with
    // other content is refused, as docker refuses it.
    let top_digest = match &r.digest {
        Some(pinned) => {
            let algorithm = Algorithm::parse(pinned.split(':').next().unwrap_or_default())?;
            let actual = Digest::of(algorithm, &bytes).to_string();
            anyhow::ensure!(
                &actual == pinned,
                "manifest verification failed for {r}: the registry sent content of digest {actual}"
            );
            actual
        }
        None => Digest::of(Algorithm::Sha256, &bytes).to_string(),
    };
    let (manifest, manifest_type, manifest_bytes) = match Manifest::parse(&bytes, Some(&media_type))
        .map_err(|e| anyhow::anyhow!("the manifest of {r} is not valid: {e}"))?
    {
        Manifest::Image(manifest) => (manifest, media_type, bytes),
        Manifest::Index(index) => {
            let wanted = platform.map_or_else(
                || format!("linux/{}", image::host_architecture()),
                str::to_owned,
            );
            let child = index
                .manifests()
                .iter()
                .find(|m| manifest::platform_matches(&platform_of(m.platform().as_ref()), &wanted))
                .ok_or_else(|| anyhow::anyhow!("{r} has no image for platform {wanted}"))?;
            let digest = digest_of(child);
            let (t, b) = registry.get_manifest(&r.repository, digest).await?;
            anyhow::ensure!(
                Digest::of(Algorithm::Sha256, &b).as_str() == digest,
                "manifest {digest} does not match its digest"
            );
            match Manifest::parse(&b, Some(&t))
                .map_err(|e| anyhow::anyhow!("manifest {digest} of {r} is not valid: {e}"))?
            {
                Manifest::Image(manifest) => (manifest, t, b),
                Manifest::Index(_) => {
                    anyhow::bail!("manifest {digest} of {r} is an index, not an image")
                }
            }
        }
    };
    let layers: HashSet<&str> = manifest.layers().iter().map(digest_of).collect();
    let wanted: Vec<(String, u64)> = std::iter::once(manifest.config())
        .chain(manifest.layers())
        .map(|d| (digest_of(d).to_owned(), d.size()))
        .collect();
    let registry = &registry;
    let repo = r.repository.as_str();
    let bars = &indicatif::MultiProgress::new();
    let layers = &layers;
    // One line per layer, as docker's (the config is fetched without one).
    futures::stream::iter(wanted)
        .map(|(digest, size)| async move {
            let layer = layers.contains(digest.as_str()) && !quiet;
            if ctx.store.has_blob(&digest) {
                if layer {
                    println!("{}: Already exists", short_id(&digest));
                }
                return Ok(());
            }
            let res = registry.get_blob(repo, &digest).await?;
            let bar = progress_bar(bars, &digest, size, !layer);
            let mut writer = ctx.store.blob_writer()?;
            let mut body = res.bytes_stream();
            // The manifest gives the size: a registry that sends more (or endlessly)
            // is cut off there, not written until the disk is full.
            let mut received: u64 = 0;
            while let Some(chunk) = body.try_next().await? {
                received += chunk.len() as u64;
                anyhow::ensure!(
                    received <= size,
                    "blob {digest} of {r}: the registry sent more than its {size} bytes"
                );
                std::io::Write::write_all(&mut writer, &chunk)?;
                bar.inc(chunk.len() as u64);
            }
            anyhow::ensure!(
                received == size,
                "blob {digest} of {r}: the registry sent {received} of its {size} bytes"
            );
            bar.finish_and_clear();
            writer.finish(Some(&digest))?;
            if layer {
                println!("{}: Pull complete", short_id(&digest));
            }
            anyhow::Ok(())
        })
        .buffer_unordered(DOWNLOADS)
        .try_collect::<Vec<()>>()
        .await?;
    // The manifest goes in last: no half-pulled image is ever named.
    let digest = ctx.store.put_blob(&manifest_bytes)?;
    let descriptor = manifest::descriptor(&manifest_type, &digest, manifest_bytes.len() as u64)?;
    Ok(Fetched {
        descriptor,
        top_digest,
        config_digest: digest_of(manifest.config()).to_owned(),
    })
}
