//! The HTML pages: one handler per page or form.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use berth_auth::namespaces::Kind;
use berth_auth::{AuthError, TokenScope};
use berth_storage::audit::{Action, Actor};
use berth_storage::explore::{Listing, Order, RepoDetail};
use berth_storage::manifests::Reference;
use berth_storage::repos::Viewer;
use minijinja::{context, Value};
use serde::Deserialize;

use crate::error::{PageResult, WebError};
use crate::session::Visitor;
use crate::view::{self, TagParams, Target, TAGS_PER_PAGE};
use crate::{audit, lifecycle, markdown, mirrors, orgs, templates, Web};

const REPOS_PER_PAGE: u64 = 20;
const MAX_DESCRIPTION_CHARS: usize = 100;
const MAX_README_BYTES: usize = 100_000;

/// Where clients reach this registry, for `docker pull` and `docker login` commands:
/// `[auth] external_url`'s host, else the request's `Host` (never `X-Forwarded-Host` or
/// `Forwarded`, which any client may send to have a page name its registry).
pub fn host(web: &Web, req: &HttpRequest) -> String {
    match &web.external_url {
        Some(url) => url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned(),
        None => berth_events::origin::request_host(req)
            .unwrap_or("localhost")
            .to_owned(),
    }
}

/// Renders `template` with `context` plus what every page shows (the signed-in user,
/// the CSRF token for the sign-out form, the search box's text).
pub(crate) fn render(
    web: &Web,
    visitor: &Visitor,
    req: &HttpRequest,
    status: StatusCode,
    template: &str,
    context: Value,
) -> PageResult {
    let html = templates::render(
        template,
        context! {
            // The later map wins: a page may override these.
            ..context! {
                user => visitor.user().map(|u| u.name.clone()),
                admin => visitor.user().is_some_and(|u| u.admin),
                csrf => visitor.csrf(),
                accounts => visitor.accounts,
                signup => visitor.accounts && web.signup,
                host => host(web, req),
                // The header's link to /mirrors.
                mirrors_link => web.proxies.iter().any(|p| mirrors::listed_to(visitor, p)),
            },
            ..context
        },
    )?;
    let mut res = HttpResponse::build(status);
    visitor.set_cookies(&mut res);
    Ok(res
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header((
            "Content-Security-Policy",
            "default-src 'self'; img-src * data:; frame-ancestors 'none'; form-action 'self'",
        ))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "same-origin"))
        .body(html))
}

pub(crate) fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header(("Location", location))
        .finish()
}

fn pages(total: u64, per_page: u64) -> u64 {
    total.div_ceil(per_page).max(1)
}

/// Query-string values, URL-encoded.
fn query_string(pairs: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter().filter(|(_, v)| !v.is_empty()))
        .finish()
}

