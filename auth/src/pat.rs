//! Personal access tokens: long random secrets a user gives to machines (CI, `docker
//! login`) instead of the password. Shown once, stored as a SHA-256 hash (the secret has
//! 256 random bits, so a slow hash adds nothing), scoped, optionally expiring, revocable.

use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, QueryOrder};

use berth_storage::audit::Action;

use crate::accounts::Accounts;
use crate::error::AuthError;
use crate::secret::{self, hash};
use crate::users::{self, User};

/// Every token starts with this, so a leaked one is easy to recognise and scan for.
pub const PREFIX: &str = "berth_pat_";

mod token {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "personal_access_tokens")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_name: String,
        pub name: String,
        /// SHA-256 of the secret, hex.
        pub secret_hash: String,
        /// `read`, `read-write` or `read-write-delete`.
        pub scope: String,
        pub expires_at: Option<i64>,
        pub last_used_at: Option<i64>,
        pub created_at: i64,
        /// `personal` (made by the user) or `login` (`docker login`'s refresh token).
        pub kind: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// What a token may do, at most (the user's own rights still apply).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokenScope {
    Read,
    ReadWrite,
    ReadWriteDelete,
}

impl TokenScope {
    pub fn parse(s: &str) -> Result<TokenScope, AuthError> {
        match s {
            "read" => Ok(TokenScope::Read),
            "read-write" => Ok(TokenScope::ReadWrite),
            "read-write-delete" => Ok(TokenScope::ReadWriteDelete),
            other => Err(AuthError::ScopeInvalid(format!(
                "{other} (expected read, read-write or read-write-delete)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::ReadWrite => "read-write",
            TokenScope::ReadWriteDelete => "read-write-delete",
        }
    }

    /// May a token of this scope be used for `action` on a repository?
    pub fn permits(self, action: &str) -> bool {
        match action {
            "pull" => true,
            "push" => self != TokenScope::Read,
            _ => self == TokenScope::ReadWriteDelete,
        }
    }
}

/// A token that checked out: whose it is, what it allows, and which one it is.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    pub user: User,
    pub scope: TokenScope,
    pub id: i64,
}

/// Where a token came from, which decides what ends it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TokenKind {
    /// Made by the user (`berthd token create`, the settings page). A password change
    /// keeps it; revocation or the user's removal ends it.
    Personal,
    /// The refresh ("identity") token `docker login` keeps in place of the password.
    /// A password change ends it, as it ends web sessions.
    Login,
}

impl TokenKind {
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::Personal => "personal",
            TokenKind::Login => "login",
        }
    }
}

/// The name a login token is listed under.
pub const LOGIN_TOKEN_NAME: &str = "docker login";
/// How long a login token lasts.
pub const LOGIN_TOKEN_DAYS: u32 = 90;

