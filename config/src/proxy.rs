//! `[[proxy]]`: upstream registries Berth mirrors under a local namespace.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::{parse_bytes, parse_duration, ConfigError, SizeSetting};

/// How long a cached tag is trusted before the upstream is asked again (a `HEAD`,
/// which Docker Hub does not count as a pull).
pub const DEFAULT_TAG_TTL: Duration = Duration::from_secs(5 * 60);

/// One `[[proxy]]` entry as the file spells it.
#[derive(Debug, Default, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyLayer {
    pub prefix: Option<String>,
    pub upstream: Option<String>,
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    pub tag_ttl: Option<String>,
    pub max_size: Option<SizeSetting>,
    pub access: Option<String>,
    pub mirror_listen: Option<String>,
}

/// A pull-through cache of one upstream registry.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    /// The local namespace: `hub/library/nginx` is the upstream's `library/nginx`.
    pub prefix: String,
    /// `https://registry-1.docker.io`, without a trailing `/`.
    pub upstream: String,
    /// The names of the environment variables holding the upstream credentials (the
    /// credentials themselves never appear in a config file).
    pub credentials_env: Option<(String, String)>,
    pub tag_ttl: Duration,
    /// Least-recently-pulled images are evicted above this many bytes.
    pub max_size: Option<u64>,
    pub access: ProxyAccess,
    /// A listener where this proxy's repositories are addressed without the prefix,
    /// as Docker Engine's `registry-mirrors` sends them.
    pub mirror_listen: Option<SocketAddr>,
}

/// Who may pull through a proxy (with authentication on; an open registry lets
/// everyone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyAccess {
    Anonymous,
    /// Any signed-in user.
    Users,
    /// Members of this organization (and admins).
    Organization(String),
}

impl ProxyLayer {
    pub(crate) fn resolve(&self) -> Result<ProxyConfig, ConfigError> {
        let invalid = |key: &'static str, value: &str, reason: &str| ConfigError::Invalid {
            key,
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let prefix = self.prefix.clone().unwrap_or_default();
        // The repository name grammar, one component: the prefix is a namespace.
        if prefix.contains('/') || berth_oci::names::validate_name(&prefix).is_err() {
            return Err(invalid(
                "proxy.prefix",
                &prefix,
                "expected one lowercase name component, e.g. hub",
            ));
        }
        let upstream = self.upstream.clone().unwrap_or_default();
        let parsed = url::Url::parse(&upstream).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.query().is_none()
                && u.fragment().is_none()
                && u.username().is_empty()
        });
        let Some(parsed) = parsed else {
            return Err(invalid(
                "proxy.upstream",
                &upstream,
                "expected an http:// or https:// URL without credentials, query or fragment",
            ));
        };
        let credentials_env = match (&self.username_env, &self.password_env) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "proxy.password_env",
                    &prefix,
                    "username_env and password_env go together",
                ))
            }
        };
        let tag_ttl = match &self.tag_ttl {
            None => DEFAULT_TAG_TTL,
            // "off": every pull asks the upstream.
            Some(text) => parse_duration("proxy.tag_ttl", text)?.unwrap_or_default(),
        };
        let max_size = match &self.max_size {
            None => None,
            Some(SizeSetting::Bytes(n)) => Some(*n),
            Some(SizeSetting::Text(text)) => {
                Some(parse_bytes(text).map_err(|r| invalid("proxy.max_size", text, &r))?)
            }
        };
        let access = match self.access.as_deref() {
            None | Some("users") => ProxyAccess::Users,
            Some("anonymous") => ProxyAccess::Anonymous,
            Some(other) => match other.strip_prefix("org:") {
                Some(org) if !org.is_empty() => ProxyAccess::Organization(org.to_owned()),
                _ => {
                    return Err(invalid(
                        "proxy.access",
                        other,
                        "expected anonymous, users or org:<name>",
                    ))
                }
            },
        };
        let mirror_listen = match &self.mirror_listen {
            None => None,
            Some(text) => Some(text.parse().map_err(|e: std::net::AddrParseError| {
                invalid(
                    "proxy.mirror_listen",
                    text,
                    &format!("{e} (expected ADDR:PORT)"),
                )
            })?),
        };
        Ok(ProxyConfig {
            prefix,
            // As parsed (scheme and host in lower case): what it is compared with
            // (`https://` for the token realm's rule) reads it as written here.
            upstream: parsed.as_str().trim_end_matches('/').to_owned(),
            credentials_env,
            tag_ttl,
            max_size,
            access,
            mirror_listen,
        })
    }
}

