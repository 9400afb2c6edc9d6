//! Accounts under attack, against a real berthd on SQLite and PostgreSQL: users and
//! organizations share one namespace on every creation path (races included), a
//! removed user's name stays reserved, password checks stay bounded in memory under a
//! burst of logins, the login limit holds under concurrency, and a password change or
//! removal ends what signed in with the old password.

use std::future::Future;

use berth_tests::*;
use serde_json::Value;

use crate::auth::ALICE;

/// Runs each `async fn(Db)` on SQLite and on PostgreSQL (skipped without
/// `BERTH_TEST_POSTGRES_URL`, as `on_both_databases!` does); the function starts its
/// own server, as some need settings.
macro_rules! on_sqlite_and_postgres {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(berth_tests::Db::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if berth_tests::postgres_admin_url().is_none() {
                        eprintln!("SKIPPED: set BERTH_TEST_POSTGRES_URL to run the PostgreSQL variant");
                        return;
                    }
                    super::$name(berth_tests::Db::Postgres).await;
                }
            )*
        }
    };
}

on_sqlite_and_postgres!(
    users_and_organizations_share_one_namespace,
    concurrent_creations_of_one_name_let_one_win,
    a_removed_users_name_stays_reserved,
    a_burst_of_correct_logins_stays_small_and_succeeds,
    a_burst_of_wrong_passwords_gets_only_the_allowed_checks,
    password_change_and_removal_end_what_the_old_password_started,
    names_with_repositories_are_not_given_away,
);

const SIGNUP_ON: &[(&str, &str)] = &[("BERTH_AUTH_SIGNUP", "true")];

async fn server(db: Db, env: &[(&str, &str)]) -> Berthd {
    Berthd::start_configured(db, &[ALICE], env)
        .await
        .expect("database available")
}

