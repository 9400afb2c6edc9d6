//! Immutable tags: rules that keep existing tags from being overwritten or deleted.
//!
//! A rule is a glob over tag names (`v*`, `*` for every tag, `release-?.?`,
//! `[0-9]*`) in a scope: one repository (`acme/app`) or every repository of a
//! namespace (`acme/*`; the namespace is a repository name's first path component).
//! A tag that exists and matches a rule of its repository's scopes can be neither
//! pointed at another manifest nor deleted, by tag or by deleting its manifest.
//! Creating it, and pushing the same manifest to it again, are allowed.
//!
//! The checks run inside the write transaction of the manifest PUT or DELETE, on its
//! tag rows. Nothing is needed from garbage collection: a tagged manifest is never
//! garbage.

use std::collections::HashMap;

use berth_oci::names::validate_name;
use globset::{GlobBuilder, GlobMatcher};
use sea_orm::sea_query::{Expr, Func, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, JoinType, QueryFilter,
    QueryOrder, QuerySelect, RelationDef,
};
use serde::Serialize;

use crate::audit::Action;
use crate::entity::{immutable_tag_rule as rule, manifest, now_millis, tag};
use crate::error::{Result, StorageError};
use crate::manifests::Reference;
use crate::Storage;

/// A tag has at most 128 characters; a pattern may spend more on character classes.
pub const MAX_PATTERN_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;
/// A repository name has at most 255 bytes (`names`); `acme/*` fewer.
const MAX_SCOPE_LEN: usize = 255;

/// One immutable tag rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImmutableRule {
    pub id: i64,
    /// A repository name, or a namespace written `acme/*`.
    pub scope: String,
    /// A glob over tag names.
    pub pattern: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// `"v*" on acme/*`: how errors and listings name a rule.
impl std::fmt::Display for ImmutableRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} on {}", self.pattern, self.scope)
    }
}

impl From<rule::Model> for ImmutableRule {
    fn from(m: rule::Model) -> ImmutableRule {
        ImmutableRule {
            id: m.id,
            scope: m.scope,
            pattern: m.pattern,
            created_at: m.created_at,
        }
    }
}

impl ImmutableRule {
    /// Whether `tag` is one this rule protects.
    pub fn matches(&self, tag: &str) -> bool {
        protecting(std::slice::from_ref(self))(tag).is_some()
    }
}

/// The first of `rules` that protects a tag, each glob compiled once.
pub fn protecting<'r>(
    rules: &'r [ImmutableRule],
) -> impl Fn(&str) -> Option<&'r ImmutableRule> + 'r {
    let compiled: Vec<(&ImmutableRule, Option<GlobMatcher>)> = rules
        .iter()
        .map(|r| (r, matcher(&r.pattern).ok()))
        .collect();
    move |tag| {
        compiled
            .iter()
            // Stored patterns were checked when added; one that no longer compiles
            // protects every tag rather than none.
            .find(|(_, m)| m.as_ref().is_none_or(|m| m.is_match(tag)))
            .map(|(r, _)| *r)
    }
}

