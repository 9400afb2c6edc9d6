//! Registry events (pushes, pulls, deletes) in Distribution's notification format,
//! kept durably until every endpoint has them.
//!
//! A change's event is written to the outbox in the change's own transaction
//! (`outbox`), so an acknowledged push always has its event and a failed one never
//! does. Off the request path the events are fanned out into delivery rows per
//! endpoint (`queue`), which `berth-events` sends in order, at least once, with the
//! same event id on every attempt. Webhooks (`webhooks`) are endpoints users add.

mod gate;
mod outbox;
pub mod queue;
pub mod webhooks;

pub use gate::BufferFlush;
pub(crate) use gate::EventGate;
pub(crate) use outbox::record;
pub use outbox::FlushTurn;

use serde::{Deserialize, Serialize};

/// The media type of a notification envelope (`{"events": [...]}`).
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.docker.distribution.events.v2+json";

/// Blobs have no media type of their own in the registry; Distribution reports this.
pub const BLOB_MEDIA_TYPE: &str = "application/octet-stream";

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Push,
    Pull,
    Delete,
    /// A blob linked from another repository (Distribution's cross-repository mount).
    Mount,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Pull => "pull",
            Action::Delete => "delete",
            Action::Mount => "mount",
        }
    }
}

/// One event, exactly as Distribution's notifications carry it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Event {
    pub id: String,
    /// RFC 3339 with nanoseconds, UTC.
    pub timestamp: String,
    pub action: String,
    pub target: Target,
    pub request: RequestInfo,
    pub actor: Actor,
    pub source: Source,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The same as `size` (Distribution sends both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    pub repository: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl Target {
    /// A blob of `size` bytes in `repo`.
    pub fn blob(repo: &str, digest: &str, size: u64) -> Target {
        Target {
            media_type: Some(BLOB_MEDIA_TYPE.to_owned()),
            size: Some(size),
            length: Some(size),
            digest: Some(digest.to_owned()),
            repository: repo.to_owned(),
            ..Target::default()
        }
    }

    /// A manifest of `media_type` and `size` bytes in `repo`, reached by `tag` if one.
    pub fn manifest(
        repo: &str,
        digest: &str,
        media_type: &str,
        size: u64,
        tag: Option<&str>,
    ) -> Target {
        Target {
            media_type: Some(media_type.to_owned()),
            tag: tag.map(str::to_owned),
            ..Target::blob(repo, digest, size)
        }
    }

    /// What a delete names: `repo` and a digest or a tag, nothing more.
    pub fn named(repo: &str, digest: Option<&str>, tag: Option<&str>) -> Target {
        Target {
            digest: digest.map(str::to_owned),
            tag: tag.map(str::to_owned),
            repository: repo.to_owned(),
            ..Target::default()
        }
    }
}

/// The request that caused the event.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RequestInfo {
    pub id: String,
    pub addr: String,
    pub host: String,
    pub method: String,
    pub useragent: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Actor {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// The registry instance that handled the request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub addr: String,
    #[serde(rename = "instanceID")]
    pub instance_id: String,
}

/// Who made a request, from where, through which instance: what the HTTP edge knows
/// and storage writes into the events of the changes the request makes.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub request: RequestInfo,
    pub actor: Option<String>,
    pub source: Source,
    /// `scheme://host` the client addressed, for the targets' URLs.
    pub base_url: String,
}

impl Origin {
    /// A new event (a fresh id, now) for `target`.
    pub fn event(&self, action: Action, mut target: Target) -> Event {
        if target.url.is_none() {
            target.url = target_url(&self.base_url, &target);
        }
        Event {
            id: uuid::Uuid::new_v4().to_string(),
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            action: action.as_str().to_owned(),
            target,
            request: self.request.clone(),
            actor: Actor {
                name: self.actor.clone(),
            },
            source: self.source.clone(),
        }
    }
}

/// `…/v2/<repo>/manifests/<digest>` or `…/blobs/<digest>`, as Distribution links them.
fn target_url(base: &str, target: &Target) -> Option<String> {
    let digest = target.digest.as_deref()?;
    let kind = match target.media_type.as_deref() {
        Some(BLOB_MEDIA_TYPE) | None => "blobs",
        Some(_) => "manifests",
    };
    Some(format!("{base}/v2/{}/{kind}/{digest}", target.repository))
}

/// The namespace a repository's webhooks are kept under: its first component.
pub fn namespace_of(repo: &str) -> &str {
    repo.split_once('/').map_or("", |(ns, _)| ns)
}
