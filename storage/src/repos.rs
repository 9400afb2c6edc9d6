//! Repositories and the catalog.

use sea_orm::sea_query::{Expr, ExprTrait, Func};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};

use crate::audit::Action;
use crate::db::byte_order;
use crate::entity::{now_millis, repository};
use crate::error::{Result, StorageError};
use crate::names::validate_name;
use crate::Storage;

/// Whose view of the repository list a listing is.
pub enum Viewer {
    /// Admins, and registries without authentication.
    Everything,
    /// Anonymous clients.
    Public,
    /// A signed-in user: public repositories and those in these namespaces (their own
    /// and their organizations').
    PublicAndNamespaces(Vec<String>),
}

/// One page of a lexically ordered listing, and whether more follows.
#[derive(Debug, PartialEq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

/// Repository ids by name, as looked up: a repository keeps its id for good (they are
/// never removed), so this is right on every replica without invalidation.
#[derive(Default)]
pub struct RepoIds(std::sync::Mutex<std::collections::HashMap<String, i64>>);

/// More names than this and the map starts over (it only saves a lookup).
const MAX_REMEMBERED_IDS: usize = 100_000;

impl Storage {
    /// The repository's id, or `NameUnknown` if nothing was ever pushed to it.
    pub async fn repository_id(&self, name: &str) -> Result<i64> {
        self.known_repository_id(name)
            .await?
            .ok_or_else(|| StorageError::NameUnknown(name.to_owned()))
    }

    /// The repository's id if it exists; remembered once seen.
    pub(crate) async fn known_repository_id(&self, name: &str) -> Result<Option<i64>> {
        if let Some(id) = self.repo_ids.0.lock().expect("repo ids lock").get(name) {
            return Ok(Some(*id));
        }
        let found = find_repository(&self.db, name).await?;
        if let Some(id) = found {
            let mut ids = self.repo_ids.0.lock().expect("repo ids lock");
            if ids.len() >= MAX_REMEMBERED_IDS {
                ids.clear();
            }
            ids.insert(name.to_owned(), id);
        }
        Ok(found)
    }

    /// Whether `name` is private; `None` if nothing was pushed to it yet.
    pub async fn repository_private(&self, name: &str) -> Result<Option<bool>> {
        Ok(repository::Entity::find()
            .select_only()
            .column(repository::Column::Private)
            .filter(repository::Column::Name.eq(name))
            .into_tuple()
            .one(&self.db)
            .await?)
    }

    pub async fn set_private(&self, name: &str, private: bool) -> Result<()> {
        let txn = self.write().await?;
        let updated = repository::Entity::update_many()
            .col_expr(repository::Column::Private, Expr::value(private))
            .filter(repository::Column::Name.eq(name))
            .exec(&*txn)
            .await?;
        if updated.rows_affected > 0 {
            let now = if private { "private" } else { "public" };
            self.audited(&*txn, Action::VisibilityChanged, name, Some(now.into()))
                .await?;
        }
        txn.commit().await?;
        if updated.rows_affected == 0 {
            return Err(StorageError::NameUnknown(name.to_owned()));
        }
        Ok(())
    }

    /// Whether repositories are stored under `namespace/` (one pushed by an admin, or
    /// while accounts were off, under a name no account holds). Self-service sign-up
    /// and organizations must not take such a name: its owner would own them.
    pub async fn namespace_in_use(&self, namespace: &str) -> Result<bool> {
        // Namespaces are [a-z0-9]: nothing for LIKE to read as a wildcard. Any other
        // name is no namespace (the accounts refuse it), and holds nothing.
        if namespace.is_empty()
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Ok(false);
        }
        Ok(repository::Entity::find()
            .filter(repository::Column::Name.starts_with(format!("{namespace}/")))
            .one(&self.db)
            .await?
            .is_some())
    }

    /// Lists repository names after `last`, at most `n` of them, that `viewer` may see.
    pub async fn catalog(&self, n: u64, last: Option<&str>, viewer: &Viewer) -> Result<Page> {
        let mut q = repository::Entity::find()
            .select_only()
            .column(repository::Column::Name);
        match viewer {
            Viewer::Everything => {}
            Viewer::Public => q = q.filter(repository::Column::Private.eq(false)),
            Viewer::PublicAndNamespaces(namespaces) => {
                // Namespaces are user and organization names: [a-z0-9] only, so no LIKE escapes.
                let mut visible = Condition::any().add(repository::Column::Private.eq(false));
                for ns in namespaces {
                    visible = visible.add(repository::Column::Name.starts_with(format!("{ns}/")));
                }
                q = q.filter(visible)
            }
        }
        if let Some(last) = last {
            q = q.filter(byte_order(&self.db, repository::Column::Name).gt(last));
        }
        let mut items: Vec<String> = q
            .order_by_asc(byte_order(&self.db, repository::Column::Name))
            .limit(n + 1)
            .into_tuple()
            .all(&self.db)
            .await?;
        Ok(page(&mut items, n))
    }
}

pub(crate) fn page(items: &mut Vec<String>, n: u64) -> Page {
    let more = items.len() as u64 > n;
    items.truncate(n as usize);
    Page {
        items: std::mem::take(items),
        more,
    }
}

pub(crate) async fn find_repository(db: &impl ConnectionTrait, name: &str) -> Result<Option<i64>> {
    Ok(repository::Entity::find()
        .select_only()
        .column(repository::Column::Id)
        .filter(repository::Column::Name.eq(name))
        .into_tuple()
        .one(db)
        .await?)
}

/// The repository's id, creating it on first push (private if `private`).
pub(crate) async fn ensure_repository(
    db: &impl ConnectionTrait,
    name: &str,
    private: bool,
) -> Result<i64> {
    validate_name(name)?;
    if let Some(id) = find_repository(db, name).await? {
        return Ok(id);
    }
    repository::Entity::insert(repository::ActiveModel {
        name: Set(name.to_owned()),
        created_at: Set(now_millis()),
        private: Set(private),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([repository::Column::Name])
    .exec(db)
    .await?;
    find_repository(db, name)
        .await?
        .ok_or_else(|| StorageError::NameUnknown(name.to_owned()))
}

/// A repository name (`name`, a column) under `namespace/`: a prefix compared as a
/// string (`_` in names would be a LIKE wildcard).
pub(crate) fn name_under(name: Expr, namespace: &str) -> sea_orm::sea_query::SimpleExpr {
    let prefix = format!("{namespace}/");
    let len = i32::try_from(prefix.len()).unwrap_or(i32::MAX);
    Expr::expr(Func::cust("substr").args([name, Expr::val(1), Expr::val(len)])).eq(prefix)
}
