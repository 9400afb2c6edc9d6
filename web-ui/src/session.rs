//! Who is looking: the signed-in user of a session cookie (or nobody), the CSRF token
//! their forms must carry, and what they may see and do.
//!
//! Signed-in forms carry the session's own CSRF token. Forms shown before sign-in carry
//! the value of a `berth_csrf` cookie (double submit), set on first visit. Both cookies
//! are HttpOnly, SameSite, and Secure whenever the site is reached over https.
//!
//! The JSON API also takes a personal access token (`Authorization: Bearer
//! berth_pat_…`) instead of the cookie: a browser never sends that header on its own,
//! so such a request needs no CSRF token, and its writes are limited by the token's
//! scope. Pages ignore the header.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponseBuilder};
use berth_auth::{secret, sessions, Session, TokenScope, User};
use berth_storage::audit::Actor;
use berth_storage::repos::Viewer;
use std::future::Future;
use std::pin::Pin;

use crate::error::{Api, Page, WebError};
use crate::mirrors;
use crate::Web;

pub const SESSION_COOKIE: &str = "berth_session";
/// The header a session's JSON writes carry their CSRF token in (the GET answers give
/// it, as the pages' forms do).
pub const CSRF_HEADER: &str = "X-CSRF-Token";
const CSRF_COOKIE: &str = "berth_csrf";

pub struct Visitor {
    pub session: Option<Session>,
    /// The scope of the personal access token an API request came with, if it did.
    token_scope: Option<TokenScope>,
    /// The anonymous CSRF token, and whether this response must set its cookie.
    anonymous_csrf: String,
    new_csrf_cookie: bool,
    /// Whether cookies get the Secure flag.
    pub secure: bool,
    /// Whether the registry has accounts at all (without, everyone may do everything).
    pub accounts: bool,
    /// The client's address, as the login rate limits key it (for the audit log).
    address: Option<std::net::IpAddr>,
}

impl FromRequest for Visitor {
    type Error = actix_web::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Visitor, actix_web::Error>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let web = req
                .app_data::<web::Data<Web>>()
                .expect("the web UI's state is registered")
                .clone();
            visitor(&web, &req).await.map_err(|e| {
                if req.path().starts_with("/api/") {
                    Api(e).into()
                } else {
                    Page(e).into()
                }
            })
        })
    }
}

/// Who is asking (their session, if any, and the CSRF cookie), as the extractor finds it.
pub(crate) async fn visitor(web: &Web, req: &HttpRequest) -> Result<Visitor, WebError> {
    let peer = req.peer_addr().map(|a| a.ip());
    let (session, token_scope) = match (web.accounts_on(), api_bearer(req)) {
        (true, Some(secret)) => {
            let token = web.accounts.check_token(None, secret, peer).await?;
            // Never shown to anyone: a token's requests need no CSRF token.
            let csrf_token = secret::random()?;
            let session = Session {
                user: token.user,
                csrf_token,
            };
            (Some(session), Some(token.scope))
        }
        (true, None) => match req.cookie(SESSION_COOKIE) {
            Some(cookie) => (web.accounts.session(cookie.value()).await?, None),
            None => (None, None),
        },
        (false, _) => (None, None),
    };
    let (anonymous_csrf, new_csrf_cookie) = match req.cookie(CSRF_COOKIE) {
        Some(c) if !c.value().is_empty() => (c.value().to_owned(), false),
        _ => (secret::random()?, true),
    };
    let secure = req.connection_info().scheme() == "https"
        || web
            .external_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
    Ok(Visitor {
        session,
        token_scope,
        anonymous_csrf,
        new_csrf_cookie,
        secure,
        accounts: web.accounts_on(),
        address: peer,
    })
}

impl Visitor {
    pub fn user(&self) -> Option<&User> {
        self.session.as_ref().map(|s| &s.user)
    }

    /// Who this visitor is in the audit log: their name (if signed in) and address.
    pub fn actor(&self) -> Actor {
        match self.user() {
            Some(user) => Actor::user(&user.name, self.address),
            None => Actor::anonymous(self.address),
        }
    }

    /// The token this visitor's forms carry.
    pub fn csrf(&self) -> &str {
        match &self.session {
            Some(s) => &s.csrf_token,
            None => &self.anonymous_csrf,
        }
    }

