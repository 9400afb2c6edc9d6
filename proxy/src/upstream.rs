//! An upstream registry as a client sees it: the distribution API over HTTP with
//! Docker's token flow (401 challenge → token endpoint → Bearer, anonymous or with
//! the configured credentials; tokens kept per scope until they expire) or Basic
//! auth. Only blob requests follow redirects (Docker Hub sends blobs to pre-signed
//! storage URLs; reqwest drops the `Authorization` header when a redirect leaves the
//! host, and a challenge from anywhere but the upstream is not answered).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_oci::{media_types, Digest};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use serde::Deserialize;

use crate::destinations::{Destinations, Resolver};
use crate::error::{Missing, ProxyError, Result};

/// A token without `expires_in` lives 60 s (the token spec's default).
const DEFAULT_TOKEN_LIFE: Duration = Duration::from_secs(60);
/// Tokens are kept at most this long, whatever `expires_in` says.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);
/// Tokens are renewed this long before they expire.
const TOKEN_MARGIN: Duration = Duration::from_secs(5);
/// Scopes remembered at most (one per repository pulled): the map is cleared past it.
const MAX_TOKENS: usize = 4096;
/// A page of tags, and a token response, read at most.
const MAX_LIST_BYTES: u64 = 4 * 1024 * 1024;
const MAX_TOKEN_BYTES: u64 = 64 * 1024;
/// Manifests, tags and token requests are small: they get this long, whole.
const SMALL_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What a manifest request accepts: every manifest type Berth stores.
fn manifest_accept() -> HeaderValue {
    HeaderValue::from_static(media_types::MANIFEST_ACCEPT)
}

pub struct Upstream {
    /// `https://registry-1.docker.io`, as configured.
    pub url: String,
    /// Only its own challenges are answered (a redirect target's are not).
    origin: url::Origin,
    client: reqwest::Client,
    blob_client: reqwest::Client,
    credentials: Option<(String, String)>,
    /// Larger manifests are refused as they arrive (`limits.max_manifest_bytes`).
    max_manifest_bytes: u64,
    /// Docker Hub keeps official images under `library/`.
    docker_hub: bool,
    auth: Mutex<AuthCache>,
}

#[derive(Default)]
struct AuthCache {
    /// The upstream asked for Basic auth.
    basic: bool,
    tokens: HashMap<String, (String, Instant)>,
}

/// A manifest as the upstream has it.
pub struct FetchedManifest {
    pub body: bytes::Bytes,
    pub content_type: Option<String>,
}

