//! What the web UI browses: repository listings and full-text search, a repository's
//! details and its tags with their platforms and sizes, descriptions and READMEs.
//!
//! Listings are single SQL queries (the full-text index is SQLite's FTS5 or a
//! PostgreSQL tsvector, see migration m0004), filtered by what the viewer may pull.
//! They are built with sea-query like every other statement; only the full-text parts
//! differ per backend (FTS5's `MATCH` and `bm25`, PostgreSQL's `@@`, `to_tsquery` and
//! `ts_rank`).

use sea_orm::sea_query::extension::postgres::PgBinOper;
use sea_orm::sea_query::extension::sqlite::SqliteBinOper;
use sea_orm::sea_query::{
    Alias, Asterisk, Condition, Expr, ExprTrait, Func, JoinType, LikeExpr, Order as Direction,
    Query, SelectStatement, SimpleExpr,
};
use sea_orm::{ColumnTrait, DbBackend, EntityTrait, FromQueryResult, QueryFilter};
use serde::Serialize;

use crate::db::{query_as, WriteTxn};
use crate::entity::{manifest, manifest_child, repository, repository_star, tag};
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
    pub star_count: i64,
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
    MostStarred,
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
    /// Unix milliseconds; `None` when never pulled.
    pub last_pulled_at: Option<i64>,
    pub images: Vec<PlatformImage>,
}

