//! A registry client for the distribution spec's calls, with Docker's token flow:
//! on a `401` with a `Bearer` challenge, a token for the challenged scope is fetched
//! from the realm (with Basic credentials when we have them) and the request retried;
//! a `Basic` challenge is answered with the credentials directly.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use base64::Engine;
use reqwest::header::{
    HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_RANGE, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE,
};
use reqwest::{RequestBuilder, Response, StatusCode};
use tokio_util::io::ReaderStream;

pub struct Registry {
    host: String,
    base: String,
    http: reqwest::Client,
    credentials: Option<(String, String)>,
    /// Tokens by scope, reused for the registry's later requests.
    tokens: Mutex<HashMap<String, String>>,
}

/// Whether `host` (`name[:port]`) is this machine: `localhost`, `[::1]` or an IPv4
/// address in 127.0.0.0/8, exactly (`localhost.example.com` or `127.example.net` is
/// another machine, whose credentials must not go in the clear).
fn on_this_machine(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map_or(v6, |(addr, _)| addr),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Registry {
    /// `host` is reached over plain HTTP when it is on this machine (as docker treats
    /// 127.0.0.0/8), else over HTTPS.
    pub fn new(host: &str, credentials: Option<(String, String)>) -> anyhow::Result<Registry> {
        let scheme = if on_this_machine(host) {
            "http"
        } else {
            "https"
        };
        let api_host = if host == crate::reference::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            host
        };
        Ok(Registry {
            host: host.to_owned(),
            base: format!("{scheme}://{api_host}"),
            http: reqwest::Client::builder()
                .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
                .build()?,
            credentials,
            tokens: Mutex::default(),
        })
    }

    /// Sends a request built by `build` (called again for the retry after a challenge);
    /// a refusal (401, 403) is an error that says what was refused.
    pub async fn send(
        &self,
        scope: &str,
        build: impl Fn(&reqwest::Client, &str) -> anyhow::Result<RequestBuilder>,
    ) -> anyhow::Result<Response> {
        let res = self.send_answered(scope, build).await?;
        self.refused(scope, res).await
    }

    /// Sends a request as [`Registry::send`] does, and returns whatever the registry
    /// answers, a refusal too.
    async fn send_answered(
        &self,
        scope: &str,
        build: impl Fn(&reqwest::Client, &str) -> anyhow::Result<RequestBuilder>,
    ) -> anyhow::Result<Response> {
        let token = self.tokens.lock().unwrap().get(scope).cloned();
        let first = self.authorize(build(&self.http, &self.base)?, token.as_deref());
        let res = first
            .send()
            .await
            .map_err(|e| network_error(&self.host, e))?;
        if res.status() != StatusCode::UNAUTHORIZED {
            return Ok(res);
        }
        let challenge = res
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let auth = if challenge.to_ascii_lowercase().starts_with("bearer") {
            let token = self.fetch_token(&challenge, scope).await?;
            self.tokens
                .lock()
                .unwrap()
                .insert(scope.to_owned(), token.clone());
            format!("Bearer {token}")
        } else {
            let (user, password) = self.credentials.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "{} needs credentials: run `berth login {}`",
                    self.host,
                    self.host
                )
            })?;
            basic(user, password)
        };
        let basic = auth.starts_with("Basic");
        let retried = build(&self.http, &self.base)?.header(AUTHORIZATION, auth);
        let res = retried
            .send()
            .await
            .map_err(|e| network_error(&self.host, e))?;
        if basic && res.status() == StatusCode::UNAUTHORIZED {
            return Err(self.bad_credentials());
        }
        Ok(res)
    }

    /// The response, unless it refuses the request (401 or 403): then an error that
    /// says what was refused, to whom, and what to do, as docker says it. A 403 for
    /// another reason than access (an immutable tag, a quota, a read-only mirror) is
    /// the registry's own message.
    async fn refused(&self, scope: &str, res: Response) -> anyhow::Result<Response> {
        let status = res.status();
        if !matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            return Ok(res);
        }
        if let Some((code, message)) = spec_error(res).await {
            let about_access = code == "UNAUTHORIZED"
                || (code == "DENIED"
                    && message.starts_with("requested access to the resource is denied"));
            if status == StatusCode::FORBIDDEN && !about_access {
                anyhow::bail!("{} refused: {code}: {message}", self.host);
            }
        }
        let name = |repository| self.familiar(repository);
        Err(match (Scope::parse(scope), &self.credentials) {
            (Some(scope), Some((user, _))) if scope.push => anyhow::anyhow!(
                "push access to {} denied for {user} (logged in to {}): {user} may push to {}/{user}/… and to the organizations where {user} may push",
                name(scope.repository),
                self.host,
                self.host,
            ),
            (Some(scope), None) if scope.push => anyhow::anyhow!(
                "push access to {} denied: not logged in to {} (run 'berth login {}')",
                name(scope.repository),
                self.host,
                self.host
            ),
            (Some(scope), _) => self.pull_denied(scope.repository),
            (None, _) => anyhow::anyhow!("{} refused the request ({status})", self.host),
        })
    }

    /// docker's words for a repository one may not pull, which do not say whether
    /// it exists.
    fn pull_denied(&self, repository: &str) -> anyhow::Error {
        let name = self.familiar(repository);
        match &self.credentials {
            Some((user, _)) => anyhow::anyhow!(
                "pull access denied for {name} to {user}: the repository does not exist or {user} may not pull from it"
            ),
            None => anyhow::anyhow!(
                "pull access denied for {name}, repository does not exist or may require 'berth login'"
            ),
        }
    }

    fn bad_credentials(&self) -> anyhow::Error {
        BadCredentials {
            host: self.host.clone(),
            user: self
                .credentials
                .as_ref()
                .map_or_else(String::new, |(user, _)| user.clone()),
        }
        .into()
    }

    /// `repository` of this registry as docker names it (`nginx`, `127.0.0.1:5000/a`).
    fn familiar(&self, repository: &str) -> String {
        crate::reference::Reference {
            registry: self.host.clone(),
            repository: repository.to_owned(),
            tag: None,
            digest: None,
            tag_defaulted: false,
        }
        .familiar_name()
    }

    fn authorize(&self, req: RequestBuilder, token: Option<&str>) -> RequestBuilder {
        match token {
            Some(t) => req.header(AUTHORIZATION, format!("Bearer {t}")),
            None => req,
        }
    }

    async fn fetch_token(&self, challenge: &str, scope: &str) -> anyhow::Result<String> {
        let params = parse_challenge(challenge);
        let realm = params
            .get("realm")
            .ok_or_else(|| anyhow::anyhow!("{}: bearer challenge without a realm", self.host))?;
        let mut url = reqwest::Url::parse(realm)
            .with_context(|| format!("{}: bad token realm {realm:?}", self.host))?;
        if let Some(service) = params.get("service") {
            url.query_pairs_mut().append_pair("service", service);
        }
        // Ask for what this client will do next (a HEAD is challenged for pull only,
        // but the token is reused for the push that follows).
        let scope = if scope.is_empty() {
            params.get("scope").map(String::as_str).unwrap_or_default()
        } else {
            scope
        };
        for one in scope.split(' ').filter(|s| !s.is_empty()) {
            url.query_pairs_mut().append_pair("scope", one);
        }
        let mut req = self.http.get(url);
        if let Some((user, password)) = &self.credentials {
            req = req.basic_auth(user, Some(password));
        }
        let res = req.send().await.map_err(|e| network_error(&self.host, e))?;
        if res.status() == StatusCode::UNAUTHORIZED && self.credentials.is_some() {
            return Err(self.bad_credentials());
        }
        let body: serde_json::Value = check(res, "token request").await?.json().await?;
        body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("{}: token response without a token", self.host))
    }

    /// Checks that the credentials work (`GET /v2/`, answering any challenge).
    pub async fn ping(&self) -> anyhow::Result<()> {
        let res = self.send("", |c, b| Ok(c.get(format!("{b}/v2/")))).await?;
        check(res, "GET /v2/").await.map(drop)
    }

    pub async fn get_manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> anyhow::Result<(String, Vec<u8>)> {
        let res = self
            .send(&pull_scope(repo), |c, b| {
                Ok(c.get(format!("{b}/v2/{repo}/manifests/{reference}"))
                    .header(ACCEPT, berth_oci::media_types::MANIFEST_ACCEPT))
            })
            .await?;
        if res.status() == StatusCode::NOT_FOUND {
            // As docker: an unknown repository reads as one that may need a login.
            if spec_error(res)
                .await
                .is_some_and(|(code, _)| code == "NAME_UNKNOWN")
            {
                return Err(self.pull_denied(repo));
            }
            let separator = if reference.contains(':') { '@' } else { ':' };
            anyhow::bail!(
                "manifest for {}{separator}{reference} not found: manifest unknown",
                self.familiar(repo)
            );
        }
        let res = check(res, "GET manifest").await?;
        let media_type = header(res.headers(), CONTENT_TYPE.as_str());
        let body = read_at_most(res, MAX_MANIFEST).await?.ok_or_else(|| {
            anyhow::anyhow!(
                "the manifest {} sent for {repo}:{reference} is larger than 4 MiB",
                self.host
            )
        })?;
        Ok((media_type, body))
    }

    pub async fn get_blob(&self, repo: &str, digest: &str) -> anyhow::Result<Response> {
        let res = self
            .send(&pull_scope(repo), |c, b| {
                Ok(c.get(format!("{b}/v2/{repo}/blobs/{digest}")))
            })
            .await?;
        check(res, &format!("GET blob {digest}")).await
    }

    pub async fn has_blob(&self, repo: &str, digest: &str) -> anyhow::Result<bool> {
        let res = self
            .send(&push_scope(repo), |c, b| {
                Ok(c.head(format!("{b}/v2/{repo}/blobs/{digest}")))
            })
            .await?;
        Ok(res.status().is_success())
    }

    /// Links a blob another repository of this registry has into `repo`; false when
    /// the registry would rather have it uploaded.
    pub async fn mount_blob(&self, repo: &str, digest: &str, from: &str) -> anyhow::Result<bool> {
        let scope = format!("{} repository:{from}:pull", push_scope(repo));
        // A refused mount (the source not readable to us) is only a blob to upload.
        let res = self
            .send_answered(&scope, |c, b| {
                Ok(c.post(format!(
                    "{b}/v2/{repo}/blobs/uploads/?mount={digest}&from={from}"
                )))
            })
            .await?;
        match res.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                // An upload was opened instead: cancel it; the caller uploads afresh.
                let url = self.location(res)?;
                let _ = self.send(&scope, |c, _| Ok(c.delete(&url))).await;
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    /// Uploads the blob in file `path` in chunks (POST, PATCHes, PUT). When a chunk's
    /// connection breaks, asks the registry how much it has and goes on from there.
    /// `progress` is told the bytes the registry holds.
    pub async fn upload_blob(
        &self,
        repo: &str,
        digest: &str,
        path: &Path,
        progress: &dyn Fn(u64),
    ) -> anyhow::Result<()> {
        let scope = push_scope(repo);
        let res = self
            .send(&scope, |c, b| {
                Ok(c.post(format!("{b}/v2/{repo}/blobs/uploads/")))
            })
            .await?;
        let mut location = self.location(check(res, "POST upload").await?)?;
        let total = file_len(path)?;
        let mut offset = 0;
        let mut retries = 0;
        while offset < total {
            let end = (offset + CHUNK_SIZE).min(total);
            // Answered as it is: a refusal is reported, only a broken connection retried.
            let sent = self
                .send_answered(&scope, |c, _| {
                    Ok(c.patch(&location)
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_RANGE, format!("{offset}-{}", end - 1))
                        .header(reqwest::header::CONTENT_LENGTH, end - offset)
                        .body(file_body(path, offset, end - offset)?))
                })
                .await;
            match sent {
                Ok(res) if res.status().is_success() => {
                    location = self.location(res)?;
                    offset = end;
                    retries = 0;
                }
                Ok(res) if res.status() != StatusCode::RANGE_NOT_SATISFIABLE => {
                    let res = self.refused(&scope, res).await?;
                    check(res, "PATCH upload").await?;
                }
                // A broken connection, or a chunk the registry did not expect: resume
                // from what it reports holding.
                failed => {
                    retries += 1;
                    anyhow::ensure!(
                        retries <= MAX_RETRIES,
                        "upload of {digest} keeps failing: {}",
                        failed
                            .err()
                            .map_or("registry refused the chunk".into(), |e| e.to_string())
                    );
                    let res = self.send(&scope, |c, _| Ok(c.get(&location))).await?;
                    let res = check(res, "upload status").await?;
                    offset = received(res.headers());
                    location = self.location(res)?;
                }
            }
            progress(offset);
        }
        let mut url = reqwest::Url::parse(&location)?;
        url.query_pairs_mut().append_pair("digest", digest);
        let res = self.send(&scope, |c, _| Ok(c.put(url.clone()))).await?;
        check(res, &format!("PUT blob {digest}")).await.map(drop)
    }

    /// The absolute URL in a response's Location header.
    fn location(&self, res: Response) -> anyhow::Result<String> {
        res.headers()
            .get(LOCATION)
            .and_then(|l| l.to_str().ok())
            .map(|l| self.absolute(l))
            .ok_or_else(|| anyhow::anyhow!("upload response without a Location"))
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<()> {
        let res = self
            .send(&push_scope(repo), |c, b| {
                Ok(c.put(format!("{b}/v2/{repo}/manifests/{reference}"))
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone()))
            })
            .await?;
        check(res, "PUT manifest").await.map(drop)
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_owned()
        } else {
            format!("{}{location}", self.base)
        }
    }
}

