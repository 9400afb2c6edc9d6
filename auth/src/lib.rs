//! Berth's accounts and access control: users with argon2id passwords, Docker token
//! authentication (signed JWTs), and the decision of who may do what to which
//! repository. The server calls it; it knows nothing of HTTP.

pub mod access;
pub mod cache;
pub mod error;
pub mod keys;
pub mod limiter;
pub mod login;
mod migration;
pub mod namespaces;
pub mod orgs;
pub mod password;
pub mod pat;
pub mod scope;
pub mod secret;
pub mod sessions;
pub mod token;
pub mod users;

use std::path::Path;

use sea_orm::{DatabaseConnection, DatabaseTransaction, DbErr};
use sea_orm_migration::MigratorTrait;

pub use error::AuthError;
pub use login::Logins;
pub use scope::{Access, Scope};
pub use token::{Claims, TokenService};
pub use users::User;

/// Creates or updates the auth tables (their own migration history, beside
/// storage's), inside the caller's migration transaction.
pub async fn migrate(txn: &DatabaseTransaction) -> Result<(), DbErr> {
    migration::Migrator::up(txn, None).await
}

/// The token signing key: the configured file, or the one kept in the database.
pub async fn load_keys(
    configured: Option<&Path>,
    db: &DatabaseConnection,
) -> Result<keys::SigningKeys, AuthError> {
    match configured {
        Some(path) => {
            let pkcs8 = std::fs::read(path)
                .map_err(|e| AuthError::Key(format!("cannot read {}: {e}", path.display())))?;
            keys::SigningKeys::from_pkcs8(&pkcs8)
        }
        None => keys::SigningKeys::load_or_create(db).await,
    }
}