/// What a rule's scope names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// One repository, `acme/app`.
    Repository(&'a str),
    /// Every repository of a namespace, `acme/*` (holds `acme`).
    Namespace(&'a str),
}

/// Retention policies, and immutable tag rules, one namespace may have (its own and
/// its repositories' together): owners add them, and every garbage collection pass
/// plans each one.
pub const MAX_PER_NAMESPACE: u64 = 100;

impl<'a> Scope<'a> {
    /// The namespace the scope is in (a repository's first component).
    pub fn namespace(self) -> &'a str {
        match self {
            Scope::Namespace(ns) => ns,
            Scope::Repository(repo) => repo.split_once('/').map_or(repo, |(ns, _)| ns),
        }
    }

    /// Parses and checks a scope: a valid repository name, or `<namespace>/*` where
    /// the namespace is one path component of the repository name grammar.
    pub fn parse(scope: &'a str) -> Result<Scope<'a>> {
        let invalid = |why: String| StorageError::TagRuleInvalid(format!("scope {why}"));
        // Not echoed back when it cannot be a name anyway.
        if scope.len() > MAX_SCOPE_LEN {
            return Err(invalid(format!(
                "is {} bytes long; a repository name has at most 255",
                scope.len()
            )));
        }
        if let Some(namespace) = scope.strip_suffix("/*") {
            if namespace.contains('/') || validate_name(namespace).is_err() {
                return Err(invalid(format!(
                    "{scope:?}: a namespace is one lowercase path component \
                     ([a-z0-9] joined by '.', '_', '__' or '-'), written like acme/*"
                )));
            }
            return Ok(Scope::Namespace(namespace));
        }
        validate_name(scope).map_err(|e| invalid(format!("is not a repository name: {e}")))?;
        Ok(Scope::Repository(scope))
    }
}

/// The namespace scope (`acme/*`) covering `repo_name`, if it has a namespace.
fn namespace_scope(repo_name: &str) -> Option<String> {
    repo_name.split_once('/').map(|(ns, _)| format!("{ns}/*"))
}

/// The scopes whose rules apply to `repo_name`: its own and its namespace's.
fn scopes_of(repo_name: &str) -> Vec<String> {
    let mut scopes = vec![repo_name.to_owned()];
    scopes.extend(namespace_scope(repo_name));
    scopes
}

/// Checks a pattern: made of tag characters (`[A-Za-z0-9._-]`) and the wildcards
/// `*`, `?`, `[...]` and `[!...]`, and able to match some tag.
pub fn validate_pattern(pattern: &str) -> Result<()> {
    let invalid = |why: String| StorageError::TagRuleInvalid(format!("pattern {why}"));
    if pattern.is_empty() {
        return Err(invalid("is empty; use * for every tag".into()));
    }
    if pattern.len() > MAX_PATTERN_LEN {
        return Err(invalid(format!(
            "is {} bytes long; at most {MAX_PATTERN_LEN}",
            pattern.len()
        )));
    }
    let tag_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if let Some(c) = pattern
        .chars()
        .find(|&c| !tag_char(c) && !matches!(c, '*' | '?' | '[' | ']' | '!'))
    {
        return Err(invalid(format!(
            "{pattern:?} contains {c:?}: a pattern is made of tag characters \
             (letters, digits, '.', '_', '-') and the wildcards *, ? and [...]"
        )));
    }
    if pattern.starts_with(['.', '-']) {
        return Err(invalid(format!(
            "{pattern:?} can never match: a tag starts with a letter, a digit or '_'"
        )));
    }
    // Walk the atoms: each of `?`, a class or a literal matches one character.
    let mut min_len = 0;
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => continue,
            '?' => {}
            '[' => {
                let mut class = String::new();
                loop {
                    match chars.next() {
                        Some(']') if !class.is_empty() && class != "!" => break,
                        Some(c) if tag_char(c) || (c == '!' && class.is_empty()) => class.push(c),
                        Some(c) => {
                            return Err(invalid(format!(
                                "{pattern:?}: {c:?} cannot be in a character class"
                            )))
                        }
                        None => {
                            return Err(invalid(format!(
                                "{pattern:?}: a character class is not closed with ']'"
                            )))
                        }
                    }
                }
            }
            c if tag_char(c) => {}
            c => {
                return Err(invalid(format!(
                    "{pattern:?}: {c:?} is only allowed inside a character class, as [!...]"
                )))
            }
        }
        min_len += 1;
    }
    if min_len > MAX_TAG_LEN {
        return Err(invalid(format!(
            "{pattern:?} can never match: it needs {min_len} characters, a tag has at most {MAX_TAG_LEN}"
        )));
    }
    matcher(pattern).map_err(|e| invalid(format!("{pattern:?}: {e}")))?;
    Ok(())
}

/// The compiled glob. Tags contain no `/`; backslashes and braces are refused before.
fn matcher(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(false)
        .build()?
        .compile_matcher())
}

