//! Repository visibility: private repositories are pulled by their owners only.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("repositories")
                .add_column(boolean("private").default(false))
                .to_owned(),
        )
        .await
    }
}
