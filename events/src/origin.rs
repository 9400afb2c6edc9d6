//! What a request's events say about it: its id, the client's address, the host it
//! addressed, its method and user agent, who made it, and which instance answered;
//! for the registry routes and the web UI alike.

use actix_web::{HttpMessage, HttpRequest};
use berth_storage::events::{Origin, RequestInfo, Source};

/// The request's id (set by the server's request middleware), for events.
#[derive(Clone)]
pub struct RequestId(pub String);

/// This instance, as events name it, and the registry's public address.
#[derive(Debug, Clone, Default)]
pub struct EventSource {
    pub source: Source,
    /// `[auth] external_url`: where clients reach the registry; else the request's
    /// own scheme and `Host` (see [`base_url`]).
    pub external_url: Option<String>,
}

impl EventSource {
    /// `addr` is the listen address; the instance id is new for each start.
    pub fn new(addr: String, external_url: Option<String>) -> EventSource {
        EventSource {
            source: Source {
                addr,
                instance_id: uuid::Uuid::new_v4().to_string(),
            },
            external_url,
        }
    }
}

/// The origin of `req`, made by `actor`.
pub fn origin(events: &EventSource, req: &HttpRequest, actor: Option<String>) -> Origin {
    let base_url = base_url(events.external_url.as_deref(), req);
    Origin {
        request: RequestInfo {
            id: req
                .extensions()
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            addr: req.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            host: request_host(req).unwrap_or_default().to_owned(),
            method: req.method().to_string(),
            useragent: req
                .headers()
                .get(actix_web::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        },
        actor,
        source: events.source.clone(),
        base_url,
    }
}

/// `[auth] external_url` when set; else the scheme and the `Host` the request
/// addressed (never `X-Forwarded-Host`, which any client may send), checked to be a
/// plain authority.
pub fn base_url(configured: Option<&str>, req: &HttpRequest) -> String {
    if let Some(url) = configured {
        return url.trim_end_matches('/').to_owned();
    }
    let host = request_host(req).unwrap_or("localhost");
    let scheme = match req.connection_info().scheme() {
        "https" => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

/// The request's `Host`, if it is a plain `host[:port]`.
pub fn request_host(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| is_authority(h))
}

/// `host[:port]` (names, IPv4, bracketed IPv6): nothing that could end a quoted
/// header parameter or a URL's authority.
fn is_authority(host: &str) -> bool {
    (1..=255).contains(&host.len())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_authorities_make_a_base_url() {
        for ok in [
            "registry.example:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "a\"b",
            "a\",realm=\"http://x",
            "a b",
            "a/b",
            "a@b",
            &"a".repeat(256),
        ] {
            assert!(!is_authority(bad), "{bad}");
        }
    }
}
