//! Docker Hub's webhook payload for a tag push: `push_data` (who pushed which tag,
//! when), `repository` (its name, namespace, owner, description, stars and pulls) and
//! a `callback_url` the receiver may post its verdict to.
//!
//! Typed, with fields borrowed from the event: every tag push makes one per webhook,
//! so it is serialized straight into its body, without an intermediate JSON tree.

use berth_storage::events::Event;
use berth_storage::explore::RepoDetail;
use serde::Serialize;

/// The README in a payload is cut to this many characters.
const FULL_DESCRIPTION_CHARS: usize = 2000;

#[derive(Serialize)]
struct Payload<'a> {
    callback_url: String,
    push_data: PushData<'a>,
    repository: Repository<'a>,
}

#[derive(Serialize)]
struct PushData<'a> {
    digest: Option<&'a str>,
    images: [(); 0],
    media_type: Option<&'a str>,
    pushed_at: i64,
    pusher: &'a str,
    tag: &'a str,
}

#[derive(Serialize)]
struct Repository<'a> {
    comment_count: u32,
    /// Seconds since the epoch; `null` if the repository is gone.
    date_created: Option<i64>,
    description: &'a str,
    dockerfile: &'a str,
    full_description: &'a str,
    is_official: bool,
    is_private: bool,
    is_trusted: bool,
    name: &'a str,
    namespace: &'a str,
    owner: &'a str,
    pull_count: i64,
    repo_name: &'a str,
    repo_url: String,
    star_count: i64,
    status: &'a str,
}

/// The payload for `event`, a push of a tag to a repository described by `repo`
/// (`None` if it is gone since), as JSON. `base` is the registry's address.
pub(crate) fn payload(
    event: &Event,
    repo: Option<&RepoDetail>,
    created_at_ms: Option<i64>,
    base: &str,
    callback_token: &str,
) -> String {
    let name = event.target.repository.as_str();
    let (namespace, short) = name.split_once('/').unwrap_or(("", name));
    let pushed_at = chrono::DateTime::parse_from_rfc3339(&event.timestamp)
        .map(|t| t.timestamp())
        .unwrap_or_default();
    let summary = repo.map(|r| &r.summary);
    let payload = Payload {
        callback_url: format!("{base}/api/v1/webhooks/callback/{callback_token}"),
        push_data: PushData {
            digest: event.target.digest.as_deref(),
            images: [],
            media_type: event.target.media_type.as_deref(),
            pushed_at,
            pusher: event.actor.name.as_deref().unwrap_or_default(),
            tag: event.target.tag.as_deref().unwrap_or_default(),
        },
        repository: Repository {
            comment_count: 0,
            date_created: created_at_ms.map(|ms| ms / 1000),
            description: summary.map_or("", |s| s.description.as_str()),
            dockerfile: "",
            // Cut: every queued delivery keeps its payload.
            full_description: repo.map_or("", |r| chars_prefix(&r.readme, FULL_DESCRIPTION_CHARS)),
            is_official: false,
            is_private: summary.is_some_and(|s| s.private),
            is_trusted: false,
            name: short,
            namespace,
            owner: namespace,
            pull_count: summary.map_or(0, |s| s.pull_count),
            repo_name: name,
            repo_url: format!("{base}/r/{name}"),
            star_count: summary.map_or(0, |s| s.star_count),
            status: "Active",
        },
    };
    serde_json::to_string(&payload).expect("payloads serialize")
}

/// The first `n` characters of `text`.
fn chars_prefix(text: &str, n: usize) -> &str {
    match text.char_indices().nth(n) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_storage::events::{Actor, Target};
    use berth_storage::explore::RepoSummary;

    #[test]
    fn a_payload_has_docker_hubs_fields() {
        let event = Event {
            timestamp: "2026-12-07T10:00:00.123456789Z".into(),
            action: "push".into(),
            target: Target::manifest(
                "acme/app",
                "sha256:abc",
                "application/vnd.oci.image.manifest.v1+json",
                10,
                Some("v1"),
            ),
            actor: Actor {
                name: Some("alice".into()),
            },
            ..Event::default()
        };
        let detail = RepoDetail {
            summary: RepoSummary {
                name: "acme/app".into(),
                description: "An \"app\"".into(),
                private: true,
                pull_count: 7,
                star_count: 3,
                pushed_at: 0,
                tag_count: 1,
            },
            readme: "é".repeat(FULL_DESCRIPTION_CHARS + 5),
        };
        let body = payload(
            &event,
            Some(&detail),
            Some(1_700_000_000_999),
            "http://r",
            "tok",
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["callback_url"], "http://r/api/v1/webhooks/callback/tok");
        let push = &v["push_data"];
        assert_eq!(push["pushed_at"], 1_796_637_600);
        assert_eq!(push["pusher"], "alice");
        assert_eq!(push["tag"], "v1");
        assert_eq!(push["images"], serde_json::json!([]));
        assert_eq!(push["digest"], "sha256:abc");
        let repo = &v["repository"];
        assert_eq!(repo["date_created"], 1_700_000_000);
        assert_eq!(repo["description"], "An \"app\"");
        let readme = repo["full_description"].as_str().unwrap();
        assert_eq!(readme.chars().count(), FULL_DESCRIPTION_CHARS);
        assert_eq!(
            (
                repo["name"].as_str(),
                repo["namespace"].as_str(),
                repo["owner"].as_str()
            ),
            (Some("app"), Some("acme"), Some("acme"))
        );
        assert_eq!(repo["repo_name"], "acme/app");
        assert_eq!(repo["repo_url"], "http://r/r/acme/app");
        assert_eq!(
            (repo["is_private"].as_bool(), repo["pull_count"].as_i64()),
            (Some(true), Some(7))
        );
        assert_eq!(repo["star_count"], 3);
        assert_eq!(repo["status"], "Active");

        // A repository gone since: its facts are empty, not missing.
        let body = payload(&event, None, None, "http://r", "tok");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["repository"]["date_created"], serde_json::Value::Null);
        assert_eq!(v["repository"]["full_description"], "");
        assert_eq!(v["repository"]["is_private"], false);
    }
}
