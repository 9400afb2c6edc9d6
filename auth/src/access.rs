//! Who may do what to which repository: the namespace rule.
//!
//! `alice/app` belongs to alice: she (and admins) may push to it and delete in it.
//! A public repository is pulled by anyone, signed in or not; a private one by its
//! owner and admins only. A name without a namespace (`app`) belongs to admins.

use crate::scope::{Access, Scope};
use crate::users::User;

/// The actions of `requested` that `user` (None: anonymous) is allowed; `private`
/// tells whether the requested repository is private.
pub fn grant(user: Option<&User>, requested: &Scope, private: bool) -> Option<Access> {
    let actions: Vec<String> = match requested.kind.as_str() {
        "repository" => {
            let owner = match user {
                Some(u) if u.admin => true,
                Some(u) => {
                    requested.name.split('/').next() == Some(u.name.as_str())
                        && requested.name.contains('/')
                }
                None => false,
            };
            requested
                .actions
                .iter()
                .filter(|a| match a.as_str() {
                    "pull" => owner || !private,
                    "push" | "delete" | "*" => owner,
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
        let actions = |u: Option<&User>, s: &str| grant(u, &scope(s), false).map(|g| g.actions);
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
    fn private_repositories_are_pulled_by_owners_and_admins_only() {
        let s = scope("repository:alice/secret:pull");
        assert!(grant(Some(&user("alice", false)), &s, true).is_some());
        assert!(grant(Some(&user("boss", true)), &s, true).is_some());
        assert!(grant(Some(&user("bobby", false)), &s, true).is_none());
        assert!(grant(None, &s, true).is_none());
    }
}