/// Chunk size for uploads, and how often a chunk may fail before the push gives up.
const CHUNK_SIZE: u64 = 16 * 1024 * 1024;
const MAX_RETRIES: u32 = 5;

fn file_len(path: &Path) -> std::io::Result<u64> {
    Ok(std::fs::metadata(path)?.len())
}

/// `len` bytes of the file from `offset`, streamed.
fn file_body(path: &Path, offset: u64, len: u64) -> std::io::Result<reqwest::Body> {
    use std::io::Seek;
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    let reader = tokio::fs::File::from_std(file);
    Ok(reqwest::Body::wrap_stream(ReaderStream::new(
        tokio::io::AsyncReadExt::take(reader, len),
    )))
}

/// Bytes an upload holds, from its `Range: 0-<last>` header. `0-0` is what
/// registries say for an empty upload (and, ambiguously, for one byte): read as 0.
fn received(headers: &HeaderMap) -> u64 {
    headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.rsplit('-').next())
        .and_then(|last| last.parse::<u64>().ok())
        .map_or(0, |last| if last == 0 { 0 } else { last + 1 })
}

fn pull_scope(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn push_scope(repo: &str) -> String {
    format!("repository:{repo}:pull,push")
}

pub fn basic(user: &str, password: &str) -> String {
    let raw = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned())
        .unwrap_or_default()
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
fn parse_challenge(challenge: &str) -> HashMap<String, String> {
    let params = challenge.split_once(' ').map_or("", |(_, p)| p);
    let mut out = HashMap::new();
    let mut rest = params;
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_owned();
        let (value, tail) = match after.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => after.split_once(',').unwrap_or((after, "")),
        };
        out.insert(key, value.to_owned());
        rest = tail;
    }
    out
}