/// Runs a `berthd` admin command against the server's data; (success, stdout+stderr).
fn admin(s: &Berthd, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let out = berthd_command(&s.data_dir, s.database_url.as_deref(), args, stdin);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn signup(c: &Client, user: &str, password: &str) -> impl Future<Output = reqwest::Response> {
    let r = c
        .request("POST", "/auth/signup")
        .form(&[("username", user), ("password", password)]);
    async move { r.send().await.unwrap() }
}

/// `GET /auth/token` with Basic credentials (no scope): a login's status.
fn login(c: &Client, user: &str, password: &str) -> impl Future<Output = reqwest::Response> {
    let r = c
        .request("GET", "/auth/token?service=berth")
        .basic_auth(user, Some(password));
    async move { r.send().await.unwrap() }
}

async fn message(r: reqwest::Response) -> String {
    let body: Value = r.json().await.unwrap();
    body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Every path that creates a user or an organization refuses the other kind's name:
/// `berthd user add`, self sign-up, `berthd org add`. Sign-up of an organization's
/// name used to create a user who then owned `acme/*`, private repositories included.
async fn users_and_organizations_share_one_namespace(db: Db) {
    let s = server(db, SIGNUP_ON).await;
    let c = s.client();
    let (ok, out) = admin(&s, &["org", "add", "acme", "--owner", "alice"], None);
    assert!(ok, "{out}");
    // A private repository of the organization, which a squatter would own.
    let t = crate::auth::bearer(&c, Some((ALICE.0, ALICE.1)), "repository:acme/app:push").await;
    c.with_token(&t)
        .push_image("acme/app", "v1", b"acme's layer")
        .await;
    assert!(admin(&s, &["repo", "private", "acme/app"], None).0);

    let (ok, out) = admin(
        &s,
        &["user", "add", "acme", "--password-stdin"],
        Some("squatter-pw"),
    );
    assert!(!ok && out.contains("taken by an organization"), "{out}");
    let r = signup(&c, "acme", "squatter-pw").await;
    assert_eq!(r.status(), 400);
    let text = message(r).await;
    assert!(text.contains("taken by an organization"), "{text}");
    assert_eq!(
        login(&c, "acme", "squatter-pw").await.status(),
        401,
        "no such user"
    );
    // Anonymous (and any non-member) still cannot read the private repository.
    let anonymous = crate::auth::bearer(&c, None, "repository:acme/app:pull").await;
    let r = c
        .with_token(&anonymous)
        .call("GET", "/v2/acme/app/manifests/v1")
        .await;
    assert!(matches!(r.status().as_u16(), 401 | 403), "{}", r.status());

    // The other way: an organization may not take a user's name, old or new.
    let (ok, out) = admin(&s, &["org", "add", "alice", "--owner", "alice"], None);
    assert!(!ok && out.contains("taken by a user"), "{out}");
    assert_eq!(
        signup(&c, "newbie1", "newbie1-password").await.status(),
        201
    );
    let (ok, out) = admin(&s, &["org", "add", "newbie1", "--owner", "alice"], None);
    assert!(!ok && out.contains("taken by a user"), "{out}");
    // Same kind, same answer as before.
    let (ok, out) = admin(&s, &["org", "add", "acme", "--owner", "alice"], None);
    assert!(!ok && out.contains("taken by an organization"), "{out}");
    let (ok, out) = admin(
        &s,
        &["user", "add", "alice", "--password-stdin"],
        Some("whatever-pw"),
    );
    assert!(!ok && out.contains("already exists"), "{out}");
}

/// Creations of one name at the same time, through the same or different paths:
/// exactly one wins (the name is claimed in the creating transaction).
async fn concurrent_creations_of_one_name_let_one_win(db: Db) {
    let s = server(db, SIGNUP_ON).await;
    let c = s.client();
    // Five sign-ups (the per-address sign-up limit) of one name at once.
    let attempts: Vec<_> = (0..5)
        .map(|i| signup(&c, "racer1", &format!("racer1-password-{i}")))
        .collect();
    let statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 400).count(),
        4,
        "{statuses:?}"
    );
    let winner = statuses.iter().position(|&s| s == 201).unwrap();
    let r = login(&c, "racer1", &format!("racer1-password-{winner}")).await;
    assert_eq!(r.status(), 200, "the winner's password is the one kept");

    // Two `user add` and two `org add` processes for one name at once.
    let results: Vec<(bool, String)> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    if i % 2 == 0 {
                        admin(
                            s,
                            &["user", "add", "dupe1", "--password-stdin"],
                            Some("dupe1-password"),
                        )
                    } else {
                        admin(s, &["org", "add", "dupe1", "--owner", "alice"], None)
                    }
                })
            })
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let won = results.iter().filter(|(ok, _)| *ok).count();
    assert_eq!(won, 1, "{results:?}");
    for (ok, out) in &results {
        assert!(
            *ok || out.contains("already exists") || out.contains("already taken"),
            "a clear refusal: {out}"
        );
    }
}

