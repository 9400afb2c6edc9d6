//! The registry core: repositories, blobs and their links, uploads, manifests, tags and
//! the references between them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("repositories")
                .col(big_pk_auto("id"))
                .col(text_uniq("name"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("blobs")
                .col(text("digest").primary_key())
                .col(big_integer("size"))
                .col(text("segments"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("repository_blobs")
                .col(big_integer("repository_id"))
                .col(text("digest"))
                .col(big_integer("created_at"))
                .primary_key(Index::create().col("repository_id").col("digest"))
                .foreign_key(&mut cascade(
                    "repository_blobs",
                    "repository_id",
                    "repositories",
                    "id",
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index("repository_blobs", &["digest"]))
            .await?;
        m.create_table(
            Table::create()
                .table("uploads")
                .col(text("id").primary_key())
                .col(text("repository"))
                .col(text("algorithm"))
                .col(big_integer("size"))
                .col(blob("hash_state"))
                .col(text("segments"))
                .col(big_integer("created_at"))
                .col(big_integer("updated_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("uploads", &["updated_at"])).await?;
        m.create_table(
            Table::create()
                .table("manifests")
                .col(big_pk_auto("id"))
                .col(big_integer("repository_id"))
                .col(text("digest"))
                .col(text("media_type"))
                .col(text_null("artifact_type"))
                .col(text_null("subject"))
                .col(text_null("annotations"))
                .col(blob("content"))
                .col(big_integer("size"))
                .col(big_integer("created_at"))
                .foreign_key(&mut cascade(
                    "manifests",
                    "repository_id",
                    "repositories",
                    "id",
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(
            index("manifests", &["repository_id", "digest"])
                .unique()
                .to_owned(),
        )
        .await?;
        m.create_index(index("manifests", &["repository_id", "subject"]))
            .await?;
        m.create_table(
            Table::create()
                .table("tags")
                .col(big_integer("repository_id"))
                .col(text("name"))
                .col(big_integer("manifest_id"))
                .col(big_integer("updated_at"))
                .primary_key(Index::create().col("repository_id").col("name"))
                .foreign_key(&mut cascade("tags", "repository_id", "repositories", "id"))
                .foreign_key(&mut cascade("tags", "manifest_id", "manifests", "id"))
                .to_owned(),
        )
        .await?;
        m.create_index(index("tags", &["manifest_id"])).await?;
        m.create_table(
            Table::create()
                .table("manifest_blobs")
                .col(big_integer("manifest_id"))
                .col(text("digest"))
                .primary_key(Index::create().col("manifest_id").col("digest"))
                .foreign_key(&mut cascade(
                    "manifest_blobs",
                    "manifest_id",
                    "manifests",
                    "id",
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index("manifest_blobs", &["digest"])).await?;
        m.create_table(
            Table::create()
                .table("manifest_children")
                .col(big_integer("manifest_id"))
                .col(text("child_digest"))
                .primary_key(Index::create().col("manifest_id").col("child_digest"))
                .foreign_key(&mut cascade(
                    "manifest_children",
                    "manifest_id",
                    "manifests",
                    "id",
                ))
                .to_owned(),
        )
        .await?;
        m.create_index(index("manifest_children", &["child_digest"]))
            .await?;
        Ok(())
    }
}

fn cascade(from: &str, col: &str, to: &str, to_col: &str) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(format!("fk_{from}_{col}"))
        .from(from.to_owned(), col.to_owned())
        .to(to.to_owned(), to_col.to_owned())
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

fn index(table: &str, cols: &[&str]) -> IndexCreateStatement {
    let mut idx = Index::create();
    idx.name(format!("idx_{table}_{}", cols.join("_")))
        .table(table.to_owned());
    for c in cols {
        idx.col((*c).to_owned());
    }
    idx.to_owned()
}
