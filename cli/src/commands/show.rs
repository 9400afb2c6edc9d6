//! The local views: `berth image ls`, `inspect` and `history`, as docker prints them
//! (columns, names, relative times and sizes compared with docker's on the same
//! images in `tests/e2e/cli.rs`).

use chrono::Utc;

use berth_oci::size::{human_size, SizeFormat};

use super::{short_id, Context};
use crate::human;
use crate::image::Image;
use crate::listing::{Fields, Row, Template};

/// `docker images` and `docker history` write sizes with 3 significant digits.
const SIZE: SizeFormat = SizeFormat::Docker { digits: 3 };

const IMAGE_FIELDS: Fields = &[
    ("Containers", "CONTAINERS"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedSince", "CREATED"),
    ("Digest", "DIGEST"),
    ("ID", "IMAGE ID"),
    ("Repository", "REPOSITORY"),
    ("SharedSize", "SHARED SIZE"),
    ("Size", "SIZE"),
    ("Tag", "TAG"),
    ("UniqueSize", "UNIQUE SIZE"),
    ("VirtualSize", "SIZE"),
];

/// What `berth image ls` was asked.
pub(super) struct LsOptions<'a> {
    pub repository: Option<&'a str>,
    pub digests: bool,
    pub no_trunc: bool,
    pub quiet: bool,
    pub format: &'a str,
}

pub(super) fn ls(ctx: &Context, options: &LsOptions<'_>) -> anyhow::Result<()> {
    let wanted = options.repository.map(|text| ctx.parse(text)).transpose()?;
    let now = Utc::now();
    let mut images = Vec::new();
    for entry in ctx.store.entries()? {
        let r = ctx.parse(&entry.name)?;
        if let Some(w) = &wanted {
            // `docker images NAME` lists that repository; `NAME:TAG` that one tag.
            let tag_given = !w.tag_defaulted;
            if w.name() != r.name() || (tag_given && w.tag != r.tag) {
                continue;
            }
        }
        let image = Image::load(&ctx.store, entry.digest())?;
        let size = image.size(&ctx.store)?;
        let id = if options.no_trunc {
            image.id().to_owned()
        } else {
            short_id(image.id()).to_owned()
        };
        let created = image.created();
        let row = Row::from([
            ("Containers", "N/A".to_owned()),
            ("CreatedAt", human::go_time(created)),
            ("CreatedSince", human::since(created, now)),
            // docker fills the digest in only when asked for digests.
            (
                "Digest",
                entry
                    .repo_digest()
                    .filter(|_| options.digests)
                    .unwrap_or("<none>")
                    .to_owned(),
            ),
            ("ID", id),
            ("Repository", r.familiar_name()),
            ("SharedSize", "N/A".to_owned()),
            ("Size", human_size(size, SIZE)),
            ("Tag", r.tag.clone().unwrap_or_else(|| "<none>".into())),
            ("UniqueSize", "N/A".to_owned()),
            (
                "VirtualSize",
                human_size(size, SizeFormat::Docker { digits: 4 }),
            ),
        ]);
        images.push((created, row));
    }
    // Newest first, as docker lists them.
    images.sort_by_key(|image| std::cmp::Reverse(image.0));
    let rows: Vec<Row> = images.into_iter().map(|(_, row)| row).collect();
    // As docker: `-q` is the ids, unless a format of one's own is given.
    let format = if options.quiet && options.format == "table" {
        "{{.ID}}"
    } else {
        options.format
    };
    let default = if options.digests {
        r"table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        r"table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    Template::parse(format, default, IMAGE_FIELDS)?.write(&rows, std::io::stdout().lock())
}

pub(super) fn inspect(ctx: &Context, reference: &str) -> anyhow::Result<()> {
    let (_, entry) = ctx.local(reference)?;
    let image = Image::load(&ctx.store, entry.digest())?;
    // Every name of the same image (the same config, as docker groups them), and the
    // registry digest of each that was pulled or pushed.
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    for other in ctx.store.entries()? {
        if Image::load(&ctx.store, other.digest())?.id() != image.id() {
            continue;
        }
        let r = ctx.parse(&other.name)?;
        tags.push(r.familiar());
        if let Some(d) = other.repo_digest() {
            let repo_digest = format!("{}@{d}", r.familiar_name());
            if !digests.contains(&repo_digest) {
                digests.push(repo_digest);
            }
        }
    }
    let out = [image.inspect(&ctx.store, tags, digests)?];
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

const HISTORY_FIELDS: Fields = &[
    ("Comment", "COMMENT"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedBy", "CREATED BY"),
    ("CreatedSince", "CREATED"),
    ("ID", "IMAGE"),
    ("Size", "SIZE"),
];

/// What `berth image history` was asked.
pub(super) struct HistoryOptions<'a> {
    pub reference: &'a str,
    pub human: bool,
    pub no_trunc: bool,
    pub quiet: bool,
    pub format: &'a str,
}

pub(super) fn history(ctx: &Context, options: &HistoryOptions<'_>) -> anyhow::Result<()> {
    let (_, entry) = ctx.local(options.reference)?;
    let image = Image::load(&ctx.store, entry.digest())?;
    let now = Utc::now();
    let mut rows = Vec::new();
    for step in image.history(&ctx.store)? {
        let id = match step.id {
            Some(id) if options.no_trunc => id,
            Some(id) => short_id(&id).to_owned(),
            None => "<missing>".to_owned(),
        };
        let created_at = step.created.map_or_else(String::new, |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
        let created_by = step.created_by.replace('\t', " ");
        let created_by = if options.no_trunc {
            created_by
        } else {
            ellipsis(&created_by, 45)
        };
        rows.push(Row::from([
            ("Comment", step.comment),
            (
                "CreatedSince",
                if options.human {
                    human::since(step.created, now)
                } else {
                    created_at.clone()
                },
            ),
            ("CreatedAt", created_at),
            ("CreatedBy", created_by),
            ("ID", id),
            (
                "Size",
                if options.human {
                    human_size(step.size, SIZE)
                } else {
                    step.size.to_string()
                },
            ),
        ]));
    }
    // As docker: `-q` is the ids, unless a format of one's own is given.
    let format = if options.quiet && options.format == "table" {
        "{{.ID}}"
    } else {
        options.format
    };
    let default = if options.human {
        r"table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    } else {
        r"table {{.ID}}\t{{.CreatedAt}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}"
    };
    Template::parse(format, default, HISTORY_FIELDS)?.write(&rows, std::io::stdout().lock())
}

/// `text` cut to `width` characters, the last one `…`, as docker cuts long cells.
fn ellipsis(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        text.chars().take(width - 1).chain(['…']).collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_cells_are_cut_as_docker_cuts_them() {
        assert_eq!(super::ellipsis("short", 45), "short");
        let long = "/bin/sh -c #(nop) COPY file:c795168468abcb478617c9d62582f75d873d167a105a9b7dd09f147f6a9457a7 in /d";
        assert_eq!(
            super::ellipsis(long, 45),
            "/bin/sh -c #(nop) COPY file:c795168468abcb47…"
        );
    }
}