#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub scope: String,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub created_at: i64,
    /// `personal` or `login` ([`TokenKind`]).
    pub kind: String,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Accounts {
    /// Creates a personal token for `user_name`; returns its id and the secret (shown
    /// only now).
    pub async fn create_token(
        &self,
        user_name: &str,
        name: &str,
        scope: TokenScope,
        expires_in_days: Option<u32>,
    ) -> Result<(i64, String), AuthError> {
        insert(
            self,
            user_name,
            name,
            scope,
            expires_in_days,
            TokenKind::Personal,
        )
        .await
    }

    /// Creates the refresh token a `docker login` keeps (all of the user's rights,
    /// [`LOGIN_TOKEN_DAYS`] days, ended by a password change); returns its id and
    /// secret.
    pub async fn create_login_token(&self, user_name: &str) -> Result<(i64, String), AuthError> {
        insert(
            self,
            user_name,
            LOGIN_TOKEN_NAME,
            TokenScope::ReadWriteDelete,
            Some(LOGIN_TOKEN_DAYS),
            TokenKind::Login,
        )
        .await
    }

    /// `user_name`'s tokens (personal and login), oldest first.
    pub async fn tokens(&self, user_name: &str) -> Result<Vec<TokenInfo>, AuthError> {
        Ok(token::Entity::find()
            .filter(token::Column::UserName.eq(user_name))
            .order_by_asc(token::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|t| TokenInfo {
                id: t.id,
                name: t.name,
                scope: t.scope,
                expires_at: t.expires_at,
                last_used_at: t.last_used_at,
                created_at: t.created_at,
                kind: t.kind,
            })
            .collect())
    }

    /// Revokes `user_name`'s token `id` ([`AuthError::TokenInvalid`] if they have none
    /// such).
    pub async fn revoke_token(&self, user_name: &str, id: i64) -> Result<(), AuthError> {
        let txn = crate::namespaces::write_transaction(&self.db).await?;
        let found = token::Entity::find()
            .filter(token::Column::UserName.eq(user_name))
            .filter(token::Column::Id.eq(id))
            .one(&txn)
            .await?;
        let deleted = token::Entity::delete_many()
            .filter(token::Column::UserName.eq(user_name))
            .filter(token::Column::Id.eq(id))
            .exec(&txn)
            .await?;
        let Some(found) = found.filter(|_| deleted.rows_affected > 0) else {
            return Err(AuthError::TokenInvalid(format!(
                "{user_name} has no token {id}"
            )));
        };
        // Its id and name, never its secret (only its hash is kept anyway).
        let detail = format!("token {id} {:?} ({})", found.name, found.kind);
        self.audited(&txn, Action::TokenRevoked, user_name, detail)
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

async fn insert(
    accounts: &Accounts,
    user_name: &str,
    name: &str,
    scope: TokenScope,
    expires_in_days: Option<u32>,
    kind: TokenKind,
) -> Result<(i64, String), AuthError> {
    let txn = crate::namespaces::write_transaction(&accounts.db).await?;
    if users::get(&txn, user_name).await?.is_none() {
        return Err(AuthError::UserUnknown(user_name.to_owned()));
    }
    let secret = format!("{PREFIX}{}", secret::random()?);
    let inserted = token::Entity::insert(token::ActiveModel {
        user_name: Set(user_name.to_owned()),
        name: Set(name.to_owned()),
        secret_hash: Set(hash(&secret)),
        scope: Set(scope.name().to_owned()),
        expires_at: Set(expires_in_days.map(|d| now() + i64::from(d) * 86_400_000)),
        last_used_at: Set(None),
        created_at: Set(now()),
        kind: Set(kind.name().to_owned()),
        ..Default::default()
    })
    .exec(&txn)
    .await?;
    let id = inserted.last_insert_id;
    // A login token is what a `docker login` with the password leaves: the sign-in is
    // the event. Never the secret: its id, name and scope.
    let (action, detail) = match kind {
        TokenKind::Personal => (
            Action::TokenCreated,
            format!(
                "token {id} {name:?} ({}, {})",
                scope.name(),
                match expires_in_days {
                    Some(days) => format!("expires in {days} days"),
                    None => "never expires".into(),
                }
            ),
        ),
        TokenKind::Login => (Action::SignIn, format!("docker login (login token {id})")),
    };
    accounts.audited(&txn, action, user_name, detail).await?;
    txn.commit().await?;
    Ok((id, secret))
}

/// Ends `user_name`'s login (refresh) tokens, inside a password change's transaction.
pub(crate) async fn revoke_logins<C: ConnectionTrait>(
    db: &C,
    user_name: &str,
) -> Result<(), AuthError> {
    token::Entity::delete_many()
        .filter(token::Column::UserName.eq(user_name))
        .filter(token::Column::Kind.eq(TokenKind::Login.name()))
        .exec(db)
        .await?;
    Ok(())
}

/// Removes every token of `user_name`, inside a user removal's transaction.
pub(crate) async fn remove_all<C: ConnectionTrait>(
    db: &C,
    user_name: &str,
) -> Result<(), AuthError> {
    token::Entity::delete_many()
        .filter(token::Column::UserName.eq(user_name))
        .exec(db)
        .await?;
    Ok(())
}

/// The user and scope of a valid (known, unexpired) token given as `user_name`'s
/// password, or (`user_name` None) as an OAuth2 refresh token.
pub(crate) async fn authenticate(
    db: &DatabaseConnection,
    user_name: Option<&str>,
    secret: &str,
) -> Result<VerifiedToken, AuthError> {
    // Looked up by hash: the database compares digests, never the secret itself.
    let mut q = token::Entity::find().filter(token::Column::SecretHash.eq(hash(secret)));
    if let Some(name) = user_name {
        q = q.filter(token::Column::UserName.eq(name));
    }
    let found = q.one(db).await?.ok_or(AuthError::BadCredentials)?;
    let user_name = found.user_name.as_str();
    if found.expires_at.is_some_and(|e| e <= now()) {
        return Err(AuthError::BadCredentials);
    }
    let user = users::get(db, user_name)
        .await?
        .ok_or(AuthError::BadCredentials)?;
    token::Entity::update_many()
        .col_expr(token::Column::LastUsedAt, Expr::value(now()))
        .filter(token::Column::Id.eq(found.id))
        .exec(db)
        .await?;
    Ok(VerifiedToken {
        user,
        scope: TokenScope::parse(&found.scope)?,
        id: found.id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_limit_actions() {
        assert!(TokenScope::Read.permits("pull"));
        assert!(!TokenScope::Read.permits("push"));
        assert!(TokenScope::ReadWrite.permits("push"));
        assert!(!TokenScope::ReadWrite.permits("delete"));
        assert!(TokenScope::ReadWriteDelete.permits("delete"));
        assert!(TokenScope::parse("admin").is_err());
    }
}