fn nonempty(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

pub async fn explore(web: web::Data<Web>, visitor: Visitor, req: HttpRequest) -> PageResult {
    let listing = |order| Listing {
        order,
        per_page: 10,
        ..Listing::default()
    };
    let most_pulled = web
        .storage
        .list_repositories(&Viewer::Public, &listing(Order::MostPulled))
        .await?;
    let recently_pushed = web
        .storage
        .list_repositories(&Viewer::Public, &listing(Order::RecentlyPushed))
        .await?;
    render(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        "explore.html",
        context! {
            total => most_pulled.total,
            most_pulled => view::repo_items(&web, most_pulled.items),
            recently_pushed => view::repo_items(&web, recently_pushed.items),
        },
    )
}

#[derive(Deserialize)]
pub struct SearchParams {
    #[serde(default)]
    pub q: String,
    pub namespace: Option<String>,
    pub os: Option<String>,
    pub arch: Option<String>,
    pub page: Option<u64>,
    pub per_page: Option<u64>,
    /// `best` (match, the default), `pulls`, `stars` or `updated`.
    pub sort: Option<String>,
}

impl SearchParams {
    pub fn listing(&self, default_per_page: u64) -> Result<Listing, WebError> {
        let order = match self.sort.as_deref() {
            None | Some("" | "best") => Order::Relevance,
            Some("pulls") => Order::MostPulled,
            Some("stars") => Order::MostStarred,
            Some("updated") => Order::RecentlyPushed,
            Some(other) => {
                return Err(WebError::BadRequest(format!(
                    "sort={other}: best, pulls, stars or updated"
                )))
            }
        };
        Ok(Listing {
            text: self.q.clone(),
            namespace: nonempty(&self.namespace),
            os: nonempty(&self.os),
            architecture: nonempty(&self.arch),
            order,
            page: self.page.unwrap_or(1).max(1),
            per_page: self.per_page.unwrap_or(default_per_page).clamp(1, 100),
        })
    }

    /// The sort as the search form shows it.
    fn sort_name(&self) -> &str {
        self.sort
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or("best")
    }
}

pub async fn search(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    params: web::Query<SearchParams>,
) -> PageResult {
    let listing = params.listing(REPOS_PER_PAGE)?;
    let viewer = visitor.viewer(&web).await?;
    let found = web.storage.list_repositories(&viewer, &listing).await?;
    let namespace = listing.namespace.clone().unwrap_or_default();
    let os = listing.os.clone().unwrap_or_default();
    let arch = listing.architecture.clone().unwrap_or_default();
    let sort = params.sort_name().to_owned();
    let base = query_string(&[
        ("q", params.q.as_str()),
        ("namespace", &namespace),
        ("os", &os),
        ("arch", &arch),
        ("sort", &sort),
    ]);
    render(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        "search.html",
        context! {
            q => params.q.clone(),
            namespace, os, arch, sort,
            total => found.total,
            results => view::repo_items(&web, found.items),
            page => listing.page,
            pages => pages(found.total, listing.per_page),
            pager_base => format!("/search?{base}&"),
        },
    )
}

/// `?page=N` of a paginated page or API answer.
pub async fn repository_or_tag(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<TagParams>,
) -> PageResult {
    let host = host(&web, &req);
    let target = view::resolve(&web, &visitor, &path).await?;
    // `/r/<name>/tags` is the Tags tab, as `?tab=tags`.
    let tags_tab = matches!(target, Target::Tags(_)) || query.tab.as_deref() == Some("tags");
    match target {
        Target::Repository(repo) | Target::Tags(repo) => {
            let name = repo.summary.name.clone();
            let mirror = mirrors::mirror_of(&web, &name);
            let can_manage = visitor
                .may(&web, &name, repo.summary.private, "delete")
                .await?;
            let listing = query.listing()?;
            let (tags, matching) = view::tag_views(&web, &host, &name, &listing).await?;
            // The Overview's pull command: `latest`, else the newest tag.
            let latest_pull = match tags_tab {
                false => tags
                    .iter()
                    .find(|t| t.name == "latest")
                    .or(tags.first())
                    .map(|t| t.pull.clone()),
                true => None,
            };
            let filter = listing.filter.clone().unwrap_or_default();
            let sort = match listing.order {
                berth_storage::explore::TagOrder::Newest => "newest",
                berth_storage::explore::TagOrder::Name => "name",
            };
            let pager_base = format!(
                "/r/{name}?tab=tags&{}",
                url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("name", &filter)
                    .append_pair("sort", sort)
                    .finish()
            ) + "&";
            let readme_html =
                (!repo.readme.trim().is_empty()).then(|| markdown::render(&repo.readme));
            // Rules are the owners' to see and change, as the rest of Manage.
            let rules = match can_manage {
                true => web.storage.immutable_rules(Some(&name)).await?,
                false => Vec::new(),
            };
            let protecting = berth_storage::tag_rules::protecting(&rules);
            let immutable_tags: Vec<&str> = tags
                .iter()
                .filter(|t| protecting(&t.name).is_some())
                .map(|t| t.name.as_str())
                .collect();
            let namespace_scope = name.split_once('/').map(|(ns, _)| format!("{ns}/*"));
            let starred = match visitor.user() {
                Some(user) => web.storage.starred(&name, &user.name).await?,
                None => false,
            };
            // Usage and retention, as the rules: the owners' only, and not a pull-through
            // cache's (its repositories are its upstream's, never changed here).
            let lifecycle = match can_manage && mirror.is_none() {
                true => lifecycle::shown(lifecycle::repository_lifecycle(&web, &name).await),
                false => None,
            };
            render(
                &web,
                &visitor,
                &req,
                StatusCode::OK,
                "repository.html",
                context! {
                    pages => pages(matching, TAGS_PER_PAGE),
                    repo => context! { readme => repo.readme, ..Value::from_serialize(&repo.summary) },
                    tags, latest_pull, readme_html, can_manage, tags_tab, filter, sort, matching, starred,
                    rules, immutable_tags, namespace_scope, lifecycle, mirror, pager_base,
                    page => listing.page,
                },
            )
        }
        Target::Tag(repo, tag) => {
            let name = repo.summary.name.clone();
            // A multi-platform tag shows one platform at a time, chosen by
            // `?platform=os/arch[/variant]` (the first, else).
            let described = view::Described::One(query.platform.as_deref());
            let detail = view::tag_detail(&web, &name, &tag, described).await?;
            let platforms = detail.platforms.clone();
            let chosen = detail.chosen.clone();
            let by_digest = detail
                .images
                .first()
                .map(|i| format!("docker pull {host}/{name}@{}", i.digest));
            let can_manage = visitor
                .may(&web, &name, repo.summary.private, "delete")
                .await?;
            render(
                &web,
                &visitor,
                &req,
                StatusCode::OK,
                "tag.html",
                context! {
                    pull => view::pull_command(&host, &name, &tag),
                    mirror => mirrors::mirror_of(&web, &name),
                    tag => detail,
                    can_manage, platforms, chosen, by_digest,
                },
            )
        }
    }
}

#[derive(Deserialize)]
pub struct NamespaceParams {
    page: Option<u64>,
    /// What a members form did (see `orgs::members_notice`).
    members: Option<String>,
}

pub async fn namespace(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    name: web::Path<String>,
    query: web::Query<NamespaceParams>,
) -> PageResult {
    let viewer = visitor.viewer(&web).await?;
    let listing = Listing {
        namespace: Some(name.clone()),
        order: Order::Name,
        page: query.page.unwrap_or(1).max(1),
        per_page: REPOS_PER_PAGE,
        ..Listing::default()
    };
    let found = web.storage.list_repositories(&viewer, &listing).await?;
    // A proxy's prefix: the proxy, before its cached repositories.
    let proxy = mirrors::namespace_proxy(&web, &visitor, &viewer, &name).await?;
    // A namespace exists when it has repositories this visitor sees (on a registry
    // without accounts, the only kind), or a proxy or an account holds it (asked only
    // when neither of the others tells).
    if found.total == 0 && proxy.is_none() {
        let held = web
            .accounts
            .namespace_kind(&name)
            .await?
            .is_some_and(|kind| matches!(kind, Kind::User | Kind::Organization | Kind::Proxy));
        if !held {
            return Err(WebError::NotFound(format!("namespace {name}")).into());
        }
    }
    // Its owners (and admins) also see its usage and retention policy; a name that
    // cannot be a namespace has no owners.
    let scope = format!("{name}/*");
    let can_manage = berth_storage::tag_rules::Scope::parse(&scope).is_ok()
        && visitor.may(&web, &scope, true, "delete").await?;
    // Not a pull-through cache's namespace: its repositories are its upstream's.
    let lifecycle = match can_manage && proxy.is_none() {
        true => lifecycle::shown(
            lifecycle::namespace_lifecycle(
                &web,
                &name,
                found.items.iter().map(|r| (r.name.clone(), r.private)),
            )
            .await,
        ),
        false => None,
    };
    // An organization's members, to its members.
    let organization = orgs::members_view(&web, &visitor, &name).await?;
    let members_notice = query.members.as_deref().and_then(orgs::members_notice);
    render(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        "namespace.html",
        context! {
            lifecycle, can_manage, proxy, organization, members_notice,
            namespace => name.into_inner(),
            total => found.total,
            repos => view::repo_items(&web, found.items),
            page => listing.page,
            pages => pages(found.total, REPOS_PER_PAGE),
            pager_base => "?",
        },
    )
}

pub async fn signin_form(web: web::Data<Web>, visitor: Visitor, req: HttpRequest) -> PageResult {
    if !visitor.accounts {
        return Err(WebError::AccountsOff.into());
    }
    if visitor.user().is_some() {
        return Ok(see_other("/"));
    }
    render(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        "signin.html",
        context! {},
    )
}

#[derive(Deserialize)]
pub struct SigninForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

pub async fn signin(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    form: web::Form<SigninForm>,
) -> PageResult {
    if !web.accounts_on() {
        return Err(WebError::AccountsOff.into());
    }
    visitor.check_csrf(&form.csrf)?;
    let peer = req.peer_addr().map(|a| a.ip());
    // The token endpoint's rules: rate limits, one check per name at a time, remembered passwords.
    match web
        .accounts
        .check_password(&form.username, form.password.clone(), peer)
        .await
    {
        Ok(user) => {
            let signed_in = Actor::user(&user.name, peer).entry(Action::SignIn, user.name.as_str());
            web.accounts.audit(signed_in.detail("web sign-in")).await;
            let (secret, _) = web.accounts.start_session(user).await?;
            let mut res = see_other("/");
            res.add_cookie(&visitor.session_cookie(secret))
                .map_err(|e| WebError::BadRequest(e.to_string()))?;
            Ok(res)
        }
        Err(AuthError::BadCredentials) => render(
            &web,
            &visitor,
            &req,
            StatusCode::UNAUTHORIZED,
            "signin.html",
            context! { error => "Wrong username or password.", username => form.username.clone() },
        ),
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn signout(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    form: web::Form<CsrfForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    if let Some(cookie) = req.cookie(crate::session::SESSION_COOKIE) {
        web.accounts.end_session(cookie.value()).await?;
    }
    let mut res = see_other("/");
    res.add_cookie(&visitor.removed_session_cookie())
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    Ok(res)
}

#[derive(Deserialize)]
pub struct SettingsParams {
    /// `changed` after a password change, to say so.
    password: Option<String>,
}

pub async fn settings(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    params: web::Query<SettingsParams>,
) -> PageResult {
    let changed = params.password.as_deref() == Some("changed");
    settings_page(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        context! { password_changed => changed },
    )
    .await
}

pub(crate) async fn settings_page(
    web: &Web,
    visitor: &Visitor,
    req: &HttpRequest,
    status: StatusCode,
    extra: Value,
) -> PageResult {
    let user = visitor.signed_in()?;
    let tokens: Vec<Value> = web
        .accounts
        .tokens(&user.name)
        .await?
        .into_iter()
        .map(|t| {
            context! {
                id => t.id, name => t.name, scope => t.scope, created_at => t.created_at,
                last_used_at => t.last_used_at, expires_at => t.expires_at,
            }
        })
        .collect();
    let mut organizations = Vec::new();
    for org in web.accounts.memberships(&user.name).await? {
        let role = web.accounts.org_role(&org, &user.name).await?;
        organizations.push(context! { name => org, role => role.map(|r| r.name()) });
    }
    render(
        web,
        visitor,
        req,
        status,
        "settings.html",
        context! { ..extra, ..context! { tokens, organizations } },
    )
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    expires_in_days: String,
}

pub async fn create_token(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    form: web::Form<TokenForm>,
) -> PageResult {
    let user = visitor.signed_in()?;
    visitor.check_csrf(&form.csrf)?;
    let problem = |message: String| {
        settings_page(
            &web,
            &visitor,
            &req,
            StatusCode::BAD_REQUEST,
            context! { error => message },
        )
    };
    let name = form.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return problem("A token needs a name of 1 to 100 characters.".into()).await;
    }
    let scope = match TokenScope::parse(&form.scope) {
        Ok(s) => s,
        Err(e) => return problem(e.to_string()).await,
    };
    let days = match form.expires_in_days.trim() {
        "" => None,
        d => match d.parse::<u32>() {
            Ok(n @ 1..=3650) => Some(n),
            _ => return problem("Expiry must be 1 to 3650 days, or empty for never.".into()).await,
        },
    };
    let (_, secret) = web
        .accounts
        .by(visitor.actor())
        .create_token(&user.name, name, scope, days)
        .await?;
    let mut page = settings_page(
        &web,
        &visitor,
        &req,
        StatusCode::CREATED,
        context! { new_token => secret, new_token_name => name },
    )
    .await?;
    // The token is shown this once: kept by no cache (nor the browser's history).
    page.headers_mut().insert(
        actix_web::http::header::CACHE_CONTROL,
        actix_web::http::header::HeaderValue::from_static("no-store"),
    );
    Ok(page)
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
    id: i64,
}

pub async fn revoke_token(
    web: web::Data<Web>,
    visitor: Visitor,
    form: web::Form<RevokeForm>,
) -> PageResult {
    let user = visitor.signed_in()?;
    visitor.check_csrf(&form.csrf)?;
    match web
        .accounts
        .by(visitor.actor())
        .revoke_token(&user.name, form.id)
        .await
    {
        Ok(()) => Ok(see_other("/settings")),
        Err(AuthError::TokenInvalid(_)) => Err(WebError::NotFound("token".into()).into()),
        Err(e) => Err(e.into()),
    }
}

/// The repository, if `visitor` may manage it (owners, organization admins, admins).
async fn managed_repository(
    web: &Web,
    visitor: &Visitor,
    name: &str,
) -> Result<RepoDetail, WebError> {
    let repo = view::visible_repository(web, visitor, name)
        .await?
        .ok_or_else(|| WebError::NotFound(format!("repository {name}")))?;
    if !visitor
        .may(web, name, repo.summary.private, "delete")
        .await?
    {
        return Err(if visitor.accounts && visitor.user().is_none() {
            WebError::SignInRequired
        } else {
            WebError::Forbidden
        });
    }
    Ok(repo)
}

#[derive(Deserialize)]
pub struct DescriptionForm {
    #[serde(default)]
    csrf: String,
    repository: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    readme: String,
}

pub async fn set_description(
    web: web::Data<Web>,
    visitor: Visitor,
    form: web::Form<DescriptionForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    managed_repository(&web, &visitor, &form.repository).await?;
    // One line, like Docker Hub's short description.
    let description = form
        .description
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(WebError::BadRequest(format!(
            "a description has at most {MAX_DESCRIPTION_CHARS} characters"
        ))
        .into());
    }
    if form.readme.len() > MAX_README_BYTES {
        return Err(
            WebError::BadRequest(format!("a README has at most {MAX_README_BYTES} bytes")).into(),
        );
    }
    web.storage
        .set_description(&form.repository, &description, &form.readme)
        .await?;
    Ok(see_other(&format!("/r/{}", form.repository)))
}

#[derive(Deserialize)]
pub struct StarForm {
    #[serde(default)]
    csrf: String,
    repository: String,
    /// `true` to star, `false` to take the star back.
    star: bool,
}

/// `POST /star`: a signed-in user stars a repository they may see (one they
/// may not does not exist for them), or takes the star back.
pub async fn star(web: web::Data<Web>, visitor: Visitor, form: web::Form<StarForm>) -> PageResult {
    let user = visitor.signed_in()?.clone();
    visitor.check_csrf(&form.csrf)?;
    let Target::Repository(repo) = view::resolve(&web, &visitor, &form.repository).await? else {
        return Err(WebError::NotFound(format!("repository {}", form.repository)).into());
    };
    let name = repo.summary.name;
    match form.star {
        true => web.storage.star(&name, &user.name).await?,
        false => web.storage.unstar(&name, &user.name).await?,
    }
    Ok(see_other(&format!("/r/{name}")))
}

#[derive(Deserialize)]
pub struct VisibilityForm {
    #[serde(default)]
    csrf: String,
    repository: String,
    private: bool,
}

pub async fn set_visibility(
    web: web::Data<Web>,
    visitor: Visitor,
    form: web::Form<VisibilityForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    let managed = managed_repository(&web, &visitor, &form.repository).await;
    audit::refused(
        &web,
        &visitor,
        Action::VisibilityChanged,
        &form.repository,
        &managed,
    )
    .await;
    managed?;
    // A mirror's visibility follows its proxy's `access`.
    mirrors::refuse_mirror(&web, &form.repository)?;
    web.storage
        .by(visitor.actor())
        .set_private(&form.repository, form.private)
        .await?;
    Ok(see_other(&format!("/r/{}", form.repository)))
}

#[derive(Deserialize)]
pub struct DeleteTagParams {
    repository: String,
    tag: String,
}

pub async fn confirm_delete_tag(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    params: web::Query<DeleteTagParams>,
) -> PageResult {
    managed_repository(&web, &visitor, &params.repository).await?;
    mirrors::refuse_mirror(&web, &params.repository)?;
    render(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        "confirm_delete.html",
        context! { repository => params.repository.clone(), tag => params.tag.clone() },
    )
}

#[derive(Deserialize)]
pub struct DeleteTagForm {
    #[serde(default)]
    csrf: String,
    repository: String,
    tag: String,
}

pub async fn delete_tag(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    form: web::Form<DeleteTagForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    let target = format!("{}:{}", form.repository, form.tag);
    let managed = managed_repository(&web, &visitor, &form.repository).await;
    audit::refused(&web, &visitor, Action::TagDeleted, &target, &managed).await;
    managed?;
    mirrors::refuse_mirror(&web, &form.repository)?;
    let tag = match Reference::parse(&form.tag)? {
        tag @ Reference::Tag(_) => tag,
        Reference::Digest(_) => return Err(WebError::BadRequest("not a tag".into()).into()),
    };
    let deleted = web
        .storage_for(&req, &visitor)
        .delete_manifest(&form.repository, &tag, "web UI")
        .await
        .map_err(WebError::from);
    audit::refused(&web, &visitor, Action::TagDeleted, &target, &deleted).await;
    deleted?;
    Ok(see_other(&format!("/r/{}", form.repository)))
}
