//! Abandoned uploads: sessions nobody touched for the configured time are deleted with
//! the data they received. Every replica may run this; each deletion is conditional
//! on the row being unchanged, so replicas never delete an upload twice or one that
//! a client is extending right now.

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use crate::completions::{Completion, EndingUpload};
use crate::entity::{now_millis, upload, upload_tombstone};
use crate::error::{Result, StorageError};
use crate::objects::Segment;
use crate::Storage;

/// Uploads looked at per database round trip.
const BATCH: u64 = 100;

impl Storage {
    /// Deletes uploads last updated more than `max_age_ms` ago; returns how many.
    pub async fn expire_uploads(&self, max_age_ms: i64) -> Result<usize> {
        let cutoff = now_millis() - max_age_ms;
        let mut expired = 0;
        loop {
            let rows = upload::Entity::find()
                .filter(upload::Column::UpdatedAt.lt(cutoff))
                .order_by_asc(upload::Column::UpdatedAt)
                .limit(BATCH)
                .all(&self.db)
                .await?;
            let full_batch = rows.len() as u64 == BATCH;
            for row in rows {
                // The row goes if unchanged, as when an upload completes (no tombstone:
                // an id this old is unknown anyway).
                let ending = EndingUpload {
                    id: row.id.clone(),
                    size: row.size,
                    has_row: true,
                    tombstone_since: None,
                };
                let completion = Completion {
                    upload: Some(ending),
                    blob: None,
                };
                match self.completions.write(completion).await {
                    Ok(_) => {}
                    // Extended, completed or expired elsewhere meanwhile: not ours.
                    Err(StorageError::UploadUnknown(_)) => continue,
                    Err(e) => return Err(e),
                }
                // Unparsable segment lists cannot occur (we wrote them), but must not
                // stop the sweep.
                let segments: Vec<Segment> =
                    serde_json::from_str(&row.segments).unwrap_or_default();
                self.objects.delete_all(&segments).await?;
                expired += 1;
            }
            if !full_batch {
                // Tombstones of ids that are past their expiry anyway.
                let old = upload_tombstone::Column::CreatedAt.lt(cutoff);
                if upload_tombstone::Entity::find()
                    .filter(old.clone())
                    .one(&self.db)
                    .await?
                    .is_some()
                {
                    let txn = self.write().await?;
                    upload_tombstone::Entity::delete_many()
                        .filter(old)
                        .exec(&*txn)
                        .await?;
                    txn.commit().await?;
                }
                return Ok(expired);
            }
        }
    }
}
