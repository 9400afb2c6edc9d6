//! Docker Hub's webhook payload for a tag push: `push_data` (who pushed which tag,
//! when), `repository` (its name, namespace, owner, description, stars and pulls) and
//! a `callback_url` the receiver may post its verdict to.

use berth_storage::events::Event;
use berth_storage::explore::RepoDetail;
use serde_json::{json, Value};

/// The README in a payload is cut to this many characters.
const FULL_DESCRIPTION_CHARS: usize = 2000;

/// The payload for `event`, a push of a tag to a repository described by `repo`
/// (`None` if it is gone since). `base` is the registry's address.
pub(crate) fn payload(
    event: &Event,
    repo: Option<&RepoDetail>,
    created_at_ms: Option<i64>,
    base: &str,
    callback_token: &str,
) -> Value {
    let name = event.target.repository.as_str();
    let (namespace, short) = name.split_once('/').unwrap_or(("", name));
    let pushed_at = chrono::DateTime::parse_from_rfc3339(&event.timestamp)
        .map(|t| t.timestamp())
        .unwrap_or_default();
    let summary = repo.map(|r| &r.summary);
    json!({
        "callback_url": format!("{base}/api/v1/webhooks/callback/{callback_token}"),
        "push_data": {
            "pushed_at": pushed_at,
            "pusher": event.actor.name.clone().unwrap_or_default(),
            "tag": event.target.tag.clone().unwrap_or_default(),
            "images": [],
            "media_type": event.target.media_type,
            "digest": event.target.digest,
        },
        "repository": {
            "comment_count": 0,
            "date_created": created_at_ms.map(|ms| ms / 1000),
            "description": summary.map(|s| s.description.clone()).unwrap_or_default(),
            "dockerfile": "",
            // Cut: every queued delivery keeps its payload.
            "full_description": repo
                .map(|r| r.readme.chars().take(FULL_DESCRIPTION_CHARS).collect::<String>())
                .unwrap_or_default(),
            "is_official": false,
            "is_private": summary.is_some_and(|s| s.private),
            "is_trusted": false,
            "name": short,
            "namespace": namespace,
            "owner": namespace,
            "repo_name": name,
            "repo_url": format!("{base}/r/{name}"),
            "star_count": summary.map_or(0, |s| s.star_count),
            "pull_count": summary.map_or(0, |s| s.pull_count),
            "status": "Active",
        },
    })
}
