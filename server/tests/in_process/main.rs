//! In-process tests of berthd: every `/v2` route through actix-web's test service
//! (status codes, headers, error bodies), on real storage (SQLite and blobs in a
//! temporary directory), and the download connection over a loopback socket. No
//! process starts: the process-level tests (real clients, real sockets) are in
//! `tests/e2e`.

mod auth;
mod blobs;
mod downloads;
mod manifests;
mod uploads;

use std::sync::Arc;

use actix_http::Request;
use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::header::HeaderMap;
use actix_web::http::{Method, StatusCode};

use actix_web::test::{self, TestRequest};
use actix_web::web;
use berth_auth::{Access, Accounts, SigningKeys, TokenService};
use berth_config::{Config, MinFree};
use berth_oci::media_types::{OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST};
use berth_oci::{Algorithm, Digest};
use berth_server::authz::{Auth, AuthState};
use berth_server::AppState;
use bytes::Bytes;
use serde_json::{json, Value};

/// The manifest size limit of the test registries (small, to test it cheaply).
pub const MAX_MANIFEST: u64 = 64 * 1024;

/// A registry app in this process, with its data in a temporary directory.
pub struct Registry<S> {
    pub app: S,
    /// Issues tokens the registry accepts (auth on only).
    pub tokens: Option<TokenService>,
    _dir: tempfile::TempDir,
}

/// A registry in this process: `berth_server::registry_app`, the app `serve` runs
/// (minus the web UI and the socket). With `auth`, token authentication is
/// on (signed with a fresh key; [`Registry::token`] issues tokens for it).
pub async fn registry(
    auth: bool,
) -> Registry<
    impl Service<Request, Response = ServiceResponse<impl MessageBody>, Error = actix_web::Error>,
> {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::in_dir(dir.path());
    config.min_free = MinFree::Bytes(0);
    config.limits.max_manifest_bytes = MAX_MANIFEST;
    config.auth.enabled = Some(auth);
    let storage = berth_server::open_storage(&config).await.unwrap();
    let (gate, tokens) = if auth {
        let pkcs8 = SigningKeys::generate().unwrap();
        let service = || {
            let keys = SigningKeys::from_pkcs8(&pkcs8).unwrap();
            TokenService::new(keys, "berth".into(), config.auth.service.clone(), 300)
        };
        let state = AuthState {
            accounts: Accounts::open(&config).await.unwrap(),
            tokens: service(),
            external_url: None,
            signup: false,
        };
        (Auth::on(Arc::new(state)), Some(service()))
    } else {
        (Auth::default(), None)
    };
    let state = web::Data::new(AppState {
        storage,
        auth: Arc::new(gate),
        proxies: Arc::default(),
        events: Default::default(),
    });
    let app = test::init_service(berth_server::registry_app(state)).await;
    Registry {
        app,
        tokens,
        _dir: dir,
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// What the body announced: `Sized(n)` becomes `Content-Length: n` on the wire.
    pub size: BodySize,
    pub body: Bytes,
}

impl Reply {
    /// The value of header `name`; panics when it is missing.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
            .to_str()
            .unwrap()
    }

    pub fn has(&self, name: &str) -> bool {
        self.headers.contains_key(name)
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// The spec's error body, checked for shape (`{"errors": [{code, message,
    /// detail}]}` as JSON): its code.
    pub fn error_code(&self) -> String {
        assert_eq!(self.header("content-type"), "application/json");
        let body = self.json();
        let errors = body["errors"].as_array().expect("an errors array");
        assert_eq!(errors.len(), 1, "{body}");
        let error = errors[0].as_object().unwrap();
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(error["detail"].is_null());
        assert_eq!(error.len(), 3, "{body}");
        error["code"].as_str().unwrap().to_owned()
    }

    /// Asserts the status and the error code of a spec error.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{self:?}");
        assert_eq!(self.error_code(), code, "{self:?}");
    }
}

pub fn request(method: &str, uri: &str) -> TestRequest {
    TestRequest::with_uri(uri).method(Method::from_bytes(method.as_bytes()).unwrap())
}

pub fn sha256(data: &[u8]) -> Digest {
    Digest::of(Algorithm::Sha256, data)
}

impl<S, B> Registry<S>
where
    S: Service<Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    pub async fn send(&self, req: TestRequest) -> Reply {
        let res = test::call_service(&self.app, req.to_request()).await;
        let status = res.status();
        let headers = res.headers().clone();
        let size = res.response().body().size();
        let body = test::read_body(res).await;
        // Every answer says which API it speaks, errors included.
        let version = headers.get("docker-distribution-api-version");
        assert_eq!(version.map(|v| v.as_bytes()), Some(&b"registry/2.0"[..]));
        Reply {
            status,
            headers,
            size,
            body,
        }
    }

    pub async fn call(&self, method: &str, uri: &str) -> Reply {
        self.send(request(method, uri)).await
    }

    /// Pushes `data` to `repo` with a monolithic POST.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let digest = sha256(data);
        let uri = format!("/v2/{repo}/blobs/uploads/?digest={digest}");
        let r = self
            .send(request("POST", &uri).set_payload(data.to_vec()))
            .await;
        assert_eq!(r.status, 201, "{r:?}");
        digest
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Reply {
        let uri = format!("/v2/{repo}/manifests/{reference}");
        let req = request("PUT", &uri)
            .insert_header(("Content-Type", media_type))
            .set_payload(body.to_vec());
        self.send(req).await
    }

    /// Pushes an image (its config and one layer) tagged `tag`: its manifest and digest.
    pub async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> (Vec<u8>, Digest) {
        let config = self.push_blob(repo, b"{}").await;
        let layer_digest = self.push_blob(repo, layer).await;
        let manifest = image_manifest(&config, &[(&layer_digest, layer.len())], None);
        let r = self.put_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
        assert_eq!(r.status, 201, "{r:?}");
        let digest = sha256(&manifest);
        (manifest, digest)
    }

    /// A token for `subject` granting `access` (type, name, actions), signed with the
    /// registry's key.
    pub fn token(&self, subject: &str, access: &[(&str, &str, &[&str])]) -> String {
        let access = access
            .iter()
            .map(|(kind, name, actions)| Access {
                kind: (*kind).into(),
                name: (*name).into(),
                actions: actions.iter().map(|a| (*a).into()).collect(),
            })
            .collect();
        let tokens = self.tokens.as_ref().expect("auth is on");
        tokens.issue(subject, access).unwrap().token
    }
}

/// An OCI image manifest with a 2-byte `{}` config, `layers` (digest, size) and an
/// optional subject (digest, size, artifact type).
pub fn image_manifest(
    config: &Digest,
    layers: &[(&Digest, usize)],
    subject: Option<(&Digest, usize, &str)>,
) -> Vec<u8> {
    let layers: Vec<Value> = layers
        .iter()
        .map(|(d, size)| json!({"mediaType": OCI_LAYER_GZIP, "digest": d.as_str(), "size": size}))
        .collect();
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.as_str(), "size": 2},
        "layers": layers,
    });
    if let Some((digest, size, artifact_type)) = subject {
        m["artifactType"] = json!(artifact_type);
        m["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": digest.as_str(), "size": size});
        m["annotations"] = json!({"org.example.kind": artifact_type});
    }
    serde_json::to_vec(&m).unwrap()
}