/// The registry refused the username and password (at `berth login`, or saved).
#[derive(Debug, thiserror::Error)]
#[error("{host} refused the password of {user}: incorrect username or password (log in again with 'berth login {host}')")]
pub struct BadCredentials {
    pub host: String,
    pub user: String,
}

/// The first `repository:NAME:ACTIONS` of a token scope.
struct Scope<'a> {
    repository: &'a str,
    push: bool,
}

impl Scope<'_> {
    fn parse(scope: &str) -> Option<Scope<'_>> {
        let first = scope.split(' ').next()?;
        let (name, actions) = first.strip_prefix("repository:")?.rsplit_once(':')?;
        Some(Scope {
            repository: name,
            push: actions.split(',').any(|a| a == "push"),
        })
    }
}

fn network_error(host: &str, e: reqwest::Error) -> anyhow::Error {
    anyhow::anyhow!("cannot reach {host}: {e} (is the registry running, and the address right?)")
}

/// Manifests larger than this are refused, as docker refuses them.
const MAX_MANIFEST: usize = 4 << 20;
/// Of an error's body, no more than this is read.
const MAX_ERROR_BODY: usize = 64 << 10;

/// The body, if it is at most `limit` bytes (a registry sending more is not read on).
async fn read_at_most(mut res: Response, limit: usize) -> anyhow::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