    /// Refuses a form whose token is not this visitor's.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), WebError> {
        // A freshly made anonymous token was never sent to a form: nothing can match it.
        if self.session.is_none() && self.new_csrf_cookie {
            return Err(WebError::Csrf);
        }
        if secret::same(self.csrf(), submitted) {
            Ok(())
        } else {
            Err(WebError::Csrf)
        }
    }

    /// This request as anyone would make it (without its session or token).
    pub fn anonymous(self) -> Visitor {
        Visitor {
            session: None,
            token_scope: None,
            ..self
        }
    }

    /// Refuses a JSON write (`action`: `push` or `delete`, as tokens' scopes name
    /// them) that does not show the visitor meant it: with a personal access token, its
    /// scope must permit the action; with a session, the request must carry the
    /// session's CSRF token in `X-CSRF-Token`.
    pub(crate) fn check_api_write(
        &self,
        req: &HttpRequest,
        action: &'static str,
    ) -> Result<(), WebError> {
        match self.token_scope {
            Some(_) => self.check_token_scope(action),
            None => {
                let sent = req
                    .headers()
                    .get(CSRF_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                self.check_csrf(sent)
            }
        }
    }

    /// Refuses a request made with a personal access token whose scope does not
    /// permit `action` (`push` or `delete`); sessions pass.
    pub(crate) fn check_token_scope(&self, action: &'static str) -> Result<(), WebError> {
        match self.token_scope {
            Some(scope) if !scope.permits(action) => Err(WebError::TokenScope {
                scope: scope.name(),
                action,
            }),
            _ => Ok(()),
        }
    }

    /// The signed-in user, or `SignInRequired`.
    pub fn signed_in(&self) -> Result<&User, WebError> {
        if !self.accounts {
            return Err(WebError::AccountsOff);
        }
        self.user().ok_or(WebError::SignInRequired)
    }

    /// Which repositories this visitor may see in listings.
    pub async fn viewer(&self, web: &Web) -> Result<Viewer, WebError> {
        if !self.accounts {
            return Ok(Viewer::Everything);
        }
        let mut namespaces = match self.user() {
            Some(user) => match web.accounts.private_namespaces(user).await? {
                Some(namespaces) => namespaces,
                None => return Ok(Viewer::Everything),
            },
            None => Vec::new(),
        };
        // The mirrors of the proxies they may pull through, as the registry lets them.
        namespaces.extend(mirrors::pullable_prefixes(web, self).await?);
        Ok(match namespaces.is_empty() {
            true => Viewer::Public,
            false => Viewer::PublicAndNamespaces(namespaces),
        })
    }

    /// Whether this visitor may do `action` (pull, push, delete) to `repo`, by the
    /// registry's own rules.
    pub async fn may(
        &self,
        web: &Web,
        repo: &str,
        private: bool,
        action: &str,
    ) -> Result<bool, WebError> {
        if !self.accounts {
            return Ok(true);
        }
        Ok(web
            .accounts
            .allowed(self.user(), repo, private, action)
            .await?)
    }

    /// Adds the cookies this visitor needs to a response.
    pub fn set_cookies(&self, res: &mut HttpResponseBuilder) {
        if self.new_csrf_cookie {
            res.cookie(self.cookie(CSRF_COOKIE, self.anonymous_csrf.clone(), SameSite::Strict));
        }
    }

    /// The session cookie for a new sign-in.
    pub fn session_cookie(&self, secret: String) -> Cookie<'static> {
        let mut c = self.cookie(SESSION_COOKIE, secret, SameSite::Lax);
        c.set_max_age(actix_web::cookie::time::Duration::seconds(
            sessions::LIFETIME_SECS,
        ));
        c
    }

    /// A cookie that removes the session cookie.
    pub fn removed_session_cookie(&self) -> Cookie<'static> {
        let mut c = self.cookie(SESSION_COOKIE, String::new(), SameSite::Lax);
        c.make_removal();
        c
    }

    fn cookie(&self, name: &'static str, value: String, same_site: SameSite) -> Cookie<'static> {
        Cookie::build(name, value)
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(same_site)
            .finish()
    }
}

/// The secret of `Authorization: Bearer <secret>` on a JSON API route (the route the
/// router matched, not the raw path, decides), if there is one.
fn api_bearer(req: &HttpRequest) -> Option<&str> {
    if !req.match_pattern()?.starts_with("/api/") {
        return None;
    }
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, secret) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| secret.trim())
}
