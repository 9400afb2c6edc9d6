//! Web sessions: a signed-in browser holds a random secret in a cookie; the database
//! keeps its hash, the user, the session's CSRF token and when it ends. Kept in the
//! database so that every replica knows every session.

use sea_orm::entity::prelude::*;
use sea_orm::ActiveValue::Set;

use crate::accounts::Accounts;
use crate::error::AuthError;
use crate::secret;
use crate::users::{self, User};

/// How long a sign-in lasts.
pub const LIFETIME_SECS: i64 = 7 * 24 * 3600;

mod session {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "web_sessions")]
    pub struct Model {
        /// SHA-256 of the cookie's secret, hex.
        #[sea_orm(primary_key, auto_increment = false)]
        pub secret_hash: String,
        pub user_name: String,
        pub csrf_token: String,
        pub created_at: i64,
        pub expires_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: User,
    /// Every form of the session carries it.
    pub csrf_token: String,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Accounts {
    /// Starts a session for `user`; returns the cookie's secret and the session.
    pub async fn start_session(&self, user: User) -> Result<(String, Session), AuthError> {
        let cookie = secret::random()?;
        let csrf_token = secret::random()?;
        // Sessions nobody signed out of end here, when they have expired.
        session::Entity::delete_many()
            .filter(session::Column::ExpiresAt.lte(now()))
            .exec(&self.db)
            .await?;
        session::Entity::insert(session::ActiveModel {
            secret_hash: Set(secret::hash(&cookie)),
            user_name: Set(user.name.clone()),
            csrf_token: Set(csrf_token.clone()),
            created_at: Set(now()),
            expires_at: Set(now() + LIFETIME_SECS * 1000),
        })
        .exec(&self.db)
        .await?;
        Ok((cookie, Session { user, csrf_token }))
    }

    /// The live session whose cookie holds `cookie`, if any (a removed user has none).
    pub async fn session(&self, cookie: &str) -> Result<Option<Session>, AuthError> {
        let Some(row) = session::Entity::find_by_id(secret::hash(cookie))
            .filter(session::Column::ExpiresAt.gt(now()))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(users::get(&self.db, &row.user_name)
            .await?
            .map(|user| Session {
                user,
                csrf_token: row.csrf_token,
            }))
    }

    /// Signs out the browser holding `cookie`.
    pub async fn end_session(&self, cookie: &str) -> Result<(), AuthError> {
        session::Entity::delete_many()
            .filter(session::Column::SecretHash.eq(secret::hash(cookie)))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

/// Ends every session of `user_name` (a password change or removal, in its transaction).
pub(crate) async fn end_all<C: ConnectionTrait>(db: &C, user_name: &str) -> Result<(), AuthError> {
    session::Entity::delete_many()
        .filter(session::Column::UserName.eq(user_name))
        .exec(db)
        .await?;
    Ok(())
}
