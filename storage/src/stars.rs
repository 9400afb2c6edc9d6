//! Stars on repositories (see the `m0009_stars` migration): given and taken back by
//! signed-in users, counted in listings (`explore`).

use sea_orm::ActiveValue::Set;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use crate::entity::repository_star as star;
use crate::error::Result;
use crate::Storage;

impl Storage {
    /// Stars `repo` for `user` (again: nothing changes).
    pub async fn star(&self, repo: &str, user: &str) -> Result<()> {
        let repository_id = self.repository_id(repo).await?;
        star::Entity::insert(star::ActiveModel {
            repository_id: Set(repository_id),
            user_name: Set(user.to_owned()),
            created_at: Set(chrono::Utc::now().timestamp_millis()),
        })
        .on_conflict_do_nothing_on([star::Column::RepositoryId, star::Column::UserName])
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// Takes `user`'s star off `repo` (none there: nothing changes).
    pub async fn unstar(&self, repo: &str, user: &str) -> Result<()> {
        let repository_id = self.repository_id(repo).await?;
        star::Entity::delete_many()
            .filter(star::Column::RepositoryId.eq(repository_id))
            .filter(star::Column::UserName.eq(user))
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Whether `user` has starred `repo`.
    pub async fn starred(&self, repo: &str, user: &str) -> Result<bool> {
        let repository_id = self.repository_id(repo).await?;
        Ok(star::Entity::find()
            .filter(star::Column::RepositoryId.eq(repository_id))
            .filter(star::Column::UserName.eq(user))
            .count(&self.db)
            .await?
            > 0)
    }
}
