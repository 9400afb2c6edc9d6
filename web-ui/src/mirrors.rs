//! Pull-through caches (`[[proxy]]`) in the web UI: the mirror badge and "Mirror
//! of …" line of their repositories, the proxy section of a prefix's namespace page
//! (`/u/<prefix>`), and the `/mirrors` page listing every proxy.
//!
//! Who sees what:
//! - A proxy itself (its upstream, access rule, size and statistics; `/mirrors` and
//!   the namespace page's section) is shown to everyone when it lets anonymous
//!   clients pull, else to signed-in users; with accounts off, to everyone.
//! - Its cached repositories are shown to those who may pull them through it, by the
//!   rule the token endpoint applies (`access`): a mirror of an organization's proxy
//!   is not listed to a signed-in non-member.
//!
//! A mirror's content is its upstream's: the registry refuses pushes and deletes
//! there, and so do the pages (no tag deletion, no visibility change: a mirror's
//! visibility follows its proxy's `access`).

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use berth_config::ProxyAccess;
use berth_proxy::Proxy;
use berth_storage::explore::Listing;
use berth_storage::quotas::NamespaceUsage;
use berth_storage::repos::Viewer;
use minijinja::context;
use serde::Serialize;

use crate::error::{PageResult, WebError};
use crate::lifecycle::UsageView;
use crate::pages::render;
use crate::session::Visitor;
use crate::templates::plural;
use crate::Web;

/// What a repository under a proxy is a copy of.
#[derive(Debug, Clone, Serialize)]
pub struct MirrorOf {
    /// The proxy's prefix: its namespace here.
    pub prefix: String,
    /// `https://registry-1.docker.io`
    pub upstream: String,
    /// The upstream's name for the repository (`library/nginx`).
    pub remote: String,
}

/// The mirror `name` is, when it is under a proxy.
pub fn mirror_of(web: &Web, name: &str) -> Option<MirrorOf> {
    let route = web.proxies.route(name)?;
    Some(MirrorOf {
        prefix: route.proxy.config.prefix.clone(),
        upstream: route.proxy.config.upstream.clone(),
        remote: route.remote,
    })
}

/// Whether a proxy is shown to this visitor (see the module's notes).
pub fn listed(accounts_on: bool, signed_in: bool, access: &ProxyAccess) -> bool {
    !accounts_on || signed_in || *access == ProxyAccess::Anonymous
}

/// Whether `visitor` is shown `proxy`.
pub fn listed_to(visitor: &Visitor, proxy: &Proxy) -> bool {
    listed(
        visitor.accounts,
        visitor.user().is_some(),
        &proxy.config.access,
    )
}

/// Whether `visitor` may pull the repositories of `proxy` (the token endpoint's
/// rule; with accounts off everyone pulls).
pub async fn may_pull_through(
    web: &Web,
    visitor: &Visitor,
    proxy: &Proxy,
) -> Result<bool, WebError> {
    if !visitor.accounts {
        return Ok(true);
    }
    Ok(web
        .accounts
        .may_pull_through(&proxy.config.access, visitor.user())
        .await?)
}

/// The prefixes of the proxies `visitor` may pull through: their repositories are
/// listed to the visitor whether the proxy stored them as public or private.
pub async fn pullable_prefixes(web: &Web, visitor: &Visitor) -> Result<Vec<String>, WebError> {
    let mut prefixes = Vec::new();
    for proxy in web.proxies.iter() {
        if may_pull_through(web, visitor, proxy).await? {
            prefixes.push(proxy.config.prefix.clone());
        }
    }
    Ok(prefixes)
}

/// Refuses a change to a mirror's content or visibility (the registry refuses its
/// pushes and deletes alike).
pub fn refuse_mirror(web: &Web, name: &str) -> Result<(), WebError> {
    match mirror_of(web, name) {
        Some(m) => Err(WebError::ReadOnlyMirror {
            name: name.to_owned(),
            upstream: m.upstream,
        }),
        None => Ok(()),
    }
}

/// "everyone", "signed-in users", "members of acme".
pub fn access_text(access: &ProxyAccess) -> String {
    match access {
        ProxyAccess::Anonymous => "everyone, without signing in".into(),
        ProxyAccess::Users => "signed-in users".into(),
        ProxyAccess::Organization(org) => format!("members of the organization {org}"),
    }
}

