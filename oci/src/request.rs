//! The distribution API's request grammar: a method, a `/v2/…` path and its query
//! string, to one typed [`Action`].
//!
//! This is the only place a registry request is parsed. Authorization decides on the
//! [`Action`] it returns and the handlers execute that same value, so the two cannot
//! disagree about which repository a request touches or what it does to it.
//!
//! Spelling: the path is percent-decoded exactly once, then split on `/` and matched
//! from its end (a repository name may itself contain `/`). Every part is then held to
//! its grammar (name, tag, digest, upload id), so whatever survives decoding must be a
//! canonical spelling: `%2561` stays `%61` and fails the name grammar, dot segments,
//! empty segments and `;` parameters fail it too. Nothing is normalised away.

use percent_encoding::percent_decode_str;

use crate::digest::{Algorithm, Digest};
use crate::error::OciError;
use crate::names::RepoName;
use crate::reference::Reference;

/// What a request does to a repository, as token scopes name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Pull,
    Push,
    Delete,
}

impl Need {
    /// The action's name in token scopes (`repository:alice/app:pull`).
    pub fn as_str(self) -> &'static str {
        match self {
            Need::Pull => "pull",
            Need::Push => "push",
            Need::Delete => "delete",
        }
    }
}

/// One thing a request must be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Repository(&'a RepoName, Need),
    /// Listing repositories (`registry:catalog:*`).
    Catalog,
}

/// How a `POST …/blobs/uploads/` starts, from its query string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadStart {
    /// A session for chunks (`?digest-algorithm=` picks the hash, sha256 by default).
    Session(Algorithm),
    /// The whole blob in this request's body (`?digest=`).
    Monolithic(Digest),
    /// A cross-repository mount (`?mount=<digest>&from=<repository>`).
    Mount { digest: Digest, from: RepoName },
}

/// An upload session id as the registry hands them out: 1 to 128 characters of
/// `[A-Za-z0-9._-]`. Anything else names no upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadId(String);

