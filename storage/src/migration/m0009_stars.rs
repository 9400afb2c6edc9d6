//! Stars: a signed-in user's mark on a repository they like, counted on its pages and
//! in search (sortable by). One row per (repository, user); counted by the primary
//! key's leading column. A table of their own, so starring never touches the
//! repository's row (whose updates bump the generation cached pulls check).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("repository_stars")
                .col(big_integer("repository_id"))
                .col(text("user_name"))
                .col(big_integer("created_at"))
                .primary_key(Index::create().col("repository_id").col("user_name"))
                .to_owned(),
        )
        .await
    }
}