/// A removed user's name is not handed to the next person who signs up (they would
/// own the old user's repositories); only an administrator gives it out again.
async fn a_removed_users_name_stays_reserved(db: Db) {
    let s = server(db, SIGNUP_ON).await;
    let c = s.client();
    let (ok, out) = admin(
        &s,
        &["user", "add", "carol1", "--password-stdin"],
        Some("carol1-password"),
    );
    assert!(ok, "{out}");
    let t = crate::auth::bearer(
        &c,
        Some(("carol1", "carol1-password")),
        "repository:carol1/app:push",
    )
    .await;
    c.with_token(&t)
        .push_image("carol1/app", "v1", b"carol's layer")
        .await;
    assert!(admin(&s, &["repo", "private", "carol1/app"], None).0);
    let (ok, out) = admin(&s, &["user", "rm", "carol1"], None);
    assert!(ok && out.contains("reserved"), "{out}");

    let r = signup(&c, "carol1", "someone-else-pw").await;
    assert_eq!(r.status(), 400);
    let text = message(r).await;
    assert!(
        text.contains("reserved") && text.contains("berthd user add carol1 --reclaim"),
        "{text}"
    );
    assert_eq!(login(&c, "carol1", "someone-else-pw").await.status(), 401);
    let (ok, out) = admin(
        &s,
        &["user", "add", "carol1", "--password-stdin"],
        Some("someone-else-pw"),
    );
    assert!(!ok && out.contains("reserved"), "{out}");
    let (ok, out) = admin(&s, &["org", "add", "carol1", "--owner", "alice"], None);
    assert!(!ok && out.contains("reserved"), "{out}");
    // --reclaim takes only a removed user's name, never a live one.
    let (ok, out) = admin(
        &s,
        &["user", "add", "alice", "--reclaim", "--password-stdin"],
        Some("taken-over-pw"),
    );
    assert!(!ok && out.contains("already exists"), "{out}");

    // The administrator's release: the new account gets the name (and what is under it).
    let (ok, out) = admin(
        &s,
        &["user", "add", "carol1", "--reclaim", "--password-stdin"],
        Some("new-carol-password"),
    );
    assert!(ok, "{out}");
    let t = crate::auth::bearer(
        &c,
        Some(("carol1", "new-carol-password")),
        "repository:carol1/app:pull",
    )
    .await;
    let r = c
        .with_token(&t)
        .call("GET", "/v2/carol1/app/manifests/v1")
        .await;
    assert_eq!(r.status(), 200);
    // Live again: a second reclaim is refused.
    let (ok, _) = admin(
        &s,
        &["user", "add", "carol1", "--reclaim", "--password-stdin"],
        Some("third-carol-pw"),
    );
    assert!(!ok);
}

/// kB of a `/proc/<pid>/status` field (VmHWM: peak resident set; VmRSS: now).
fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// berthd's peak resident memory may grow by at most this much over a burst of 150
/// correct logins. argon2 (default parameters) takes ~19 MiB per computation; at most
/// 4 run at once (76 MiB), and the burst needs only one: the rest are remembered.
/// Before the bound, every login ran its own argon2 at once: ~2.9 GiB.
const BURST_GROWTH_LIMIT_MIB: u64 = 120;
/// …and its peak overall stays under this (the process itself, debug build, is well
/// under 100 MiB).
const PEAK_LIMIT_MIB: u64 = 300;

/// 150 concurrent correct logins for one user all succeed, and berthd stays small.
async fn a_burst_of_correct_logins_stays_small_and_succeeds(db: Db) {
    let s = server(db, &[]).await;
    let c = s.client();
    let pid = s.pid().unwrap();
    // One request first, so the baseline includes a started server's usual buffers.
    assert_eq!(login(&c, "nosuchuser", "whatever-pw").await.status(), 401);
    let before = proc_status_kib(pid, "VmHWM") / 1024;
    let logins: Vec<_> = (0..150).map(|_| login(&c, ALICE.0, ALICE.1)).collect();
    let statuses: Vec<u16> = futures::future::join_all(logins)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let peak = proc_status_kib(pid, "VmHWM") / 1024;
    let now = proc_status_kib(pid, "VmRSS") / 1024;
    eprintln!(
        "{db:?}: berthd peak RSS {before} MiB before the burst, {peak} MiB after (now {now} MiB)"
    );
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert!(
        peak - before <= BURST_GROWTH_LIMIT_MIB,
        "peak RSS grew from {before} MiB to {peak} MiB"
    );
    assert!(peak <= PEAK_LIMIT_MIB, "peak RSS {peak} MiB");
}

