//! The audit log: one row per security-relevant action (sign-ins, account, token,
//! membership, visibility, deletion, retention and quota changes), read newest first
//! by admins and filtered by actor, action and time; old rows expire.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("audit_log")
                .col(big_pk_auto("id"))
                .col(big_integer("at"))
                .col(text_null("actor"))
                .col(text_null("address"))
                .col(text("action"))
                .col(text_null("target"))
                .col(text("outcome"))
                .col(text_null("detail"))
                .to_owned(),
        )
        .await?;
        // Expiry deletes by time; the filters read one actor's or one action's rows
        // newest first.
        for (name, cols) in [
            ("idx_audit_log_at", &["at"][..]),
            ("idx_audit_log_actor_at", &["actor", "at"][..]),
            ("idx_audit_log_action_at", &["action", "at"][..]),
        ] {
            let mut index = Index::create();
            index.name(name).table("audit_log");
            for col in cols {
                index.col(*col);
            }
            m.create_index(index.to_owned()).await?;
        }
        Ok(())
    }
}
