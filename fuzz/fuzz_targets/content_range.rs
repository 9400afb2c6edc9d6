//! The server's range headers on arbitrary values: a chunk's `Content-Range`
//! (`berth_server::http::content_range`, the spec's grammar for PATCH and PUT) and a
//! blob `GET`'s `Range` resolved against a blob size (`byte_range`, over actix-web's
//! parser). Neither panics or overflows; a chunk covers at least one byte and ends
//! within u64; a served range is non-empty and inside the blob; a refused one is a
//! 416 naming the size.

#![no_main]

use berth_server::http::{byte_range, content_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    if let Some((start, covered)) = content_range(value) {
        assert!(covered >= 1, "{value:?}");
        assert!(start.checked_add(covered - 1).is_some(), "{value:?}");
    }
    for size in [0, 1, 2, 10, 1000, 1 << 32, u64::MAX - 1, u64::MAX] {
        match byte_range(Some(value), size) {
            Ok(Some(range)) => {
                assert!(
                    range.start < range.end && range.end <= size,
                    "{value:?} {size}"
                );
            }
            Ok(None) => {}
            Err(e) => {
                assert_eq!(e.status.as_u16(), 416, "{value:?}");
                assert_eq!(e.headers, [("Content-Range", format!("bytes */{size}"))]);
            }
        }
    }
});