/// An error body's text (cut at [`MAX_ERROR_BODY`]).
async fn error_text(res: Response) -> String {
    match read_at_most(res, MAX_ERROR_BODY).await {
        Ok(Some(body)) => String::from_utf8_lossy(&body).into_owned(),
        Ok(None) => "(an error body larger than 64 KiB)".to_owned(),
        Err(e) => format!("(the error body could not be read: {e})"),
    }
}

/// The first error (code, message) of a distribution spec error body, if it is one.
async fn spec_error(res: Response) -> Option<(String, String)> {
    parse_spec_error(&error_text(res).await)
}

fn parse_spec_error(body: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let e = &v["errors"][0];
    Some((
        e["code"].as_str()?.to_owned(),
        e["message"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// The response if it succeeded, else the registry's error message.
async fn check(res: Response, what: &str) -> anyhow::Result<Response> {
    if res.status().is_success() {
        return Ok(res);
    }
    let status = res.status();
    let body = error_text(res).await;
    let message = parse_spec_error(&body)
        .map(|(code, message)| format!("{code}: {message}"))
        .unwrap_or(body);
    Err(anyhow::anyhow!("{what} failed ({status}): {message}")).context("registry error")
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_this_machine_is_reached_in_the_clear() {
        for local in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "LOCALHOST",
        ] {
            assert!(super::on_this_machine(local), "{local}");
        }
        for remote in [
            "localhost.example.com",
            "localhost.corp.example:5000",
            "127.example.net",
            "127.0.0.1.nip.io:5000",
            "[::2]:5000",
            "registry.example",
        ] {
            assert!(!super::on_this_machine(remote), "{remote}");
        }
    }

    use super::*;

    #[test]
    fn challenges_parse() {
        let p = parse_challenge(
            r#"Bearer realm="http://127.0.0.1:5000/auth/token",service="berth",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(p["realm"], "http://127.0.0.1:5000/auth/token");
        assert_eq!(p["service"], "berth");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
    }
}