/// `5 minutes`, `1 hour 30 minutes`, `2 days`: the two largest units; `off` for zero.
pub fn duration_words(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return match d.subsec_millis() {
            0 if d.is_zero() => "off".into(),
            0 => "under a millisecond".into(),
            ms => plural(ms.into(), "millisecond", None),
        };
    }
    let mut parts = Vec::new();
    let mut rest = secs;
    for (unit, name) in [
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ] {
        let n = rest / unit;
        rest %= unit;
        if n > 0 {
            parts.push(plural(n as i64, name, None));
        }
    }
    parts.truncate(2);
    parts.join(" ")
}

/// Hits among the answers (`75.0%`), or `None` before the first.
pub fn hit_ratio(hits: u64, misses: u64) -> Option<String> {
    let all = hits as f64 + misses as f64;
    (all > 0.0).then(|| format!("{:.1}%", hits as f64 * 100.0 / all))
}

/// A proxy as its page and `/mirrors` show it.
#[derive(Debug, Serialize)]
pub struct ProxyView {
    pub prefix: String,
    pub upstream: String,
    /// Who may pull through it, in words.
    pub access: String,
    /// Whether the rule applies (accounts on); without accounts everyone pulls.
    pub access_applies: bool,
    pub tag_ttl: String,
    /// Cached bytes (a blob two repositories share counts once) against the size
    /// limit (`quota`, as the usage bar has it).
    pub usage: UsageView,
    /// Cached repositories the visitor may see.
    pub repositories: u64,
    /// Since the server started.
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub upstream_bytes: u64,
    pub hit_ratio: Option<String>,
}

async fn proxy_view(
    web: &Web,
    visitor: &Visitor,
    viewer: &Viewer,
    proxy: &Arc<Proxy>,
) -> Result<ProxyView, WebError> {
    let config = &proxy.config;
    let bytes = web.storage.namespace_usage(&config.prefix).await?.bytes;
    let repositories = web
        .storage
        .list_repositories(
            viewer,
            &Listing {
                namespace: Some(config.prefix.clone()),
                per_page: 1,
                ..Listing::default()
            },
        )
        .await?
        .total;
    let (hits, misses, stale, upstream_bytes) = proxy.metrics().totals();
    Ok(ProxyView {
        prefix: config.prefix.clone(),
        upstream: config.upstream.clone(),
        access: access_text(&config.access),
        access_applies: visitor.accounts,
        tag_ttl: duration_words(config.tag_ttl),
        usage: UsageView::from(NamespaceUsage {
            namespace: config.prefix.clone(),
            bytes,
            quota: config.max_size,
        }),
        repositories,
        hits,
        misses,
        stale,
        upstream_bytes,
        hit_ratio: hit_ratio(hits, misses),
    })
}

/// The proxy section of `/u/<prefix>`, when `prefix` is a proxy's shown to `visitor`.
pub async fn namespace_proxy(
    web: &Web,
    visitor: &Visitor,
    viewer: &Viewer,
    prefix: &str,
) -> Result<Option<ProxyView>, WebError> {
    match web.proxies.by_prefix(prefix) {
        Some(proxy) if listed_to(visitor, proxy) => {
            Ok(Some(proxy_view(web, visitor, viewer, proxy).await?))
        }
        _ => Ok(None),
    }
}

