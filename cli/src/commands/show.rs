//! The local views: `berth image ls`, `inspect` and `history`, as docker prints them.

use serde_json::json;

use berth_oci::size::{human_size, SizeFormat};

use super::{short_id, Context};
use crate::image::Image;

pub(super) fn ls(ctx: &Context, digests: bool, format: &str) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for entry in ctx.store.entries()? {
        let digest = entry.digest();
        let image = Image::load(&ctx.store, digest)?;
        let r = ctx.parse(&entry.name)?;
        rows.push(json!({
            "Repository": r.name(),
            "Tag": r.tag.clone().unwrap_or_else(|| "<none>".into()),
            "Digest": digest,
            "ID": image.id(),
            "CreatedAt": image.config["created"],
            "Size": image.size(),
        }));
    }
    match format {
        "json" => println!("{}", serde_json::to_string_pretty(&rows)?),
        "table" => {
            let digest_col = if digests {
                format!(" {:<71}", "DIGEST")
            } else {
                String::new()
            };
            println!(
                "{:<40} {:<16}{digest_col} {:<14} {:<22} {:>10}",
                "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"
            );
            for row in rows {
                let digest_col = if digests {
                    format!(" {:<71}", row["Digest"].as_str().unwrap_or_default())
                } else {
                    String::new()
                };
                println!(
                    "{:<40} {:<16}{digest_col} {:<14} {:<22} {:>10}",
                    row["Repository"].as_str().unwrap_or_default(),
                    row["Tag"].as_str().unwrap_or_default(),
                    short_id(row["ID"].as_str().unwrap_or_default()),
                    row["CreatedAt"].as_str().unwrap_or_default(),
                    human_size(row["Size"].as_u64().unwrap_or(0), SizeFormat::Docker),
                );
            }
        }
        other => anyhow::bail!("unknown format {other:?}: use table or json"),
    }
    Ok(())
}

pub(super) fn inspect(ctx: &Context, reference: &str) -> anyhow::Result<()> {
    let (r, entry) = ctx.local(reference)?;
    let digest = entry.digest();
    let image = Image::load(&ctx.store, digest)?;
    let names: Vec<String> = ctx
        .store
        .entries()?
        .into_iter()
        .filter(|e| e.descriptor.digest() == entry.descriptor.digest())
        .map(|e| e.name)
        .collect();
    let repo_digests = vec![format!("{}@{digest}", r.name())];
    let out = json!([image.inspect(&names, &repo_digests)]);
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

pub(super) fn history(ctx: &Context, reference: &str, no_trunc: bool) -> anyhow::Result<()> {
    let (_, entry) = ctx.local(reference)?;
    let image = Image::load(&ctx.store, entry.digest())?;
    println!(
        "{:<14} {:<22} {:<48} {:>10}  COMMENT",
        "IMAGE", "CREATED", "CREATED BY", "SIZE"
    );
    for [id, created, created_by, size, comment] in image.history() {
        let id = if no_trunc || id == "<missing>" {
            id
        } else {
            short_id(&id)
        };
        let created_by = if no_trunc || created_by.chars().count() <= 45 {
            created_by
        } else {
            created_by.chars().take(44).collect::<String>() + "…"
        };
        println!(
            "{id:<14} {created:<22} {created_by:<48} {:>10}  {comment}",
            human_size(size.parse().unwrap_or(0), SizeFormat::Docker)
        );
    }
    Ok(())
}