/// 40 concurrent wrong passwords for one user: at most 5 are checked (401), the rest
/// refused (429) before any password check; then the right password is refused too,
/// on the token endpoint and on the web sign-in alike (one limit).
async fn a_burst_of_wrong_passwords_gets_only_the_allowed_checks(db: Db) {
    let s = server(db, &[]).await;
    let c = s.client();
    let guesses: Vec<_> = (0..40)
        .map(|i| login(&c, ALICE.0, &format!("guess-{i}-pw")))
        .collect();
    let responses = futures::future::join_all(guesses).await;
    let statuses: Vec<u16> = responses.iter().map(|r| r.status().as_u16()).collect();
    let checked = statuses.iter().filter(|&&s| s == 401).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert!(checked <= 5, "{checked} checked: {statuses:?}");
    assert_eq!(checked + refused, 40, "{statuses:?}");
    for r in responses.iter().filter(|r| r.status() == 429) {
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry));
    }
    let r = login(&c, ALICE.0, ALICE.1).await;
    assert_eq!(r.status(), 429, "the right password too, within the window");
    assert_eq!(error_code(r).await, "TOOMANYREQUESTS");
    // The web sign-in applies the same limit.
    let http = crate::web::cookie_client();
    let page = http
        .get(format!("{}/signin", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = crate::web::csrf_of(&page);
    let r = http
        .post(format!("{}/signin", s.url))
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", ALICE.0),
            ("password", ALICE.1),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

/// `berthd user passwd` ends the user's web sessions and `docker login` refresh
/// tokens and the remembered old password; personal access tokens survive it.
/// `berthd user rm` ends those too.
async fn password_change_and_removal_end_what_the_old_password_started(db: Db) {
    let s = server(db, &[]).await;
    let c = s.client();
    let browser = crate::web::sign_in(&s.url, ALICE).await;
    let settings = format!("{}/settings", s.url);
    assert_eq!(browser.get(&settings).send().await.unwrap().status(), 200);
    // `docker login`: an offline token (the identity token docker keeps).
    let refresh = c.docker_login_token(ALICE.0, ALICE.1).await;
    let exchange = |refresh: &str| {
        c.request("POST", "/auth/token")
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh),
                ("service", "berth"),
                ("client_id", "docker"),
            ])
            .send()
    };
    assert_eq!(exchange(&refresh).await.unwrap().status(), 200);
    let (ok, out) = admin(
        &s,
        &[
            "token", "create", "alice", "--name", "ci", "--scope", "read",
        ],
        None,
    );
    assert!(ok, "{out}");
    let pat = out
        .lines()
        .find(|l| l.starts_with("berth_pat_"))
        .unwrap()
        .to_owned();
    assert_eq!(login(&c, ALICE.0, &pat).await.status(), 200);
    // The old password is remembered now (verified a moment ago).
    assert_eq!(login(&c, ALICE.0, ALICE.1).await.status(), 200);

    let (ok, out) = admin(
        &s,
        &["user", "passwd", "alice", "--password-stdin"],
        Some("alice-new-password"),
    );
    assert!(ok, "{out}");
    assert_eq!(
        browser.get(&settings).send().await.unwrap().status(),
        401,
        "the web session ended"
    );
    assert_eq!(
        exchange(&refresh).await.unwrap().status(),
        401,
        "the login token ended"
    );
    assert_eq!(
        login(&c, ALICE.0, ALICE.1).await.status(),
        401,
        "the remembered old password no longer logs in"
    );
    assert_eq!(login(&c, ALICE.0, "alice-new-password").await.status(), 200);
    assert_eq!(
        login(&c, ALICE.0, &pat).await.status(),
        200,
        "a personal token survives"
    );
    let (_, listing) = admin(&s, &["token", "list", "alice"], None);
    assert!(
        listing.contains("\tci\t") && !listing.contains("docker login"),
        "{listing}"
    );

    // A new docker login and session, then removal: everything ends.
    let browser = crate::web::sign_in(&s.url, (ALICE.0, "alice-new-password", false)).await;
    let (ok, out) = admin(&s, &["user", "rm", "alice"], None);
    assert!(ok, "{out}");
    assert_eq!(browser.get(&settings).send().await.unwrap().status(), 401);
    assert_eq!(
        login(&c, ALICE.0, &pat).await.status(),
        401,
        "the personal token ended"
    );
    assert_eq!(login(&c, ALICE.0, "alice-new-password").await.status(), 401);
}

