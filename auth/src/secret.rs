//! Random secrets (tokens, sessions) and how they are stored: SHA-256 hex of the
//! secret. Each secret has 256 random bits, so a slow hash would add nothing.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;

use crate::error::AuthError;

/// 32 random bytes, base64url without padding.
pub fn random() -> Result<String, AuthError> {
    let mut random = [0u8; 32];
    SystemRandom::new()
        .fill(&mut random)
        .map_err(|_| AuthError::Key("no randomness for a secret".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random))
}

/// What is stored in place of `secret`.
pub fn hash(secret: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two secrets in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}
