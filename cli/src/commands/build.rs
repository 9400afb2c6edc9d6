//! `berth image build`: the command line's arguments to the builder's options, and
//! base images from the local store (pulled when absent, as docker does).

use std::collections::BTreeMap;

use berth_oci::media_types::{OCI_INDEX, OCI_MANIFEST};

use super::{pull, Context};
use crate::args::BuildArgs;
use crate::reference::Reference;
use crate::{builder, image, manifest};

pub(super) async fn build(ctx: &Context, args: BuildArgs) -> anyhow::Result<()> {
    let mut build_args = BTreeMap::new();
    for a in args.build_args {
        match a.split_once('=') {
            Some((k, v)) => build_args.insert(k.to_owned(), v.to_owned()),
            None => match std::env::var(&a) {
                Ok(v) => build_args.insert(a, v),
                Err(_) => None,
            },
        };
    }
    let tags: Vec<Reference> = args
        .tags
        .iter()
        .map(|t| ctx.parse(t))
        .collect::<anyhow::Result<_>>()?;
    let platforms: Vec<String> = match &args.platform {
        Some(list) => list
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect(),
        None => Vec::new(),
    };
    let mut options = builder::Options {
        context: args.context,
        dockerfile: args.file,
        tags: tags.clone(),
        build_args,
        target: args.target,
        platform: platforms.first().cloned(),
        quiet: args.quiet,
        secrets: builder::read_secrets(&args.secrets)?,
    };
    if platforms.len() < 2 {
        return builder::build(&ctx.store, ctx, &options).await.map(|_| ());
    }
    // Several platforms: each built on its own (unnamed), then one index names them.
    options.tags = Vec::new();
    let mut images = Vec::new();
    for platform in &platforms {
        if !options.quiet {
            println!("Building for {platform}");
        }
        options.platform = Some(platform.clone());
        let digest = builder::build(&ctx.store, ctx, &options).await?;
        let size = ctx.store.read_blob(&digest)?.len() as u64;
        let image = image::Image::load(&ctx.store, &digest)?;
        let descriptor = manifest::descriptor(OCI_MANIFEST, &digest, size)?;
        images.push(manifest::with_platform(descriptor, &image.config)?);
    }
    let index = manifest::index_of(images)?;
    let bytes = manifest::to_bytes(&index)?;
    let digest = ctx.store.put_blob(&bytes)?;
    let descriptor = manifest::descriptor(OCI_INDEX, &digest, bytes.len() as u64)?;
    for tag in &tags {
        ctx.store.set(&tag.to_string(), descriptor.clone(), None)?;
    }
    if options.quiet {
        println!("{digest}");
    } else {
        println!(
            "Successfully built {} ({})",
            image::short_id(&digest),
            platforms.join(", ")
        );
        for tag in &tags {
            println!("Successfully tagged {}", tag.familiar());
        }
    }
    Ok(())
}

impl builder::Bases for Context {
    /// A base image from the local store, as docker does; pulled when absent. For a
    /// platform the stored image is not (berth names one platform per name), that
    /// platform's image is fetched for the build, unnamed.
    async fn base(&self, reference: &str, platform: Option<&str>) -> anyhow::Result<String> {
        let r = self.parse(reference)?;
        let name = r.to_string();
        if let Some(entry) = self.store.find(&name)? {
            match platform {
                None => return Ok(entry.digest().to_owned()),
                Some(p) => {
                    if let Some(digest) = image::platform_image(&self.store, entry.digest(), p)? {
                        return Ok(digest);
                    }
                    let fetched = pull::fetch(self, &r, Some(p), true).await?;
                    return Ok(manifest::digest_of(&fetched.descriptor).to_owned());
                }
            }
        }
        pull::pull(self, reference, platform, true).await?;
        let entry = self
            .store
            .find(&name)?
            .ok_or_else(|| anyhow::anyhow!("base image {name} is not in the local store"))?;
        Ok(entry.digest().to_owned())
    }
}
