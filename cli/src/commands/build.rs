//! `berth image build`: the command line's arguments to the builder's options, and
//! base images from the local store (pulled when absent, as docker does).

use std::collections::BTreeMap;

use super::{pull, Context};
use crate::args::BuildArgs;
use crate::builder;

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
    let options = builder::Options {
        context: args.context,
        dockerfile: args.file,
        tags: args
            .tags
            .iter()
            .map(|t| ctx.parse(t))
            .collect::<anyhow::Result<_>>()?,
        build_args,
        target: args.target,
        platform: args.platform,
        quiet: args.quiet,
        secrets: builder::read_secrets(&args.secrets)?,
    };
    builder::build(&ctx.store, ctx, &options).await.map(|_| ())
}

impl builder::Bases for Context {
    /// A base image from the local store, as docker does; pulled when absent.
    async fn base(&self, reference: &str, platform: Option<&str>) -> anyhow::Result<String> {
        let name = self.parse(reference)?.to_string();
        if self.store.find(&name)?.is_none() {
            pull::pull(self, reference, platform, true).await?;
        }
        let entry = self
            .store
            .find(&name)?
            .ok_or_else(|| anyhow::anyhow!("base image {name} is not in the local store"))?;
        Ok(entry.digest().to_owned())
    }
}
