//! Immutable tag rules: a glob over tag names (`v*`, `*`, `release-?.?`) in a scope, one
//! repository (`acme/app`) or every repository of a namespace (`acme/*`). A tag that
//! exists and matches a rule of its repository's scopes is neither overwritten nor
//! deleted (see `tag_rules`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("immutable_tag_rules")
                .col(big_pk_auto("id"))
                .col(text("scope"))
                .col(text("pattern"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        // One rule per (scope, pattern). Its leading column also serves every lookup,
        // which is by scope: no second index on `scope` alone.
        m.create_index(
            Index::create()
                .name("idx_immutable_tag_rules_scope_pattern")
                .table("immutable_tag_rules")
                .col("scope")
                .col("pattern")
                .unique()
                .to_owned(),
        )
        .await
    }
}
