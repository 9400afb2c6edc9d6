//! Personal access tokens: long random secrets a user gives to machines (CI, `docker
//! login`) instead of the password. Shown once, stored as a SHA-256 hash (the secret has
//! 256 random bits, so a slow hash adds nothing), scoped, optionally expiring, revocable.

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::Func;
use sea_orm::{ActiveValue::Set, Condition, QueryOrder, QuerySelect};

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
/// The login tokens a user keeps at most. Each `docker login` with the password makes
/// one, so CI that signs in for every job would otherwise pile up rows without end.
/// Beyond it the least recently used go; generous, so that a long job's login, taken
/// at its start and not used since, is not displaced by the jobs that signed in after.
pub const MAX_LOGIN_TOKENS: u64 = 1_000;
/// Displaced login tokens deleted per sign-in at most: a user who piled up more before
/// the cap existed loses the rest at the next ones.
const PRUNE_PAGE: u64 = 10_000;

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
        let created = insert(
            self,
            user_name,
            LOGIN_TOKEN_NAME,
            TokenScope::ReadWriteDelete,
            Some(LOGIN_TOKEN_DAYS),
            TokenKind::Login,
        )
        .await?;
        // Housekeeping, not part of the sign-in: a failure leaves a few tokens too many
        // until the next sign-in prunes them.
        if let Err(e) = prune_login_tokens(self, user_name).await {
            tracing::warn!(error = %e, user = user_name, "cannot prune the user's login tokens");
        }
        Ok(created)
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

/// Deletes `user_name`'s expired login tokens, and the least recently used beyond
/// [`MAX_LOGIN_TOKENS`] (audited as revoked: they still worked); at most
/// [`PRUNE_PAGE`] of each.
async fn prune_login_tokens(accounts: &Accounts, user_name: &str) -> Result<(), AuthError> {
    let txn = crate::namespaces::write_transaction(&accounts.db).await?;
    // One pruning per user at a time: on PostgreSQL two sign-ins would pick the same
    // tokens (SQLite's write lock already serialises them).
    if !users::lock(&txn, user_name).await? {
        return Ok(());
    }
    let now = now();
    let logins = || {
        token::Entity::find()
            .select_only()
            .column(token::Column::Id)
            .filter(token::Column::UserName.eq(user_name))
            .filter(token::Column::Kind.eq(TokenKind::Login.name()))
    };
    let expired: Vec<i64> = logins()
        .filter(token::Column::ExpiresAt.lte(now))
        .limit(PRUNE_PAGE)
        .into_tuple()
        .all(&txn)
        .await?;
    // A token never used counts from its creation.
    let last_use = Func::coalesce([
        Expr::col(token::Column::LastUsedAt),
        Expr::col(token::Column::CreatedAt),
    ]);
    let displaced: Vec<i64> = logins()
        .filter(
            Condition::any()
                .add(token::Column::ExpiresAt.is_null())
                .add(token::Column::ExpiresAt.gt(now)),
        )
        .order_by_desc(last_use)
        .order_by_desc(token::Column::Id)
        .offset(MAX_LOGIN_TOKENS)
        .limit(PRUNE_PAGE)
        .into_tuple()
        .all(&txn)
        .await?;
    delete_ids(&txn, &expired).await?;
    let deleted = delete_ids(&txn, &displaced).await?;
    if let (true, Some(lowest), Some(highest)) =
        (deleted > 0, displaced.iter().min(), displaced.iter().max())
    {
        let detail = format!(
            "{deleted} least recently used login tokens displaced (lowest id {lowest}, \
             highest {highest}): a user keeps {MAX_LOGIN_TOKENS} docker logins"
        );
        accounts
            .audited(&txn, Action::TokenRevoked, user_name, detail)
            .await?;
    }
    txn.commit().await?;
    Ok(())
}