impl Storage {
    /// Adds a rule (or returns the one with the same scope and pattern).
    pub async fn add_immutable_rule(&self, scope: &str, pattern: &str) -> Result<ImmutableRule> {
        let parsed = Scope::parse(scope)?;
        validate_pattern(pattern)?;
        let txn = self.write().await?;
        let exists = rule::Entity::find()
            .filter(rule::Column::Scope.eq(scope))
            .filter(rule::Column::Pattern.eq(pattern))
            .one(&*txn)
            .await?
            .is_some();
        if !exists {
            refuse_beyond_limit(
                &*txn,
                rule::Entity,
                rule::Column::Scope,
                parsed,
                "immutable tag rules",
            )
            .await?;
        }
        rule::Entity::insert(rule::ActiveModel {
            scope: Set(scope.to_owned()),
            pattern: Set(pattern.to_owned()),
            created_at: Set(now_millis()),
            ..Default::default()
        })
        .on_conflict_do_nothing_on([rule::Column::Scope, rule::Column::Pattern])
        .exec(&*txn)
        .await?;
        let added = rule::Entity::find()
            .filter(rule::Column::Scope.eq(scope))
            .filter(rule::Column::Pattern.eq(pattern))
            .one(&*txn)
            .await?
            .ok_or_else(|| StorageError::TagRuleInvalid(format!("{pattern:?} on {scope}")))?;
        let detail = format!("added rule {}: {pattern}", added.id);
        self.audited(&*txn, Action::ImmutableTagRuleChanged, scope, Some(detail))
            .await?;
        txn.commit().await?;
        Ok(added.into())
    }

