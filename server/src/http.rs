//! Request helpers shared by the handlers: query and header parsing, ranges.

use std::ops::Range;

use actix_web::http::header::{self, ByteRangeSpec};
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

/// Entries in one page of a listing at most (tags, the catalog), asked for or not: a
/// repository may have a million tags, and one answer must stay bounded. A longer
/// listing is paged, with a `Link` to the next page, as the spec lets a registry do.
pub const MAX_PAGE: u64 = 10_000;

/// `n` and `last` of a paginated listing.
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

    /// The page size: `n`, at most [`MAX_PAGE`] (also without `n`).
    pub fn limit(&self) -> u64 {
        self.n.unwrap_or(MAX_PAGE).min(MAX_PAGE)
    }

    /// A 200 response with `body`, and a `Link` to the next page when there is one.
    pub fn respond(&self, path: &str, page: &Page, body: serde_json::Value) -> HttpResponse {
        let mut res = HttpResponse::Ok();
        if let (true, Some(last)) = (page.more, page.items.last()) {
            // Names and tags are URL-safe by their grammar: no escaping needed. The
            // page size only as the client asked (a proxied list passes it upstream).
            let link = match self.n {
                Some(_) => format!("<{path}?n={}&last={last}>; rel=\"next\"", self.limit()),
                None => format!("<{path}?last={last}>; rel=\"next\""),
            };
            res.insert_header(("Link", link));
        }
        res.json(body)
    }
}

/// The byte range a blob `GET` asks for with `Range`, resolved against the blob's
/// `size`, parsed by actix-web ([`header::Range`]). `Ok(None)`: serve everything, for
/// no header, a malformed one, another unit, or several ranges (any comma: berthd
/// answers one range, never `multipart/byteranges`; RFC 9110 §14.2 lets a server
/// ignore `Range`). `Err`: 416 with `Content-Range: bytes */<size>`, for a range
/// that starts at or past the end, an empty suffix (`-0`), any range of an empty
/// blob, and a range whose last position is before its first.
pub fn byte_range(value: Option<&str>, size: u64) -> ApiResult<Option<Range<u64>>> {
    let Some(value) = value else {
        return Ok(None);
    };
    if value.contains(',') {
        return Ok(None);
    }
    let unsatisfiable = || {
        ApiError::new(
            StatusCode::RANGE_NOT_SATISFIABLE,
            "BLOB_UNKNOWN",
            format!("range {value} is outside the blob's {size} bytes"),
        )
        .with_header("Content-Range", format!("bytes */{size}"))
    };
    let spec = match value.trim().parse::<header::Range>() {
        Ok(header::Range::Bytes(specs)) => match <[ByteRangeSpec; 1]>::try_from(specs) {
            Ok([spec]) => spec,
            Err(_) => return Ok(None),
        },
        Ok(header::Range::Unregistered(..)) => return Ok(None),
        // actix-web drops a range whose last position is before its first like any
        // malformed one; RFC 9110 §14.1.1 calls it invalid, and berthd refuses it.
        Err(_) if reversed(value) => return Err(unsatisfiable()),
        Err(_) => return Ok(None),
    };
    // Inclusive positions, `last < size`: `last + 1` cannot overflow.
    match spec.to_satisfiable_range(size) {
        Some((first, last)) => Ok(Some(first..last + 1)),
        None => Err(unsatisfiable()),
    }
}

/// `bytes=<first>-<last>` with `last < first`.
fn reversed(value: &str) -> bool {
    let Some((first, last)) = value
        .trim()
        .strip_prefix("bytes=")
        .and_then(|spec| spec.split_once('-'))
    else {
        return false;
    };
    matches!(
        (first.trim().parse::<u64>(), last.trim().parse::<u64>()),
        (Ok(first), Ok(last)) if last < first
    )
}

/// A chunk's `Content-Range: <start>-<end>` (the spec's form; `bytes=` / `bytes `
/// prefixes and a `/total` suffix are tolerated): its start and the number of bytes
/// it covers. `None` when malformed, reversed, or covering more bytes than a u64
/// counts (`0-18446744073709551615`).
pub fn content_range(value: &str) -> Option<(u64, u64)> {
    let spec = value.trim();
    let spec = spec
        .strip_prefix("bytes=")
        .or_else(|| spec.strip_prefix("bytes "))
        .unwrap_or(spec);
    let spec = spec.split('/').next().unwrap_or(spec);
    let (a, b) = spec.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end: u64 = b.trim().parse().ok()?;
    let covered = end.checked_sub(start)?.checked_add(1)?;
    Some((start, covered))
}

