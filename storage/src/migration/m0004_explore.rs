//! What the web UI shows and searches: a repository's description, README, pull count
//! and last push, and the platforms its tags offer; each image manifest's platform and compressed size; and a full-text
//! index over repository names and descriptions (FTS5 on SQLite, a tsvector column
//! with a GIN index on PostgreSQL).

use sea_orm::{ConnectionTrait, DbBackend};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            text("description").default(""),
            text("readme").default(""),
            big_integer("pull_count").default(0),
            big_integer("pushed_at").default(0),
            // ` linux/amd64 linux/arm64 `: the platforms of the tagged images, for the
            // search filter (kept by the manifest writes, see `platforms.rs`).
            text("platforms").default(" "),
        ] {
            m.alter_table(
                Table::alter()
                    .table("repositories")
                    .add_column(column)
                    .to_owned(),
            )
            .await?;
        }
        for column in [
            text_null("os"),
            text_null("architecture"),
            text_null("variant"),
            big_integer_null("image_size"),
        ] {
            m.alter_table(
                Table::alter()
                    .table("manifests")
                    .add_column(column)
                    .to_owned(),
            )
            .await?;
        }
        m.exec_stmt(
            Query::update()
                .table("repositories")
                .value("pushed_at", Expr::col("created_at"))
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        // Raw DDL, as sea-query has no FTS5 virtual tables, no triggers, and no generated
        // column over full-text functions.
        let statements: &[&str] = match db.get_database_backend() {
            DbBackend::Sqlite => &[
                "CREATE VIRTUAL TABLE repository_search USING fts5(name, description, \
                 content='repositories', content_rowid='id')",
                "CREATE TRIGGER repository_search_insert AFTER INSERT ON repositories BEGIN \
                 INSERT INTO repository_search(rowid, name, description) \
                 VALUES (new.id, new.name, new.description); END",
                "CREATE TRIGGER repository_search_delete AFTER DELETE ON repositories BEGIN \
                 INSERT INTO repository_search(repository_search, rowid, name, description) \
                 VALUES ('delete', old.id, old.name, old.description); END",
                "CREATE TRIGGER repository_search_update AFTER UPDATE OF name, description \
                 ON repositories BEGIN \
                 INSERT INTO repository_search(repository_search, rowid, name, description) \
                 VALUES ('delete', old.id, old.name, old.description); \
                 INSERT INTO repository_search(rowid, name, description) \
                 VALUES (new.id, new.name, new.description); END",
                "INSERT INTO repository_search(repository_search) VALUES ('rebuild')",
            ],
            _ => &[
                // Name parts (`alice/my-app` → alice my app) and description words.
                "ALTER TABLE repositories ADD COLUMN search tsvector GENERATED ALWAYS AS \
                 (to_tsvector('simple', regexp_replace(name, '[^a-zA-Z0-9]+', ' ', 'g') \
                 || ' ' || description)) STORED",
            ],
        };
        for sql in statements {
            db.execute_unprepared(sql).await?;
        }
        if db.get_database_backend() == DbBackend::Postgres {
            m.create_index(
                Index::create()
                    .name("idx_repositories_search")
                    .table("repositories")
                    .col("search")
                    .full_text() // USING GIN
                    .to_owned(),
            )
            .await?;
        }
        m.create_index(
            Index::create()
                .name("idx_repositories_pull_count")
                .table("repositories")
                .col("pull_count")
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_repositories_pushed_at")
                .table("repositories")
                .col("pushed_at")
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_tags_repository_updated")
                .table("tags")
                .col("repository_id")
                .col("updated_at")
                .to_owned(),
        )
        .await
    }
}
