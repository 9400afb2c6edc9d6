//! Request helpers shared by the handlers: query and header parsing, ranges.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use berth_storage::repos::Page;

use crate::error::{ApiError, ApiResult};

/// The body of a HEAD response: announces `len` bytes, sends none.
pub fn head_body(
    len: u64,
) -> actix_web::body::SizedStream<futures::stream::Empty<Result<bytes::Bytes, std::io::Error>>> {
    actix_web::body::SizedStream::new(len, futures::stream::empty())
}

/// All values of query parameter `key`, in order (`?tag=a&tag=b`).
pub fn query_all(req: &HttpRequest, key: &str) -> Vec<String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// The first value of query parameter `key`.
pub fn query_one(req: &HttpRequest, key: &str) -> Option<String> {
    query_all(req, key).into_iter().next()
}

pub fn header<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// `n` and `last` of a paginated listing. Without `n`, everything is listed.
pub struct Pagination {
    pub n: Option<u64>,
    pub last: Option<String>,
}

impl Pagination {
    pub fn from_request(req: &HttpRequest) -> ApiResult<Pagination> {
        let n = match query_one(req, "n") {
            None => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(
                    "UNSUPPORTED",
                    format!("n must be a non-negative integer, got {v:?}"),
                )
            })?),
        };
        Ok(Pagination {
            n,
            last: query_one(req, "last").filter(|l| !l.is_empty()),
        })
    }

    /// The page size to ask storage for; "everything" is capped far above any real
    /// listing so the database's `LIMIT n + 1` stays in range.
    pub fn limit(&self) -> u64 {
        self.n
            .unwrap_or(u64::from(u32::MAX))
            .min(u64::from(u32::MAX))
    }

    /// A 200 response with `body`, and a `Link` to the next page when there is one.
    pub fn respond(&self, path: &str, page: &Page, body: serde_json::Value) -> HttpResponse {
        let mut res = HttpResponse::Ok();
        if let (true, Some(n), Some(last)) = (page.more, self.n, page.items.last()) {
            // Names and tags are URL-safe by their grammar: no escaping needed.
            res.insert_header(("Link", format!("<{path}?n={n}&last={last}>; rel=\"next\"")));
        }
        res.json(body)
    }
}

/// A single byte range of a `Range: bytes=…` header, resolved against `size`.
/// `Ok(None)`: no usable range, serve everything (RFC 9110 lets a server ignore
/// a malformed or multi-range header). `Err`: unsatisfiable, answer 416.
pub fn byte_range(header: Option<&str>, size: u64) -> ApiResult<Option<std::ops::Range<u64>>> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (first, last) = (first.trim(), last.trim());
    let unsatisfiable = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UNKNOWN",
            format!("range {spec} is outside the blob's {size} bytes"),
        )
        .with_header("Content-Range", format!("bytes */{size}"))
    };
    let range = match (first.parse::<u64>(), last.parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => a..b.saturating_add(1).min(size),
        // An invalid range (RFC 9110 §14.1.1: last before first) is refused.
        (Ok(_), Ok(_)) => return Err(unsatisfiable()),
        (Ok(a), Err(_)) if last.is_empty() => a..size,
        (Err(_), Ok(n)) if first.is_empty() => size.saturating_sub(n)..size,
        _ => return Ok(None),
    };
    if range.start >= size || range.is_empty() {
        return Err(unsatisfiable());
    }
    Ok(Some(range))
}

/// The start offset of a chunk from `Content-Range: <start>-<end>` (the spec's form;
/// `bytes=` / `bytes ` prefixes and a `/total` suffix are tolerated), checked
/// against `Content-Length` when both are present.
pub fn chunk_start(req: &HttpRequest) -> ApiResult<Option<u64>> {
    let Some(value) = header(req, "Content-Range") else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::bad_request(
            "BLOB_UPLOAD_INVALID",
            format!("Content-Range must be <start>-<end>, got {value:?}"),
        )
    };
    let spec = value.trim();
    let spec = spec
        .strip_prefix("bytes=")
        .or_else(|| spec.strip_prefix("bytes "))
        .unwrap_or(spec);
    let spec = spec.split('/').next().unwrap_or(spec);
    let (a, b) = spec.split_once('-').ok_or_else(invalid)?;
    let start: u64 = a.trim().parse().map_err(|_| invalid())?;
    let end: u64 = b.trim().parse().map_err(|_| invalid())?;
    if end < start {
        return Err(invalid());
    }
    // `0-18446744073709551615` covers one byte more than a u64 counts.
    let covered = (end - start).checked_add(1).ok_or_else(invalid)?;
    if let Some(len) = header(req, "Content-Length").and_then(|l| l.parse::<u64>().ok()) {
        if len != covered {
            return Err(ApiError::bad_request(
                "SIZE_INVALID",
                format!("Content-Range {value} covers {covered} bytes but Content-Length is {len}"),
            ));
        }
    }
    Ok(Some(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_or_are_refused() {
        assert_eq!(byte_range(None, 10).unwrap(), None);
        assert_eq!(byte_range(Some("bytes=0-3"), 10).unwrap(), Some(0..4));
        assert_eq!(byte_range(Some("bytes=5-"), 10).unwrap(), Some(5..10));
        assert_eq!(byte_range(Some("bytes=-3"), 10).unwrap(), Some(7..10));
        assert_eq!(byte_range(Some("bytes=8-100"), 10).unwrap(), Some(8..10));
        assert_eq!(byte_range(Some("bytes=0-1,3-4"), 10).unwrap(), None);
        assert_eq!(byte_range(Some("items=0-1"), 10).unwrap(), None);
        assert_eq!(byte_range(Some("bytes=x-y"), 10).unwrap(), None);
        let e = byte_range(Some("bytes=10-"), 10).unwrap_err();
        assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE);
        assert!(byte_range(Some("bytes=-0"), 10).is_err());
        let reversed = byte_range(Some("bytes=5-0"), 10).unwrap_err();
        assert_eq!(reversed.status, StatusCode::RANGE_NOT_SATISFIABLE);
        let last = u64::MAX;
        assert_eq!(
            byte_range(Some(&format!("bytes=0-{last}")), 10).unwrap(),
            Some(0..10)
        );
    }

    #[test]
    fn chunk_ranges_never_overflow() {
        let start = |range: &str| {
            let req = actix_web::test::TestRequest::default()
                .insert_header(("Content-Range", range))
                .insert_header(("Content-Length", "1"))
                .to_http_request();
            chunk_start(&req).map_err(|e| e.code)
        };
        assert_eq!(start("5-5"), Ok(Some(5)));
        assert_eq!(
            start(&format!("0-{}", u64::MAX)),
            Err("BLOB_UPLOAD_INVALID")
        );
        assert_eq!(start("0-1"), Err("SIZE_INVALID"));
        assert_eq!(start("3-1"), Err("BLOB_UPLOAD_INVALID"));
    }
}