    /// Rules by id. `scope_filter`: none, every rule; a repository, the rules that
    /// apply to it (its own and its namespace's); a namespace `acme/*`, every rule in
    /// it (the namespace's and those of its repositories).
    pub async fn immutable_rules(&self, scope_filter: Option<&str>) -> Result<Vec<ImmutableRule>> {
        let mut q = rule::Entity::find();
        // A namespace's rules and its repositories': compared as strings here, since
        // `_` (valid in names) is a LIKE wildcard. Rules are an operator's short list.
        let mut prefix = None;
        if let Some(scope) = scope_filter {
            match Scope::parse(scope)? {
                Scope::Repository(repo) => q = q.filter(rule::Column::Scope.is_in(scopes_of(repo))),
                Scope::Namespace(ns) => prefix = Some(format!("{ns}/")),
            }
        }
        Ok(q.order_by_asc(rule::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .filter(|r| {
                prefix
                    .as_ref()
                    .is_none_or(|p| r.scope.starts_with(p.as_str()))
            })
            .map(ImmutableRule::from)
            .collect())
    }

    /// One rule, if it exists.
    pub async fn immutable_rule(&self, id: i64) -> Result<Option<ImmutableRule>> {
        Ok(rule::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(ImmutableRule::from))
    }

    pub async fn remove_immutable_rule(&self, id: i64) -> Result<()> {
        let txn = self.write().await?;
        let found = rule::Entity::find_by_id(id).one(&*txn).await?;
        let removed = rule::Entity::delete_by_id(id).exec(&*txn).await?;
        if let Some(rule) = found.filter(|_| removed.rows_affected > 0) {
            let detail = format!("removed rule {id}: {}", rule.pattern);
            self.audited(
                &*txn,
                Action::ImmutableTagRuleChanged,
                &rule.scope,
                Some(detail),
            )
            .await?;
        }
        txn.commit().await?;
        match removed.rows_affected {
            0 => Err(StorageError::TagRuleUnknown(id)),
            _ => Ok(()),
        }
    }
}

/// Refuses (`TagImmutable`) when one of `tags` exists in the repository and a rule
/// of its scopes protects it: for an overwrite (`new_manifest`: the digest the tags
/// are to point at) when it points at another manifest; for a delete (`None`) always.
pub(crate) async fn check_tags_mutable(
    db: &impl ConnectionTrait,
    repo_name: &str,
    repo_id: i64,
    tags: &[String],
    new_manifest: Option<&str>,
) -> Result<()> {
    if tags.is_empty() {
        return Ok(());
    }
    let rules: Vec<ImmutableRule> = rule::Entity::find()
        .filter(rule::Column::Scope.is_in(scopes_of(repo_name)))
        .order_by_asc(rule::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(ImmutableRule::from)
        .collect();
    if rules.is_empty() {
        return Ok(());
    }
    let protecting = protecting(&rules);
    let protected: Vec<(&String, &ImmutableRule)> = tags
        .iter()
        .filter_map(|t| protecting(t).map(|r| (t, r)))
        .collect();
    if protected.is_empty() {
        return Ok(());
    }
    serialize_protected_writes(db, repo_id).await?;
    let existing: HashMap<String, String> = tag::Entity::find()
        .select_only()
        .column(tag::Column::Name)
        .column_as(manifest::Column::Digest, "digest")
        .join(JoinType::InnerJoin, tag_manifest())
        .filter(tag::Column::RepositoryId.eq(repo_id))
        .filter(tag::Column::Name.is_in(protected.iter().map(|(t, _)| t.as_str())))
        .into_tuple::<(String, String)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    for (t, r) in protected {
        match existing.get(t.as_str()) {
            Some(digest) if Some(digest.as_str()) != new_manifest => {
                return Err(StorageError::TagImmutable {
                    tag: t.clone(),
                    rule: r.to_string(),
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Refuses the delete of `reference` if it would remove a protected tag: by tag,
/// that tag; by digest, every tag on the manifest (they go with it).
pub(crate) async fn check_deletable(
    db: &impl ConnectionTrait,
    repo_name: &str,
    repo_id: i64,
    reference: &Reference,
) -> Result<()> {
    let tags = match reference {
        Reference::Tag(t) => vec![t.clone()],
        Reference::Digest(d) => {
            tag::Entity::find()
                .select_only()
                .column(tag::Column::Name)
                .join(JoinType::InnerJoin, tag_manifest())
                .filter(tag::Column::RepositoryId.eq(repo_id))
                .filter(manifest::Column::Digest.eq(d.as_str()))
                .into_tuple::<String>()
                .all(db)
                .await?
        }
    };
    check_tags_mutable(db, repo_name, repo_id, &tags, None).await
}

/// `tags` joined to the manifest each points at (the entities declare no relations).
fn tag_manifest() -> RelationDef {
    tag::Entity::belongs_to(manifest::Entity)
        .from(tag::Column::ManifestId)
        .to(manifest::Column::Id)
        .into()
}

/// PostgreSQL: concurrent writes of protected tags in one repository go one at a
/// time (a transaction-scoped advisory lock), so two first pushes of the same
/// immutable tag cannot both see it missing and the second overwrite the first.
/// Taken only by these writes, so it never orders against other locks. SQLite has
/// one writer at a time already.
async fn serialize_protected_writes(db: &impl ConnectionTrait, repo_id: i64) -> Result<()> {
    /// The two-key form's first key: "tag" in ASCII (apart from the one-key locks).
    const PROTECTED_TAGS_LOCK: i32 = 0x0074_6167;
    if db.get_database_backend() == DbBackend::Postgres {
        // Ids past i32 wrap: two repositories sharing a lock only wait for each other.
        let lock = Query::select()
            .expr(
                Func::cust("pg_advisory_xact_lock")
                    .arg(PROTECTED_TAGS_LOCK)
                    .arg(Expr::val(repo_id as i32)),
            )
            .to_owned();
        db.execute(&lock).await?;
    }
    Ok(())
}

/// `Limit` when `scope`'s namespace has [`MAX_PER_NAMESPACE`] rows in `table` (by its
/// scope `column`; `what`, for the message) already, counted in `db` (the adding
/// transaction).
pub(crate) async fn refuse_beyond_limit(
    db: &impl ConnectionTrait,
    table: impl sea_orm::sea_query::IntoTableRef,
    column: impl sea_orm::sea_query::IntoColumnRef + Copy,
    scope: Scope<'_>,
    what: &'static str,
) -> Result<()> {
    use sea_orm::sea_query::{Asterisk, Cond, ExprTrait};
    let namespace = scope.namespace();
    // `ns/*` and `ns/app` are under `ns/`; a one-component repository is its own.
    let count = Query::select()
        .expr(Func::count(Expr::col(Asterisk)))
        .from(table)
        .cond_where(
            Cond::any()
                .add(Expr::col(column).eq(namespace))
                .add(crate::repos::name_under(Expr::col(column), namespace)),
        )
        .to_owned();
    let counted: i64 = match db.query_one(&count).await? {
        Some(row) => row.try_get_by_index(0)?,
        None => 0,
    };
    if counted as u64 >= MAX_PER_NAMESPACE {
        return Err(StorageError::Limit {
            holder: namespace.to_owned(),
            what,
            limit: MAX_PER_NAMESPACE,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(pattern: &str) -> ImmutableRule {
        validate_pattern(pattern).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        ImmutableRule {
            id: 1,
            scope: "acme/*".into(),
            pattern: pattern.into(),
            created_at: 0,
        }
    }

    #[test]
    fn globs_match_whole_tags() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("*", &["latest", "v1", "_x"], &[]),
            (
                "v*",
                &["v1", "v1.0.3", "v"],
                &["1.0", "V1", "xv1", "latest"],
            ),
            (
                "release-?.?",
                &["release-1.2", "release-a.b"],
                &["release-1.23", "release-1"],
            ),
            ("[0-9]*", &["1", "2024.01"], &["v1", "_1"]),
            ("[!v]*", &["1.0", "latest"], &["v1"]),
            ("latest", &["latest"], &["latest2", "Latest", "xlatest"]),
            ("*-rc", &["1.0-rc", "-rc"], &["1.0-rc1"]),
        ];
        for (pattern, yes, no) in cases {
            let r = rule(pattern);
            for t in *yes {
                assert!(r.matches(t), "{pattern} should match {t}");
            }
            for t in *no {
                assert!(!r.matches(t), "{pattern} should not match {t}");
            }
        }
    }

    fn refused(pattern: &str) -> String {
        match validate_pattern(pattern) {
            Err(StorageError::TagRuleInvalid(m)) => m,
            other => panic!("{pattern:?} was not refused: {other:?}"),
        }
    }

    #[test]
    fn hostile_patterns_are_refused_with_a_reason() {
        assert!(refused("").contains("empty"));
        assert!(refused("..").contains("can never match"));
        assert!(refused("-x*").contains("can never match"));
        assert!(refused("/").contains("contains '/'"));
        assert!(refused("a/b*").contains("contains '/'"));
        assert!(refused(&"v".repeat(10 * 1024)).contains("at most 255"));
        assert!(refused("vé*").contains("contains 'é'"));
        assert!(refused("v\u{0}").contains("contains"));
        assert!(refused("{a,b}").contains("contains '{'"));
        assert!(refused("a\\*").contains("contains '\\\\'"));
        assert!(refused("v[1").contains("not closed"));
        assert!(refused("v[]").contains("cannot be in a character class"));
        assert!(refused("v[!]").contains("cannot be in a character class"));
        assert!(refused("v[/]").contains("contains '/'"));
        assert!(refused("v!").contains("only allowed inside a character class"));
        assert!(refused("v]").contains("only allowed inside a character class"));
        assert!(refused(&"?".repeat(129)).contains("at most 128"));
        // The message names the pattern and why it is refused.
        let m = StorageError::TagRuleInvalid(refused("..")).to_string();
        assert!(
            m.starts_with("invalid immutable tag rule: pattern \"..\""),
            "{m}"
        );
    }

    #[test]
    fn patterns_that_can_match_a_tag_are_accepted() {
        for ok in [
            "*",
            "v*",
            "*.*",
            "?",
            "release-?.?",
            "[0-9]*",
            "[!v]*",
            "[a-z][a-z]",
            "*-rc",
            "**",
            &"?".repeat(128),
            &format!("{}*", "a".repeat(128)),
        ] {
            validate_pattern(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn scopes_are_repositories_or_namespaces() {
        assert_eq!(
            Scope::parse("acme/app").unwrap(),
            Scope::Repository("acme/app")
        );
        assert_eq!(Scope::parse("app").unwrap(), Scope::Repository("app"));
        assert_eq!(
            Scope::parse("acme/team/app").unwrap(),
            Scope::Repository("acme/team/app")
        );
        assert_eq!(Scope::parse("acme/*").unwrap(), Scope::Namespace("acme"));
        for bad in [
            "",
            "*",
            "/*",
            "acme/team/*",
            "Acme/*",
            "acme/",
            "acme/*/x",
            "acme/app*",
            "..",
            "acme//app",
            "é/*",
        ] {
            assert!(
                matches!(Scope::parse(bad), Err(StorageError::TagRuleInvalid(_))),
                "{bad:?}"
            );
        }
        match Scope::parse(&"a".repeat(10 * 1024)) {
            Err(StorageError::TagRuleInvalid(m)) => {
                assert_eq!(
                    m,
                    "scope is 10240 bytes long; a repository name has at most 255"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_repository_is_covered_by_its_first_path_component() {
        assert_eq!(namespace_scope("acme/app").as_deref(), Some("acme/*"));
        assert_eq!(namespace_scope("acme/team/app").as_deref(), Some("acme/*"));
        assert_eq!(namespace_scope("app"), None);
    }

    #[test]
    fn the_error_names_the_tag_and_the_rule() {
        let e = StorageError::TagImmutable {
            tag: "v1.0".into(),
            rule: rule("v*").to_string(),
        };
        assert_eq!(
            e.to_string(),
            "tag v1.0 is immutable (rule \"v*\" on acme/*): it can be neither overwritten nor deleted"
        );
    }
}
