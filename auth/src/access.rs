//! Who may do what to which repository: the namespace rule.
//!
//! `alice/app` belongs to alice: she (and admins) may push to it and delete in it.
//! Every repository is public: anyone, signed in or not, may pull.
//! A name without a namespace (`app`) is pushed to by admins only.

use crate::scope::{Access, Scope};
use crate::users::User;

/// The actions of `requested` that `user` (None: anonymous) is allowed.
pub fn grant(user: Option<&User>, requested: &Scope) -> Option<Access> {
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
                    "pull" => true,
                    "push" | "delete" | "*" => owner,
                    _ => false,
                })
                .cloned()
                .collect()
        }
        // Listing repositories: everyone (every repository is public).
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

    #[test]
    fn namespaces_belong_to_their_user() {
        let alice = User {
            name: "alice".into(),
            admin: false,
        };
        let root = User {
            name: "boss".into(),
            admin: true,
        };
        let g = grant(Some(&alice), &scope("repository:alice/app:pull,push")).unwrap();
        assert_eq!(g.actions, ["pull", "push"]);
        let g = grant(Some(&alice), &scope("repository:bob/app:pull,push")).unwrap();
        assert_eq!(g.actions, ["pull"], "intersection: pull only");
        let g = grant(Some(&alice), &scope("repository:alicex/app:push"));
        assert!(g.is_none());
        assert!(grant(Some(&alice), &scope("repository:alice:push")).is_none());
        assert_eq!(
            grant(None, &scope("repository:alice/app:pull,push"))
                .unwrap()
                .actions,
            ["pull"]
        );
        assert_eq!(
            grant(Some(&root), &scope("repository:bob/app:push,delete"))
                .unwrap()
                .actions,
            ["push", "delete"]
        );
        assert!(grant(Some(&alice), &scope("repository:alice/app:fly")).is_none());
    }
}
