//! Who may do what to which repository: the namespace rule.
//!
//! `alice/app` belongs to alice: she (and admins) may push to it and delete in it.
//! A public repository is pulled by anyone, signed in or not; a private one by its
//! owner and admins only. A name without a namespace (`app`) belongs to admins.

use berth_config::ProxyAccess;

use crate::accounts::Accounts;
use crate::error::AuthError;
use crate::orgs::Role;
use crate::scope::{Access, Scope};
use crate::users::User;

/// The actions of `requested` that `user` (None: anonymous) is allowed. `private`
/// tells whether the requested repository is private; `org_role` is the user's role
/// when the repository's namespace is an organization they belong to.
pub fn grant(
    user: Option<&User>,
    requested: &Scope,
    private: bool,
    org_role: Option<Role>,
) -> Option<Access> {
    let actions: Vec<String> = match requested.kind.as_str() {
        "repository" => {
            let role = match user {
                Some(u) if u.admin => Some(Role::Admin),
                Some(u) if namespace(&requested.name) == Some(u.name.as_str()) => Some(Role::Admin),
                Some(_) => org_role,
                None => None,
            };
            let at_least = |r: Role| role.is_some_and(|have| have >= r);
            requested
                .actions
                .iter()
                .filter(|a| match a.as_str() {
                    "pull" => !private || at_least(Role::Read),
                    "push" => at_least(Role::Write),
                    "delete" | "*" => at_least(Role::Admin),
                    _ => false,
                })
                .cloned()
                .collect()
        }
        // Listing repositories: everyone; the listing shows each viewer what they may pull.
        "registry" if requested.name == "catalog" => requested.actions.clone(),
        _ => Vec::new(),
    };
    (!actions.is_empty()).then(|| Access {
        kind: requested.kind.clone(),
        name: requested.name.clone(),
        actions,
    })
}

/// Who may pull through a pull-through proxy, as far as it is known without lookups.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyPull {
    Yes,
    No,
    /// If the user is a member of this organization.
    IfMember(String),
}

/// A proxy's `access` rule applied to `user` (None: anonymous): anonymous pulls, any
/// signed-in user, or an organization's members (and admins). Nobody pushes there.
pub fn proxy_pull(access: &ProxyAccess, user: Option<&User>) -> ProxyPull {
    match (access, user) {
        (ProxyAccess::Anonymous, _) => ProxyPull::Yes,
        (_, None) => ProxyPull::No,
        (ProxyAccess::Users, Some(_)) => ProxyPull::Yes,
        (ProxyAccess::Organization(_), Some(u)) if u.admin => ProxyPull::Yes,
        (ProxyAccess::Organization(org), Some(_)) => ProxyPull::IfMember(org.clone()),
    }
}

impl Accounts {
    /// Whether `user` (None: anonymous) may pull through a proxy with this `access`
    /// (by [`proxy_pull`], the membership looked up when it decides).
    pub async fn may_pull_through(
        &self,
        access: &ProxyAccess,
        user: Option<&User>,
    ) -> Result<bool, AuthError> {
        Ok(match proxy_pull(access, user) {
            ProxyPull::Yes => true,
            ProxyPull::No => false,
            ProxyPull::IfMember(org) => {
                let name = user.map_or("", |u| u.name.as_str());
                self.org_role(&org, name).await?.is_some()
            }
        })
    }

    /// What of `requested` `user` (None: anonymous) is granted, by [`grant`], with
    /// their organization role looked up when a repository's namespace is one.
    /// `private` tells whether the requested repository is private.
    pub async fn grant(
        &self,
        user: Option<&User>,
        requested: &Scope,
        private: bool,
    ) -> Result<Option<Access>, AuthError> {
        let org_role = match (user, namespace(&requested.name)) {
            (Some(u), Some(ns)) if requested.kind == "repository" => {
                self.org_role(ns, &u.name).await?
            }
            _ => None,
        };
        Ok(grant(user, requested, private, org_role))
    }

