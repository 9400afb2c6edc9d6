//! `[[notifications]]` (Distribution-style registry notifications to endpoints the
//! operator configures) and `[webhooks]` (settings for the webhooks namespace owners
//! add themselves).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::{parse_duration, ConfigError};

/// How long a delivery may take before it counts as failed (Distribution's default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first retry's delay; each further failure doubles it, up to [`DEFAULT_MAX_BACKOFF`].
pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// Undelivered events kept per endpoint; beyond it the oldest are dropped (counted in
/// `/metrics`), so a long-dead endpoint cannot grow the database without bound.
pub const DEFAULT_BACKLOG: u64 = 10_000;

/// One `[[notifications]]` entry as the file spells it.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NotificationLayer {
    pub name: Option<String>,
    pub url: Option<String>,
    /// Sent with every request, as Distribution's `headers` (a list per name).
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    pub timeout: Option<String>,
    pub backoff: Option<String>,
    pub max_backoff: Option<String>,
    /// Media types whose events are not sent (Distribution's `ignoredmediatypes`).
    #[serde(default)]
    pub ignore_media_types: Vec<String>,
    /// Actions (`push`, `pull`, `delete`) whose events are not sent.
    #[serde(default)]
    pub ignore_actions: Vec<String>,
    pub backlog: Option<u64>,
}

/// `[webhooks]` as the file spells it.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebhooksLayer {
    pub allow_private: Option<bool>,
    pub timeout: Option<String>,
}

/// An endpoint registry events are posted to.
#[derive(Debug, Clone, PartialEq)]
pub struct NotificationEndpoint {
    /// Names it in `/metrics` and logs; unique.
    pub name: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub ignore_media_types: Vec<String>,
    pub ignore_actions: Vec<String>,
    pub backlog: u64,
}

impl NotificationEndpoint {
    /// `name` posting to `url`, everything else as a config leaving it out has it.
    pub fn new(name: &str, url: &str) -> NotificationEndpoint {
        NotificationEndpoint {
            name: name.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            backoff: DEFAULT_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            ignore_media_types: Vec::new(),
            ignore_actions: Vec::new(),
            backlog: DEFAULT_BACKLOG,
        }
    }
}

/// Settings for the webhooks users add.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    /// Whether a webhook may target loopback, private, link-local or otherwise
    /// non-public addresses. Off by default: a user's webhook must not become a way
    /// to reach the registry's own network (its response excerpt is shown to them).
    pub allow_private: bool,
    pub timeout: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            allow_private: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

pub const ACTIONS: [&str; 3] = ["push", "pull", "delete"];

impl NotificationLayer {
    pub(crate) fn resolve(&self) -> Result<NotificationEndpoint, ConfigError> {
        let invalid = |key: &'static str, value: &str, reason: &str| ConfigError::Invalid {
            key,
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let name = self.name.clone().unwrap_or_default();
        let name_ok = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(invalid(
                "notifications.name",
                &name,
                "expected 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        let url = self.url.clone().unwrap_or_default();
        let parsed = url::Url::parse(&url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if parsed.is_none() {
            return Err(invalid(
                "notifications.url",
                &url,
                "expected an http:// or https:// URL",
            ));
        }
        let duration = |key, text: &Option<String>, default: Duration| match text {
            None => Ok(default),
            Some(t) => parse_duration(key, t)?.ok_or_else(|| invalid(key, t, "must be positive")),
        };
        for action in &self.ignore_actions {
            if !ACTIONS.contains(&action.as_str()) {
                return Err(invalid(
                    "notifications.ignore_actions",
                    action,
                    "expected push, pull or delete",
                ));
            }
        }
        let backlog = self.backlog.unwrap_or(DEFAULT_BACKLOG);
        if backlog == 0 {
            return Err(invalid("notifications.backlog", "0", "must be positive"));
        }
        Ok(NotificationEndpoint {
            name,
            url,
            headers: self
                .headers
                .iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.clone(), v.clone())))
                .collect(),
            timeout: duration("notifications.timeout", &self.timeout, DEFAULT_TIMEOUT)?,
            backoff: duration("notifications.backoff", &self.backoff, DEFAULT_BACKOFF)?,
            max_backoff: duration(
                "notifications.max_backoff",
                &self.max_backoff,
                DEFAULT_MAX_BACKOFF,
            )?,
            ignore_media_types: self.ignore_media_types.clone(),
            ignore_actions: self.ignore_actions.clone(),
            backlog,
        })
    }
}

/// All `[[notifications]]` entries, their names unique.
pub(crate) fn resolve_notifications(
    layers: &[NotificationLayer],
) -> Result<Vec<NotificationEndpoint>, ConfigError> {
    let mut endpoints: Vec<NotificationEndpoint> = Vec::new();
    for layer in layers {
        let endpoint = layer.resolve()?;
        if endpoints.iter().any(|e| e.name == endpoint.name) {
            return Err(ConfigError::Invalid {
                key: "notifications.name",
                value: endpoint.name,
                reason: "names must be unique".into(),
            });
        }
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

impl WebhooksLayer {
    pub(crate) fn resolve(&self) -> Result<WebhookSettings, ConfigError> {
        let timeout = match &self.timeout {
            None => DEFAULT_TIMEOUT,
            Some(t) => {
                parse_duration("webhooks.timeout", t)?.ok_or_else(|| ConfigError::Invalid {
                    key: "webhooks.timeout",
                    value: t.clone(),
                    reason: "must be positive".into(),
                })?
            }
        };
        Ok(WebhookSettings {
            allow_private: self.allow_private.unwrap_or(false),
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_resolves_with_defaults_and_checks_its_values() {
        let layer = NotificationLayer {
            name: Some("ci".into()),
            url: Some("http://127.0.0.1:9/events".into()),
            ..Default::default()
        };
        let e = layer.resolve().unwrap();
        assert_eq!(e.timeout, DEFAULT_TIMEOUT);
        assert_eq!(e.backlog, DEFAULT_BACKLOG);
        for bad in [
            NotificationLayer {
                url: Some("ftp://x/".into()),
                ..layer.clone()
            },
            NotificationLayer {
                name: Some("a b".into()),
                ..layer.clone()
            },
            NotificationLayer {
                ignore_actions: vec!["mount".into()],
                ..layer.clone()
            },
            NotificationLayer {
                backoff: Some("0".into()),
                ..layer.clone()
            },
        ] {
            assert!(bad.resolve().is_err(), "{bad:?}");
        }
        assert!(resolve_notifications(&[layer.clone(), layer]).is_err());
    }
}
