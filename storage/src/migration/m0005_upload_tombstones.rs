//! Ended uploads whose id carries its own state (see `uploads`): an upload started by
//! a POST has no row until its first PATCH, so ending one (complete, cancel, discard)
//! leaves a tombstone that makes the id unknown from then on, until the id expires.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("upload_tombstones")
                .col(text("id").primary_key())
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_upload_tombstones_created_at")
                .table("upload_tombstones")
                .col("created_at")
                .to_owned(),
        )
        .await
    }
}
