//! The visitor's own account: signing up (when `[auth] signup` is on) and changing
//! the password. Both go through the accounts' own rules (name and password checks,
//! the per-address sign-up limit, the rate-limited password check), then sign the
//! visitor in with a new session.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use berth_auth::AuthError;
use minijinja::context;
use serde::Deserialize;

use crate::error::{PageResult, WebError};
use crate::pages::{render, see_other, settings_page};
use crate::session::Visitor;
use crate::Web;

/// `GET /signup`: the form, where sign-up is on (else there is no such page).
pub async fn signup_form(web: web::Data<Web>, visitor: Visitor, req: HttpRequest) -> PageResult {
    open_for_signup(&web, &visitor, &req)?;
    if visitor.user().is_some() {
        return Ok(see_other("/"));
    }
    render(
        &web,
        &visitor,
        &req,
        StatusCode::OK,
        "signup.html",
        context! {},
    )
}

#[derive(Deserialize)]
pub struct SignupForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /signup`: makes the account and signs it in.
pub async fn signup(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    form: web::Form<SignupForm>,
) -> PageResult {
    open_for_signup(&web, &visitor, &req)?;
    visitor.check_csrf(&form.csrf)?;
    let problem = |message: String| {
        render(
            &web,
            &visitor,
            &req,
            StatusCode::BAD_REQUEST,
            "signup.html",
            context! { error => message, username => form.username.clone() },
        )
    };
    if form.password != form.confirm {
        return problem("The two passwords differ.".into());
    }
    let peer = req.peer_addr().map(|a| a.ip());
    let held = held_by_repositories(&web, &form.username).await?;
    let made = web
        .accounts
        .sign_up(&form.username, form.password.clone(), peer, held)
        .await;
    let user = match made {
        Ok(user) => user,
        Err(e @ (AuthError::UsernameInvalid(_) | AuthError::PasswordTooShort)) => {
            return problem(capitalised(&e.to_string()));
        }
        // Taken, by a user or an organization, or reserved: said alike.
        Err(
            AuthError::UserExists(_)
            | AuthError::NameTaken { .. }
            | AuthError::NameReserved(_)
            | AuthError::NameInUse(_),
        ) => {
            return problem(format!("The name {} is not available.", form.username));
        }
        Err(e) => return Err(e.into()),
    };
    signed_in_at(&web, &visitor, user, "/").await
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    current: String,
    #[serde(default)]
    new: String,
    #[serde(default)]
    confirm: String,
}

/// `POST /settings/password`: checks the current password, sets the new one (which
/// ends every session and `docker login` token of the account; its personal access
/// tokens stay), and signs this visitor in again.
pub async fn change_password(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    form: web::Form<PasswordForm>,
) -> PageResult {
    let user = visitor.signed_in()?.clone();
    visitor.check_csrf(&form.csrf)?;
    let problem = |status, message: &str| {
        settings_page(
            &web,
            &visitor,
            &req,
            status,
            context! { password_error => message },
        )
    };
    if form.new != form.confirm {
        return problem(StatusCode::BAD_REQUEST, "The two new passwords differ.").await;
    }
    let peer = req.peer_addr().map(|a| a.ip());
    match web
        .accounts
        .check_password(&user.name, form.current.clone(), peer)
        .await
    {
        Ok(_) => {}
        Err(AuthError::BadCredentials) => {
            return problem(StatusCode::UNAUTHORIZED, "The current password is wrong.").await;
        }
        Err(e) => return Err(e.into()),
    }
    match web
        .accounts
        .by(visitor.actor())
        .set_password(&user.name, form.new.clone())
        .await
    {
        Ok(()) => {}
        Err(AuthError::PasswordTooShort) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "A password needs at least 8 characters.",
            )
            .await;
        }
        Err(e) => return Err(e.into()),
    }
    signed_in_at(&web, &visitor, user, "/settings?password=changed").await
}

/// Whether repositories are stored under `name` though no account, organization or
/// proxy holds it (an admin pushed there): such a name is not given away by sign-up
/// or a new organization, or its new owner would own them. A held name is the
/// accounts' to refuse, with their own reason.
pub(crate) async fn held_by_repositories(web: &Web, name: &str) -> Result<bool, WebError> {
    Ok(web.accounts.namespace_kind(name).await?.is_none()
        && web.storage.namespace_in_use(name).await?)
}

/// A new session for `user`, and a redirect to `location` that sets its cookie.
async fn signed_in_at(
    web: &Web,
    visitor: &Visitor,
    user: berth_auth::User,
    location: &str,
) -> PageResult {
    let (secret, _) = web.accounts.start_session(user).await?;
    let mut res: HttpResponse = see_other(location);
    res.add_cookie(&visitor.session_cookie(secret))
        .map_err(|e| WebError::BadRequest(e.to_string()))?;
    Ok(res)
}

/// Sign-up pages exist only where sign-up is on and the registry has accounts.
fn open_for_signup(web: &Web, visitor: &Visitor, req: &HttpRequest) -> Result<(), WebError> {
    if web.signup && visitor.accounts {
        Ok(())
    } else {
        Err(WebError::NoSuchPath(req.path().to_owned()))
    }
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>() + ".",
        None => String::new(),
    }
}
