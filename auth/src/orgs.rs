//! Organizations: shared namespaces (`acme/*`) whose members push with a role.

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::ActiveValue::Set;

use crate::accounts::Accounts;
use crate::error::AuthError;
use crate::namespaces::{self, Kind};
use crate::users::{self, validate_username};

mod org {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "organizations")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub name: String,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

mod member {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "organization_members")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub org_name: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_name: String,
        pub role: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A member's rights in the organization's namespace.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub enum Role {
    /// Pull, private repositories included.
    Read,
    /// Also push.
    Write,
    /// Also delete.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Result<Role, AuthError> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(AuthError::ScopeInvalid(format!(
                "role {other} (expected read, write or admin)"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl Accounts {
    /// Creates an organization with `owner` as its first admin. Its name shares the
    /// user namespace space: no user and no organization may have the same name, and a
    /// removed user's name is reserved (see `namespaces`).
    pub async fn add_org(&self, name: &str, owner: &str) -> Result<(), AuthError> {
        create(&self.db, name, owner, false).await
    }

    /// Like [`Accounts::add_org`], and the name may be a removed user's (an
    /// administrator's decision).
    pub async fn add_org_reclaiming(&self, name: &str, owner: &str) -> Result<(), AuthError> {
        create(&self.db, name, owner, true).await
    }

    pub async fn org_exists(&self, name: &str) -> Result<bool, AuthError> {
        exists(&self.db, name).await
    }

    /// Adds `user` to `org` with `role`, or changes their role.
    pub async fn set_member(&self, org: &str, user: &str, role: Role) -> Result<(), AuthError> {
        let db = &self.db;
        if !exists(db, org).await? {
            return Err(AuthError::UserUnknown(format!("organization {org}")));
        }
        if users::get(db, user).await?.is_none() {
            return Err(AuthError::UserUnknown(user.to_owned()));
        }
        member::Entity::insert(member::ActiveModel {
            org_name: Set(org.to_owned()),
            user_name: Set(user.to_owned()),
            role: Set(role.name().to_owned()),
        })
        .on_conflict(
            OnConflict::columns([member::Column::OrgName, member::Column::UserName])
                .update_column(member::Column::Role)
                .to_owned(),
        )
        .exec(db)
        .await?;
        Ok(())
    }

    /// `user`'s role in the organization `namespace`, if it is one and they are a
    /// member.
    pub async fn org_role(&self, namespace: &str, user: &str) -> Result<Option<Role>, AuthError> {
        let found = member::Entity::find()
            .filter(member::Column::OrgName.eq(namespace))
            .filter(member::Column::UserName.eq(user))
            .one(&self.db)
            .await?;
        found.map(|m| Role::parse(&m.role)).transpose()
    }

    /// The organizations `user` belongs to (any role: all may pull their private
    /// repositories).
    pub async fn memberships(&self, user: &str) -> Result<Vec<String>, AuthError> {
        Ok(member::Entity::find()
            .filter(member::Column::UserName.eq(user))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| m.org_name)
            .collect())
    }
}

async fn create(
    db: &DatabaseConnection,
    name: &str,
    owner: &str,
    reclaim: bool,
) -> Result<(), AuthError> {
    validate_username(name)?;
    namespaces::check_free(db, name, Kind::Organization, reclaim).await?;
    if users::get(db, owner).await?.is_none() {
        return Err(AuthError::UserUnknown(owner.to_owned()));
    }
    let txn = namespaces::write_transaction(db).await?;
    namespaces::claim(&txn, name, Kind::Organization, reclaim).await?;
    org::Entity::insert(org::ActiveModel {
        name: Set(name.to_owned()),
        created_at: Set(chrono::Utc::now().timestamp_millis()),
        ..Default::default()
    })
    .exec(&txn)
    .await?;
    member::Entity::insert(member::ActiveModel {
        org_name: Set(name.to_owned()),
        user_name: Set(owner.to_owned()),
        role: Set(Role::Admin.name().to_owned()),
    })
    .exec(&txn)
    .await?;
    txn.commit().await?;
    Ok(())
}

async fn exists(db: &DatabaseConnection, name: &str) -> Result<bool, AuthError> {
    Ok(org::Entity::find()
        .filter(org::Column::Name.eq(name))
        .count(db)
        .await?
        > 0)
}

/// Ends `user`'s memberships, inside a user removal's transaction.
pub(crate) async fn leave_all<C: ConnectionTrait>(db: &C, user: &str) -> Result<(), AuthError> {
    member::Entity::delete_many()
        .filter(member::Column::UserName.eq(user))
        .exec(db)
        .await?;
    Ok(())
}
