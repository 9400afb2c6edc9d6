//! What pages and the JSON API show, built once for both: a page renders these
//! structures through a template, the API serializes them.

use std::collections::HashMap;

use berth_oci::media_types::{is_index, IMAGE_CONFIG_TYPES};
use berth_storage::digest::Digest;
use berth_storage::explore::{RepoDetail, RepoSummary, TagRow};
use berth_storage::manifests::Reference;
use berth_storage::StorageError;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::Serialize;

use crate::error::WebError;
use crate::mirrors::{self, MirrorOf};
use crate::session::Visitor;
use crate::Web;

pub const TAGS_PER_PAGE: u64 = 25;
/// Image configurations are small JSON documents; larger ones are not shown.
const MAX_CONFIG_BYTES: u64 = 4 * 1024 * 1024;

#[derive(Debug, Serialize)]
pub struct TagView {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    /// Unix milliseconds.
    pub pushed_at: i64,
    /// Unix milliseconds; `None` when never pulled.
    pub last_pulled_at: Option<i64>,
    pub images: Vec<ImageView>,
    /// `docker pull <host>/<repo>:<tag>`
    pub pull: String,
}

/// `?page=&name=&sort=newest|name` of a tag list (the repository page's Tags tab and
/// the JSON API), with the page's own `tab` and a tag page's `platform`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct TagParams {
    pub page: Option<u64>,
    /// Only tags whose name contains this.
    pub name: Option<String>,
    /// `newest` (the default) or `name`.
    pub sort: Option<String>,
    pub tab: Option<String>,
    pub platform: Option<String>,
}

impl TagParams {
    pub fn page(&self) -> u64 {
        self.page.unwrap_or(1).max(1)
    }

