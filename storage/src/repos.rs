//! Repositories and the catalog.

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::db::byte_order;
use crate::entity::{now_millis, repository};
use crate::error::{Result, StorageError};
use crate::names::validate_name;
use crate::Storage;

/// One page of a lexically ordered listing, and whether more follows.
#[derive(Debug, PartialEq)]
pub struct Page {
    pub items: Vec<String>,
    pub more: bool,
}

impl Storage {
    /// The repository's id, or `NameUnknown` if nothing was ever pushed to it.
    pub async fn repository_id(&self, name: &str) -> Result<i64> {
        find_repository(&self.db, name)
            .await?
            .ok_or_else(|| StorageError::NameUnknown(name.to_owned()))
    }

    /// Lists repository names after `last`, at most `n` of them.
    pub async fn catalog(&self, n: u64, last: Option<&str>) -> Result<Page> {
        let mut q = repository::Entity::find()
            .select_only()
            .column(repository::Column::Name);
        if let Some(last) = last {
            q = q.filter(Expr::cust(byte_order(&self.db, "name")).gt(last));
        }
        let mut items: Vec<String> = q
            .order_by_asc(Expr::cust(byte_order(&self.db, "name")))
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

/// The repository's id, creating it on first push.
pub(crate) async fn ensure_repository(db: &impl ConnectionTrait, name: &str) -> Result<i64> {
    validate_name(name)?;
    if let Some(id) = find_repository(db, name).await? {
        return Ok(id);
    }
    repository::Entity::insert(repository::ActiveModel {
        name: Set(name.to_owned()),
        created_at: Set(now_millis()),
        ..Default::default()
    })
    .on_conflict_do_nothing_on([repository::Column::Name])
    .exec(db)
    .await?;
    find_repository(db, name)
        .await?
        .ok_or_else(|| StorageError::NameUnknown(name.to_owned()))
}
