//! Immutable tag rules in the web UI: the JSON API (`/api/v1/immutable-tag-rules`) and
//! the repository page's forms. Both are for the owners of the rule's namespace (the
//! user it is named after, the organization's admins) and registry admins: those who
//! may delete there, since a rule decides what can be deleted.
//!
//! The API's writes carry the session's CSRF token in an `X-CSRF-Token` header (the GET
//! answer gives it, as the pages' forms do), or come with a personal access token.

use actix_web::{web, HttpRequest, HttpResponse};
use berth_storage::tag_rules::{ImmutableRule, Scope};
use serde::Deserialize;
use serde_json::json;

use crate::error::{ApiResult, PageResult, WebError};
use crate::session::Visitor;
use crate::{mirrors, view, Web};

/// Refuses a visitor who may not manage the rules of `scope` (a repository or
/// `acme/*`): a repository they may not pull does not exist for them (404); else
/// 401 before sign-in, 403 after.
pub(crate) async fn check_manager(
    web: &Web,
    visitor: &Visitor,
    scope: &str,
) -> Result<(), WebError> {
    let parsed = Scope::parse(scope)?;
    // `acme/*` is judged as a repository of `acme`: deleting is a namespace right.
    if visitor.may(web, scope, true, "delete").await? {
        return Ok(());
    }
    if let Scope::Repository(name) = parsed {
        if view::visible_repository(web, visitor, name)
            .await?
            .is_none()
        {
            return Err(WebError::NotFound(format!("repository {name}")));
        }
    }
    Err(if visitor.accounts && visitor.user().is_none() {
        WebError::SignInRequired
    } else {
        WebError::Forbidden
    })
}

/// A rule by id, if `visitor` may manage its scope: one they may not manage is a
/// 404 like a missing one (its scope may name a private repository), except that a
/// visitor not signed in is asked to.
async fn managed_rule(web: &Web, visitor: &Visitor, id: i64) -> Result<ImmutableRule, WebError> {
    let not_found = || WebError::NotFound(format!("immutable tag rule {id}"));
    let rule = web
        .storage
        .immutable_rule(id)
        .await?
        .ok_or_else(not_found)?;
    check_manager_of_hidden(web, visitor, &rule.scope, not_found()).await?;
    Ok(rule)
}

/// [`check_manager`] for something found by id in `scope`: any refusal but a request
/// to sign in is `not_found`, so ids tell nothing about scopes one may not see.
pub(crate) async fn check_manager_of_hidden(
    web: &Web,
    visitor: &Visitor,
    scope: &str,
    not_found: WebError,
) -> Result<(), WebError> {
    match check_manager(web, visitor, scope).await {
        Ok(()) => Ok(()),
        Err(WebError::SignInRequired) => Err(WebError::SignInRequired),
        Err(_) => Err(not_found),
    }
}

#[derive(Deserialize)]
pub struct ScopeParam {
    #[serde(default)]
    scope: String,
}

/// `GET /api/v1/immutable-tag-rules?scope=acme/app` (the rules that apply to the
/// repository: its own and its namespace's) or `?scope=acme/*` (every rule in the
/// namespace).
pub async fn list(
    web: web::Data<Web>,
    visitor: Visitor,
    params: web::Query<ScopeParam>,
) -> ApiResult {
    check_manager(&web, &visitor, &params.scope).await?;
    let rules = web.storage.immutable_rules(Some(&params.scope)).await?;
    let mut res = HttpResponse::Ok();
    // The token for this visitor's writes; an anonymous one needs its cookie too.
    visitor.set_cookies(&mut res);
    Ok(res.json(json!({ "scope": params.scope, "rules": rules, "csrf": visitor.csrf() })))
}

#[derive(Deserialize)]
struct NewRule {
    scope: String,
    pattern: String,
}

/// `POST /api/v1/immutable-tag-rules` with `{"scope", "pattern"}`: 201 and the rule.
pub async fn add(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    body: web::Bytes,
) -> ApiResult {
    // Adding a rule only protects tags: a token that may push may.
    visitor.check_api_write(&req, "push")?;
    let new: NewRule = serde_json::from_slice(&body).map_err(|e| {
        WebError::BadRequest(format!("expected {{\"scope\": …, \"pattern\": …}}: {e}"))
    })?;
    check_manager(&web, &visitor, &new.scope).await?;
    mirrors::refuse_mirror(&web, &new.scope)?;
    let rule = web
        .storage
        .by(visitor.actor())
        .add_immutable_rule(&new.scope, &new.pattern)
        .await?;
    Ok(HttpResponse::Created().json(rule))
}

/// `DELETE /api/v1/immutable-tag-rules/<id>`: 204.
pub async fn remove(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    id: web::Path<i64>,
) -> ApiResult {
    // Removing one lets tags be deleted and overwritten.
    visitor.check_api_write(&req, "delete")?;
    let rule = managed_rule(&web, &visitor, *id).await?;
    web.storage
        .by(visitor.actor())
        .remove_immutable_rule(rule.id)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Whether `scope` is one whose rules apply to `repository` (the repository itself
/// or its namespace): the forms change only rules shown on the repository's page.
fn applies_to(scope: &str, repository: &str) -> bool {
    scope == repository
        || repository
            .split_once('/')
            .is_some_and(|(ns, _)| scope.strip_suffix("/*") == Some(ns))
}

fn back_to(repository: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", format!("/r/{repository}")))
        .finish()
}

#[derive(Deserialize)]
pub struct AddForm {
    #[serde(default)]
    csrf: String,
    repository: String,
    scope: String,
    #[serde(default)]
    pattern: String,
}

/// The repository page's form: a rule for the repository or its namespace.
pub async fn add_form(
    web: web::Data<Web>,
    visitor: Visitor,
    form: web::Form<AddForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    if !applies_to(&form.scope, &form.repository) {
        return Err(WebError::BadRequest(format!(
            "{} is not {} or its namespace",
            form.scope, form.repository
        ))
        .into());
    }
    check_manager(&web, &visitor, &form.scope).await?;
    mirrors::refuse_mirror(&web, &form.scope)?;
    web.storage
        .by(visitor.actor())
        .add_immutable_rule(&form.scope, form.pattern.trim())
        .await?;
    Ok(back_to(&form.repository))
}

#[derive(Deserialize)]
pub struct RemoveForm {
    #[serde(default)]
    csrf: String,
    repository: String,
    id: i64,
}

pub async fn remove_form(
    web: web::Data<Web>,
    visitor: Visitor,
    form: web::Form<RemoveForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    let rule = managed_rule(&web, &visitor, form.id).await?;
    if !applies_to(&rule.scope, &form.repository) {
        return Err(WebError::NotFound(format!("immutable tag rule {}", form.id)).into());
    }
    web.storage
        .by(visitor.actor())
        .remove_immutable_rule(rule.id)
        .await?;
    Ok(back_to(&form.repository))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repository_page_shows_its_own_and_its_namespace_rules() {
        assert!(applies_to("acme/app", "acme/app"));
        assert!(applies_to("acme/*", "acme/app"));
        assert!(applies_to("acme/*", "acme/team/app"));
        assert!(!applies_to("acme/*", "acme"));
        assert!(!applies_to("acme/other", "acme/app"));
        assert!(!applies_to("acm/*", "acme/app"));
        assert!(!applies_to("other/*", "acme/app"));
    }
}
