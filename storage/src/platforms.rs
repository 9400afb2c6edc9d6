//! The platforms a repository's tags offer (`repositories.platforms`, e.g.
//! ` linux/amd64 linux/arm64 `), which the search's OS/architecture filter reads
//! instead of joining tags, manifests and index children for every candidate.
//! Recomputed inside the write transaction of every change to the repository's tags.

use std::collections::BTreeSet;

use sea_orm::{ConnectionTrait, FromQueryResult};

use crate::db::Sql;
use crate::error::Result;

#[derive(FromQueryResult)]
struct Platform {
    os: String,
    architecture: String,
}

/// Rewrites `repo_id`'s platform list from its tags: tagged images, and the images of
/// tagged indexes.
pub(crate) async fn refresh(db: &impl ConnectionTrait, repo_id: i64) -> Result<()> {
    let backend = db.get_database_backend();
    let mut select = Sql::default();
    select
        .push(
            "SELECT m.os, m.architecture FROM tags t JOIN manifests m ON m.id = t.manifest_id \
             WHERE t.repository_id = ",
        )
        .bind(repo_id)
        .push(
            " AND m.os IS NOT NULL AND m.architecture IS NOT NULL \
             UNION SELECT cm.os, cm.architecture FROM tags t \
             JOIN manifest_children c ON c.manifest_id = t.manifest_id \
             JOIN manifests cm ON cm.repository_id = t.repository_id AND cm.digest = c.child_digest \
             WHERE t.repository_id = ",
        )
        .bind(repo_id)
        .push(" AND cm.os IS NOT NULL AND cm.architecture IS NOT NULL");
    let rows = Platform::find_by_statement(select.build(backend))
        .all(db)
        .await?;
    let set: BTreeSet<String> = rows
        .into_iter()
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect();
    let text = format!(" {} ", set.into_iter().collect::<Vec<_>>().join(" "));
    let mut update = Sql::default();
    update
        .push("UPDATE repositories SET platforms = ")
        .bind(text)
        .push(" WHERE id = ")
        .bind(repo_id);
    db.execute_raw(update.build(backend)).await?;
    Ok(())
}

/// The `LIKE` pattern matching a platform list that offers `os` and/or `architecture`.
pub fn filter_pattern(os: Option<&str>, architecture: Option<&str>) -> String {
    let clean = |s: &str| s.replace(['%', '_', '\\', ' '], "");
    match (os, architecture) {
        (Some(o), Some(a)) => format!("% {}/{} %", clean(o), clean(a)),
        (Some(o), None) => format!("% {}/%", clean(o)),
        (None, Some(a)) => format!("%/{} %", clean(a)),
        (None, None) => "%".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::filter_pattern;

    #[test]
    fn patterns_match_whole_entries() {
        assert_eq!(
            filter_pattern(Some("linux"), Some("arm64")),
            "% linux/arm64 %"
        );
        assert_eq!(filter_pattern(None, Some("arm")), "%/arm %");
        assert_eq!(filter_pattern(Some("linux%"), None), "% linux/%");
    }
}
