//! What the web UI browses: repository listings and full-text search, a repository's
//! details and its tags with their platforms and sizes, descriptions and READMEs.
//!
//! Listings are single SQL queries (the full-text index is SQLite's FTS5 or a
//! PostgreSQL tsvector, see migration m0004), filtered by what the viewer may pull.

use sea_orm::{ConnectionTrait, DbBackend, FromQueryResult};
use serde::Serialize;

use crate::db::{Sql, WriteTxn};
use crate::error::{Result, StorageError};
use crate::repos::{find_repository, Viewer};
use crate::Storage;

/// A repository as listings show it.
#[derive(Debug, Clone, Serialize, FromQueryResult)]
pub struct RepoSummary {
    pub name: String,
    pub description: String,
    pub private: bool,
    pub pull_count: i64,
    /// Unix milliseconds.
    pub pushed_at: i64,
    pub tag_count: i64,
}

/// A repository's page: its summary and README (Markdown).
#[derive(Debug, Clone, Serialize)]
pub struct RepoDetail {
    #[serde(flatten)]
    pub summary: RepoSummary,
    pub readme: String,
}

/// One page of a listing and how many match in all.
#[derive(Debug, Clone, Serialize)]
pub struct RepoPage {
    pub items: Vec<RepoSummary>,
    pub total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Relevance when searching for text, else most pulled.
    Relevance,
    MostPulled,
    RecentlyPushed,
    Name,
}

/// Which repositories to list: all of these narrow the listing.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Words matched (as prefixes) against name parts and the description.
    pub text: String,
    pub namespace: Option<String>,
    /// Only repositories with a tagged image for this OS / architecture.
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub order: Order,
    /// From 1.
    pub page: u64,
    pub per_page: u64,
}

impl Default for Listing {
    fn default() -> Listing {
        Listing {
            text: String::new(),
            namespace: None,
            os: None,
            architecture: None,
            order: Order::Relevance,
            page: 1,
            per_page: 20,
        }
    }
}

/// A tag with what it points at: one image, or an index's images.
#[derive(Debug, Clone, Serialize)]
pub struct TagRow {
    pub name: String,
    pub digest: String,
    pub media_type: String,
    /// Unix milliseconds.
    pub pushed_at: i64,
    pub images: Vec<PlatformImage>,
}

/// An image manifest: its platform (when its config names one) and compressed size.
#[derive(Debug, Clone, Serialize, FromQueryResult)]
pub struct PlatformImage {
    pub digest: String,
    pub os: Option<String>,
    pub architecture: Option<String>,
    pub variant: Option<String>,
    pub size: Option<i64>,
}

#[derive(FromQueryResult)]
struct TagQueryRow {
    name: String,
    updated_at: i64,
    manifest_id: i64,
    digest: String,
    media_type: String,
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
    image_size: Option<i64>,
}

#[derive(FromQueryResult)]
struct ChildRow {
    parent_id: i64,
    digest: String,
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
    size: Option<i64>,
}

#[derive(FromQueryResult)]
struct Count {
    n: i64,
}

/// `LIKE` pattern text matching `s` literally (with `ESCAPE '\'`).
fn like_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The words of a search: lower-case letters and digits, as both indexes split names.
fn search_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(8)
        .map(str::to_lowercase)
        .collect()
}

/// Appends ` AND <repositories `r` that `viewer` may see>`.
fn push_visible(sql: &mut Sql, viewer: &Viewer) {
    match viewer {
        Viewer::Everything => {}
        Viewer::Public => {
            sql.push(" AND r.private = ").bind(false);
        }
        Viewer::PublicAndNamespaces(namespaces) => {
            sql.push(" AND (r.private = ").bind(false);
            for ns in namespaces {
                sql.push(" OR r.name LIKE ")
                    .bind(format!("{}/%", like_literal(ns)))
                    .push(" ESCAPE '\\'");
            }
            sql.push(")");
        }
    }
}

const SUMMARY_COLUMNS: &str = "r.name, r.description, r.private, r.pull_count, r.pushed_at, \
     (SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id) AS tag_count";