impl Upstream {
    pub fn new(
        url: &str,
        credentials: Option<(String, String)>,
        max_manifest_bytes: u64,
    ) -> Result<Upstream> {
        let parsed = url::Url::parse(url)
            .map_err(|e| ProxyError::Setup(format!("upstream {url} is not a URL: {e}")))?;
        let origin = parsed.origin();
        // Where the upstream sends requests (redirects, token realms), checked.
        let destinations = Destinations::new(&parsed);
        let build = |redirects: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                // Between two reads of a body: a stalled upstream fails the request.
                .read_timeout(Duration::from_secs(60))
                .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
                .redirect(redirects)
                .dns_resolver(Arc::new(Resolver(destinations.clone())))
                .build()
                .map_err(|e| ProxyError::Setup(format!("an HTTP client for {url}: {e}")))
        };
        // Manifests, tags, referrers and tokens come from the upstream itself; blobs
        // may be sent elsewhere (pre-signed storage URLs), never from https to http.
        let client = build(reqwest::redirect::Policy::none())?;
        let redirects = destinations.clone();
        let blob_client = build(reqwest::redirect::Policy::custom(move |attempt| {
            let downgrade = attempt.url().scheme() == "http"
                && attempt.previous().iter().any(|u| u.scheme() == "https");
            if downgrade {
                attempt.error("redirect from https to http")
            } else if attempt.previous().len() > 5 {
                attempt.error("more than 5 redirects")
            } else if !redirects.allows(attempt.url()) {
                attempt.error("redirect to an internal address")
            } else {
                attempt.follow()
            }
        }))?;
        let host = parsed.host_str().unwrap_or_default().to_owned();
        Ok(Upstream {
            url: url.to_owned(),
            origin,
            client,
            blob_client,
            credentials,
            max_manifest_bytes,
            docker_hub: matches!(
                host.as_str(),
                "registry-1.docker.io" | "docker.io" | "index.docker.io"
            ),
            auth: Mutex::default(),
        })
    }

    /// The upstream's name for a repository: Docker Hub's official images live under
    /// `library/` (`nginx` is `library/nginx`).
    pub fn repository(&self, name: &str) -> String {
        if self.docker_hub && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_owned()
        }
    }

    /// The digest the upstream's tag (or digest) points at, by `HEAD` (which Docker
    /// Hub does not count as a pull). `None` when it did not say.
    pub async fn manifest_digest(&self, repo: &str, reference: &str) -> Result<Option<Digest>> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let res = self
            .send(
                Method::HEAD,
                &path,
                repo,
                Some(manifest_accept()),
                Fetch::Small,
                Missing::Manifest(reference.to_owned()),
            )
            .await?;
        let Some(value) = res.headers().get("Docker-Content-Digest") else {
            return Ok(None);
        };
        // Only a digest by the grammar goes into the next request's path.
        let digest = value.to_str().ok().and_then(|v| v.parse().ok());
        digest.map(Some).ok_or_else(|| ProxyError::BadAnswer {
            upstream: self.url.clone(),
            reason: format!("Docker-Content-Digest {value:?} is not a digest"),
        })
    }

    /// A small blob (an image configuration), read whole within `limit` bytes.
    pub async fn small_blob(&self, repo: &str, digest: &str, limit: u64) -> Result<bytes::Bytes> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let res = self
            .send(
                Method::GET,
                &path,
                repo,
                None,
                Fetch::BlobHead,
                Missing::Blob(digest.to_owned()),
            )
            .await?;
        self.read_limited(res, limit, "an image configuration")
            .await
    }

    pub async fn manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest> {
        let path = format!("/v2/{repo}/manifests/{reference}");
        let res = self
            .send(
                Method::GET,
                &path,
                repo,
                Some(manifest_accept()),
                Fetch::Small,
                Missing::Manifest(reference.to_owned()),
            )
            .await?;
        let content_type = res
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = self
            .read_limited(res, self.max_manifest_bytes, "a manifest")
            .await?;
        Ok(FetchedManifest { body, content_type })
    }

    /// A blob's size, by `HEAD`.
    pub async fn blob_size(&self, repo: &str, digest: &str) -> Result<Option<u64>> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        let res = self
            .send(
                Method::HEAD,
                &path,
                repo,
                None,
                Fetch::BlobHead,
                Missing::Blob(digest.to_owned()),
            )
            .await?;
        Ok(res
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok()))
    }

    /// A blob's bytes, as a response whose body is read as it arrives.
    pub async fn blob(&self, repo: &str, digest: &str) -> Result<Response> {
        let path = format!("/v2/{repo}/blobs/{digest}");
        self.send(
            Method::GET,
            &path,
            repo,
            None,
            Fetch::Blob,
            Missing::Blob(digest.to_owned()),
        )
        .await
    }

    /// `GET /v2/<repo>/tags/list` with the client's query, the upstream's JSON as is.
    pub async fn tags(&self, repo: &str, query: &str) -> Result<(bytes::Bytes, Option<String>)> {
        let mut path = format!("/v2/{repo}/tags/list");
        if !query.is_empty() {
            path = format!("{path}?{query}");
        }
        let res = self
            .send(
                Method::GET,
                &path,
                repo,
                None,
                Fetch::Small,
                Missing::Repository(repo.to_owned()),
            )
            .await?;
        let link = res
            .headers()
            .get(reqwest::header::LINK)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = self.read_limited(res, MAX_LIST_BYTES, "a tag list").await?;
        Ok((body, link))
    }

    /// `GET /v2/<repo>/referrers/<digest>`: the upstream's index (checked to be one)
    /// and whether it applied the `artifactType` filter; `None` when it has no
    /// referrers API (a 404, as the spec's fallback says).
    pub async fn referrers(
        &self,
        repo: &str,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Option<(bytes::Bytes, bool)>> {
        let mut path = format!("/v2/{repo}/referrers/{digest}");
        if let Some(t) = artifact_type {
            let query: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("artifactType", t)
                .finish();
            path = format!("{path}?{query}");
        }
        let sent = self
            .send(
                Method::GET,
                &path,
                repo,
                None,
                Fetch::Small,
                Missing::Manifest(digest.to_owned()),
            )
            .await;
        let res = match sent {
            Ok(res) => res,
            Err(ProxyError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let filtered = res.headers().contains_key("OCI-Filters-Applied");
        let body = self
            .read_limited(res, MAX_LIST_BYTES, "a referrers list")
            .await?;
        let is_index = serde_json::from_slice::<serde_json::Value>(&body)
            .is_ok_and(|v| v.get("manifests").is_some_and(|m| m.is_array()));
        if !is_index {
            return Err(ProxyError::BadAnswer {
                upstream: self.url.clone(),
                reason: "the referrers answer is not an image index".into(),
            });
        }
        Ok(Some((body, filtered)))
    }

    /// Sends a request and checks its answer: a 2xx response, or the error its status
    /// means (`missing` names what a 404 lacks).
    async fn send(
        &self,
        method: Method,
        path: &str,
        repo: &str,
        accept: Option<HeaderValue>,
        fetch: Fetch,
        missing: Missing,
    ) -> Result<Response> {
        let res = self.exchange(method, path, repo, accept, fetch).await?;
        self.check(res, missing)
    }

    /// Sends a request, authenticating as the upstream asks (once per challenge).
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        repo: &str,
        accept: Option<HeaderValue>,
        fetch: Fetch,
    ) -> Result<Response> {
        let scope = format!("repository:{repo}:pull");
        let url = format!("{}{path}", self.url);
        let request = |authorization: Option<HeaderValue>| {
            let mut headers = HeaderMap::new();
            if let Some(a) = &accept {
                headers.insert(ACCEPT, a.clone());
            }
            if let Some(a) = authorization {
                headers.insert(AUTHORIZATION, a);
            }
            let client = match fetch {
                Fetch::Small => &self.client,
                Fetch::BlobHead | Fetch::Blob => &self.blob_client,
            };
            let req = client.request(method.clone(), &url).headers(headers);
            match fetch {
                Fetch::Small | Fetch::BlobHead => req.timeout(SMALL_REQUEST_TIMEOUT),
                Fetch::Blob => req,
            }
        };
        let res = request(self.authorization(&scope))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        // Credentials go only where the upstream itself asks for them.
        if res.status() != StatusCode::UNAUTHORIZED || res.url().origin() != self.origin {
            return Ok(res);
        }
        let challenge = res
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| Challenge::parse(v, &scope));
        let authorization = match challenge {
            Some(Challenge::Basic) => {
                self.auth.lock().expect("auth cache").basic = true;
                self.basic()
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope: wanted,
            }) => Some(
                self.token(&realm, service.as_deref(), &wanted, &scope)
                    .await?,
            ),
            None => None,
        };
        let Some(authorization) = authorization else {
            return Ok(res);
        };
        request(Some(authorization))
            .send()
            .await
            .map_err(|e| self.unreachable(e))
    }

    /// What to send before any challenge: a token still valid for `scope`, or Basic
    /// credentials once the upstream asked for them.
    fn authorization(&self, scope: &str) -> Option<HeaderValue> {
        let cache = self.auth.lock().expect("auth cache");
        if cache.basic {
            drop(cache);
            return self.basic();
        }
        let (token, expires) = cache.tokens.get(scope)?;
        (Instant::now() < *expires).then(|| bearer(token))?
    }

    fn basic(&self) -> Option<HeaderValue> {
        use base64::Engine;
        let (user, password) = self.credentials.as_ref()?;
        // RFC 7617: base64 of `user:password`.
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {encoded}")).ok()
    }

    /// Asks the token endpoint for a token for `wanted` (the challenge's scope),
    /// with the credentials if configured, and keeps it under `scope`.
    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        wanted: &str,
        scope: &str,
    ) -> Result<HeaderValue> {
        let bad = |reason: String| ProxyError::BadAnswer {
            upstream: self.url.clone(),
            reason,
        };
        // Over https only, when the upstream is (credentials go there).
        let secure = self.url.starts_with("https://");
        let mut url = url::Url::parse(realm)
            .ok()
            .filter(|u| u.scheme() == "https" || (!secure && u.scheme() == "http"))
            .ok_or_else(|| {
                bad(format!(
                    "token realm {realm:?} is not an {} URL",
                    if secure { "https" } else { "http(s)" }
                ))
            })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", wanted);
        }
        let mut req = self.client.get(url).timeout(SMALL_REQUEST_TIMEOUT);
        if let Some(basic) = self.basic() {
            req = req.header(AUTHORIZATION, basic);
        }
        let res = req.send().await.map_err(|e| self.unreachable(e))?;
        let status = res.status();
        if !status.is_success() {
            return Err(ProxyError::Status {
                upstream: self.url.clone(),
                status: status.as_u16(),
                what: "a token".into(),
                retry_after: retry_after(res.headers()),
            });
        }
        #[derive(Deserialize)]
        struct TokenAnswer {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let body = self.read_limited(res, MAX_TOKEN_BYTES, "a token").await?;
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|e| bad(format!("token response: {e}")))?;
        let token = answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("token response without a token".into()))?;
        let life = answer
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFE, Duration::from_secs)
            .min(MAX_TOKEN_LIFE)
            .saturating_sub(TOKEN_MARGIN);
        let expires = Instant::now() + life;
        let header = bearer(&token).ok_or_else(|| bad("token is not a header value".into()))?;
        let mut cache = self.auth.lock().expect("auth cache");
        if cache.tokens.len() >= MAX_TOKENS {
            cache.tokens.clear();
        }
        cache.tokens.insert(scope.to_owned(), (token, expires));
        Ok(header)
    }

    /// A small body, read whole but never past `limit` bytes (an upstream's answer is
    /// not trusted to be the size it should be).
    async fn read_limited(
        &self,
        mut res: Response,
        limit: u64,
        what: &str,
    ) -> Result<bytes::Bytes> {
        let too_large = || ProxyError::BadAnswer {
            upstream: self.url.clone(),
            reason: format!("{what} larger than {limit} bytes"),
        };
        if res.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| self.unreachable(e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }

    /// A 2xx response, or the error its status means.
    fn check(&self, res: Response, missing: Missing) -> Result<Response> {
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(ProxyError::NotFound {
                upstream: self.url.clone(),
                what: missing,
            });
        }
        Err(ProxyError::Status {
            upstream: self.url.clone(),
            status: status.as_u16(),
            what: missing.to_string(),
            retry_after: retry_after(res.headers()),
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> ProxyError {
        // The error's chain says why (refused, timed out, TLS); the URL is ours.
        let e = e.without_url();
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        ProxyError::Unreachable {
            upstream: self.url.clone(),
            reason,
        }
    }
}

/// What a request fetches: how it is timed, and whether it follows redirects.
#[derive(Clone, Copy)]
enum Fetch {
    /// From the upstream itself, whole within `SMALL_REQUEST_TIMEOUT`.
    Small,
    /// A blob's size: redirects followed, within `SMALL_REQUEST_TIMEOUT`.
    BlobHead,
    /// A blob's bytes: redirects followed, read as they arrive (the fetch has its own
    /// deadline).
    Blob,
}

fn bearer(token: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("Bearer {token}")).ok()
}

fn retry_after(headers: &HeaderMap) -> Option<String> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// How an upstream asks to be authenticated.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: String,
    },
}

