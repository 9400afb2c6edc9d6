//! Organizations in the web UI: creating one (Settings), and the members section of
//! its page — listed to its members (and registry admins), managed by its admins:
//! add a member with a role, change a role, remove a member. The accounts' rules
//! apply (an organization always keeps an admin; one name space for users and
//! organizations).

use actix_web::{web, HttpRequest};
use berth_auth::{AuthError, Role};
use berth_storage::audit::{Action, Outcome};
use minijinja::{context, Value};
use serde::Deserialize;

use crate::error::{PageResult, WebError};
use crate::pages::{see_other, settings_page};
use crate::session::Visitor;
use crate::Web;

/// The members section of `name`'s page for `visitor`, if `name` is an organization
/// they may see the members of.
pub(crate) async fn members_view(
    web: &Web,
    visitor: &Visitor,
    name: &str,
) -> Result<Option<Value>, WebError> {
    let Some(user) = visitor.user() else {
        return Ok(None);
    };
    if !web.accounts.org_exists(name).await? {
        return Ok(None);
    }
    let role = web.accounts.org_role(name, &user.name).await?;
    if role.is_none() && !user.admin {
        return Ok(None);
    }
    let members: Vec<Value> = web
        .accounts
        .members(name)
        .await?
        .into_iter()
        .map(|(name, role)| context! { name, role => role.name() })
        .collect();
    Ok(Some(context! {
        members,
        can_manage => user.admin || role == Some(Role::Admin),
    }))
}

/// What a members form led to, said on the page it returns to (a fixed set of
/// messages: nothing a link could make the page say).
pub(crate) fn members_notice(code: &str) -> Option<&'static str> {
    Some(match code {
        "added" => "Member added.",
        "updated" => "Role changed.",
        "removed" => "Member removed.",
        "unknown-user" => "There is no user of that name.",
        "last-admin" => {
            "The organization would have no admin left: make another member admin first."
        }
        "not-a-member" => "That user is not a member.",
        "too-many" => "That user belongs to as many organizations as one may.",
        _ => return None,
    })
}

#[derive(Deserialize)]
pub struct NewOrgForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
}

/// `POST /settings/organizations`: a new organization, its creator its first admin.
pub async fn create(
    web: web::Data<Web>,
    visitor: Visitor,
    req: HttpRequest,
    form: web::Form<NewOrgForm>,
) -> PageResult {
    let user = visitor.signed_in()?.clone();
    visitor.check_csrf(&form.csrf)?;
    let name = form.name.trim();
    let problem = |message: String| {
        settings_page(
            &web,
            &visitor,
            &req,
            actix_web::http::StatusCode::BAD_REQUEST,
            context! { org_error => message, org_name => name },
        )
    };
    let held = crate::account::held_by_repositories(&web, name).await?;
    let added = web
        .accounts
        .by(visitor.actor())
        .add_own_org(name, &user.name, req.peer_addr().map(|a| a.ip()), held)
        .await;
    match added {
        Ok(()) => Ok(see_other(&format!("/u/{name}"))),
        Err(e @ AuthError::UsernameInvalid(_)) => {
            problem(e.to_string().replacen("username", "organization name", 1)).await
        }
        Err(
            AuthError::UserExists(_)
            | AuthError::NameTaken { .. }
            | AuthError::NameReserved(_)
            | AuthError::NameInUse(_),
        ) => problem(format!("The name {name} is not available.")).await,
        Err(AuthError::TooManyMemberships(_)) => {
            problem(format!(
                "You belong to {} organizations, the most one may.",
                berth_auth::orgs::MAX_MEMBERSHIPS
            ))
            .await
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
pub struct MemberForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    /// Absent: remove the member.
    role: Option<String>,
}

/// `POST /u/<org>/members`: adds a member or changes a role (`role`), or removes
/// one (no `role`); back to the organization's page, saying what happened.
pub async fn change(
    web: web::Data<Web>,
    visitor: Visitor,
    org: web::Path<String>,
    form: web::Form<MemberForm>,
) -> PageResult {
    let user = visitor.signed_in()?.clone();
    visitor.check_csrf(&form.csrf)?;
    // Only its admins (and registry admins) manage an organization; to others it
    // is as if the form were not there.
    let manager = user.admin || web.accounts.org_role(&org, &user.name).await? == Some(Role::Admin);
    if !manager || !web.accounts.org_exists(&org).await? {
        let action = match form.role {
            Some(_) => Action::MemberAdded,
            None => Action::MemberRemoved,
        };
        let refused = visitor.actor().entry(action, org.as_str());
        let refused = refused.outcome(Outcome::Denied).detail(form.user.trim());
        web.accounts.audit(refused).await;
        return Err(WebError::Forbidden.into());
    }
    let member = form.user.trim();
    let accounts = web.accounts.by(visitor.actor());
    let outcome = match &form.role {
        Some(role) => {
            let role = Role::parse(role)?;
            let known = web.accounts.org_role(&org, member).await?.is_some();
            accounts.set_member(&org, member, role).await.map(|()| {
                if known {
                    "updated"
                } else {
                    "added"
                }
            })
        }
        None => accounts
            .remove_member(&org, member)
            .await
            .map(|()| "removed"),
    };
    let code = match outcome {
        Ok(code) => code,
        Err(AuthError::UserUnknown(_)) => "unknown-user",
        Err(AuthError::LastAdmin(_)) => "last-admin",
        Err(AuthError::NotAMember { .. }) => "not-a-member",
        Err(AuthError::TooManyMemberships(_)) => "too-many",
        Err(e) => return Err(e.into()),
    };
    Ok(see_other(&format!("/u/{org}?members={code}#members")))
}