/// Every entry resolved; prefixes and mirror listeners unique.
pub(crate) fn resolve_all(
    layers: &[ProxyLayer],
    listen: SocketAddr,
) -> Result<Vec<ProxyConfig>, ConfigError> {
    let mut proxies: Vec<ProxyConfig> = Vec::new();
    for layer in layers {
        let proxy = layer.resolve()?;
        if proxies.iter().any(|p| p.prefix == proxy.prefix) {
            return Err(ConfigError::Invalid {
                key: "proxy.prefix",
                value: proxy.prefix,
                reason: "two [[proxy]] entries have this prefix".into(),
            });
        }
        if let Some(addr) = proxy.mirror_listen {
            let taken = addr == listen || proxies.iter().any(|p| p.mirror_listen == Some(addr));
            if taken {
                return Err(ConfigError::Invalid {
                    key: "proxy.mirror_listen",
                    value: addr.to_string(),
                    reason: "already used by another listener".into(),
                });
            }
        }
        proxies.push(proxy);
    }
    Ok(proxies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(toml_text: &str) -> Result<ProxyConfig, ConfigError> {
        toml::from_str::<ProxyLayer>(toml_text).unwrap().resolve()
    }

    #[test]
    fn an_entry_resolves_with_defaults() {
        let p = entry("prefix = \"hub\"\nupstream = \"https://registry-1.docker.io/\"\n").unwrap();
        assert_eq!(p.upstream, "https://registry-1.docker.io");
        // Compared as written (`https://…`): scheme and host are kept in lower case.
        let p = entry("prefix = \"hub\"\nupstream = \"HTTPS://Registry.Example/v/\"\n").unwrap();
        assert_eq!(p.upstream, "https://registry.example/v");
        assert_eq!(p.tag_ttl, DEFAULT_TAG_TTL);
        assert_eq!(p.access, ProxyAccess::Users);
        assert_eq!(p.max_size, None);
        let p = entry(
            "prefix = \"gh-cr\"\nupstream = \"https://ghcr.io\"\ntag_ttl = \"30s\"\n\
             max_size = \"2GiB\"\naccess = \"org:team\"\nusername_env = \"U\"\npassword_env = \"P\"\n\
             mirror_listen = \"127.0.0.1:5001\"\n",
        )
        .unwrap();
        assert_eq!(p.tag_ttl, Duration::from_secs(30));
        assert_eq!(p.max_size, Some(2 << 30));
        assert_eq!(p.access, ProxyAccess::Organization("team".into()));
        assert_eq!(p.credentials_env, Some(("U".into(), "P".into())));
        assert_eq!(p.mirror_listen, Some("127.0.0.1:5001".parse().unwrap()));
    }

    #[test]
    fn bad_entries_are_refused_with_their_key() {
        let key = |text: &str| match entry(text) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{text}: {other:?}"),
        };
        let up = "upstream = \"https://x.io\"\n";
        for prefix in ["", "Hub", "a/b", "-a", "a..b", "..", "a%2fb"] {
            assert_eq!(key(&format!("prefix = \"{prefix}\"\n{up}")), "proxy.prefix");
        }
        for upstream in ["ftp://x", "https://u:p@x.io", "x.io", "https://x.io/?a=b"] {
            assert_eq!(
                key(&format!("prefix = \"hub\"\nupstream = \"{upstream}\"\n")),
                "proxy.upstream"
            );
        }
        assert_eq!(
            key(&format!("prefix = \"h\"\n{up}access = \"org:\"\n")),
            "proxy.access"
        );
        assert_eq!(
            key(&format!("prefix = \"h\"\n{up}username_env = \"U\"\n")),
            "proxy.password_env"
        );
        assert_eq!(
            key(&format!("prefix = \"h\"\n{up}max_size = \"lots\"\n")),
            "proxy.max_size"
        );
        let same = ProxyLayer {
            prefix: Some("hub".into()),
            upstream: Some("https://x.io".into()),
            ..ProxyLayer::default()
        };
        let listen = "0.0.0.0:5000".parse().unwrap();
        assert!(resolve_all(&[same.clone(), same], listen).is_err());
    }
}