/// Which tags of a repository a page lists, in what order.
#[derive(Debug, Clone)]
pub struct TagListing {
    /// From 1.
    pub page: u64,
    pub per_page: u64,
    /// Only tags whose name contains this.
    pub filter: Option<String>,
    pub order: TagOrder,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TagOrder {
    /// Most recently pushed first.
    Newest,
    /// By name, A to Z.
    Name,
}

/// One page of tags and how many match in all.
#[derive(Debug)]
pub struct TagPage {
    pub total: u64,
    pub rows: Vec<TagRow>,
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
    last_pulled_at: Option<i64>,
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

/// Rows skipped before page `page` (from 1) of `per_page` rows.
fn offset(page: u64, per_page: u64) -> u64 {
    // `Ord::`: sea-query's `ExprTrait` has a `max` and `min` too.
    Ord::min(
        (Ord::max(page, 1) - 1).saturating_mul(per_page),
        i64::MAX as u64,
    )
}

/// The words of a search: lower-case letters and digits, as both indexes split names.
fn search_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(8)
        .map(str::to_lowercase)
        .collect()
}

/// `LIKE` matching `pattern` (made with [`like_literal`]) with `\` as the escape.
fn like(pattern: String) -> LikeExpr {
    LikeExpr::new(pattern).escape('\\')
}

/// A column of the repository `r` that listings select from.
fn r(column: repository::Column) -> Expr {
    Expr::col((Alias::new("r"), column))
}

/// The repositories `r` that `viewer` may see.
/// Which repositories a listing shows `viewer`: all of their own namespaces', and of
/// others' the public ones with a tag (an untagged repository has nothing to pull by
/// name, so Explore, search and namespace counts leave it out; its owners see it).
fn visible(viewer: &Viewer) -> Condition {
    let public = || {
        Condition::all()
            .add(r(repository::Column::Private).eq(false))
            .add(has_tag())
    };
    match viewer {
        Viewer::Everything => Condition::all(),
        Viewer::Public => public(),
        Viewer::PublicAndNamespaces(namespaces) => {
            let mut any = Condition::any().add(public());
            for ns in namespaces {
                any = any
                    .add(r(repository::Column::Name).like(like(format!("{}/%", like_literal(ns)))));
            }
            any
        }
    }
}

/// `EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = r.id)`.
fn has_tag() -> SimpleExpr {
    let t = Alias::new("t");
    Expr::exists(
        Query::select()
            .expr(Expr::val(1))
            .from_as(tag::Entity, t.clone())
            .and_where(
                Expr::col((t, tag::Column::RepositoryId))
                    .equals((Alias::new("r"), repository::Column::Id)),
            )
            .to_owned(),
    )
}

/// `SELECT … FROM repositories r`, to which listings add what they select.
fn from_repositories() -> SelectStatement {
    Query::select()
        .from_as(repository::Entity, Alias::new("r"))
        .to_owned()
}

/// Selects a [`RepoSummary`] of the repository `r`.
fn summary_columns(select: &mut SelectStatement) -> &mut SelectStatement {
    use repository::Column as R;
    let t = Alias::new("t");
    let tag_count = Query::select()
        .expr(Func::count(Expr::col(Asterisk)))
        .from_as(tag::Entity, t.clone())
        .and_where(Expr::col((t, tag::Column::RepositoryId)).equals((Alias::new("r"), R::Id)))
        .to_owned();
    select
        .exprs([
            r(R::Name),
            r(R::Description),
            r(R::Private),
            r(R::PullCount),
            r(R::PushedAt),
        ])
        .expr_as(tag_count, Alias::new("tag_count"))
        .expr_as(star_count(), Alias::new("star_count"))
}

/// `(SELECT COUNT(*) FROM repository_stars s WHERE s.repository_id = r.id)`.
fn star_count() -> SimpleExpr {
    let s = Alias::new("s");
    Query::select()
        .expr(Func::count(Expr::col(Asterisk)))
        .from_as(repository_star::Entity, s.clone())
        .and_where(
            Expr::col((s, repository_star::Column::RepositoryId))
                .equals((Alias::new("r"), repository::Column::Id)),
        )
        .to_owned()
        .into()
}

impl Storage {
    /// One page of the repositories `viewer` may see that match `listing`.
    pub async fn list_repositories(&self, viewer: &Viewer, listing: &Listing) -> Result<RepoPage> {
        use repository::Column as R;
        let backend = self.db.get_database_backend();
        let words = search_words(&listing.text);
        let searching = !words.is_empty();
        let mut from = from_repositories();
        let mut filter = Condition::all();
        // How well a repository matches the words, and which way is better.
        let mut rank = None;
        if searching {
            match backend {
                DbBackend::Sqlite => {
                    // The FTS5 table's hidden column named after it, for MATCH and bm25.
                    let index = Alias::new("repository_search");
                    let s = Alias::new("s");
                    from.join_as(
                        JoinType::InnerJoin,
                        index.clone(),
                        s.clone(),
                        Expr::col((s, Alias::new("rowid"))).equals((Alias::new("r"), R::Id)),
                    );
                    let query: Vec<String> = words.iter().map(|w| format!("\"{w}\"*")).collect();
                    filter = filter.add(
                        Expr::col(index.clone()).binary(SqliteBinOper::Match, query.join(" ")),
                    );
                    rank = Some((
                        Expr::from(Func::cust("bm25").arg(Expr::col(index))),
                        Direction::Asc,
                    ));
                }
                _ => {
                    let query: Vec<String> = words.iter().map(|w| format!("{w}:*")).collect();
                    let query = query.join(" & ");
                    let tsquery = || {
                        Func::cust("to_tsquery")
                            .arg(Expr::Constant("simple".into()))
                            .arg(query.clone())
                    };
                    let search = || Expr::col((Alias::new("r"), Alias::new("search")));
                    filter = filter.add(search().binary(PgBinOper::Matches, tsquery()));
                    let ts_rank = Func::cust("ts_rank").arg(search()).arg(tsquery());
                    rank = Some((Expr::from(ts_rank), Direction::Desc));
                }
            }
        }
        filter = filter.add(visible(viewer));
        if let Some(ns) = &listing.namespace {
            filter = filter.add(r(R::Name).like(like(format!("{}/%", like_literal(ns)))));
        }
        if listing.os.is_some() || listing.architecture.is_some() {
            filter = filter.add(r(R::Platforms).like(crate::platforms::filter_pattern(
                listing.os.as_deref(),
                listing.architecture.as_deref(),
            )));
        }

        let mut count = from.clone();
        count
            .expr_as(Func::count(Expr::col(Asterisk)), Alias::new("n"))
            .cond_where(filter.clone());
        let total = query_as::<Count>(&self.db, &count)
            .await?
            .first()
            .map_or(0, |c| c.n as u64);

        let mut select = from;
        summary_columns(&mut select).cond_where(filter);
        match (listing.order, rank) {
            (Order::Relevance, Some((rank, rank_order))) => {
                // An exact name (`alice/app`, or `app` in any namespace) first.
                let phrase = listing.text.trim().to_lowercase();
                let exact = r(R::Name)
                    .eq(phrase.clone())
                    .or(r(R::Name).like(like(format!("%/{}", like_literal(&phrase)))));
                select
                    .order_by_expr(Expr::case(exact, 0).finally(1).into(), Direction::Asc)
                    .order_by_expr(rank, rank_order)
                    .order_by_expr(r(R::PullCount), Direction::Desc);
            }
            (Order::Relevance | Order::MostPulled, _) => {
                select
                    .order_by_expr(r(R::PullCount), Direction::Desc)
                    .order_by_expr(r(R::PushedAt), Direction::Desc);
            }
            (Order::MostStarred, _) => {
                select
                    .order_by_expr(star_count(), Direction::Desc)
                    .order_by_expr(r(R::PullCount), Direction::Desc);
            }
            (Order::RecentlyPushed, _) => {
                select.order_by_expr(r(R::PushedAt), Direction::Desc);
            }
            (Order::Name, _) => {}
        }
        let per_page = listing.per_page.clamp(1, 100);
        select
            .order_by_expr(r(R::Name), Direction::Asc)
            .limit(per_page)
            .offset(offset(listing.page, per_page));
        let items = query_as(&self.db, &select).await?;
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
            star_count: i64,
            readme: String,
        }
        let mut select = from_repositories();
        summary_columns(&mut select)
            .expr(r(repository::Column::Readme))
            .and_where(r(repository::Column::Name).eq(name));
        let row = query_as::<Row>(&self.db, &select).await?.into_iter().next();
        Ok(row.map(|r| RepoDetail {
            summary: RepoSummary {
                name: r.name,
                description: r.description,
                private: r.private,
                pull_count: r.pull_count,
                pushed_at: r.pushed_at,
                tag_count: r.tag_count,
                star_count: r.star_count,
            },
            readme: r.readme,
        }))
    }

