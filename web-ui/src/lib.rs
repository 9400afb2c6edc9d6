//! Berth's web UI: explore, search, repository and tag pages, sign-in and token
//! settings, and the JSON API behind them, served by `berthd` at `/`.
//!
//! Pages are rendered on the server (minijinja templates embedded in the binary) and
//! work without JavaScript; `static/app.js` only adds copy buttons and a search
//! shortcut. Access follows the registry's rules: a repository a visitor may not pull
//! does not exist for them, in pages, search results and API answers alike.

mod account;
mod api;
mod audit;
mod docker_search;
mod error;
mod error_pages;
mod lifecycle;
mod markdown;
mod mirrors;
mod orgs;
mod pages;
mod session;
mod tag_rules;
mod templates;
mod untagged;
mod view;
mod webhooks;

use std::sync::Arc;

use actix_web::{guard, middleware, web, HttpResponse};
use berth_auth::Accounts;
use berth_proxy::Proxies;
use berth_storage::Storage;

pub use error::WebError;

/// Whether the registry has accounts (token authentication on), asked per request:
/// an open registry turns them on when its first user is added.
pub type AccountsOn = Arc<dyn Fn() -> bool + Send + Sync>;

/// What the web UI's handlers share.
pub struct Web {
    storage: Storage,
    /// Users, tokens, sessions and access decisions; its password checks (rate limits,
    /// remembered passwords) are the token endpoint's.
    accounts: Accounts,
    accounts_on: AccountsOn,
    /// Where clients reach the registry (for pull commands); else the request's host.
    external_url: Option<String>,
    /// Pull-through caches: their repositories are shown as mirrors of upstreams.
    proxies: Arc<Proxies>,
    /// Self sign-up (`[auth] signup`): the sign-up page.
    signup: bool,
    /// `[webhooks] allow_private`: webhooks may point at internal addresses.
    allow_private_webhooks: bool,
    /// This instance, as the events of changes made here name it.
    events: berth_events::origin::EventSource,
}

impl Web {
    pub fn new(
        storage: Storage,
        accounts: Accounts,
        accounts_on: AccountsOn,
        external_url: Option<String>,
        proxies: Arc<Proxies>,
        signup: bool,
    ) -> Web {
        Web {
            storage,
            accounts,
            accounts_on,
            external_url,
            proxies,
            signup,
            allow_private_webhooks: false,
            events: Default::default(),
        }
    }

    /// Events: this instance as they name it, and whether webhooks may point at
    /// internal addresses (`[webhooks] allow_private`).
    pub fn with_events(
        mut self,
        source: berth_events::origin::EventSource,
        allow_private_webhooks: bool,
    ) -> Web {
        self.events = source;
        self.allow_private_webhooks = allow_private_webhooks;
        self
    }

    /// Storage acting for `req` by `visitor`: the changes it makes are reported in
    /// events naming them.
    fn storage_for(&self, req: &actix_web::HttpRequest, visitor: &session::Visitor) -> Storage {
        let user = visitor.user().map(|u| u.name.clone());
        let origin = berth_events::origin::origin(&self.events, req, user);
        self.storage.by(visitor.actor()).for_request(origin)
    }

    /// Whether the registry has accounts now (token authentication on).
    fn accounts_on(&self) -> bool {
        (self.accounts_on)()
    }
}