/// Deletes the tokens `ids` (in statements of a bounded size); how many there were.
async fn delete_ids(txn: &impl ConnectionTrait, ids: &[i64]) -> Result<u64, AuthError> {
    let mut deleted = 0;
    for chunk in ids.chunks(1_000) {
        deleted += token::Entity::delete_many()
            .filter(token::Column::Id.is_in(chunk.iter().copied()))
            .exec(txn)
            .await?
            .rows_affected;
    }
    Ok(deleted)
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

    /// CI that runs `docker login` for every job: a user keeps the most recently used
    /// logins, expired ones go, and a displaced one stops working and is audited.
    #[tokio::test]
    async fn login_tokens_are_capped_least_recently_used_first() {
        use sea_orm::sea_query::{ExprTrait, Query};
        let (_dir, accounts) = crate::accounts::testing::accounts().await;
        accounts
            .add_user("alice", "alice-password".into(), false)
            .await
            .unwrap();
        let (personal, _) = accounts
            .create_token("alice", "ci", TokenScope::Read, None)
            .await
            .unwrap();
        let (now, day) = (now(), 86_400_000);
        let secret = |i: i64| format!("{PREFIX}old{i}");
        let row = |i: i64, last_used: Option<i64>, expires: i64| token::ActiveModel {
            user_name: Set("alice".into()),
            name: Set(LOGIN_TOKEN_NAME.into()),
            secret_hash: Set(hash(&secret(i))),
            scope: Set("read-write-delete".into()),
            expires_at: Set(Some(expires)),
            last_used_at: Set(last_used),
            created_at: Set(now - 10 * day),
            kind: Set("login".into()),
            ..Default::default()
        };
        // A full set, token 0 the least recently used; and three expired, never used.
        let max = MAX_LOGIN_TOKENS as i64;
        let rows: Vec<_> = (0..max)
            .map(|i| row(i, Some(now - day + i), now + day))
            .chain((max..max + 3).map(|i| row(i, None, now - 1)))
            .collect();
        for chunk in rows.chunks(500) {
            token::Entity::insert_many(chunk.to_vec())
                .exec(&accounts.db)
                .await
                .unwrap();
        }
        let (new, new_secret) = accounts.create_login_token("alice").await.unwrap();

        let tokens = accounts.tokens("alice").await.unwrap();
        let logins: Vec<&TokenInfo> = tokens.iter().filter(|t| t.kind == "login").collect();
        assert_eq!(logins.len() as u64, MAX_LOGIN_TOKENS);
        assert!(logins.iter().all(|t| t.expires_at > Some(now)));
        assert!(logins.iter().any(|t| t.id == new));
        assert!(tokens
            .iter()
            .any(|t| t.id == personal && t.kind == "personal"));
        let db = &accounts.db;
        let login = |s: String| async move { authenticate(db, Some("alice"), &s).await };
        assert!(matches!(
            login(secret(0)).await,
            Err(AuthError::BadCredentials)
        ));
        // Token 1 is now the least recently used but for this use.
        login(secret(1)).await.unwrap();
        login(new_secret).await.unwrap();
        // Only the displaced one is audited (the expired ones no longer worked).
        let revoked = accounts
            .db
            .query_all(
                Query::select()
                    .column("detail")
                    .from("audit_log")
                    .and_where(Expr::col("action").eq("token_revoked")),
            )
            .await
            .unwrap();
        let details: Vec<String> = revoked
            .iter()
            .map(|r| r.try_get("", "detail").unwrap())
            .collect();
        assert_eq!(details.len(), 1, "{details:?}");
        let first_id = logins.iter().map(|t| t.id).min().unwrap() - 1;
        assert_eq!(
            details[0],
            format!(
                "1 least recently used login tokens displaced (lowest id {first_id}, highest \
                 {first_id}): a user keeps {MAX_LOGIN_TOKENS} docker logins"
            )
        );

        // The next login displaces the least recently used again (token 2, as token 1
        // was used since), never the one just made.
        let (newer, _) = accounts.create_login_token("alice").await.unwrap();
        assert!(matches!(
            login(secret(2)).await,
            Err(AuthError::BadCredentials)
        ));
        login(secret(1)).await.unwrap();
        let ids: Vec<i64> = accounts
            .tokens("alice")
            .await
            .unwrap()
            .iter()
            .filter(|t| t.kind == "login")
            .map(|t| t.id)
            .collect();
        assert_eq!(ids.len() as u64, MAX_LOGIN_TOKENS);
        assert!(ids.contains(&new) && ids.contains(&newer));
    }
}
