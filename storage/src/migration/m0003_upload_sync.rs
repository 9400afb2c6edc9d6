//! Uploads whose last chunk is not yet flushed to disk: how far they are durable, the
//! hash state at that point, and the boot of the machine that wrote the rest (after a
//! reboot, the rest may be lost and is dropped).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            big_integer_null("synced_size"),
            blob_null("synced_hash_state"),
            text_null("written_boot"),
        ] {
            m.alter_table(
                Table::alter()
                    .table("uploads")
                    .add_column(column)
                    .to_owned(),
            )
            .await?;
        }
        Ok(())
    }
}