    pub fn listing(&self) -> Result<berth_storage::explore::TagListing, WebError> {
        use berth_storage::explore::{TagListing, TagOrder};
        let order = match self.sort.as_deref() {
            None | Some("" | "newest") => TagOrder::Newest,
            Some("name") => TagOrder::Name,
            Some(other) => {
                return Err(WebError::BadRequest(format!(
                    "sort={other}: newest or name"
                )))
            }
        };
        Ok(TagListing {
            page: self.page(),
            per_page: TAGS_PER_PAGE,
            filter: self.name.clone().filter(|n| !n.trim().is_empty()),
            order,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct ImageView {
    pub digest: String,
    /// `os/architecture[/variant]`, or `unknown`.
    pub platform: String,
    /// Compressed: config plus layers, as pushed.
    pub size: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct TagDetail {
    pub repository: String,
    pub tag: String,
    pub digest: String,
    pub media_type: String,
    /// Every platform the tag has (`os/arch[/variant]`, in the index's order; at most
    /// [`MAX_PLATFORMS_LISTED`]), described or not.
    pub platforms: Vec<String>,
    /// The platforms described in full (see [`Described`]).
    pub images: Vec<ImageDetail>,
    /// For [`Described::One`]: the name in `platforms` of the one described.
    #[serde(skip)]
    pub chosen: Option<String>,
}

/// Platform names as an index gives them (`unknown` where it gives none), each told
/// apart from the same name before it (`windows/amd64`, `windows/amd64 (2)`): a page
/// picks a platform by its name.
fn distinct_names<'a>(names: impl Iterator<Item = Option<&'a str>>) -> Vec<String> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    names
        .map(|name| {
            let name = name.unwrap_or("unknown");
            let n = seen.entry(name).or_default();
            *n += 1;
            match *n {
                1 => name.to_owned(),
                n => format!("{name} ({n})"),
            }
        })
        .collect()
}

/// Which platforms of a multi-platform tag [`tag_detail`] describes in full. Each is a
/// manifest and a configuration of up to 4 MiB to read, and an index may list
/// thousands: a request describes a bounded number, whoever pushed the index.
#[derive(Debug, Clone, Copy)]
pub enum Described<'a> {
    /// The one named (`os/arch[/variant]`), else the first: a page shows one.
    One(Option<&'a str>),
    /// The first [`MAX_DESCRIBED`].
    First,
}

/// Platforms the JSON API describes in full at most.
pub const MAX_DESCRIBED: usize = 32;
/// Platforms named in a tag's detail at most.
pub const MAX_PLATFORMS_LISTED: usize = 256;

/// One platform's image: what `docker image inspect` and `docker history` show.
#[derive(Debug, Serialize)]
pub struct ImageDetail {
    pub digest: String,
    pub platform: String,
    pub size: i64,
    pub layers: Vec<LayerView>,
    pub history: Vec<HistoryView>,
    pub config: Option<ConfigView>,
    /// Why something is missing, when it is.
    pub note: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LayerView {
    pub digest: String,
    pub size: i64,
    pub media_type: String,
}

#[derive(Debug, Serialize)]
pub struct HistoryView {
    pub created: Option<String>,
    pub created_by: String,
    /// The size of the layer the step made; `None` for steps that made none.
    pub size: Option<i64>,
    pub comment: Option<String>,
    pub empty_layer: bool,
}

#[derive(Debug, Serialize)]
pub struct ConfigView {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub created: Option<String>,
}

/// What a `/r/…` or `/api/v1/repositories/…` path names. Names may contain `/tags/`,
/// so the whole path is tried as a repository first.
pub enum Target {
    Repository(RepoDetail),
    Tags(RepoDetail),
    Tag(RepoDetail, String),
}

/// Resolves `path` to what it names, among what `visitor` may pull; anything else is
/// `NotFound`, so private repositories stay invisible.
pub async fn resolve(web: &Web, visitor: &Visitor, path: &str) -> Result<Target, WebError> {
    let path = path.trim_end_matches('/');
    if let Some(repo) = visible_repository(web, visitor, path).await? {
        return Ok(Target::Repository(repo));
    }
    if let Some(name) = path.strip_suffix("/tags") {
        if let Some(repo) = visible_repository(web, visitor, name).await? {
            return Ok(Target::Tags(repo));
        }
    }
    if let Some((name, tag)) = path.rsplit_once("/tags/") {
        if let Some(repo) = visible_repository(web, visitor, name).await? {
            return Ok(Target::Tag(repo, tag.to_owned()));
        }
    }
    Err(WebError::NotFound(format!("repository {path}")))
}

/// The repository if it exists and `visitor` may pull it.
pub async fn visible_repository(
    web: &Web,
    visitor: &Visitor,
    name: &str,
) -> Result<Option<RepoDetail>, WebError> {
    // A proxy's repositories are pulled by whom its `access` names, as the token
    // endpoint decides, whether stored as public or private.
    if let Some(route) = web.proxies.route(name) {
        if !mirrors::may_pull_through(web, visitor, route.proxy).await? {
            return Ok(None);
        }
        return Ok(web.storage.repository_detail(name).await?);
    }
    // A missing repository is judged as a private one, with the same lookups, and
    // details are read only once access is settled: neither the answer nor its timing
    // tells a private repository the visitor may not see from a missing one.
    let private = web.storage.repository_private(name).await?;
    if private != Some(false) && !visitor.may(web, name, true, "pull").await? {
        return Ok(None);
    }
    Ok(web.storage.repository_detail(name).await?)
}

/// A repository as listings (pages and the search API) show it: marked when it is a
/// mirror of an upstream's.
#[derive(Debug, Serialize)]
pub struct RepoItem {
    #[serde(flatten)]
    pub summary: RepoSummary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorOf>,
}

pub fn repo_items(web: &Web, repos: Vec<RepoSummary>) -> Vec<RepoItem> {
    repos
        .into_iter()
        .map(|summary| RepoItem {
            mirror: mirrors::mirror_of(web, &summary.name),
            summary,
        })
        .collect()
}

/// A repository's page (and API answer): its details, and what it mirrors if it does.
#[derive(Debug, Serialize)]
pub struct RepoPageView {
    #[serde(flatten)]
    pub detail: RepoDetail,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<MirrorOf>,
}

pub fn repo_page_view(web: &Web, detail: RepoDetail) -> RepoPageView {
    RepoPageView {
        mirror: mirrors::mirror_of(web, &detail.summary.name),
        detail,
    }
}

pub fn pull_command(host: &str, repo: &str, tag: &str) -> String {
    format!("docker pull {host}/{repo}:{tag}")
}

pub fn platform(os: Option<&str>, architecture: Option<&str>, variant: Option<&str>) -> String {
    match (os, architecture) {
        (Some(os), Some(arch)) => match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        },
        _ => "unknown".into(),
    }
}

/// One page of `repo`'s tags as `listing` asks, and how many match.
pub async fn tag_views(
    web: &Web,
    host: &str,
    repo: &str,
    listing: &berth_storage::explore::TagListing,
) -> Result<(Vec<TagView>, u64), WebError> {
    let found = web.storage.tag_rows(repo, listing).await?;
    let views = found
        .rows
        .into_iter()
        .map(|row: TagRow| TagView {
            pull: pull_command(host, repo, &row.name),
            images: row
                .images
                .into_iter()
                .map(|i| ImageView {
                    platform: platform(
                        i.os.as_deref(),
                        i.architecture.as_deref(),
                        i.variant.as_deref(),
                    ),
                    digest: i.digest,
                    size: i.size,
                })
                .collect(),
            name: row.name,
            digest: row.digest,
            media_type: row.media_type,
            pushed_at: row.pushed_at,
            last_pulled_at: row.last_pulled_at,
        })
        .collect();
    Ok((views, found.total))
}

/// One tag: its platforms, and the layers, history and configuration of those
/// `described`.
pub async fn tag_detail(
    web: &Web,
    repo: &str,
    tag: &str,
    described: Described<'_>,
) -> Result<TagDetail, WebError> {
    let manifest = web
        .storage
        .manifest(repo, &Reference::parse(tag)?)
        .await
        .map_err(|e| match e {
            StorageError::ManifestUnknown(_) => WebError::NotFound(format!("tag {tag}")),
            other => other.into(),
        })?;
    let mut detail = TagDetail {
        repository: repo.to_owned(),
        tag: tag.to_owned(),
        digest: manifest.digest.to_string(),
        media_type: manifest.media_type.clone(),
        platforms: Vec::new(),
        images: Vec::new(),
        chosen: None,
    };
    if !is_index(&manifest.media_type) {
        let image = image_detail(
            web,
            repo,
            &manifest.digest.to_string(),
            &manifest.content,
            None,
        )
        .await?;
        detail.platforms.push(image.platform.clone());
        detail.chosen = Some(image.platform.clone());
        detail.images.push(image);
        return Ok(detail);
    }
    let index: ImageIndex = serde_json::from_slice(&manifest.content)
        .map_err(|e| WebError::BadRequest(format!("unreadable index: {e}")))?;
    let mut entries = Vec::new();
    for entry in index.manifests() {
        let named = entry.platform().as_ref().map(|p| {
            platform(
                Some(&p.os().to_string()),
                Some(&p.architecture().to_string()),
                p.variant().as_deref(),
            )
        });
        // Build attestations are listed as `unknown/unknown`: not a platform.
        if named.as_deref() == Some("unknown/unknown") {
            continue;
        }
        entries.push((named, entry.digest().to_string()));
    }
    entries.truncate(MAX_PLATFORMS_LISTED);
    detail.platforms = distinct_names(entries.iter().map(|(named, _)| named.as_deref()));
    let chosen: Vec<&(Option<String>, String)> = match described {
        Described::First => entries.iter().take(MAX_DESCRIBED).collect(),
        Described::One(wanted) => {
            let at = wanted
                .and_then(|w| detail.platforms.iter().position(|p| p == w))
                .unwrap_or(0);
            detail.chosen = detail.platforms.get(at).cloned();
            entries.get(at).into_iter().collect()
        }
    };
    for (named, digest) in chosen {
        let digest: Digest = digest.parse()?;
        let child = web
            .storage
            .manifest(repo, &Reference::Digest(digest))
            .await?;
        detail.images.push(
            image_detail(
                web,
                repo,
                &child.digest.to_string(),
                &child.content,
                named.clone(),
            )
            .await?,
        );
    }
    Ok(detail)
}

async fn image_detail(
    web: &Web,
    repo: &str,
    digest: &str,
    content: &[u8],
    named_platform: Option<String>,
) -> Result<ImageDetail, WebError> {
    let manifest: ImageManifest = serde_json::from_slice(content)
        .map_err(|e| WebError::BadRequest(format!("unreadable image manifest: {e}")))?;
    let layers: Vec<LayerView> = manifest
        .layers()
        .iter()
        .map(|l| LayerView {
            digest: l.digest().to_string(),
            size: l.size() as i64,
            media_type: l.media_type().to_string(),
        })
        .collect();
    let size = layers.iter().map(|l| l.size).sum::<i64>() + manifest.config().size() as i64;
    let mut detail = ImageDetail {
        digest: digest.to_owned(),
        platform: named_platform.unwrap_or_else(|| "unknown".into()),
        size,
        layers,
        history: Vec::new(),
        config: None,
        note: None,
    };
    let config_type = manifest.config().media_type().to_string();
    if !IMAGE_CONFIG_TYPES.contains(&config_type.as_str()) {
        detail.note = Some(format!(
            "an artifact ({config_type}): no image configuration"
        ));
        return Ok(detail);
    }
    let config_digest: Digest = manifest.config().digest().to_string().parse()?;
    let config = match web
        .storage
        .read_small_blob(repo, &config_digest, MAX_CONFIG_BYTES)
        .await
    {
        Ok(bytes) => bytes,
        Err(e @ (StorageError::BlobUnknown(_) | StorageError::BlobTooLarge { .. })) => {
            detail.note = Some(format!("configuration not shown: {e}"));
            return Ok(detail);
        }
        Err(e) => return Err(e.into()),
    };
    match serde_json::from_slice::<ImageConfiguration>(&config) {
        Ok(config) => {
            detail.platform = platform(
                Some(&config.os().to_string()),
                Some(&config.architecture().to_string()),
                config.variant().as_deref(),
            );
            detail.history = history(&config, &detail.layers);
            detail.config = Some(config_view(&config));
        }
        Err(e) => detail.note = Some(format!("configuration could not be read: {e}")),
    }
    Ok(detail)
}

/// The build steps, each with the size of the layer it made (steps marked
/// `empty_layer` made none), as `docker history` shows them (oldest first here).
fn history(config: &ImageConfiguration, layers: &[LayerView]) -> Vec<HistoryView> {
    let mut layer_sizes = layers.iter().map(|l| l.size);
    config
        .history()
        .iter()
        .flatten()
        .map(|h| {
            let empty = h.empty_layer().unwrap_or(false);
            HistoryView {
                created: h.created().clone(),
                created_by: h.created_by().clone().unwrap_or_default(),
                size: if empty { None } else { layer_sizes.next() },
                comment: h.comment().clone().filter(|c| !c.is_empty()),
                empty_layer: empty,
            }
        })
        .collect()
}

fn config_view(config: &ImageConfiguration) -> ConfigView {
    let c = config.config().clone().unwrap_or_default();
    let mut labels: Vec<(String, String)> =
        c.labels().clone().unwrap_or_default().into_iter().collect();
    labels.sort();
    ConfigView {
        entrypoint: c.entrypoint().clone(),
        cmd: c.cmd().clone(),
        env: c.env().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
        exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
        labels,
        created: config.created().clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_names_are_told_apart() {
        let names = distinct_names(
            [
                Some("windows/amd64"),
                None,
                Some("windows/amd64"),
                Some("linux/arm64"),
                None,
            ]
            .into_iter(),
        );
        assert_eq!(
            names,
            [
                "windows/amd64",
                "unknown",
                "windows/amd64 (2)",
                "linux/arm64",
                "unknown (2)"
            ]
        );
    }
}