impl UploadId {
    pub fn parse(id: &str) -> Result<UploadId, OciError> {
        let ok = (1..=128).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if ok {
            Ok(UploadId(id.to_owned()))
        } else {
            Err(OciError::UploadUnknown(id.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Every operation of the distribution API, with the values it acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET /v2/`: the API version check (and, with auth on, the login probe).
    Base,
    Catalog,
    ListTags(RepoName),
    GetManifest(RepoName, Reference),
    HeadManifest(RepoName, Reference),
    PutManifest(RepoName, Reference),
    DeleteManifest(RepoName, Reference),
    GetBlob(RepoName, Digest),
    HeadBlob(RepoName, Digest),
    DeleteBlob(RepoName, Digest),
    StartUpload(RepoName, UploadStart),
    UploadStatus(RepoName, UploadId),
    AppendUpload(RepoName, UploadId),
    CompleteUpload(RepoName, UploadId),
    CancelUpload(RepoName, UploadId),
    ListReferrers(RepoName, Digest),
}

/// The endpoints, by the shape of their path.
#[derive(Clone, Copy)]
enum Endpoint {
    Uploads,
    Upload,
    Blob,
    Manifest,
    Tags,
    Referrers,
}

/// Path endings, tried in this order; `None` matches any one segment (the value).
const ENDINGS: [(Endpoint, &[Option<&str>]); 7] = [
    (
        Endpoint::Uploads,
        &[Some("blobs"), Some("uploads"), Some("")],
    ),
    (Endpoint::Uploads, &[Some("blobs"), Some("uploads")]),
    (Endpoint::Upload, &[Some("blobs"), Some("uploads"), None]),
    (Endpoint::Blob, &[Some("blobs"), None]),
    (Endpoint::Manifest, &[Some("manifests"), None]),
    (Endpoint::Tags, &[Some("tags"), Some("list")]),
    (Endpoint::Referrers, &[Some("referrers"), None]),
];

/// Parses a request when it is addressed to the registry API: `None` when its path,
/// decoded, is neither `/v2` nor under `/v2/` (another service's), else the action or
/// why there is none. `path` is the request target's path as sent (still
/// percent-encoded), `query` its query string (without `?`). The path is decoded
/// once, here, for both questions.
pub fn registry_request(method: &str, path: &str, query: &str) -> Option<Result<Action, OciError>> {
    let is_registry = |p: &str| p == "/v2" || p.starts_with("/v2/");
    let bytes = percent_decode_str(path);
    match bytes.clone().decode_utf8() {
        Ok(decoded) => {
            is_registry(&decoded).then(|| Action::from_decoded(method, &decoded, path, query))
        }
        // Not UTF-8 once decoded: no endpoint, but still the registry's to refuse.
        Err(_) => is_registry(&bytes.decode_utf8_lossy())
            .then(|| Err(OciError::EndpointUnknown(path.to_owned()))),
    }
}

impl Action {
    /// Parses a registry request (see [`registry_request`]); a path outside `/v2` is
    /// no endpoint.
    pub fn parse(method: &str, path: &str, query: &str) -> Result<Action, OciError> {
        registry_request(method, path, query)
            .unwrap_or_else(|| Err(OciError::EndpointUnknown(path.to_owned())))
    }

    /// The action of a registry request whose path `decoded` is `raw` decoded.
    fn from_decoded(
        method: &str,
        decoded: &str,
        raw: &str,
        query: &str,
    ) -> Result<Action, OciError> {
        let unknown = || OciError::EndpointUnknown(raw.to_owned());
        let rest = match decoded.strip_prefix("/v2") {
            Some("" | "/") => return allow(method, &["GET", "HEAD"], || Ok(Action::Base)),
            Some("/_catalog") => return allow(method, &["GET"], || Ok(Action::Catalog)),
            Some(rest) => rest.strip_prefix('/').ok_or_else(unknown)?,
            None => return Err(unknown()),
        };
        let segments: Vec<&str> = rest.split('/').collect();
        let (endpoint, name, value) = ENDINGS
            .iter()
            .find_map(|(endpoint, ending)| {
                let split = segments
                    .len()
                    .checked_sub(ending.len())
                    .filter(|&s| s > 0)?;
                let tail = &segments[split..];
                let fits = ending
                    .iter()
                    .zip(tail)
                    .all(|(e, s)| e.is_none_or(|e| e == *s));
                let value = ending.iter().zip(tail).find(|(e, _)| e.is_none());
                fits.then(|| (*endpoint, &segments[..split], value.map(|(_, v)| *v)))
            })
            .ok_or_else(unknown)?;
        let name = RepoName::parse(&name.join("/"))?;
        let value = value.unwrap_or_default();
        match endpoint {
            Endpoint::Uploads => allow(method, &["POST"], || {
                Ok(Action::StartUpload(name, upload_start(query)?))
            }),
            Endpoint::Upload => {
                let id = UploadId::parse(value)?;
                match method {
                    "GET" | "HEAD" => Ok(Action::UploadStatus(name, id)),
                    "PATCH" => Ok(Action::AppendUpload(name, id)),
                    "PUT" => Ok(Action::CompleteUpload(name, id)),
                    "DELETE" => Ok(Action::CancelUpload(name, id)),
                    _ => Err(not_allowed(method)),
                }
            }
            Endpoint::Blob => {
                let digest: Digest = value.parse()?;
                match method {
                    "GET" => Ok(Action::GetBlob(name, digest)),
                    "HEAD" => Ok(Action::HeadBlob(name, digest)),
                    "DELETE" => Ok(Action::DeleteBlob(name, digest)),
                    _ => Err(not_allowed(method)),
                }
            }
            Endpoint::Manifest => {
                let reference = Reference::parse(value)?;
                match method {
                    "GET" => Ok(Action::GetManifest(name, reference)),
                    "HEAD" => Ok(Action::HeadManifest(name, reference)),
                    "PUT" => Ok(Action::PutManifest(name, reference)),
                    "DELETE" => Ok(Action::DeleteManifest(name, reference)),
                    _ => Err(not_allowed(method)),
                }
            }
            Endpoint::Tags => allow(method, &["GET"], || Ok(Action::ListTags(name))),
            Endpoint::Referrers => allow(method, &["GET"], || {
                Ok(Action::ListReferrers(name, value.parse()?))
            }),
        }
    }

    /// The same action on `prefix/<name>` for every repository it names: a mirror
    /// listener's requests (`library/nginx`) are its proxy's (`hub/library/nginx`).
    /// The catalog is no endpoint there (it would list the whole registry).
    pub fn under_prefix(self, prefix: &str) -> Result<Action, OciError> {
        use Action::*;
        let at = |name: RepoName| RepoName::parse(&format!("{prefix}/{}", name.as_str()));
        Ok(match self {
            Base => Base,
            Catalog => return Err(OciError::EndpointUnknown("/v2/_catalog".into())),
            ListTags(n) => ListTags(at(n)?),
            GetManifest(n, r) => GetManifest(at(n)?, r),
            HeadManifest(n, r) => HeadManifest(at(n)?, r),
            PutManifest(n, r) => PutManifest(at(n)?, r),
            DeleteManifest(n, r) => DeleteManifest(at(n)?, r),
            GetBlob(n, d) => GetBlob(at(n)?, d),
            HeadBlob(n, d) => HeadBlob(at(n)?, d),
            DeleteBlob(n, d) => DeleteBlob(at(n)?, d),
            StartUpload(n, UploadStart::Mount { digest, from }) => StartUpload(
                at(n)?,
                UploadStart::Mount {
                    digest,
                    from: at(from)?,
                },
            ),
            StartUpload(n, start) => StartUpload(at(n)?, start),
            UploadStatus(n, id) => UploadStatus(at(n)?, id),
            AppendUpload(n, id) => AppendUpload(at(n)?, id),
            CompleteUpload(n, id) => CompleteUpload(at(n)?, id),
            CancelUpload(n, id) => CancelUpload(at(n)?, id),
            ListReferrers(n, d) => ListReferrers(at(n)?, d),
        })
    }

    /// The repository the action works in, if any.
    pub fn repository(&self) -> Option<&RepoName> {
        use Action::*;
        match self {
            Base | Catalog => None,
            ListTags(n) | StartUpload(n, _) | ListReferrers(n, _) => Some(n),
            GetManifest(n, _) | HeadManifest(n, _) | PutManifest(n, _) | DeleteManifest(n, _) => {
                Some(n)
            }
            GetBlob(n, _) | HeadBlob(n, _) | DeleteBlob(n, _) => Some(n),
            UploadStatus(n, _) | AppendUpload(n, _) | CompleteUpload(n, _) | CancelUpload(n, _) => {
                Some(n)
            }
        }
    }

    /// Everything the caller must be allowed for this action: the repository's need
    /// first, then (for a mount) pulling from the source repository.
    pub fn requires(&self) -> Vec<Resource<'_>> {
        use Action::*;
        let need = match self {
            Base => return Vec::new(),
            Catalog => return vec![Resource::Catalog],
            StartUpload(name, UploadStart::Mount { from, .. }) => {
                return vec![
                    Resource::Repository(name, Need::Push),
                    Resource::Repository(from, Need::Pull),
                ]
            }
            ListTags(_) | GetManifest(..) | HeadManifest(..) | GetBlob(..) | HeadBlob(..) => {
                Need::Pull
            }
            // Reading an upload's state needs no more than the token its client holds
            // (as in Distribution).
            UploadStatus(..) | ListReferrers(..) => Need::Pull,
            PutManifest(..) | StartUpload(..) | AppendUpload(..) | CompleteUpload(..) => Need::Push,
            CancelUpload(..) => Need::Push,
            DeleteManifest(..) | DeleteBlob(..) => Need::Delete,
        };
        let name = self.repository().expect("repository actions have a name");
        vec![Resource::Repository(name, need)]
    }

    /// The route pattern, for metrics and logs (never a repository name). The
    /// patterns are those berthd's metrics have always carried (actix-web's syntax).
    pub fn route(&self) -> &'static str {
        use Action::*;
        match self {
            Base => "/v2/",
            Catalog => "/v2/_catalog",
            ListTags(_) => "/v2/{name:.+}/tags/list",
            GetManifest(..) | HeadManifest(..) | PutManifest(..) | DeleteManifest(..) => {
                "/v2/{name:.+}/manifests/{reference}"
            }
            GetBlob(..) | HeadBlob(..) | DeleteBlob(..) => "/v2/{name:.+}/blobs/{digest}",
            StartUpload(..) => "/v2/{name:.+}/blobs/uploads/",
            UploadStatus(..) | AppendUpload(..) | CompleteUpload(..) | CancelUpload(..) => {
                "/v2/{name:.+}/blobs/uploads/{id}"
            }
            ListReferrers(..) => "/v2/{name:.+}/referrers/{digest}",
        }
    }
}

fn not_allowed(method: &str) -> OciError {
    // Bounded: the method is echoed in an error message only, never kept.
    OciError::MethodNotAllowed {
        method: method.chars().take(16).collect(),
    }
}

fn allow(
    method: &str,
    allowed: &[&str],
    action: impl FnOnce() -> Result<Action, OciError>,
) -> Result<Action, OciError> {
    if allowed.contains(&method) {
        action()
    } else {
        Err(not_allowed(method))
    }
}

/// The query of an upload start. A mount needs both `mount` and `from`; with `mount`
/// alone other repositories are never searched (that would reveal blobs the client may
/// not see) and a plain session starts, as the spec allows.
fn upload_start(query: &str) -> Result<UploadStart, OciError> {
    let first = |key: &str| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let algorithm = match first("digest-algorithm") {
        Some(a) => Algorithm::parse(&a)?,
        None => Algorithm::Sha256,
    };
    if let Some(digest) = first("mount") {
        let digest: Digest = digest.parse()?;
        return Ok(match first("from") {
            Some(from) => UploadStart::Mount {
                digest,
                from: RepoName::parse(&from)?,
            },
            None => UploadStart::Session(algorithm),
        });
    }
    Ok(match first("digest") {
        Some(digest) => UploadStart::Monolithic(digest.parse()?),
        None => UploadStart::Session(algorithm),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> RepoName {
        RepoName::parse(s).unwrap()
    }

    fn parse(method: &str, path: &str) -> Result<Action, OciError> {
        Action::parse(method, path, "")
    }

    #[test]
    fn a_mirror_prefixes_every_name_an_action_carries() {
        let digest: Digest = DIGEST.parse().unwrap();
        let tag = Reference::Tag("1.27".into());
        let under = |a: Action| a.under_prefix("hub");
        assert_eq!(
            under(Action::GetManifest(name("library/nginx"), tag.clone())).unwrap(),
            Action::GetManifest(name("hub/library/nginx"), tag)
        );
        let mount = Action::StartUpload(
            name("a"),
            UploadStart::Mount {
                digest: digest.clone(),
                from: name("b"),
            },
        );
        assert_eq!(
            under(mount).unwrap(),
            Action::StartUpload(
                name("hub/a"),
                UploadStart::Mount {
                    digest,
                    from: name("hub/b"),
                }
            )
        );
        assert_eq!(under(Action::Base).unwrap(), Action::Base);
        assert!(under(Action::Catalog).is_err());
        // The prefixed name must still fit the name grammar's length.
        let long = name(&"a".repeat(253));
        assert!(under(Action::ListTags(long)).is_err());
    }

    #[test]
    fn every_endpoint_parses_to_its_action() {
        let digest: Digest = DIGEST.parse().unwrap();
        let tag = Reference::Tag("latest".into());
        let id = UploadId::parse("abc.123").unwrap();
        let session = UploadStart::Session(Algorithm::Sha256);
        let cases = [
            ("GET", "/v2/", Action::Base),
            ("GET", "/v2", Action::Base),
            ("GET", "/v2/_catalog", Action::Catalog),
            ("GET", "/v2/a/b/tags/list", Action::ListTags(name("a/b"))),
            (
                "GET",
                "/v2/a/manifests/latest",
                Action::GetManifest(name("a"), tag.clone()),
            ),
            (
                "HEAD",
                "/v2/a/manifests/latest",
                Action::HeadManifest(name("a"), tag.clone()),
            ),
            (
                "PUT",
                "/v2/a/manifests/latest",
                Action::PutManifest(name("a"), tag.clone()),
            ),
            (
                "DELETE",
                "/v2/a/manifests/latest",
                Action::DeleteManifest(name("a"), tag),
            ),
            (
                "GET",
                &format!("/v2/a/blobs/{DIGEST}"),
                Action::GetBlob(name("a"), digest.clone()),
            ),
            (
                "DELETE",
                &format!("/v2/a/blobs/{DIGEST}"),
                Action::DeleteBlob(name("a"), digest.clone()),
            ),
            (
                "POST",
                "/v2/a/blobs/uploads/",
                Action::StartUpload(name("a"), session.clone()),
            ),
            (
                "POST",
                "/v2/a/blobs/uploads",
                Action::StartUpload(name("a"), session),
            ),
            (
                "GET",
                "/v2/a/blobs/uploads/abc.123",
                Action::UploadStatus(name("a"), id.clone()),
            ),
            (
                "HEAD",
                "/v2/a/blobs/uploads/abc.123",
                Action::UploadStatus(name("a"), id.clone()),
            ),
            (
                "PATCH",
                "/v2/a/blobs/uploads/abc.123",
                Action::AppendUpload(name("a"), id.clone()),
            ),
            (
                "PUT",
                "/v2/a/blobs/uploads/abc.123",
                Action::CompleteUpload(name("a"), id.clone()),
            ),
            (
                "DELETE",
                "/v2/a/blobs/uploads/abc.123",
                Action::CancelUpload(name("a"), id),
            ),
            (
                "GET",
                &format!("/v2/a/referrers/{DIGEST}"),
                Action::ListReferrers(name("a"), digest),
            ),
            // Marker words inside a name: the ending decides, the rest is the name.
            (
                "GET",
                "/v2/a/manifests/b/manifests/t",
                Action::GetManifest(name("a/manifests/b"), Reference::Tag("t".into())),
            ),
            (
                "GET",
                "/v2/blobs/tags/list",
                Action::ListTags(name("blobs")),
            ),
        ];
        for (method, path, expected) in cases {
            assert_eq!(parse(method, path), Ok(expected), "{method} {path}");
        }
    }

    #[test]
    fn encoded_spellings_mean_the_same_action_or_are_refused() {
        let private = Action::GetManifest(name("alice/secret"), Reference::Tag("latest".into()));
        for path in [
            "/v2/alice/secret/%6Danifests/latest",
            "/v2/alice/secret/%6danifests/latest",
            "/v2/%61lice/secret/manifests/latest",
            "/v2/alice%2Fsecret/manifests/latest",
            "/%762/alice/secret/manifests/latest",
            "%2Fv2/alice/secret/manifests/latest",
        ] {
            assert_eq!(parse("GET", path), Ok(private.clone()), "{path}");
        }
        assert_eq!(parse("GET", "/v2/%5Fcatalog"), Ok(Action::Catalog));
        // Other services' paths are not the registry's; a registry path that is not
        // UTF-8 once decoded is, and is refused.
        for other in ["/", "/v2x", "/v", "/r/alice/app", "/%76%33/"] {
            assert_eq!(registry_request("GET", other, ""), None, "{other}");
        }
        assert!(matches!(
            registry_request("GET", "/v2/%ff", ""),
            Some(Err(OciError::EndpointUnknown(_)))
        ));
        for path in [
            "/v2/%2561lice/secret/manifests/latest", // double encoding stays encoded
            "/v2/alice/../bob/manifests/latest",
            "/v2/alice/./secret/manifests/latest",
            "/v2/alice//secret/manifests/latest",
            "/v2/alice/secret;x=1/manifests/latest",
            "/v2/Alice/secret/manifests/latest",
            "/v2/alice/secret/manifests/latest/",
            "/v2/alice/secret/manifests/",
            "/v2//manifests/latest",
            "/v2/%ff/manifests/latest",
            "/v2/alice/secret/manifests/%2e%2e",
            "/v2x/alice/manifests/latest",
            "/v2/_catalog/",
        ] {
            assert!(parse("GET", path).is_err(), "{path} must be refused");
        }
    }

    #[test]
    fn methods_are_checked_per_endpoint() {
        assert!(matches!(
            parse("POST", "/v2/a/manifests/latest"),
            Err(OciError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            parse("FROB", "/v2/"),
            Err(OciError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            parse("DELETE", "/v2/a/tags/list"),
            Err(OciError::MethodNotAllowed { .. })
        ));
    }

    #[test]
    fn requirements_follow_the_action() {
        let a = parse("PUT", "/v2/a/b/manifests/t").unwrap();
        assert_eq!(
            a.requires(),
            [Resource::Repository(&name("a/b"), Need::Push)]
        );
        let status = parse("GET", "/v2/a/blobs/uploads/x").unwrap();
        assert_eq!(
            status.requires(),
            [Resource::Repository(&name("a"), Need::Pull)]
        );
        let del = parse("DELETE", &format!("/v2/a/blobs/{DIGEST}")).unwrap();
        assert_eq!(
            del.requires(),
            [Resource::Repository(&name("a"), Need::Delete)]
        );
        assert_eq!(parse("GET", "/v2/").unwrap().requires(), []);
        assert_eq!(
            parse("GET", "/v2/_catalog").unwrap().requires(),
            [Resource::Catalog]
        );
        let mount = Action::parse(
            "POST",
            "/v2/bob/app/blobs/uploads/",
            &format!("mount={DIGEST}&from=alice%2Fsecret"),
        )
        .unwrap();
        assert_eq!(
            mount.requires(),
            [
                Resource::Repository(&name("bob/app"), Need::Push),
                Resource::Repository(&name("alice/secret"), Need::Pull),
            ]
        );
    }

    #[test]
    fn upload_starts_read_their_query_once() {
        let start = |q: &str| match Action::parse("POST", "/v2/a/blobs/uploads/", q) {
            Ok(Action::StartUpload(_, start)) => Ok(start),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        let digest: Digest = DIGEST.parse().unwrap();
        assert_eq!(start(""), Ok(UploadStart::Session(Algorithm::Sha256)));
        assert_eq!(
            start("digest-algorithm=sha512"),
            Ok(UploadStart::Session(Algorithm::Sha512))
        );
        assert_eq!(
            start(&format!("digest={DIGEST}")),
            Ok(UploadStart::Monolithic(digest.clone()))
        );
        // A mount without a source searches nothing: a plain session.
        assert_eq!(
            start(&format!("mount={DIGEST}")),
            Ok(UploadStart::Session(Algorithm::Sha256))
        );
        assert_eq!(
            start(&format!("mount={DIGEST}&from=x/y")),
            Ok(UploadStart::Mount {
                digest,
                from: name("x/y")
            })
        );
        assert!(matches!(
            start(&format!("mount={DIGEST}&from=%2561lice/x")),
            Err(OciError::NameInvalid(_))
        ));
        assert!(matches!(
            start("mount=nope"),
            Err(OciError::DigestInvalid(_))
        ));
    }

    /// The path of a request for `action`, spelled canonically.
    fn canonical(action: &Action) -> (&'static str, String) {
        use Action::*;
        match action {
            Base => ("GET", "/v2/".into()),
            Catalog => ("GET", "/v2/_catalog".into()),
            ListTags(n) => ("GET", format!("/v2/{n}/tags/list")),
            GetManifest(n, r) => ("GET", format!("/v2/{n}/manifests/{r}")),
            HeadManifest(n, r) => ("HEAD", format!("/v2/{n}/manifests/{r}")),
            PutManifest(n, r) => ("PUT", format!("/v2/{n}/manifests/{r}")),
            DeleteManifest(n, r) => ("DELETE", format!("/v2/{n}/manifests/{r}")),
            GetBlob(n, d) => ("GET", format!("/v2/{n}/blobs/{d}")),
            HeadBlob(n, d) => ("HEAD", format!("/v2/{n}/blobs/{d}")),
            DeleteBlob(n, d) => ("DELETE", format!("/v2/{n}/blobs/{d}")),
            StartUpload(n, _) => ("POST", format!("/v2/{n}/blobs/uploads/")),
            UploadStatus(n, i) => ("GET", format!("/v2/{n}/blobs/uploads/{}", i.as_str())),
            AppendUpload(n, i) => ("PATCH", format!("/v2/{n}/blobs/uploads/{}", i.as_str())),
            CompleteUpload(n, i) => ("PUT", format!("/v2/{n}/blobs/uploads/{}", i.as_str())),
            CancelUpload(n, i) => ("DELETE", format!("/v2/{n}/blobs/uploads/{}", i.as_str())),
            ListReferrers(n, d) => ("GET", format!("/v2/{n}/referrers/{d}")),
        }
    }

    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9]{1,6}",
            Just("manifests".to_owned()),
            Just("blobs".to_owned()),
            Just("uploads".to_owned()),
            Just("tags".to_owned()),
        ]
    }

    fn endpoint() -> impl Strategy<Value = (&'static str, String)> {
        prop_oneof![
            Just(("GET", "manifests/latest".to_owned())),
            Just(("PUT", format!("manifests/{DIGEST}"))),
            Just(("DELETE", "manifests/v1.0".to_owned())),
            Just(("GET", format!("blobs/{DIGEST}"))),
            Just(("DELETE", format!("blobs/{DIGEST}"))),
            Just(("POST", "blobs/uploads/".to_owned())),
            Just(("PATCH", "blobs/uploads/abc-1.x".to_owned())),
            Just(("GET", "tags/list".to_owned())),
            Just(("GET", format!("referrers/{DIGEST}"))),
        ]
    }

    /// Each byte of `path` literal or percent-encoded (either hex case), at random.
    fn spelled(path: &str, choices: &[u8]) -> String {
        path.bytes()
            .zip(choices.iter().cycle())
            .map(|(b, c)| match c % 3 {
                0 => (b as char).to_string(),
                1 => format!("%{b:02X}"),
                _ => format!("%{b:02x}"),
            })
            .collect()
    }

    proptest! {
        /// However a request for an action is spelled, it parses to that action.
        #[test]
        fn any_spelling_of_a_request_is_the_same_action(
            components in prop::collection::vec(component(), 1..4),
            (method, ending) in endpoint(),
            choices in prop::collection::vec(any::<u8>(), 1..64),
        ) {
            let path = format!("/v2/{}/{ending}", components.join("/"));
            let canonical = parse(method, &path);
            prop_assert!(canonical.is_ok(), "{path}: {canonical:?}");
            let spelled = spelled(&path, &choices);
            prop_assert_eq!(parse(method, &spelled), canonical, "{}", spelled);
        }

        /// Whatever arrives, an accepted request is exactly the action its canonical
        /// spelling names, and its repository name holds to the grammar.
        #[test]
        fn accepted_requests_are_canonical_actions(
            tail in "[a-z0-9%/._;:A-F-]{0,60}",
            method in prop::sample::select(vec!["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE"]),
        ) {
            let path = format!("/v2/{tail}");
            if let Ok(action) = parse(method, &path) {
                if let Some(name) = action.repository() {
                    prop_assert!(RepoName::parse(name).is_ok());
                }
                let (canonical_method, canonical_path) = canonical(&action);
                if !matches!(action, Action::Base | Action::UploadStatus(..) | Action::StartUpload(..)) {
                    prop_assert_eq!(canonical_method, method);
                }
                let again = parse(method, &canonical_path);
                prop_assert_eq!(again, Ok(action));
            }
        }
    }
}
