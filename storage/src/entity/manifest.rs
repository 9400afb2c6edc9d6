//! A manifest (image, index or artifact) in one repository, with its exact bytes.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "manifests")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub repository_id: i64,
    pub digest: String,
    pub media_type: String,
    /// `artifactType`, or for an image manifest without it the config's media type
    /// (what the referrers API reports).
    pub artifact_type: Option<String>,
    /// The `subject` digest, for the referrers API.
    pub subject: Option<String>,
    /// The manifest's `annotations` as JSON text, for referrers descriptors.
    pub annotations: Option<String>,
    pub content: Vec<u8>,
    pub size: i64,
    pub created_at: i64,
    /// An image manifest's platform, from its config (`None` for indexes, artifacts
    /// and configs that say nothing).
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
    /// An image manifest's compressed size: config plus layers.
    pub image_size: Option<i64>,
    /// The last pull through it (`None`: never pulled since it was recorded).
    pub last_pulled_at: Option<i64>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