/// A route for reading: GET, and HEAD (the same answer without its body, which the
/// server leaves out), as browsers, link checkers and monitors send both.
fn read() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// The web UI's routes; the app must hold a `web::Data<Web>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // Every path the registry's own routes (registered before) leave, in one scope whose
    // error pages carry the site's header.
    let site = web::scope("")
        .wrap(middleware::from_fn(error_pages::with_header))
        // Answers vary by visitor (sessions, private repositories) and by the `Host`
        // asked (pull commands): a shared cache in front must ask again each time.
        .wrap(middleware::DefaultHeaders::new().add(("Cache-Control", "no-cache")))
        .default_service(web::to(error_pages::not_found))
        .route("/", read().to(pages::explore))
        .route("/search", read().to(pages::search))
        .route("/r/{path:.+}", read().to(pages::repository_or_tag))
        .route("/u/{name}", read().to(pages::namespace))
        .route("/mirrors", read().to(mirrors::page))
        .route("/signin", read().to(pages::signin_form))
        .route("/signin", web::post().to(pages::signin))
        .route("/signout", web::post().to(pages::signout))
        .route("/settings", read().to(pages::settings))
        .route(
            "/settings/password",
            web::post().to(account::change_password),
        )
        .route("/settings/organizations", web::post().to(orgs::create))
        .route("/u/{name}/members", web::post().to(orgs::change))
        .route("/signup", read().to(account::signup_form))
        .route("/signup", web::post().to(account::signup))
        .route("/settings/tokens", web::post().to(pages::create_token))
        .route(
            "/settings/tokens/revoke",
            web::post().to(pages::revoke_token),
        )
        .service(
            // A README may be long: forms here take up to 256 KiB.
            web::resource("/manage/description")
                .app_data(web::FormConfig::default().limit(256 * 1024))
                .route(web::post().to(pages::set_description)),
        )
        .route("/manage/visibility", web::post().to(pages::set_visibility))
        .route("/star", web::post().to(pages::star))
        .route("/manage/delete-tag", read().to(pages::confirm_delete_tag))
        .route("/manage/delete-tag", web::post().to(pages::delete_tag))
        .route(
            "/manage/immutable-tags",
            web::post().to(tag_rules::add_form),
        )
        .route(
            "/manage/immutable-tags/remove",
            web::post().to(tag_rules::remove_form),
        )
        .route("/manage/retention", web::post().to(lifecycle::set_form))
        .route(
            "/manage/retention/remove",
            web::post().to(lifecycle::remove_form),
        )
        .route(
            "/manage/retention/preview",
            read().to(lifecycle::preview_page),
        )
        .route("/manage/retention/run", web::post().to(lifecycle::run_form))
        .route("/usage", read().to(lifecycle::usage_page))
        .route("/admin/audit", read().to(audit::page))
        .route("/api/v1/audit", read().to(audit::list))
        .route("/manage/untagged", read().to(untagged::page))
        .route(
            "/manage/untagged/delete",
            web::post().to(untagged::delete_form),
        )
        .service(
            web::resource("/api/v1/untagged")
                .route(read().to(untagged::list))
                .route(web::delete().to(untagged::delete)),
        )
        .route("/manage/webhooks", read().to(webhooks::page))
        .route("/manage/webhooks", web::post().to(webhooks::add_form))
        .route(
            "/manage/webhooks/remove",
            web::post().to(webhooks::remove_form),
        )
        .route(
            "/manage/webhooks/redeliver",
            web::post().to(webhooks::redeliver_form),
        )
        .service(
            web::resource("/api/v1/webhooks")
                .route(read().to(webhooks::list))
                .route(web::post().to(webhooks::create)),
        )
        .route("/api/v1/webhooks/{id}", web::delete().to(webhooks::remove))
        .route(
            "/api/v1/webhooks/{id}/deliveries",
            read().to(webhooks::list_deliveries),
        )
        .route(
            "/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver",
            web::post().to(webhooks::redeliver),
        )
        .route(
            "/api/v1/webhooks/callback/{token}",
            web::post().to(webhooks::callback),
        )
        .route("/api/v1/search", read().to(api::search))
        .route("/v1/_ping", read().to(docker_search::ping))
        .route("/v1/search", read().to(docker_search::search))
        .route("/api/v1/usage", read().to(lifecycle::usage))
        .route(
            "/api/v1/namespaces/{ns}/usage",
            read().to(lifecycle::namespace_usage),
        )
        .service(
            web::resource("/api/v1/retention")
                .route(read().to(lifecycle::get_policy))
                .route(web::put().to(lifecycle::put_policy))
                .route(web::delete().to(lifecycle::delete_policy)),
        )
        .route("/api/v1/retention/preview", read().to(lifecycle::preview))
        .route("/api/v1/retention/run", web::post().to(lifecycle::run))
        .route("/api/v1/immutable-tag-rules", read().to(tag_rules::list))
        .route(
            "/api/v1/immutable-tag-rules",
            web::post().to(tag_rules::add),
        )
        .route(
            "/api/v1/immutable-tag-rules/{id}",
            web::delete().to(tag_rules::remove),
        )
        .route("/api/v1/repositories/{path:.+}", read().to(api::repository))
        .route("/static/style.css", read().to(style))
        .route("/static/app.js", read().to(script));
    cfg.service(site);
}

async fn style() -> HttpResponse {
    asset(
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    )
}

async fn script() -> HttpResponse {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    )
}

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", "public, max-age=3600"))
        .body(body)
}