/// `GET /mirrors`: every proxy shown to the visitor.
pub async fn page(web: web::Data<Web>, visitor: Visitor, req: HttpRequest) -> PageResult {
    if web.proxies.iter().next().is_none() {
        return Err(WebError::NotFound("mirrors".into()).into());
    }
    let viewer = visitor.viewer(&web).await?;
    let mut proxies = Vec::new();
    let mut hidden = 0;
    for proxy in web.proxies.iter() {
        if listed_to(&visitor, proxy) {
            proxies.push(proxy_view(&web, &visitor, &viewer, proxy).await?);
        } else {
            hidden += 1;
        }
    }
    render(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        "mirrors.html",
        context! { proxies, hidden },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::RepoItem;
    use berth_storage::explore::RepoSummary;

    #[test]
    fn proxies_are_listed_to_everyone_or_signed_in_users() {
        let org = ProxyAccess::Organization("acme".into());
        for access in [ProxyAccess::Anonymous, ProxyAccess::Users, org.clone()] {
            assert!(listed(false, false, &access), "accounts off: {access:?}");
            assert!(listed(true, true, &access), "signed in: {access:?}");
        }
        assert!(listed(true, false, &ProxyAccess::Anonymous));
        assert!(!listed(true, false, &ProxyAccess::Users));
        assert!(!listed(true, false, &org));
    }

    #[test]
    fn access_reads_as_words() {
        assert_eq!(
            access_text(&ProxyAccess::Anonymous),
            "everyone, without signing in"
        );
        assert_eq!(access_text(&ProxyAccess::Users), "signed-in users");
        assert_eq!(
            access_text(&ProxyAccess::Organization("acme".into())),
            "members of the organization acme"
        );
    }

    #[test]
    fn durations_read_as_words() {
        let s = Duration::from_secs;
        assert_eq!(duration_words(s(0)), "off");
        assert_eq!(duration_words(s(1)), "1 second");
        assert_eq!(duration_words(s(30)), "30 seconds");
        assert_eq!(duration_words(s(300)), "5 minutes");
        assert_eq!(duration_words(s(60)), "1 minute");
        assert_eq!(duration_words(s(90)), "1 minute 30 seconds");
        assert_eq!(duration_words(s(3600)), "1 hour");
        assert_eq!(duration_words(s(5400)), "1 hour 30 minutes");
        assert_eq!(duration_words(s(86_400 + 3600 + 61)), "1 day 1 hour");
        assert_eq!(duration_words(s(2 * 86_400)), "2 days");
        assert_eq!(
            duration_words(Duration::from_millis(500)),
            "500 milliseconds"
        );
        assert_eq!(
            duration_words(Duration::from_nanos(5)),
            "under a millisecond"
        );
    }

    fn summary(name: &str) -> RepoSummary {
        RepoSummary {
            name: name.into(),
            description: String::new(),
            private: false,
            pull_count: 1,
            pushed_at: 0,
            tag_count: 2,
            star_count: 0,
        }
    }

    #[test]
    fn listed_mirrors_carry_a_badge_with_their_upstream_escaped() {
        let items = vec![
            RepoItem {
                summary: summary("hub/library/nginx"),
                mirror: Some(MirrorOf {
                    prefix: "hub".into(),
                    upstream: "https://reg.example/<x>".into(),
                    remote: "library/nginx".into(),
                }),
            },
            RepoItem {
                summary: summary("alice/app"),
                mirror: None,
            },
        ];
        let html = crate::templates::render(
            "explore.html",
            context! { total => 2, most_pulled => items, recently_pushed => Vec::<RepoItem>::new() },
        )
        .unwrap();
        assert_eq!(html.matches(">Mirror</span>").count(), 1, "{html}");
        assert!(html.contains("mirror of https:&#x2f;&#x2f;reg.example&#x2f;&lt;x&gt;"));
        assert!(!html.contains("<x>"));
        assert!(
            html.contains("1 pull<") && html.contains("2 tags"),
            "{html}"
        );
        assert!(
            html.contains("cached ") && html.contains("pushed "),
            "{html}"
        );
    }

    #[test]
    fn a_proxy_page_shows_its_facts() {
        let view = ProxyView {
            prefix: "hub".into(),
            upstream: "https://registry-1.docker.io".into(),
            access: access_text(&ProxyAccess::Users),
            access_applies: true,
            tag_ttl: duration_words(Duration::from_secs(300)),
            usage: UsageView::from(NamespaceUsage {
                namespace: "hub".into(),
                bytes: 2_500_000,
                quota: Some(10_000_000),
            }),
            repositories: 1,
            hits: 3,
            misses: 1,
            stale: 0,
            upstream_bytes: 1_000,
            hit_ratio: hit_ratio(3, 1),
        };
        let html = crate::templates::render(
            "namespace.html",
            context! {
                proxy => view, namespace => "hub", total => 1, host => "berth.test",
                repos => Vec::<RepoItem>::new(), page => 1, pages => 1,
            },
        )
        .unwrap()
        .replace("&#x2f;", "/");
        for expected in [
            "https://registry-1.docker.io",
            "signed-in users",
            "5 minutes",
            "2.5 MB",
            "10.0 MB size limit (25.0%)",
            "3 hits",
            "1 miss<",
            "75.0%",
            "0 stale answers",
            "1.0 kB fetched",
            "1 repository",
            "berth.test/hub/NAME:TAG",
        ] {
            assert!(html.contains(expected), "{expected} missing from {html}");
        }
    }

    #[test]
    fn hit_ratios() {
        assert_eq!(hit_ratio(0, 0), None);
        assert_eq!(hit_ratio(3, 1).as_deref(), Some("75.0%"));
        assert_eq!(hit_ratio(0, 4).as_deref(), Some("0.0%"));
        assert_eq!(hit_ratio(2, 1).as_deref(), Some("66.7%"));
        assert_eq!(hit_ratio(u64::MAX, 0).as_deref(), Some("100.0%"));
    }
}
