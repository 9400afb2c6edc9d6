//! The auth crate's one error type.

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid username {0:?}: 4 to 30 lowercase letters and digits, not a reserved name")]
    UsernameInvalid(String),
    #[error("user {0} already exists")]
    UserExists(String),
    #[error("no such user: {0}")]
    UserUnknown(String),
    #[error("a password needs at least 8 characters")]
    PasswordTooShort,
    #[error("incorrect username or password")]
    BadCredentials,
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("invalid token: {0}")]
    TokenInvalid(String),
    #[error("invalid scope {0:?}")]
    ScopeInvalid(String),
    #[error("signing key: {0}")]
    Key(String),
    #[error("password hashing failed: {0}")]
    Hashing(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
}
