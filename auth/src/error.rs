//! The auth crate's one error type.

use crate::namespaces::Kind;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("invalid username {0:?}: 4 to 30 lowercase letters and digits, not a reserved name")]
    UsernameInvalid(String),
    #[error("user {0} already exists")]
    UserExists(String),
    /// The name belongs to another kind of namespace (users and organizations share one).
    #[error("the name {name} is already taken by {by}")]
    NameTaken { name: String, by: Kind },
    /// The name belonged to a removed user: it is not handed to anyone else unless an
    /// administrator reclaims it.
    #[error(
        "the name {0} belonged to a removed account and stays reserved; an administrator can \
         give it to a new account with `berthd user add {0} --reclaim`"
    )]
    NameReserved(String),
    #[error("no such user: {0}")]
    UserUnknown(String),
    /// Repositories are stored under the name, though no account holds it: only an
    /// administrator gives it out (`berthd user add` / `org add`).
    #[error("the name {0} is not available")]
    NameInUse(String),
    /// A user belongs to as many organizations as one may.
    #[error("{0} belongs to {max} organizations, the most one may", max = crate::orgs::MAX_MEMBERSHIPS)]
    TooManyMemberships(String),
    #[error("{user} is not a member of {org}")]
    NotAMember { org: String, user: String },
    /// An organization always keeps an admin (who may manage it and delete in it).
    #[error("{0} would have no admin left: make another member admin first")]
    LastAdmin(String),
    #[error("a password needs at least 8 characters")]
    PasswordTooShort,
    #[error("incorrect username or password")]
    BadCredentials,
    #[error("too many failed logins; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Too many password hashes are being computed or waited for (each takes ~19 MiB).
    #[error("too many password checks in progress; retry in {retry_after_secs} s")]
    Overloaded { retry_after_secs: u64 },
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