impl Challenge {
    /// The first Bearer or Basic challenge of a `WWW-Authenticate` value; a Bearer
    /// challenge without a scope is asked for `default_scope`.
    fn parse(value: &str, default_scope: &str) -> Option<Challenge> {
        let challenges = http_auth::parse_challenges(value).ok()?;
        challenges.iter().find_map(|c| {
            let param = |name: &str| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            if c.scheme.eq_ignore_ascii_case("basic") {
                Some(Challenge::Basic)
            } else if c.scheme.eq_ignore_ascii_case("bearer") {
                Some(Challenge::Bearer {
                    realm: param("realm")?,
                    service: param("service"),
                    scope: param("scope").unwrap_or_else(|| default_scope.to_owned()),
                })
            } else {
                None
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse_as_registries_send_them() {
        let hub = "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\",scope=\"repository:library/nginx:pull\"";
        assert_eq!(
            Challenge::parse(hub, "x"),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: "repository:library/nginx:pull".into(),
            })
        );
        assert_eq!(
            Challenge::parse("Bearer realm=\"http://h/t\"", "repository:a:pull"),
            Some(Challenge::Bearer {
                realm: "http://h/t".into(),
                service: None,
                scope: "repository:a:pull".into(),
            })
        );
        assert_eq!(
            Challenge::parse("Basic realm=\"Registry Realm\"", "x"),
            Some(Challenge::Basic)
        );
        assert_eq!(Challenge::parse("Negotiate", "x"), None);
        assert_eq!(Challenge::parse("Bearer service=\"no-realm\"", "x"), None);
        assert_eq!(Challenge::parse("\"unbalanced", "x"), None);
    }

    #[test]
    fn docker_hub_names_official_images_under_library() {
        let hub = Upstream::new("https://registry-1.docker.io", None, 1024).unwrap();
        assert_eq!(hub.repository("nginx"), "library/nginx");
        assert_eq!(hub.repository("bitnami/nginx"), "bitnami/nginx");
        let other = Upstream::new("https://ghcr.io", None, 1024).unwrap();
        assert_eq!(other.repository("nginx"), "nginx");
    }
}