    /// One page of `repo`'s tags as `listing` asks (filtered by name, newest first or
    /// by name), each with its images, and how many match.
    pub async fn tag_rows(&self, repo: &str, listing: &TagListing) -> Result<TagPage> {
        use manifest::Column as M;
        let repo_id = self.repository_id(repo).await?;
        let per_page = listing.per_page.clamp(1, 100);
        let page = listing.page;
        let (t, m) = (Alias::new("t"), Alias::new("m"));
        let mut filter =
            Condition::all().add(Expr::col((t.clone(), tag::Column::RepositoryId)).eq(repo_id));
        if let Some(text) = listing.filter.as_deref().filter(|f| !f.is_empty()) {
            filter = filter.add(
                Expr::col((t.clone(), tag::Column::Name))
                    .like(like(format!("%{}%", like_literal(text)))),
            );
        }
        let count = Query::select()
            .expr_as(Func::count(Expr::col(Asterisk)), Alias::new("n"))
            .from_as(tag::Entity, t.clone())
            .cond_where(filter.clone())
            .to_owned();
        let total = query_as::<Count>(&self.db, &count)
            .await?
            .first()
            .map_or(0, |c| c.n as u64);
        let mut select = Query::select()
            .columns([
                (t.clone(), tag::Column::Name),
                (t.clone(), tag::Column::UpdatedAt),
                (t.clone(), tag::Column::LastPulledAt),
            ])
            .expr_as(Expr::col((m.clone(), M::Id)), Alias::new("manifest_id"))
            .columns([
                (m.clone(), M::Digest),
                (m.clone(), M::MediaType),
                (m.clone(), M::Os),
                (m.clone(), M::Architecture),
                (m.clone(), M::Variant),
                (m.clone(), M::ImageSize),
            ])
            .from_as(tag::Entity, t.clone())
            .join_as(
                JoinType::InnerJoin,
                manifest::Entity,
                m.clone(),
                Expr::col((m.clone(), M::Id)).equals((t.clone(), tag::Column::ManifestId)),
            )
            .cond_where(filter)
            .to_owned();
        if listing.order == TagOrder::Newest {
            select.order_by((t.clone(), tag::Column::UpdatedAt), Direction::Desc);
        }
        select
            .order_by((t, tag::Column::Name), Direction::Asc)
            .limit(per_page)
            .offset(offset(page, per_page));
        let rows: Vec<TagQueryRow> = query_as(&self.db, &select).await?;
        let indexes: Vec<i64> = rows
            .iter()
            .filter(|r| r.image_size.is_none())
            .map(|r| r.manifest_id)
            .collect();
        let mut children: Vec<ChildRow> = Vec::new();
        if !indexes.is_empty() {
            let (c, cm) = (Alias::new("c"), Alias::new("cm"));
            let select = Query::select()
                .expr_as(
                    Expr::col((c.clone(), manifest_child::Column::ManifestId)),
                    Alias::new("parent_id"),
                )
                .columns([
                    (cm.clone(), M::Digest),
                    (cm.clone(), M::Os),
                    (cm.clone(), M::Architecture),
                    (cm.clone(), M::Variant),
                ])
                .expr_as(Expr::col((cm.clone(), M::ImageSize)), Alias::new("size"))
                .from_as(manifest_child::Entity, c.clone())
                .join_as(
                    JoinType::InnerJoin,
                    manifest::Entity,
                    cm.clone(),
                    Expr::col((cm.clone(), M::Digest))
                        .equals((c.clone(), manifest_child::Column::ChildDigest))
                        .and(Expr::col((cm, M::RepositoryId)).eq(repo_id)),
                )
                .and_where(Expr::col((c, manifest_child::Column::ManifestId)).is_in(indexes))
                .to_owned();
            children = query_as(&self.db, &select).await?;
        }
        let rows = rows
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
                    last_pulled_at: r.last_pulled_at,
                    images,
                }
            })
            .collect();
        Ok(TagPage { total, rows })
    }

    /// Sets what the repository's page says about it.
    pub async fn set_description(&self, repo: &str, description: &str, readme: &str) -> Result<()> {
        let txn: WriteTxn = self.write().await?;
        let Some(id) = find_repository(&*txn, repo).await? else {
            return Err(StorageError::NameUnknown(repo.to_owned()));
        };
        repository::Entity::update_many()
            .col_expr(repository::Column::Description, Expr::value(description))
            .col_expr(repository::Column::Readme, Expr::value(readme))
            .filter(repository::Column::Id.eq(id))
            .exec(&*txn)
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
