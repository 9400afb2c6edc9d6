//! [`Accounts`]: the one entry point to users, tokens, organizations, sessions and
//! access decisions. It owns its database pool (beside storage's, on the same
//! database) and the process's login checks; the rest of Berth never sees a
//! connection. Its operations live with their resource: users in `users`, personal
//! access tokens in `pat`, organizations in `orgs`, web sessions in `sessions`,
//! access decisions in `access`, the token signing key in `keys`, and sign-in below.

use std::net::IpAddr;
use std::sync::Arc;

use berth_config::Config;
use berth_storage::audit::{self, Action, Actor, AuditEntry, Outcome};
use sea_orm::DatabaseConnection;
use sea_orm_migration::MigratorTrait;

use crate::error::AuthError;
use crate::login::Logins;
use crate::once_a_minute::OnceAMinute;
use crate::pat::VerifiedToken;
use crate::users::User;

/// Accounts and access, over their own connection pool. Cheap to clone: clones share
/// the pool and the login checks (rate limits, remembered passwords).
#[derive(Clone)]
pub struct Accounts {
    pub(crate) db: DatabaseConnection,
    /// Login checks, shared by every entry point of the process (token endpoint, web
    /// sign-in).
    pub(crate) logins: Arc<Logins>,
    /// Whom changes made through this handle are recorded as in the audit log.
    pub(crate) actor: Arc<Actor>,
    /// Which rate-limited sign-ins are recorded: once per client (as limits count
    /// clients: an IPv6 one by its /64) and minute.
    refusals: Arc<OnceAMinute<String>>,
    /// Which sign-ins with an access token are recorded: once per token and minute.
    token_sign_ins: Arc<OnceAMinute<i64>>,
}

impl Accounts {
    /// Opens the database the config names (the data directory's SQLite file unless a
    /// URL is configured) and brings the account tables up to date.
    pub async fn open(config: &Config) -> Result<Accounts, AuthError> {
        if config.database_url.is_none() {
            std::fs::create_dir_all(&config.data_dir)?;
        }
        Accounts::connect(&config.database_url()).await
    }

    /// Opens a pool of its own on the database at `url`, set up as storage sets up its
    /// own (on SQLite: WAL, so both pools read beside one writer, and a busy timeout
    /// that queues their writers), and runs the account tables' migrations (their own
    /// history, beside storage's), one process at a time.
    pub async fn connect(url: &str) -> Result<Accounts, AuthError> {
        let db = berth_storage::database::connect(url).await?;
        berth_storage::database::migrate_exclusively(&db, |txn| {
            Box::pin(async move {
                // The audit log's table is storage's, and account changes are written
                // to it: it exists before any (an admin command may come first).
                berth_storage::database::migrate_storage(txn).await?;
                crate::migration::Migrator::up(txn, None).await
            })
        })
        .await?;
        Ok(Accounts {
            db,
            logins: Arc::default(),
            actor: Arc::default(),
            refusals: Arc::default(),
            token_sign_ins: Arc::default(),
        })
    }

    /// These accounts with the changes made through them recorded as `actor`'s in the
    /// audit log (cheap: for one request or command).
    pub fn by(&self, actor: Actor) -> Accounts {
        Accounts {
            actor: Arc::new(actor),
            ..self.clone()
        }
    }

    /// Records `entry` in the audit log at once, for what has no transaction of its
    /// own here (a refused sign-in). A failure is logged: what it describes happened.
    pub async fn audit(&self, entry: AuditEntry) {
        if let Err(e) = audit::record(&self.db, &entry).await {
            tracing::error!(error = %e, action = entry.action.name(), "cannot write an audit log entry");
        }
    }

    /// Records `action` on `target` by this handle's actor in `txn`, the change's own
    /// transaction.
    pub(crate) async fn audited(
        &self,
        txn: &impl sea_orm::ConnectionTrait,
        action: Action,
        target: &str,
        detail: String,
    ) -> Result<(), AuthError> {
        let entry = self.actor.entry(action, target).detail(detail);
        Ok(audit::record(txn, &entry).await?)
    }

    /// Records a `docker login` made with personal access token `token` (nothing is
    /// made for it, so nothing else records it: the client keeps the access token);
    /// once a minute per token at most, as a client may send them as fast as it likes.
    pub async fn signed_in_with_token(&self, token: &VerifiedToken) {
        if !self.token_sign_ins.record_now(token.id) {
            return;
        }
        let entry = self
            .actor
            .entry(Action::SignIn, token.user.name.as_str())
            .detail(format!("docker login with access token {}", token.id));
        self.audit(entry).await;
    }

