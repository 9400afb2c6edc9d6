//! Webhook signatures: `X-Berth-Signature-256: sha256=<hex HMAC-SHA256 of the body>`
//! with the webhook's secret as the key (GitHub's scheme, which receivers know how to
//! check).

use aws_lc_rs::hmac;

pub const SIGNATURE_HEADER: &str = "X-Berth-Signature-256";

/// The header's value for `body` signed with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("sha256={}", hex::encode(hmac::sign(&key, body).as_ref()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_a_known_hmac() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
