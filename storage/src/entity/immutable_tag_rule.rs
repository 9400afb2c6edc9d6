//! An immutable tag rule: tags matching `pattern` in `scope` (`acme/app` or `acme/*`)
//! can be neither overwritten nor deleted once they exist.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "immutable_tag_rules")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    /// A repository name, or a namespace written `acme/*`.
    pub scope: String,
    /// A glob over tag names: `*`, `?`, `[...]`, `[!...]`.
    pub pattern: String,
    pub created_at: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