    /// Records a refused sign-in as `name` from `peer` (`how`: with a password, a
    /// token): a wrong secret is a failure, a refusal before checking (rate limited)
    /// a denial (once per address and minute: a flood of refusals is one entry a
    /// minute). Other errors (overload, the database) say nothing about the client.
    async fn audit_refusal<T>(
        &self,
        name: Option<&str>,
        peer: Option<IpAddr>,
        how: &str,
        result: &Result<T, AuthError>,
    ) {
        let (outcome, why) = match result {
            Err(AuthError::BadCredentials) => (Outcome::Failure, "wrong credentials"),
            Err(AuthError::RateLimited { .. })
                if self.refusals.record_now(crate::limiter::client_of(peer)) =>
            {
                (
                    Outcome::Denied,
                    "rate limited (further refusals from this address within a minute not recorded)",
                )
            }
            _ => return,
        };
        let actor = Actor {
            name: name.map(str::to_owned),
            ..Actor::anonymous(peer)
        };
        let entry = actor
            .entry(Action::SignInFailed, name)
            .outcome(outcome)
            .detail(format!("{how}: {why}"));
        self.audit(entry).await;
    }

    /// The user whose password `password` is, checked the one way every entry point
    /// checks it (see `login`): refused with [`AuthError::RateLimited`] after too many
    /// failures for this name or from this address (even with the right password),
    /// with [`AuthError::BadCredentials`] for a wrong password or an unknown user
    /// (alike, in answer and time), and with [`AuthError::Overloaded`] when too many
    /// password checks are waiting.
    pub async fn check_password(
        &self,
        name: &str,
        password: String,
        peer: Option<IpAddr>,
    ) -> Result<User, AuthError> {
        let checked = self.logins.password(&self.db, name, password, peer).await;
        self.audit_refusal(Some(name), peer, "password", &checked)
            .await;
        checked
    }

    /// The user and scope of a personal access token or login token: `secret` given as
    /// `name`'s password, or (`name` None) as an OAuth2 refresh token. Failures count
    /// against the client address only.
    pub async fn check_token(
        &self,
        name: Option<&str>,
        secret: &str,
        peer: Option<IpAddr>,
    ) -> Result<VerifiedToken, AuthError> {
        let checked = self.logins.token(&self.db, name, secret, peer).await;
        let how = match name {
            Some(_) => "access token",
            None => "refresh or access token",
        };
        self.audit_refusal(name, peer, how, &checked).await;
        checked
    }

    /// Self sign-up from `peer`: every attempt counts against the address (nobody farms
    /// accounts), then the account is made as [`Accounts::add_user`] makes one.
    /// `held_by_repositories`: repositories are stored under the name though no account
    /// holds it (see `NameInUse`); refused only after the attempt is counted, so the
    /// refusal cannot be used to probe for them faster than sign-ups are allowed.
    pub async fn sign_up(
        &self,
        name: &str,
        password: String,
        peer: Option<IpAddr>,
        held_by_repositories: bool,
    ) -> Result<User, AuthError> {
        self.logins.signup(&self.db, peer).await?;
        if held_by_repositories {
            return Err(AuthError::NameInUse(name.to_owned()));
        }
        // Recorded as the new user's own doing, from where they signed up.
        self.by(Actor::user(name, peer))
            .add_user(name, password, false)
            .await
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use super::Accounts;

    /// Accounts on a fresh SQLite file in a temporary directory.
    pub async fn accounts() -> (tempfile::TempDir, Accounts) {
        let dir = tempfile::tempdir().unwrap();
        let accounts = Accounts::connect(&url(&dir)).await.unwrap();
        (dir, accounts)
    }

    /// The database URL of [`accounts`]'s directory, to open another pool on it.
    pub fn url(dir: &tempfile::TempDir) -> String {
        format!("sqlite://{}?mode=rwc", dir.path().join("auth.db").display())
    }
}

#[cfg(test)]
mod tests {
    use super::testing;
    use super::*;
    use crate::pat::TokenScope;
    use crate::{Role, Scope};

