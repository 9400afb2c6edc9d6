//! One namespace for users and organizations: `alice/*` belongs to user alice,
//! `acme/*` to organization acme, and no name is both. The `namespaces` table holds
//! every name ever given out; a user or organization row is only written in the same
//! transaction that claims its name there, so two creations of one name (a sign-up
//! racing `berthd org add`, two sign-ups) cannot both succeed.
//!
//! A removed user's name stays in the table as `removed`: repositories and
//! organization roles may still mention it, so it is not handed to the next person who
//! signs up. Only an administrator gives it out again (`berthd user add NAME --reclaim`).
//! A pull-through proxy's prefix is claimed as `proxy` when berthd starts with it.

use std::fmt;

use sea_orm::sea_query::{Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DatabaseTransaction};

use crate::error::AuthError;

/// What a name is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    Organization,
    /// A removed user's name, reserved.
    Removed,
    /// A pull-through proxy's prefix: its repositories are the upstream's, nobody's.
    Proxy,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Organization => "organization",
            Kind::Removed => "removed",
            Kind::Proxy => "proxy",
        }
    }

    fn parse(s: &str) -> Kind {
        match s {
            "user" => Kind::User,
            "organization" => Kind::Organization,
            "proxy" => Kind::Proxy,
            // Anything unknown is treated as the most restrictive.
            _ => Kind::Removed,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::User => "a user",
            Kind::Organization => "an organization",
            Kind::Removed => "a removed account",
            Kind::Proxy => "a pull-through proxy",
        })
    }
}

/// What `name` is, if it was ever given out.
pub(crate) async fn kind<C: ConnectionTrait>(
    db: &C,
    name: &str,
) -> Result<Option<Kind>, AuthError> {
    let select = Query::select()
        .column("kind")
        .from("namespaces")
        .and_where(Expr::col("name").eq(name))
        .to_owned();
    Ok(match db.query_one(&select).await? {
        Some(row) => Some(Kind::parse(&row.try_get::<String>("", "kind")?)),
        None => None,
    })
}

/// The error for creating a `wanted` named `name` that is already `existing`.
pub(crate) fn taken(name: &str, wanted: Kind, existing: Kind) -> AuthError {
    match (wanted, existing) {
        (_, Kind::Removed) => AuthError::NameReserved(name.to_owned()),
        (Kind::User, Kind::User) => AuthError::UserExists(name.to_owned()),
        (_, by) => AuthError::NameTaken {
            name: name.to_owned(),
            by,
        },
    }
}

/// Fails early (before any slow work) when `name` cannot be given to a new `wanted`;
/// [`claim`] is what decides, inside the creating transaction.
pub(crate) async fn check_free<C: ConnectionTrait>(
    db: &C,
    name: &str,
    wanted: Kind,
    reclaim: bool,
) -> Result<(), AuthError> {
    match kind(db, name).await? {
        None => Ok(()),
        Some(Kind::Removed) if reclaim => Ok(()),
        Some(existing) => Err(taken(name, wanted, existing)),
    }
}

/// Claims `name` for a new `wanted` inside `txn`, which then writes its row. With
/// `reclaim`, a removed user's reserved name is taken over (an administrator's call).
/// Concurrent claims of one name: exactly one succeeds (the primary key decides; on
/// PostgreSQL the second waits for the first to commit or roll back).
pub(crate) async fn claim(
    txn: &DatabaseTransaction,
    name: &str,
    wanted: Kind,
    reclaim: bool,
) -> Result<(), AuthError> {
    if reclaim {
        let update = Query::update()
            .table("namespaces")
            .value("kind", wanted.as_str())
            .and_where(Expr::col("name").eq(name))
            .and_where(Expr::col("kind").eq(Kind::Removed.as_str()))
            .to_owned();
        if txn.execute(&update).await?.rows_affected() == 1 {
            return Ok(());
        }
    }
    let insert = Query::insert()
        .into_table("namespaces")
        .columns(["name", "kind"])
        .values_panic([name.into(), wanted.as_str().into()])
        .on_conflict(OnConflict::column("name").do_nothing().to_owned())
        .to_owned();
    if txn.execute(&insert).await?.rows_affected() == 1 {
        return Ok(());
    }
    let existing = kind(txn, name).await?.unwrap_or(Kind::Removed);
    Err(taken(name, wanted, existing))
}

impl crate::Accounts {
    /// What `name` was given out as, if it was.
    pub async fn namespace_kind(&self, name: &str) -> Result<Option<Kind>, AuthError> {
        kind(&self.db, name).await
    }

    /// Claims `name` for a pull-through proxy's prefix (kept across restarts, so no
    /// user or organization can take it later); a name that is already a proxy's is
    /// fine, any other owner is refused.
    pub async fn claim_proxy_namespace(&self, name: &str) -> Result<(), AuthError> {
        if kind(&self.db, name).await? == Some(Kind::Proxy) {
            return Ok(());
        }
        let txn = write_transaction(&self.db).await?;
        claim(&txn, name, Kind::Proxy, false).await?;
        txn.commit().await?;
        Ok(())
    }
}

/// Marks `name` as a removed user's (reserved), inside the removing transaction.
pub(crate) async fn reserve(txn: &DatabaseTransaction, name: &str) -> Result<(), AuthError> {
    let upsert = Query::insert()
        .into_table("namespaces")
        .columns(["name", "kind"])
        .values_panic([name.into(), Kind::Removed.as_str().into()])
        .on_conflict(OnConflict::column("name").update_column("kind").to_owned())
        .to_owned();
    txn.execute(&upsert).await?;
    Ok(())
}

/// A write transaction: on SQLite it takes the write lock at once (a deferred one
/// that reads first could fail with SQLITE_BUSY when another process writes).
pub(crate) async fn write_transaction(
    db: &DatabaseConnection,
) -> Result<DatabaseTransaction, AuthError> {
    // Begun whole, whoever drops the caller meanwhile (see `begin_whole`).
    Ok(berth_storage::database::begin_whole(
        db,
        sea_orm::TransactionOptions {
            sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
            ..Default::default()
        },
    )
    .await?)
}
