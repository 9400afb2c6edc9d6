//! Organizations: shared namespaces (`acme/*`) whose members push with a role.

use sea_orm::entity::prelude::*;
use sea_orm::sea_query::OnConflict;
use sea_orm::ActiveValue::Set;
use sea_orm::{QueryOrder, QuerySelect};

use berth_storage::audit::Action;

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

/// The most organizations one user belongs to: bounds what one account can claim,
/// and the namespaces a listing checks for them.
pub const MAX_MEMBERSHIPS: u64 = 100;

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
        create(self, name, owner, false).await
    }

    /// An organization a user makes for themselves (the web UI), from `peer`: like
    /// [`Accounts::add_org`], after the attempt is counted against them and their
    /// address (5 a minute each; the address's budget is the sign-ups'),
    /// `held_by_repositories` as for [`Accounts::sign_up`].
    pub async fn add_own_org(
        &self,
        name: &str,
        owner: &str,
        peer: Option<std::net::IpAddr>,
        held_by_repositories: bool,
    ) -> Result<(), AuthError> {
        self.logins.new_org(&self.db, owner, peer).await?;
        if held_by_repositories {
            return Err(AuthError::NameInUse(name.to_owned()));
        }
        create(self, name, owner, false).await
    }

    /// Like [`Accounts::add_org`], and the name may be a removed user's (an
    /// administrator's decision).
    pub async fn add_org_reclaiming(&self, name: &str, owner: &str) -> Result<(), AuthError> {
        create(self, name, owner, true).await
    }

    pub async fn org_exists(&self, name: &str) -> Result<bool, AuthError> {
        exists(&self.db, name).await
    }

    /// Adds `user` to `org` with `role`, or changes their role; never leaves the
    /// organization without an admin.
    pub async fn set_member(&self, org: &str, user: &str, role: Role) -> Result<(), AuthError> {
        let txn = locked_org(&self.db, org).await?;
        // Read in the transaction: a user removed meanwhile is not made a member.
        if users::get(&txn, user).await?.is_none() {
            return Err(AuthError::UserUnknown(user.to_owned()));
        }
        let already = member::Entity::find()
            .filter(member::Column::OrgName.eq(org))
            .filter(member::Column::UserName.eq(user))
            .one(&txn)
            .await?;
        if already.is_none() {
            refuse_too_many(&txn, user).await?;
        }
        if role != Role::Admin {
            refuse_last_admin(&txn, org, user).await?;
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
        .exec(&txn)
        .await?;
        let (action, detail) = match already {
            None => (Action::MemberAdded, format!("{user} as {}", role.name())),
            Some(m) if m.role == role.name() => (
                Action::MemberRoleChanged,
                format!("{user} stays {}", m.role),
            ),
            Some(m) => (
                Action::MemberRoleChanged,
                format!("{user} from {} to {}", m.role, role.name()),
            ),
        };
        self.audited(&txn, action, org, detail).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Removes `user` from `org`; never its last admin.
    pub async fn remove_member(&self, org: &str, user: &str) -> Result<(), AuthError> {
        let txn = locked_org(&self.db, org).await?;
        refuse_last_admin(&txn, org, user).await?;
        let deleted = member::Entity::delete_many()
            .filter(member::Column::OrgName.eq(org))
            .filter(member::Column::UserName.eq(user))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(AuthError::NotAMember {
                org: org.to_owned(),
                user: user.to_owned(),
            });
        }
        self.audited(&txn, Action::MemberRemoved, org, user.to_owned())
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// The members of `org` and their roles, by name.
    pub async fn members(&self, org: &str) -> Result<Vec<(String, Role)>, AuthError> {
        member::Entity::find()
            .filter(member::Column::OrgName.eq(org))
            .order_by_asc(member::Column::UserName)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| Ok((m.user_name, Role::parse(&m.role)?)))
            .collect()
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
    accounts: &Accounts,
    name: &str,
    owner: &str,
    reclaim: bool,
) -> Result<(), AuthError> {
    let db = &accounts.db;
    validate_username(name)?;
    namespaces::check_free(db, name, Kind::Organization, reclaim).await?;
    if users::get(db, owner).await?.is_none() {
        return Err(AuthError::UserUnknown(owner.to_owned()));
    }
    let txn = namespaces::write_transaction(db).await?;
    refuse_too_many(&txn, owner).await?;
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
    let detail = match reclaim {
        true => format!("admin: {owner}; reclaiming a removed user's name"),
        false => format!("admin: {owner}"),
    };
    accounts
        .audited(&txn, Action::OrgCreated, name, detail)
        .await?;
    txn.commit().await?;
    Ok(())
}

/// A write transaction holding `org`'s row locked (on PostgreSQL; SQLite's write
/// lock covers it), so that membership changes of one organization go one at a time.
async fn locked_org(
    db: &DatabaseConnection,
    org: &str,
) -> Result<sea_orm::DatabaseTransaction, AuthError> {
    let txn = namespaces::write_transaction(db).await?;
    let found = org::Entity::find()
        .filter(org::Column::Name.eq(org))
        .lock_exclusive()
        .one(&txn)
        .await?;
    if found.is_none() {
        return Err(AuthError::UserUnknown(format!("organization {org}")));
    }
    Ok(txn)
}

/// Refuses one more membership to a user who has [`MAX_MEMBERSHIPS`].
async fn refuse_too_many<C: ConnectionTrait>(db: &C, user: &str) -> Result<(), AuthError> {
    let memberships = member::Entity::find()
        .filter(member::Column::UserName.eq(user))
        .count(db)
        .await?;
    if memberships >= MAX_MEMBERSHIPS {
        return Err(AuthError::TooManyMemberships(user.to_owned()));
    }
    Ok(())
}

/// Refuses to take `user`'s admin role away when they are `org`'s only admin.
async fn refuse_last_admin<C: ConnectionTrait>(
    db: &C,
    org: &str,
    user: &str,
) -> Result<(), AuthError> {
    let admins: Vec<String> = member::Entity::find()
        .filter(member::Column::OrgName.eq(org))
        .filter(member::Column::Role.eq(Role::Admin.name()))
        .all(db)
        .await?
        .into_iter()
        .map(|m| m.user_name)
        .collect();
    if admins == [user] {
        return Err(AuthError::LastAdmin(org.to_owned()));
    }
    Ok(())
}

async fn exists(db: &DatabaseConnection, name: &str) -> Result<bool, AuthError> {
    Ok(org::Entity::find()
        .filter(org::Column::Name.eq(name))
        .count(db)
        .await?
        > 0)
}

/// Ends `user`'s memberships, inside a user removal's transaction; refused when they
/// are an organization's last admin (it would be left with nobody to manage it).
pub(crate) async fn leave_all<C: ConnectionTrait>(db: &C, user: &str) -> Result<(), AuthError> {
    let admin_of = member::Entity::find()
        .filter(member::Column::UserName.eq(user))
        .filter(member::Column::Role.eq(Role::Admin.name()))
        .all(db)
        .await?;
    // Those organizations' rows locked, in name order, as membership changes lock
    // them: the admins counted below cannot change meanwhile.
    let mut names: Vec<&str> = admin_of.iter().map(|m| m.org_name.as_str()).collect();
    names.sort_unstable();
    if !names.is_empty() {
        org::Entity::find()
            .filter(org::Column::Name.is_in(names))
            .order_by_asc(org::Column::Name)
            .lock_exclusive()
            .all(db)
            .await?;
    }
    for membership in admin_of {
        refuse_last_admin(db, &membership.org_name, user).await?;
    }
    member::Entity::delete_many()
        .filter(member::Column::UserName.eq(user))
        .exec(db)
        .await?;
    Ok(())
}