    /// The server's accounts and an admin command (or a replica) each hold a pool on
    /// one SQLite file: each sees the other's writes, and writes from both at once
    /// wait for each other instead of failing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_pools_on_one_file_share_the_accounts() {
        let (dir, server) = testing::accounts().await;
        let admin = Accounts::connect(&testing::url(&dir)).await.unwrap();
        let alice = admin
            .add_user("alice", "alice-password".into(), false)
            .await
            .unwrap();
        admin
            .add_user("bobby", "bobby-password".into(), false)
            .await
            .unwrap();
        assert_eq!(server.user("alice").await.unwrap(), Some(alice.clone()));
        assert_eq!(server.user_count().await.unwrap(), 2);
        let writes: Vec<_> = (0..40)
            .map(|i| {
                let (accounts, alice) = match i % 2 {
                    0 => (server.clone(), alice.clone()),
                    _ => (admin.clone(), alice.clone()),
                };
                tokio::spawn(async move {
                    accounts.start_session(alice.clone()).await?;
                    accounts
                        .create_token(&alice.name, &format!("t{i}"), TokenScope::Read, None)
                        .await
                })
            })
            .collect();
        for w in writes {
            w.await.unwrap().unwrap();
        }
        assert_eq!(server.tokens("alice").await.unwrap().len(), 40);
        // A password change elsewhere ends the sessions this pool started.
        let (cookie, _) = server.start_session(alice.clone()).await.unwrap();
        assert!(server.session(&cookie).await.unwrap().is_some());
        admin
            .set_password("alice", "another-password".into())
            .await
            .unwrap();
        assert!(server.session(&cookie).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn access_follows_organization_roles() {
        let (_dir, accounts) = testing::accounts().await;
        let alice = accounts
            .add_user("alice", "alice-password".into(), false)
            .await
            .unwrap();
        let bobby = accounts
            .add_user("bobby", "bobby-password".into(), false)
            .await
            .unwrap();
        accounts.add_org("acme", "alice").await.unwrap();
        let scope = Scope::parse("repository:acme/app:pull,push,delete").unwrap();
        let granted = |user: User| {
            let (accounts, scope) = (accounts.clone(), scope.clone());
            async move {
                accounts
                    .grant(Some(&user), &scope, true)
                    .await
                    .unwrap()
                    .map(|a| a.actions)
            }
        };
        assert_eq!(
            granted(alice.clone()).await.unwrap(),
            ["pull", "push", "delete"]
        );
        assert_eq!(granted(bobby.clone()).await, None);
        accounts
            .set_member("acme", "bobby", Role::Read)
            .await
            .unwrap();
        assert_eq!(granted(bobby.clone()).await.unwrap(), ["pull"]);
        assert!(accounts
            .allowed(Some(&bobby), "acme/app", true, "pull")
            .await
            .unwrap());
        assert!(!accounts
            .allowed(Some(&bobby), "acme/app", false, "push")
            .await
            .unwrap());
        assert_eq!(
            accounts.private_namespaces(&bobby).await.unwrap(),
            Some(vec!["acme".to_owned(), "bobby".to_owned()])
        );
        // A removed member keeps nothing.
        accounts.remove_user("bobby").await.unwrap();
        assert_eq!(
            accounts.memberships("bobby").await.unwrap(),
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn an_organization_always_keeps_an_admin() {
        use crate::orgs::Role;
        let (_dir, accounts) = testing::accounts().await;
        for name in ["alice", "bobby"] {
            accounts
                .add_user(name, format!("{name}-password"), false)
                .await
                .unwrap();
        }
        accounts.add_org("acme", "alice").await.unwrap();
        accounts
            .set_member("acme", "bobby", Role::Write)
            .await
            .unwrap();
        assert_eq!(
            accounts.members("acme").await.unwrap(),
            [
                ("alice".to_owned(), Role::Admin),
                ("bobby".to_owned(), Role::Write)
            ]
        );
        // alice is the only admin: not removed, not demoted, not deleted as a user.
        let last =
            |r: Result<(), AuthError>| matches!(r, Err(AuthError::LastAdmin(org)) if org == "acme");
        assert!(last(accounts.remove_member("acme", "alice").await));
        assert!(last(accounts.set_member("acme", "alice", Role::Read).await));
        assert!(last(accounts.remove_user("alice").await));
        assert!(
            accounts.user("alice").await.unwrap().is_some(),
            "nothing removed"
        );
        // With a second admin, she may go.
        accounts
            .set_member("acme", "bobby", Role::Admin)
            .await
            .unwrap();
        accounts.remove_member("acme", "alice").await.unwrap();
        assert_eq!(
            accounts.members("acme").await.unwrap(),
            [("bobby".to_owned(), Role::Admin)]
        );
        assert!(matches!(
            accounts.remove_member("acme", "alice").await,
            Err(AuthError::NotAMember { .. })
        ));
        assert!(matches!(
            accounts.remove_member("nope", "bobby").await,
            Err(AuthError::UserUnknown(_))
        ));
    }

    #[tokio::test]
    async fn one_user_belongs_to_a_bounded_number_of_organizations() {
        use crate::orgs::{Role, MAX_MEMBERSHIPS};
        let (_dir, accounts) = testing::accounts().await;
        for name in ["alice", "bobby"] {
            accounts
                .add_user(name, format!("{name}-password"), false)
                .await
                .unwrap();
        }
        for i in 0..MAX_MEMBERSHIPS {
            accounts.add_org(&format!("org{i}"), "alice").await.unwrap();
        }
        // No more organizations of hers, and nobody adds her to another.
        assert!(matches!(
            accounts.add_org("onemore", "alice").await,
            Err(AuthError::TooManyMemberships(_))
        ));
        accounts.add_org("bobsorg", "bobby").await.unwrap();
        assert!(matches!(
            accounts.set_member("bobsorg", "alice", Role::Read).await,
            Err(AuthError::TooManyMemberships(_))
        ));
        // A role change of a membership she has is not one more.
        accounts
            .set_member("org0", "bobby", Role::Admin)
            .await
            .unwrap();
        accounts
            .set_member("org0", "alice", Role::Write)
            .await
            .unwrap();
    }
}