/// Repositories stored under a name no account holds (an admin pushed `teamx/app`)
/// are not given away: neither sign-up (the registry's and the web UI's) nor a new
/// organization takes that name, or its owner would own them.
async fn names_with_repositories_are_not_given_away(db: Db) {
    let s = server(db, SIGNUP_ON).await;
    let (ok, out) = admin(
        &s,
        &["user", "add", "rooty", "--admin", "--password-stdin"],
        Some("rooty-secret-pw"),
    );
    assert!(ok, "{out}");
    let c = s.client();
    let token = crate::auth::bearer(
        &c,
        Some(("rooty", "rooty-secret-pw")),
        "repository:teamx/app:pull,push",
    )
    .await;
    c.with_token(&token)
        .push_image("teamx/app", "1", b"stored under a name nobody holds")
        .await;

    // The registry's sign-up endpoint.
    let r = reqwest::Client::new()
        .post(format!("{}/auth/signup", s.url))
        .form(&[("username", "teamx"), ("password", "a-fine-password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("the name teamx is not available"));
    // The web UI's sign-up page.
    let anonymous = crate::web::cookie_client();
    let form = anonymous
        .get(format!("{}/signup", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = anonymous
        .post(format!("{}/signup", s.url))
        .form(&[
            ("csrf", crate::web::csrf_of(&form).as_str()),
            ("username", "teamx"),
            ("password", "a-fine-password"),
            ("confirm", "a-fine-password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("The name teamx is not available."));
    // A new organization, from alice's settings.
    let alice = crate::web::sign_in(&s.url, ALICE).await;
    let settings = alice
        .get(format!("{}/settings", s.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = alice
        .post(format!("{}/settings/organizations", s.url))
        .form(&[
            ("csrf", crate::web::csrf_of(&settings).as_str()),
            ("name", "teamx"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("The name teamx is not available."));
    // Each refusal counted as an attempt: asking on only finds the limit, so held
    // names are not probed faster than sign-ups are allowed (5 a minute per address,
    // 2 used above).
    let signup = |name: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/auth/signup", s.url))
            .form(&[("username", name), ("password", "a-fine-password")])
            .send()
    };
    let r = signup("alice").await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("alice already exists"));
    // (The organization above was the address's third.)
    assert_eq!(signup("teamx").await.unwrap().status(), 400);
    for name in ["teamx", "nobodyyet"] {
        let r = signup(name).await.unwrap();
        assert_eq!(r.status(), 429, "{name}");
    }
    // New organizations share the address's budget for new names (however many
    // accounts it signed up)…
    let new_org = |http: &reqwest::Client, csrf: &str, name: &str| {
        http.post(format!("{}/settings/organizations", s.url))
            .form(&[("csrf", csrf), ("name", name)])
            .send()
    };
    let csrf = crate::web::csrf_of(&settings);
    assert_eq!(new_org(&alice, &csrf, "teamx").await.unwrap().status(), 429);
    // …and each user has one of their own, wherever they ask from (4 more, 5 in all).
    let elsewhere = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .build()
        .unwrap();
    let form = elsewhere
        .get(format!("{}/signin", s.url))
        .send()
        .await
        .unwrap();
    let form = form.text().await.unwrap();
    let r = elsewhere
        .post(format!("{}/signin", s.url))
        .form(&[
            ("csrf", crate::web::csrf_of(&form).as_str()),
            ("username", ALICE.0),
            ("password", ALICE.1),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let page = elsewhere
        .get(format!("{}/settings", s.url))
        .send()
        .await
        .unwrap();
    let csrf = crate::web::csrf_of(&page.text().await.unwrap());
    for name in ["teamx", "alice", "teamx", "alice"] {
        assert_eq!(
            new_org(&elsewhere, &csrf, name).await.unwrap().status(),
            400
        );
    }
    assert_eq!(
        new_org(&elsewhere, &csrf, "teamx").await.unwrap().status(),
        429
    );
    // An admin still gives it out.
    let (ok, out) = admin(&s, &["org", "add", "teamx", "--owner", "alice"], None);
    assert!(ok, "{out}");
}
