//! Berth's accounts and access control: users with argon2id passwords, personal access
//! tokens, organizations, web sessions, Docker token authentication (signed JWTs), and
//! the decision of who may do what to which repository. The server and the web UI call
//! it through [`Accounts`], which owns its database connection; it knows nothing of
//! HTTP.

pub mod access;
mod accounts;
mod cache;
pub mod error;
pub mod keys;
mod limiter;
mod login;
mod migration;
pub mod namespaces;
mod once_a_minute;
pub mod orgs;
mod password;
pub mod pat;
pub mod scope;
pub mod secret;
pub mod sessions;
pub mod token;
pub mod users;
mod verified_tokens;

pub use accounts::Accounts;
pub use error::AuthError;
pub use keys::SigningKeys;
pub use orgs::Role;
pub use pat::{TokenInfo, TokenScope, VerifiedToken};
pub use scope::{Access, Scope};
pub use sessions::Session;
pub use token::{Claims, TokenService};
pub use users::User;
