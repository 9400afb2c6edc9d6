//! Password hashing with argon2id, off the async executor (it is deliberately slow).

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::error::AuthError;

pub const MIN_PASSWORD_LEN: usize = 8;

pub async fn hash(password: String) -> Result<String, AuthError> {
    if password.chars().count() < MIN_PASSWORD_LEN {
        return Err(AuthError::PasswordTooShort);
    }
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| AuthError::Hashing(e.to_string()))
    })
    .await
    .map_err(|e| AuthError::Hashing(e.to_string()))?
}

/// Checks `password` against a stored hash; with no hash (unknown user) it still does
/// the same work against a fixed dummy, so timing does not reveal which users exist.
pub async fn verify(password: String, stored: Option<String>) -> bool {
    let known = stored.is_some();
    let hash = stored.unwrap_or_else(|| DUMMY_HASH.to_owned());
    tokio::task::spawn_blocking(move || {
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok();
        ok && known
    })
    .await
    .unwrap_or(false)
}

/// argon2id (default parameters) of a random password nobody knows.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$1iN1dTwoeu+ZkYqCHJ0emJ3L2QkRPzpHvRnoHfTUD3k";

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_never_contain_the_password() {
        let h = hash("correct horse".into()).await.unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("correct horse"));
        assert!(verify("correct horse".into(), Some(h.clone())).await);
        assert!(!verify("wrong horse!".into(), Some(h)).await);
        assert!(!verify("anything at all".into(), None).await);
        assert!(matches!(
            hash("short".into()).await,
            Err(AuthError::PasswordTooShort)
        ));
    }
}
