//! `berth image pull`: the manifest (for a multi-platform image, this platform's),
//! then the config and layers not already here, a few at a time; the name last.

use futures::{StreamExt, TryStreamExt};

use berth_oci::{Algorithm, Digest};

use super::{progress_bar, short_id, Context};
use crate::image;
use crate::manifest::{self, digest_of, platform_of, Manifest};

/// Parallel layer downloads at most.
const DOWNLOADS: usize = 3;

pub(super) async fn pull(
    ctx: &Context,
    text: &str,
    platform: Option<&str>,
    quiet: bool,
) -> anyhow::Result<()> {
    let r = ctx.parse(text)?;
    let registry = ctx.registry(&r.registry)?;
    let (media_type, bytes) = registry.get_manifest(&r.repository, r.reference()).await?;
    let top_digest = Digest::of(Algorithm::Sha256, &bytes).to_string();
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
                .find(|m| {
                    let p = platform_of(m.platform().as_ref());
                    p == wanted || p.starts_with(&format!("{wanted}/"))
                })
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
    let wanted: Vec<(String, u64)> = std::iter::once(manifest.config())
        .chain(manifest.layers())
        .map(|d| (digest_of(d).to_owned(), d.size()))
        .collect();
    let registry = &registry;
    let repo = r.repository.as_str();
    let bars = &indicatif::MultiProgress::new();
    futures::stream::iter(wanted)
        .map(|(digest, size)| async move {
            if ctx.store.has_blob(&digest) {
                if !quiet {
                    println!("{}: Already exists", short_id(&digest));
                }
                return Ok(());
            }
            let res = registry.get_blob(repo, &digest).await?;
            let bar = progress_bar(bars, &digest, size, quiet);
            let mut writer = ctx.store.blob_writer()?;
            let mut body = res.bytes_stream();
            while let Some(chunk) = body.try_next().await? {
                std::io::Write::write_all(&mut writer, &chunk)?;
                bar.inc(chunk.len() as u64);
            }
            bar.finish_and_clear();
            writer.finish(Some(&digest))?;
            if !quiet {
                println!("{}: Pull complete", short_id(&digest));
            }
            anyhow::Ok(())
        })
        .buffer_unordered(DOWNLOADS)
        .try_collect::<Vec<()>>()
        .await?;
    // The manifest goes in last, and the name after it: no half-pulled image is listed.
    let digest = ctx.store.put_blob(&manifest_bytes)?;
    let descriptor = manifest::descriptor(&manifest_type, &digest, manifest_bytes.len() as u64)?;
    ctx.store.set(&r.to_string(), descriptor)?;
    if quiet {
        println!("{r}");
    } else {
        println!("Digest: {top_digest}");
        println!("Status: Downloaded image for {r}");
    }
    Ok(())
}
