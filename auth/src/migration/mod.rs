//! The auth tables, with their own migration history table so they evolve
//! independently of storage's.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Users),
            Box::new(M0002Tokens),
            Box::new(M0003Organizations),
            Box::new(M0004SigningKeys),
            Box::new(M0005WebSessions),
        ]
    }

    fn migration_table_name() -> DynIden {
        "berth_auth_migrations".into_iden()
    }
}

struct M0001Users;

impl MigrationName for M0001Users {
    fn name(&self) -> &str {
        "m0001_users"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0001Users {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("users")
                .col(big_pk_auto("id"))
                .col(text_uniq("name"))
                .col(text("password_hash"))
                .col(boolean("admin"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await
    }
}

struct M0002Tokens;

impl MigrationName for M0002Tokens {
    fn name(&self) -> &str {
        "m0002_personal_access_tokens"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0002Tokens {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("personal_access_tokens")
                .col(big_pk_auto("id"))
                .col(text("user_name"))
                .col(text("name"))
                .col(text_uniq("secret_hash"))
                .col(text("scope"))
                .col(big_integer_null("expires_at"))
                .col(big_integer_null("last_used_at"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_personal_access_tokens_user_name")
                .table("personal_access_tokens")
                .col("user_name")
                .to_owned(),
        )
        .await
    }
}

struct M0003Organizations;

impl MigrationName for M0003Organizations {
    fn name(&self) -> &str {
        "m0003_organizations"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0003Organizations {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("organizations")
                .col(big_pk_auto("id"))
                .col(text_uniq("name"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table("organization_members")
                .col(text("org_name"))
                .col(text("user_name"))
                .col(text("role"))
                .primary_key(Index::create().col("org_name").col("user_name"))
                .to_owned(),
        )
        .await
    }
}

struct M0004SigningKeys;

impl MigrationName for M0004SigningKeys {
    fn name(&self) -> &str {
        "m0004_signing_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0004SigningKeys {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("signing_keys")
                .col(big_integer("id").primary_key())
                .col(blob("pkcs8"))
                .col(big_integer("created_at"))
                .to_owned(),
        )
        .await
    }
}

struct M0005WebSessions;

impl MigrationName for M0005WebSessions {
    fn name(&self) -> &str {
        "m0005_web_sessions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for M0005WebSessions {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("web_sessions")
                .col(text("secret_hash").primary_key())
                .col(text("user_name"))
                .col(text("csrf_token"))
                .col(big_integer("created_at"))
                .col(big_integer("expires_at"))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_web_sessions_user_name")
                .table("web_sessions")
                .col("user_name")
                .to_owned(),
        )
        .await
    }
}
