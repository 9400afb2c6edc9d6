//! A generation per repository, bumped by the database itself in the transaction of
//! every change a pull could have cached: a tag added, moved or removed, a manifest
//! removed, a blob unlinked. On PostgreSQL the same trigger notifies the replicas
//! (`change_feed`), which otherwise compare the generation before serving from their
//! metadata cache (`generations`). Additions of manifests and blob links need no bump:
//! the cache holds only what it found, never an absence.
//!
//! Triggers rather than a bump in each write path, so no writer can forget it
//! (garbage collection and retention included).

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::change_feed::CHANNEL;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// (trigger name, event, table, row whose repository changed).
const TRIGGERS: [(&str, &str, &str, &str); 5] = [
    ("tags_added", "INSERT", "tags", "NEW"),
    ("tags_moved", "UPDATE OF manifest_id", "tags", "NEW"),
    ("tags_removed", "DELETE", "tags", "OLD"),
    ("manifests_removed", "DELETE", "manifests", "OLD"),
    (
        "repository_blobs_removed",
        "DELETE",
        "repository_blobs",
        "OLD",
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("repositories")
                .add_column(big_integer("generation").default(0))
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        let postgres = db.get_database_backend() == DbBackend::Postgres;
        if postgres {
            // One function per row variable: PL/pgSQL cannot pick NEW or OLD by name.
            for row in ["NEW", "OLD"] {
                db.execute_unprepared(&format!(
                    "CREATE FUNCTION bump_repository_generation_{row}() RETURNS trigger \
                     LANGUAGE plpgsql AS $$ DECLARE changed text; BEGIN \
                     UPDATE repositories SET generation = generation + 1 \
                     WHERE id = {row}.repository_id RETURNING name INTO changed; \
                     PERFORM pg_notify('{CHANNEL}', changed); RETURN NULL; END $$"
                ))
                .await?;
            }
        }
        for (name, event, table, row) in TRIGGERS {
            let sql = if postgres {
                format!(
                    "CREATE TRIGGER {name}_generation AFTER {event} ON {table} \
                     FOR EACH ROW EXECUTE FUNCTION bump_repository_generation_{row}()"
                )
            } else {
                format!(
                    "CREATE TRIGGER {name}_generation AFTER {event} ON {table} BEGIN \
                     UPDATE repositories SET generation = generation + 1 \
                     WHERE id = {row}.repository_id; END"
                )
            };
            db.execute_unprepared(&sql).await?;
        }
        Ok(())
    }
}
