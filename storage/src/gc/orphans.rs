//! Orphan objects: objects in the store that no row names — a crash between writing
//! an object and committing the row that names it, or a collector killed between its
//! commit and its object deletions. Found by listing the store page by page; deleted
//! once older (by the store's own timestamp) than the orphan age.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};

use super::lease::Lease;
use super::GcReport;
use crate::entity::{blob_object, now_millis, upload};
use crate::error::{Result, StorageError};
use crate::objects::{ObjectInfo, Segment};
use crate::Storage;

/// Listed objects looked up per query (and deleted per request: S3's DeleteObjects
/// takes up to 1,000 keys).
const PAGE: usize = 1000;

pub(super) async fn collect(storage: &Storage, lease: &Lease, report: &mut GcReport) -> Result<()> {
    let cutoff = now_millis() - storage.gc.orphan_age_ms;
    // Objects of uploads in progress, named only by their upload rows. An upload that
    // starts after this read writes objects younger than the cutoff.
    let uploading = upload_objects(storage).await?;
    let pages = storage
        .objects
        .list()
        // Renewed (when due) as objects are listed, not per page of old ones: in a store
        // of young objects, or behind a listing request retried for a while, many
        // listing requests may pass between two pages.
        .and_then(|o| async move { lease.renew(storage).await.map(|()| o) })
        .try_filter(|o| std::future::ready(o.modified.timestamp_millis() < cutoff))
        .try_chunks(PAGE);
    let mut pages = std::pin::pin!(pages);
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| e.1)?;
        let named: HashSet<String> = blob_object::Entity::find()
            .select_only()
            .column(blob_object::Column::Key)
            .filter(blob_object::Column::Key.is_in(page.iter().map(|o| o.key.clone())))
            .into_tuple()
            .all(&storage.db)
            .await?
            .into_iter()
            .collect();
        let orphans: Vec<ObjectInfo> = page
            .into_iter()
            .filter(|o| !named.contains(&o.key) && !uploading.contains(&o.key))
            .collect();
        if orphans.is_empty() {
            continue;
        }
        let bytes: u64 = orphans.iter().map(|o| o.size).sum();
        let count = orphans.len() as u64;
        if !report.dry_run {
            storage
                .objects
                .delete_keys(orphans.into_iter().map(|o| o.key).collect())
                .await?;
        }
        report.orphan_objects += count;
        report.orphan_bytes += bytes;
    }
    Ok(())
}

async fn upload_objects(storage: &Storage) -> Result<HashSet<String>> {
    let lists: Vec<String> = upload::Entity::find()
        .select_only()
        .column(upload::Column::Segments)
        .into_tuple()
        .all(&storage.db)
        .await?;
    let mut keys = HashSet::new();
    for list in &lists {
        // An upload row this code cannot read stops the sweep rather than lose its data.
        let segments: Vec<Segment> = serde_json::from_str(list).map_err(|e| {
            StorageError::Io(std::io::Error::other(format!(
                "corrupt upload segments: {e}"
            )))
        })?;
        keys.extend(segments.into_iter().map(|s| s.key));
    }
    Ok(keys)
}