impl Storage {
    /// One page of the repositories `viewer` may see that match `listing`.
    pub async fn list_repositories(&self, viewer: &Viewer, listing: &Listing) -> Result<RepoPage> {
        let backend = self.db.get_database_backend();
        let words = search_words(&listing.text);
        let searching = !words.is_empty();
        let mut from = String::from(" FROM repositories r");
        let mut filter = Sql::default();
        filter.push(" WHERE 1 = 1");
        let mut rank = Sql::default();
        if searching {
            match backend {
                DbBackend::Sqlite => {
                    from.push_str(" JOIN repository_search s ON s.rowid = r.id");
                    let query: Vec<String> = words.iter().map(|w| format!("\"{w}\"*")).collect();
                    filter
                        .push(" AND repository_search MATCH ")
                        .bind(query.join(" "));
                    rank.push("bm25(repository_search)");
                }
                _ => {
                    let query: Vec<String> = words.iter().map(|w| format!("{w}:*")).collect();
                    let query = query.join(" & ");
                    filter
                        .push(" AND r.search @@ to_tsquery('simple', ")
                        .bind(query.clone())
                        .push(")");
                    rank.push("-ts_rank(r.search, to_tsquery('simple', ")
                        .bind(query)
                        .push("))");
                }
            }
        }
        push_visible(&mut filter, viewer);
        if let Some(ns) = &listing.namespace {
            filter
                .push(" AND r.name LIKE ")
                .bind(format!("{}/%", like_literal(ns)))
                .push(" ESCAPE '\\'");
        }
        if listing.os.is_some() || listing.architecture.is_some() {
            filter
                .push(" AND r.platforms LIKE ")
                .bind(crate::platforms::filter_pattern(
                    listing.os.as_deref(),
                    listing.architecture.as_deref(),
                ));
        }

        let mut count = Sql::default();
        count.push("SELECT COUNT(*) AS n").push(&from);
        count.append(&filter);
        let total = Count::find_by_statement(count.build(backend))
            .one(&self.db)
            .await?
            .map_or(0, |c| c.n as u64);

        let mut select = Sql::default();
        select.push("SELECT ").push(SUMMARY_COLUMNS).push(&from);
        select.append(&filter);
        select.push(" ORDER BY ");
        match (listing.order, searching) {
            (Order::Relevance, true) => {
                // An exact name (`alice/app`, or `app` in any namespace) first.
                let phrase = listing.text.trim().to_lowercase();
                select
                    .push("CASE WHEN r.name = ")
                    .bind(phrase.clone())
                    .push(" OR r.name LIKE ")
                    .bind(format!("%/{}", like_literal(&phrase)))
                    .push(" ESCAPE '\\' THEN 0 ELSE 1 END, ");
                select.append(&rank);
                select.push(", r.pull_count DESC");
            }
            (Order::Relevance | Order::MostPulled, _) => {
                select.push("r.pull_count DESC, r.pushed_at DESC");
            }
            (Order::RecentlyPushed, _) => {
                select.push("r.pushed_at DESC");
            }
            (Order::Name, _) => {}
        }
        select.push(if listing.order == Order::Name {
            "r.name"
        } else {
            ", r.name"
        });
        let per_page = listing.per_page.clamp(1, 100);
        select
            .push(" LIMIT ")
            .bind(per_page as i64)
            .push(" OFFSET ")
            .bind((listing.page.max(1) - 1).saturating_mul(per_page) as i64);
        let items = RepoSummary::find_by_statement(select.build(backend))
            .all(&self.db)
            .await?;
        Ok(RepoPage { items, total })
    }

    /// The repository's details, if it exists (access is the caller's to check).
    pub async fn repository_detail(&self, name: &str) -> Result<Option<RepoDetail>> {
        #[derive(FromQueryResult)]
        struct Row {
            name: String,
            description: String,
            private: bool,
            pull_count: i64,
            pushed_at: i64,
            tag_count: i64,
            readme: String,
        }
        let mut sql = Sql::default();
        sql.push("SELECT ")
            .push(SUMMARY_COLUMNS)
            .push(", r.readme FROM repositories r WHERE r.name = ")
            .bind(name.to_owned());
        let row = Row::find_by_statement(sql.build(self.db.get_database_backend()))
            .one(&self.db)
            .await?;
        Ok(row.map(|r| RepoDetail {
            summary: RepoSummary {
                name: r.name,
                description: r.description,
                private: r.private,
                pull_count: r.pull_count,
                pushed_at: r.pushed_at,
                tag_count: r.tag_count,
            },
            readme: r.readme,
        }))
    }