    /// Whether `user` may do `action` (pull, push, delete) to repository `repo`.
    pub async fn allowed(
        &self,
        user: Option<&User>,
        repo: &str,
        private: bool,
        action: &str,
    ) -> Result<bool, AuthError> {
        let scope = Scope {
            kind: "repository".into(),
            name: repo.to_owned(),
            actions: vec![action.to_owned()],
        };
        Ok(self.grant(user, &scope, private).await?.is_some())
    }

    /// The namespaces whose private repositories `user` may pull besides public ones:
    /// their own and their organizations'. `None`: every repository (admins).
    pub async fn private_namespaces(&self, user: &User) -> Result<Option<Vec<String>>, AuthError> {
        if user.admin {
            return Ok(None);
        }
        let mut namespaces = self.memberships(&user.name).await?;
        namespaces.push(user.name.clone());
        Ok(Some(namespaces))
    }
}

/// The namespace of `alice/app` is `alice`; a name without one (`app`) has none.
pub fn namespace(repository: &str) -> Option<&str> {
    repository.split_once('/').map(|(ns, _)| ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> Scope {
        Scope::parse(s).unwrap()
    }

    fn user(name: &str, admin: bool) -> User {
        User {
            name: name.into(),
            admin,
        }
    }

    #[test]
    fn namespaces_belong_to_their_user() {
        let alice = user("alice", false);
        let root = user("boss", true);
        let actions =
            |u: Option<&User>, s: &str| grant(u, &scope(s), false, None).map(|g| g.actions);
        assert_eq!(
            actions(Some(&alice), "repository:alice/app:pull,push").unwrap(),
            ["pull", "push"]
        );
        assert_eq!(
            actions(Some(&alice), "repository:bob/app:pull,push").unwrap(),
            ["pull"],
            "intersection"
        );
        assert!(actions(Some(&alice), "repository:alicex/app:push").is_none());
        assert!(actions(Some(&alice), "repository:alice:push").is_none());
        assert_eq!(
            actions(None, "repository:alice/app:pull,push").unwrap(),
            ["pull"]
        );
        assert_eq!(
            actions(Some(&root), "repository:bob/app:push,delete").unwrap(),
            ["push", "delete"]
        );
        assert!(actions(Some(&alice), "repository:alice/app:fly").is_none());
    }

    #[test]
    fn proxies_are_pulled_by_whom_their_access_names() {
        let alice = user("alice", false);
        let root = user("boss", true);
        let org = ProxyAccess::Organization("acme".into());
        assert_eq!(proxy_pull(&ProxyAccess::Anonymous, None), ProxyPull::Yes);
        assert_eq!(proxy_pull(&ProxyAccess::Users, None), ProxyPull::No);
        assert_eq!(proxy_pull(&org, None), ProxyPull::No);
        assert_eq!(
            proxy_pull(&ProxyAccess::Users, Some(&alice)),
            ProxyPull::Yes
        );
        assert_eq!(
            proxy_pull(&org, Some(&alice)),
            ProxyPull::IfMember("acme".into())
        );
        assert_eq!(proxy_pull(&org, Some(&root)), ProxyPull::Yes, "admins");
    }

    #[test]
    fn private_repositories_are_pulled_by_owners_and_admins_only() {
        let s = scope("repository:alice/secret:pull");
        assert!(grant(Some(&user("alice", false)), &s, true, None).is_some());
        assert!(grant(Some(&user("boss", true)), &s, true, None).is_some());
        assert!(grant(Some(&user("bobby", false)), &s, true, None).is_none());
        assert!(grant(None, &s, true, None).is_none());
    }

    #[test]
    fn organization_roles_grant_in_order() {
        let bob = user("bobby", false);
        let s = scope("repository:acme/app:pull,push,delete");
        let actions = |role| grant(Some(&bob), &s, true, role).map(|g| g.actions);
        assert_eq!(actions(None), None);
        assert_eq!(actions(Some(Role::Read)).unwrap(), ["pull"]);
        assert_eq!(actions(Some(Role::Write)).unwrap(), ["pull", "push"]);
        assert_eq!(
            actions(Some(Role::Admin)).unwrap(),
            ["pull", "push", "delete"]
        );
    }
}
