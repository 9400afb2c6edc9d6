//! Abandoned uploads: sessions nobody touched for the configured time are deleted with
//! the data they received. Every replica may run this; each deletion is conditional
//! on the row being unchanged and still idle (see `upload_row`), so replicas never
//! delete an upload twice or one that a client is extending right now.

use crate::completions::Completion;
use crate::entity::now_millis;
use crate::error::{Result, StorageError};
use crate::objects::Segment;
use crate::upload_row::{self, EndingUpload};
use crate::Storage;

/// Uploads looked at per database round trip.
const BATCH: u64 = 100;

impl Storage {
    /// Deletes uploads last updated more than `max_age_ms` ago; returns how many.
    pub async fn expire_uploads(&self, max_age_ms: i64) -> Result<usize> {
        let cutoff = now_millis() - max_age_ms;
        let mut expired = 0;
        loop {
            let rows = upload_row::idle(&self.db, cutoff, BATCH).await?;
            let full_batch = rows.len() as u64 == BATCH;
            for row in rows {
                let completion = Completion {
                    upload: Some(EndingUpload::expire(&row, cutoff)),
                    blob: None,
                    events: Vec::new(),
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
                if upload_row::tombstones_before(&self.db, cutoff).await? {
                    let txn = self.write().await?;
                    upload_row::forget_tombstones_before(&*txn, cutoff).await?;
                    txn.commit().await?;
                }
                return Ok(expired);
            }
        }
    }
}
