//! Schema migrations, applied in order at start-up.

use sea_orm_migration::prelude::*;

mod m0001_registry;
mod m0002_visibility;
mod m0003_upload_sync;
mod m0004_explore;
mod m0005_upload_tombstones;
mod m0006_lifecycle;
mod m0007_tag_rules;
mod m0008_generations;
mod m0009_stars;
mod m0010_events;
mod m0011_audit;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m0001_registry::Migration),
            Box::new(m0002_visibility::Migration),
            Box::new(m0003_upload_sync::Migration),
            Box::new(m0004_explore::Migration),
            Box::new(m0005_upload_tombstones::Migration),
            Box::new(m0006_lifecycle::Migration),
            Box::new(m0007_tag_rules::Migration),
            Box::new(m0008_generations::Migration),
            Box::new(m0009_stars::Migration),
            Box::new(m0010_events::Migration),
            Box::new(m0011_audit::Migration),
        ]
    }
}
