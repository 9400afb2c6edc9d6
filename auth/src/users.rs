//! User accounts.

use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, QueryOrder, QuerySelect};

use berth_storage::audit::Action;

use crate::accounts::Accounts;
use crate::error::AuthError;
use crate::namespaces::{self, Kind};
use crate::password;

mod user {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "users")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub name: String,
        pub password_hash: String,
        pub admin: bool,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A user as the rest of Berth sees it (never with the password hash).
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: String,
    pub admin: bool,
}

impl From<user::Model> for User {
    fn from(row: user::Model) -> User {
        User {
            name: row.name,
            admin: row.admin,
        }
    }
}

/// Names that would be confusing or collide with registry paths.
const RESERVED: &[&str] = &[
    "admin",
    "administrator",
    "api",
    "auth",
    "berth",
    "docker",
    "help",
    "library",
    "login",
    "logout",
    "official",
    "registry",
    "root",
    "search",
    "settings",
    "signup",
    "support",
    "system",
    "token",
    "user",
    "users",
];

/// Docker Hub's rules: 4 to 30 characters, lowercase letters and digits.
pub fn validate_username(name: &str) -> Result<(), AuthError> {
    let ok = (4..=30).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && !RESERVED.contains(&name);
    if ok {
        Ok(())
    } else {
        Err(AuthError::UsernameInvalid(name.to_owned()))
    }
}

impl Accounts {
    /// Creates a user. Names are shared with organizations (see `namespaces`): a taken
    /// name, or a removed user's (reserved), is refused.
    pub async fn add_user(
        &self,
        name: &str,
        password: String,
        admin: bool,
    ) -> Result<User, AuthError> {
        create(self, name, password, admin, false).await
    }

    /// Like [`Accounts::add_user`], and the name may be a removed user's (reserved
    /// since): an administrator's decision to give it to a new account, which then owns
    /// whatever the old one left under `name/`.
    pub async fn add_user_reclaiming(
        &self,
        name: &str,
        password: String,
        admin: bool,
    ) -> Result<User, AuthError> {
        create(self, name, password, admin, true).await
    }

    /// Every user, by name.
    pub async fn users(&self) -> Result<Vec<User>, AuthError> {
        Ok(user::Entity::find()
            .order_by_asc(user::Column::Name)
            .all(&self.db)
            .await?
            .into_iter()
            .map(User::from)
            .collect())
    }

    pub async fn user(&self, name: &str) -> Result<Option<User>, AuthError> {
        get(&self.db, name).await
    }

    pub async fn user_count(&self) -> Result<u64, AuthError> {
        Ok(user::Entity::find().count(&self.db).await?)
    }

    /// Changes `name`'s password. Their web sessions and `docker login` refresh tokens
    /// end with the old password; personal access tokens they made stay valid (revoke
    /// those with `berthd token revoke`). Logins cached with the old password stop
    /// working at once on every server (see `cache`).
    pub async fn set_password(&self, name: &str, password: String) -> Result<(), AuthError> {
        let password_hash = password::hash(password).await?;
        let txn = namespaces::write_transaction(&self.db).await?;
        let updated = user::Entity::update_many()
            .col_expr(user::Column::PasswordHash, Expr::value(password_hash))
            .filter(user::Column::Name.eq(name))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Err(AuthError::UserUnknown(name.to_owned()));
        }
        crate::pat::revoke_logins(&txn, name).await?;
        crate::sessions::end_all(&txn, name).await?;
        let detail = "password changed; web sessions and docker logins ended".into();
        self.audited(&txn, Action::UserChanged, name, detail)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Removes `name` with everything that signs in as them (sessions, every token) and
    /// their organization memberships (refused, nothing removed, when they are an
    /// organization's last admin). The name stays reserved: nobody gets it again
    /// unless an administrator reclaims it ([`Accounts::add_user_reclaiming`]).
    pub async fn remove_user(&self, name: &str) -> Result<(), AuthError> {
        let txn = namespaces::write_transaction(&self.db).await?;
        let deleted = user::Entity::delete_many()
            .filter(user::Column::Name.eq(name))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(AuthError::UserUnknown(name.to_owned()));
        }
        namespaces::reserve(&txn, name).await?;
        crate::pat::remove_all(&txn, name).await?;
        crate::sessions::end_all(&txn, name).await?;
        crate::orgs::leave_all(&txn, name).await?;
        berth_storage::events::webhooks::remove_namespace_webhooks(&txn, name).await?;
        let detail =
            "with their sessions, tokens, memberships and webhooks; the name stays reserved";
        self.audited(&txn, Action::UserRemoved, name, detail.into())
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

async fn create(
    accounts: &Accounts,
    name: &str,
    password: String,
    admin: bool,
    reclaim: bool,
) -> Result<User, AuthError> {
    let db = &accounts.db;
    validate_username(name)?;
    // A taken name is refused before the slow hash; the transaction below decides.
    namespaces::check_free(db, name, Kind::User, reclaim).await?;
    let password_hash = password::hash(password).await?;
    let txn = namespaces::write_transaction(db).await?;
    namespaces::claim(&txn, name, Kind::User, reclaim).await?;
    user::Entity::insert(user::ActiveModel {
        name: Set(name.to_owned()),
        password_hash: Set(password_hash),
        admin: Set(admin),
        created_at: Set(chrono::Utc::now().timestamp_millis()),
        ..Default::default()
    })
    .exec(&txn)
    .await
    .map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            AuthError::UserExists(name.to_owned())
        }
        _ => AuthError::Database(e),
    })?;
    let detail = match (admin, reclaim) {
        (true, true) => "admin, reclaiming a removed user's name",
        (true, false) => "admin",
        (false, true) => "reclaiming a removed user's name",
        (false, false) => "user",
    };
    accounts
        .audited(&txn, Action::UserCreated, name, detail.into())
        .await?;
    txn.commit().await?;
    Ok(User {
        name: name.to_owned(),
        admin,
    })
}

/// The user named `name`, if any.
pub(crate) async fn get<C: ConnectionTrait>(db: &C, name: &str) -> Result<Option<User>, AuthError> {
    Ok(find(db, name).await?.map(User::from))
}

/// Locks user `name`'s row until the transaction `txn` ends (on PostgreSQL; SQLite's
/// write transactions are serial already); whether the user exists.
pub(crate) async fn lock<C: ConnectionTrait>(txn: &C, name: &str) -> Result<bool, AuthError> {
    Ok(user::Entity::find()
        .filter(user::Column::Name.eq(name))
        .lock_exclusive()
        .one(txn)
        .await?
        .is_some())
}

async fn find<C: ConnectionTrait>(db: &C, name: &str) -> Result<Option<user::Model>, AuthError> {
    Ok(user::Entity::find()
        .filter(user::Column::Name.eq(name))
        .one(db)
        .await?)
}

/// The user and their stored password hash (for `login`, which checks passwords).
pub(crate) async fn credentials(
    db: &DatabaseConnection,
    name: &str,
) -> Result<Option<(User, String)>, AuthError> {
    Ok(find(db, name).await?.map(|row| {
        let hash = row.password_hash.clone();
        (User::from(row), hash)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_docker_hub_rules() {
        for ok in ["alice", "bob2", "a1b2c3d4"] {
            validate_username(ok).unwrap();
        }
        for bad in [
            "bob",
            "Alice",
            "al-ice",
            "al_ice",
            &"a".repeat(31),
            "admin",
            "library",
        ] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }
}