/// The start offset of a chunk from its `Content-Range` ([`content_range`]), checked
/// against `Content-Length` when both are present.
pub fn chunk_start(req: &HttpRequest) -> ApiResult<Option<u64>> {
    let Some(value) = header(req, "Content-Range") else {
        return Ok(None);
    };
    let (start, covered) = content_range(value).ok_or_else(|| {
        ApiError::bad_request(
            "BLOB_UPLOAD_INVALID",
            format!("Content-Range must be <start>-<end>, got {value:?}"),
        )
    })?;
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

    /// A listing is paged at `MAX_PAGE` whatever is asked, with a link to go on.
    #[test]
    fn every_page_is_bounded() {
        let asked = |n: Option<u64>| Pagination { n, last: None };
        assert_eq!(asked(None).limit(), MAX_PAGE);
        assert_eq!(asked(Some(5)).limit(), 5);
        assert_eq!(asked(Some(u64::MAX)).limit(), MAX_PAGE);
        let page = Page {
            items: vec!["a".into(), "b".into()],
            more: true,
        };
        let res = asked(None).respond("/v2/x/tags/list", &page, serde_json::json!({}));
        assert_eq!(
            res.headers().get("link").unwrap(),
            "</v2/x/tags/list?last=b>; rel=\"next\""
        );
        let res = asked(Some(u64::MAX)).respond("/v2/x/tags/list", &page, serde_json::json!({}));
        assert_eq!(
            res.headers().get("link").unwrap(),
            format!("</v2/x/tags/list?n={MAX_PAGE}&last=b>; rel=\"next\"").as_str()
        );
        let last = Page {
            items: vec!["c".into()],
            more: false,
        };
        let res = asked(Some(1)).respond("/v2/x/tags/list", &last, serde_json::json!({}));
        assert!(res.headers().get("link").is_none());
    }

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

    /// Hostile `Range` values: never a panic or an overflow; a range outside the blob
    /// is a 416 naming the size, anything unparsable serves the whole blob.
    #[test]
    fn hostile_ranges() {
        let max = u64::MAX;
        let range = |value: &str, size| byte_range(Some(value), size);
        let refused = |value: &str, size| {
            let e = range(value, size).unwrap_err();
            assert_eq!(e.status, StatusCode::RANGE_NOT_SATISFIABLE, "{value}");
            assert_eq!(e.headers, [("Content-Range", format!("bytes */{size}"))]);
        };
        // Positions at the edge of u64.
        refused(&format!("bytes={max}-{max}"), max);
        refused(&format!("bytes={max}-{max}"), 10);
        refused(&format!("bytes={max}-"), 10);
        assert_eq!(range(&format!("bytes=-{max}"), 10).unwrap(), Some(0..10));
        assert_eq!(
            range(&format!("bytes={}-{max}", max - 1), max).unwrap(),
            Some(max - 1..max)
        );
        assert_eq!(range(&format!("bytes=0-{max}"), max).unwrap(), Some(0..max));
        // Past u64: not a number, so not a range.
        assert_eq!(range("bytes=0-18446744073709551616", 10).unwrap(), None);
        assert_eq!(range("bytes=18446744073709551616-", 10).unwrap(), None);
        assert_eq!(range(&format!("bytes=-{}0", max), 10).unwrap(), None);
        // An empty blob has no satisfiable range.
        for value in ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-0"] {
            refused(value, 0);
        }
        // Several ranges are answered whole, even when only one of them parses.
        for value in [
            "bytes=0-1,3-4",
            "bytes=0-1,",
            "bytes=0-1,zz",
            "bytes=,0-1",
            "bytes=5-0,1-2",
        ] {
            assert_eq!(range(value, 10).unwrap(), None, "{value}");
        }
        // Malformed or foreign: ignored.
        for value in [
            "",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=--1",
            "bytes=1-2-3",
            "bytes=1--2",
            "bytes==0-1",
            "bytes=0-1=",
            "Bytes=0-1",
            "bytes =0-1",
            "items=0-1",
            "=0-1",
            "bytes=0x1-2",
            "bytes=-1-",
            "bytes=\u{0}-1",
            "bytes=1.5-2",
        ] {
            assert_eq!(range(value, 10).unwrap(), None, "{value:?}");
        }
        // A sign is a number's (as u64 parsing reads it).
        assert_eq!(range("bytes=+2-+3", 10).unwrap(), Some(2..4));
        // Whitespace around the header and the range, as actix-web trims it.
        assert_eq!(range(" bytes= 2-3 ", 10).unwrap(), Some(2..4));
        // Reversed, even with huge values: refused.
        refused(&format!("bytes={max}-0"), 10);
        refused("bytes= 9 - 3", 10);
    }

    #[test]
    fn content_ranges_parse_or_are_refused() {
        assert_eq!(content_range("0-0"), Some((0, 1)));
        assert_eq!(content_range("bytes=5-9"), Some((5, 5)));
        assert_eq!(content_range("bytes 5-9/100"), Some((5, 5)));
        assert_eq!(content_range(" 5 - 9 /*"), Some((5, 5)));
        let max = u64::MAX;
        assert_eq!(content_range(&format!("{max}-{max}")), Some((max, 1)));
        assert_eq!(content_range(&format!("1-{max}")), Some((1, max)));
        for bad in [
            "",
            "-",
            "5",
            "5-",
            "-5",
            "9-5",
            "a-b",
            "bytes=",
            "0-18446744073709551616",
            &format!("0-{max}"),
            "0x1-2",
            "1-2-3",
            "bytes */100",
        ] {
            assert_eq!(content_range(bad), None, "{bad:?}");
        }
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