    /// One page of `repo`'s tags, most recently pushed first, each with its images.
    pub async fn tag_rows(&self, repo: &str, page: u64, per_page: u64) -> Result<Vec<TagRow>> {
        let backend = self.db.get_database_backend();
        let repo_id = self.repository_id(repo).await?;
        let per_page = per_page.clamp(1, 100);
        let mut sql = Sql::default();
        sql.push(
            "SELECT t.name, t.updated_at, m.id AS manifest_id, m.digest, m.media_type, m.os, \
             m.architecture, m.variant, m.image_size FROM tags t \
             JOIN manifests m ON m.id = t.manifest_id WHERE t.repository_id = ",
        )
        .bind(repo_id)
        .push(" ORDER BY t.updated_at DESC, t.name LIMIT ")
        .bind(per_page as i64)
        .push(" OFFSET ")
        .bind((page.max(1) - 1).saturating_mul(per_page) as i64);
        let rows = TagQueryRow::find_by_statement(sql.build(backend))
            .all(&self.db)
            .await?;
        let indexes: Vec<i64> = rows
            .iter()
            .filter(|r| r.image_size.is_none())
            .map(|r| r.manifest_id)
            .collect();
        let mut children: Vec<ChildRow> = Vec::new();
        if !indexes.is_empty() {
            let mut sql = Sql::default();
            sql.push(
                "SELECT c.manifest_id AS parent_id, cm.digest, cm.os, cm.architecture, \
                 cm.variant, cm.image_size AS size FROM manifest_children c \
                 JOIN manifests cm ON cm.digest = c.child_digest AND cm.repository_id = ",
            )
            .bind(repo_id)
            .push(" WHERE c.manifest_id IN (");
            for (i, id) in indexes.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(*id);
            }
            sql.push(")");
            children = ChildRow::find_by_statement(sql.build(backend))
                .all(&self.db)
                .await?;
        }
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut images: Vec<PlatformImage> = if r.image_size.is_some() {
                    vec![PlatformImage {
                        digest: r.digest.clone(),
                        os: r.os,
                        architecture: r.architecture,
                        variant: r.variant,
                        size: r.image_size,
                    }]
                } else {
                    children
                        .iter()
                        .filter(|c| c.parent_id == r.manifest_id)
                        // Build attestations sit in indexes as `unknown/unknown` images.
                        .filter(|c| c.os.as_deref() != Some("unknown"))
                        .map(|c| PlatformImage {
                            digest: c.digest.clone(),
                            os: c.os.clone(),
                            architecture: c.architecture.clone(),
                            variant: c.variant.clone(),
                            size: c.size,
                        })
                        .collect()
                };
                images.sort_by(|a, b| {
                    (&a.os, &a.architecture, &a.variant).cmp(&(&b.os, &b.architecture, &b.variant))
                });
                TagRow {
                    name: r.name,
                    digest: r.digest,
                    media_type: r.media_type,
                    pushed_at: r.updated_at,
                    images,
                }
            })
            .collect())
    }

    /// Sets what the repository's page says about it.
    pub async fn set_description(&self, repo: &str, description: &str, readme: &str) -> Result<()> {
        let txn: WriteTxn = self.write().await?;
        let Some(id) = find_repository(&*txn, repo).await? else {
            return Err(StorageError::NameUnknown(repo.to_owned()));
        };
        let mut sql = Sql::default();
        sql.push("UPDATE repositories SET description = ")
            .bind(description.to_owned())
            .push(", readme = ")
            .bind(readme.to_owned())
            .push(" WHERE id = ")
            .bind(id);
        txn.execute_raw(sql.build(txn.get_database_backend()))
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_words_are_lowercase_letters_and_digits() {
        assert_eq!(
            search_words("Alice/My-App v2"),
            ["alice", "my", "app", "v2"]
        );
        assert_eq!(search_words("\"*) OR 1=1 --"), ["or", "1", "1"]);
        assert!(search_words("  -/ ").is_empty());
    }

    #[test]
    fn like_patterns_match_literally() {
        assert_eq!(like_literal("a_b%c\\"), "a\\_b\\%c\\\\");
    }
}
