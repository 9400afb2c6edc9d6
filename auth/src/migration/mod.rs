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
            Box::new(M0006Namespaces),
            Box::new(M0007TokenKinds),
            Box::new(M0008LoginFailures),
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

struct M0006Namespaces;

impl MigrationName for M0006Namespaces {
    fn name(&self) -> &str {
        "m0006_namespaces"
    }
}

/// One table of every name given to a user or an organization (see `namespaces`),
/// filled from the existing rows. Should a name already be both (sign-up used to
/// allow it), the user row wins here; nothing else changes.
#[async_trait::async_trait]
impl MigrationTrait for M0006Namespaces {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("namespaces")
                .col(text("name").primary_key())
                .col(text("kind"))
                .to_owned(),
        )
        .await?;
        let db = m.get_connection();
        db.execute_unprepared("INSERT INTO namespaces (name, kind) SELECT name, 'user' FROM users")
            .await?;
        db.execute_unprepared(
            "INSERT INTO namespaces (name, kind) SELECT name, 'organization' FROM organizations \
             WHERE name NOT IN (SELECT name FROM namespaces)",
        )
        .await?;
        Ok(())
    }
}

struct M0007TokenKinds;

impl MigrationName for M0007TokenKinds {
    fn name(&self) -> &str {
        "m0007_token_kinds"
    }
}

/// Tokens say what they are: `login` (the refresh token `docker login` keeps, ended by
/// a password change) or `personal` (made by the user, kept). Existing login tokens
/// are recognised by the name the token endpoint gave them.
#[async_trait::async_trait]
impl MigrationTrait for M0007TokenKinds {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table("personal_access_tokens")
                .add_column(text("kind").default("personal"))
                .to_owned(),
        )
        .await?;
        m.get_connection()
            .execute_unprepared(
                "UPDATE personal_access_tokens SET kind = 'login' WHERE name = 'docker login'",
            )
            .await?;
        Ok(())
    }
}

struct M0008LoginFailures;

impl MigrationName for M0008LoginFailures {
    fn name(&self) -> &str {
        "m0008_login_failures"
    }
}

/// Failed logins per key (`user:alice`, `ip:10.0.0.1`, `signup:…`) in the database,
/// so replicas count them together (see `limiter`).
#[async_trait::async_trait]
impl MigrationTrait for M0008LoginFailures {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table("login_failures")
                .col(text("key").primary_key())
                .col(big_integer("failures"))
                .col(big_integer("since"))
                .to_owned(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectionTrait, Database};

    /// A database made before namespaces and token kinds: the migrations fill both
    /// in from what is there.
    #[tokio::test]
    async fn namespaces_and_token_kinds_are_backfilled() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display());
        let db = Database::connect(url).await.unwrap();
        Migrator::up(&db, Some(5)).await.unwrap();
        for sql in [
            "INSERT INTO users (name, password_hash, admin, created_at) VALUES ('alice', 'h', false, 0)",
            // Sign-up used to let a user take an organization's name.
            "INSERT INTO users (name, password_hash, admin, created_at) VALUES ('acme', 'h', false, 0)",
            "INSERT INTO organizations (name, created_at) VALUES ('acme', 0)",
            "INSERT INTO organizations (name, created_at) VALUES ('initech', 0)",
            "INSERT INTO personal_access_tokens (user_name, name, secret_hash, scope, created_at) \
             VALUES ('alice', 'docker login', 'a', 'read', 0), ('alice', 'ci', 'b', 'read', 0)",
        ] {
            db.execute_unprepared(sql).await.unwrap();
        }
        Migrator::up(&db, None).await.unwrap();
        let rows = |sql: &'static str| {
            let db = db.clone();
            async move {
                db.query_all_raw(sea_orm::Statement::from_string(
                    db.get_database_backend(),
                    sql,
                ))
                .await
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r.try_get_by_index::<String>(0).unwrap(),
                        r.try_get_by_index::<String>(1).unwrap(),
                    )
                })
                .collect::<Vec<_>>()
            }
        };
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(a, b)| (String::from(*a), String::from(*b)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            rows("SELECT name, kind FROM namespaces ORDER BY name").await,
            pairs(&[
                ("acme", "user"),
                ("alice", "user"),
                ("initech", "organization")
            ])
        );
        assert_eq!(
            rows("SELECT name, kind FROM personal_access_tokens ORDER BY name").await,
            pairs(&[("ci", "personal"), ("docker login", "login")])
        );
    }
}
