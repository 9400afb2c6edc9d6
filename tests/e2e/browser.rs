//! The web UI in a real headless Chromium: a newcomer pushes an image with docker,
//! finds it by searching, reads its tags, platforms, sizes and history, copies the
//! pull command and pulls with it; signs in, creates a token and logs docker in with
//! it; a private repository is absent for the anonymous visitor and present for its
//! owner. Screenshots of each page land in `target/test-artifacts/web/`.

use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::browser::Browser;
use berth_tests::*;
use fantoccini::Locator;

use crate::auth::ALICE;
use crate::clients::{docker_available, docker_build_busybox};
use crate::web::{push_index, push_platform_image};
use berth_tests::containers::docker_with_config;

fn squeeze(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Waits until `find` finds the element with this CSS selector.
async fn wait_for(browser: &Browser, css: &str) -> fantoccini::elements::Element {
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_finds_understands_and_pulls_an_image_in_the_browser() {
    if !docker_available() {
        return;
    }
    let Some(browser) = Browser::start().await else {
        return;
    };
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    let base = s.url.clone();
    let c = s.client();

    // alice pushes a runnable image with docker, and a second one she makes private.
    let pusher = tempfile::tempdir().unwrap();
    succeeded(
        &docker_with_config(
            pusher.path(),
            &["login", &s.addr, "-u", ALICE.0, "--password-stdin"],
            Some(ALICE.1),
        ),
        "docker",
    );
    let image = format!("{}/alice/webdemo:1", s.addr);
    let marker = format!("found-in-the-browser-{}", std::process::id());
    docker_build_busybox(&image, &marker);
    succeeded(
        &docker_with_config(pusher.path(), &["push", &image], None),
        "docker",
    );
    let hidden = format!("{}/alice/hidden:1", s.addr);
    run(Command::new("docker").args(["tag", &image, &hidden]));
    succeeded(
        &docker_with_config(pusher.path(), &["push", &hidden], None),
        "docker",
    );
    let out = berthd_command(
        &s.data_dir,
        None,
        &["repo", "private", "alice/hidden"],
        None,
    );
    assert!(out.status.success());
    // A multi-platform tag beside it.
    let (amd64, _) =
        push_platform_image(&c, ALICE, "alice/webdemo", "amd64", "amd64", "RUN make").await;
    let (arm64, _) =
        push_platform_image(&c, ALICE, "alice/webdemo", "arm64", "arm64", "RUN make").await;
    push_index(
        &c,
        ALICE,
        "alice/webdemo",
        "multi",
        &[(&amd64, "amd64"), (&arm64, "arm64")],
    )
    .await;

    // Explore, then search from the box in the header.
    browser.goto(&format!("{base}/")).await;
    assert!(browser.text().await.contains("alice/webdemo"));
    assert!(!browser.text().await.contains("alice/hidden"));
    browser.screenshot("1-explore").await;
    let search = browser.client.find(Locator::Id("q")).await.unwrap();
    search.send_keys("webdemo\n").await.unwrap();
    wait_for(&browser, "p.count").await;
    let text = browser.text().await;
    assert!(
        text.contains("Results for “webdemo”") && text.contains("1 repository"),
        "{text}"
    );
    browser.screenshot("2-search").await;

    // The repository page: tags, platforms, sizes.
    click(&browser, Locator::LinkText("alice/webdemo")).await;
    // The Overview first (description, pull command, README), then the Tags tab.
    wait_for(&browser, "nav.tabs").await;
    let text = browser.text().await;
    assert!(
        text.contains("README") && text.contains("docker pull"),
        "{text}"
    );
    browser.screenshot("3-repository-overview").await;
    click(&browser, Locator::Css("nav.tabs a[href$='?tab=tags']")).await;
    wait_for(&browser, "table.tags").await;
    let text = browser.text().await;
    for expected in [
        "1",
        "multi",
        "linux/amd64",
        "linux/arm64",
        "kB",
        "4 tags",
        "Last pulled",
    ] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
    browser.screenshot("3-repository-tags").await;
    // Filtered by name, then sorted A–Z.
    let filter = wait_for(&browser, "#tag-filter").await;
    filter.send_keys("ul").await.unwrap();
    click(&browser, Locator::Css("form.filters button")).await;
    wait_for(&browser, "p.count").await;
    let rows = |browser: &Browser| {
        let client = browser.client.clone();
        async move {
            let mut names = Vec::new();
            for row in client
                .find_all(Locator::Css("table.tags tbody tr td:first-child a"))
                .await
                .unwrap()
            {
                names.push(row.text().await.unwrap());
            }
            names
        }
    };
    assert_eq!(rows(&browser).await, ["multi"], "only names containing ul");
    browser.screenshot("3-repository-filtered").await;
    wait_for(&browser, "#tag-filter")
        .await
        .clear()
        .await
        .unwrap();
    wait_for(&browser, "#tag-sort")
        .await
        .select_by_value("name")
        .await
        .unwrap();
    click(&browser, Locator::Css("form.filters button")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for(&browser, "table.tags").await;
    assert_eq!(
        rows(&browser).await,
        ["1", "amd64", "arm64", "multi"],
        "A to Z"
    );

    // Copy the pull command of tag 1, paste it back to see what the clipboard holds.
    let copy = wait_for(&browser, "button[aria-label='Copy pull command for 1']").await;
    copy.click().await.unwrap();
    let start = Instant::now();
    while copy.text().await.unwrap() != "Copied" {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the copy button never said Copied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Paste (Ctrl+V) into the search box: what lands there is what was copied.
    let search = browser.client.find(Locator::Id("q")).await.unwrap();
    search.clear().await.unwrap();
    search.send_keys("\u{E009}v\u{E000}").await.unwrap();
    let copied = search.prop("value").await.unwrap().unwrap_or_default();
    assert_eq!(copied, format!("docker pull {image}"));
    // The command works as copied.
    run(Command::new("docker").args(["rmi", "-f", &image, &hidden]));
    let args: Vec<&str> = copied.split_whitespace().skip(1).collect();
    succeeded(&docker_with_config(pusher.path(), &args, None), "docker");
    let out = run(Command::new("docker").args(["run", "--rm", &image]));
    assert_eq!(out.trim(), marker);

    // The tag page shows what `docker history` shows.
    click(&browser, Locator::LinkText("1")).await;
    wait_for(&browser, "table.history").await;
    let text = squeeze(&browser.text().await);
    let history = run(Command::new("docker").args([
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        &image,
    ]));
    for step in history.lines().map(squeeze).filter(|l| !l.is_empty()) {
        assert!(
            text.contains(&step),
            "history step {step:?} missing from:\n{text}"
        );
    }
    assert!(
        text.contains("Cmd") && text.contains("/marker"),
        "config shown"
    );
    browser.screenshot("4-tag").await;

    // A multi-platform tag: one platform at a time, chosen in the OS/ARCH selector,
    // with the docker pull of that platform's image by digest.
    browser
        .goto(&format!("{base}/r/alice/webdemo/tags/multi"))
        .await;
    wait_for(&browser, "#platform")
        .await
        .select_by_value("linux/arm64")
        .await
        .unwrap();
    click(&browser, Locator::Css("form.filters button")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for(&browser, "section.image").await;
    let text = browser.text().await;
    assert!(
        text.contains(&format!(
            "docker pull {}/alice/webdemo@{}",
            s.addr,
            sha256(&arm64)
        )),
        "{text}"
    );
    let shown: Vec<String> = {
        let mut v = Vec::new();
        for h in browser
            .client
            .find_all(Locator::Css("section.image h2"))
            .await
            .unwrap()
        {
            v.push(h.text().await.unwrap());
        }
        v
    };
    assert!(
        shown.len() == 1 && shown[0].starts_with("linux/arm64"),
        "{shown:?}"
    );
    browser.screenshot("4-tag-platform").await;

    // The private repository does not exist for an anonymous visitor.
    browser.goto(&format!("{base}/search?q=hidden")).await;
    assert!(browser.text().await.contains("No results for “hidden”"));
    browser.goto(&format!("{base}/r/alice/hidden")).await;
    assert!(browser.text().await.contains("Not Found"));

    // Sign in: now it is there.
    browser.goto(&format!("{base}/")).await;
    click(&browser, Locator::LinkText("Sign in")).await;
    wait_for(&browser, "#username")
        .await
        .send_keys(ALICE.0)
        .await
        .unwrap();
    let password = browser.client.find(Locator::Id("password")).await.unwrap();
    password.send_keys(ALICE.1).await.unwrap();
    password.send_keys("\n").await.unwrap();
    wait_for(&browser, "a[href='/settings']").await;
    browser.goto(&format!("{base}/search?q=hidden")).await;
    let text = browser.text().await;
    assert!(
        text.contains("alice/hidden") && text.contains("private"),
        "{text}"
    );
    browser.screenshot("5-signed-in-search").await;

    // Create a token in the settings and log docker in with it.
    browser.goto(&format!("{base}/settings")).await;
    wait_for(&browser, "#token-name")
        .await
        .send_keys("docker on my laptop")
        .await
        .unwrap();
    click(&browser, Locator::XPath("//button[text()='Create token']")).await;
    let token = wait_for(&browser, "#new-token").await.text().await.unwrap();
    assert!(token.starts_with("berth_pat_"), "{token}");
    browser.screenshot("6-token").await;
    let fresh = tempfile::tempdir().unwrap();
    let login = succeeded(
        &docker_with_config(
            fresh.path(),
            &["login", &s.addr, "-u", ALICE.0, "--password-stdin"],
            Some(&token),
        ),
        "docker",
    );
    assert!(login.contains("Login Succeeded"), "{login}");
    succeeded(
        &docker_with_config(fresh.path(), &["pull", &hidden], None),
        "docker",
    );
    run(Command::new("docker").args(["rmi", "-f", &image, &hidden]));

    // On a phone-sized screen the pages fit the width (tables scroll inside their box).
    browser.client.set_window_size(390, 844).await.unwrap();
    for (path, shot) in [
        ("/r/alice/webdemo", "7-repository-phone"),
        ("/r/alice/webdemo/tags/1", "8-tag-phone"),
    ] {
        browser.goto(&format!("{base}{path}")).await;
        let fits = browser
            .client
            .execute(
                "return document.documentElement.scrollWidth <= window.innerWidth + 1",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            fits,
            serde_json::json!(true),
            "{path} scrolls sideways on a phone"
        );
        browser.screenshot(shot).await;
    }
    browser.close().await;
}

/// Clicks the element `locator` finds.
async fn click(browser: &Browser, locator: Locator<'_>) {
    browser
        .client
        .find(locator)
        .await
        .unwrap_or_else(|e| panic!("nothing to click: {e}"))
        .click()
        .await
        .unwrap();
}

/// Fills the form field with this id.
async fn fill(browser: &Browser, id: &str, value: &str) {
    let field = wait_for(browser, &format!("#{id}")).await;
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

/// Submits the form whose submit button has this text, and waits for the next page.
async fn submit(browser: &Browser, button: &str) {
    let xpath = format!("//button[@type='submit' and normalize-space()='{button}']");
    browser
        .client
        .find(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("no {button} button: {e}"))
        .click()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for(browser, "footer").await;
}

/// A newcomer signs up from the header's link (a taken name and differing passwords
/// said so), lands signed in, changes the password in Settings (a wrong current one
/// refused), and the new password is the one that signs in, in the browser and at the
/// token endpoint. Where sign-up is off there is no sign-up page or link.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_signs_up_and_changes_the_password_in_the_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let s = Berthd::start_configured(Db::Sqlite, &[ALICE], &[("BERTH_AUTH_SIGNUP", "true")])
        .await
        .unwrap();
    let base = s.url.clone();

    browser.goto(&format!("{base}/")).await;
    browser
        .client
        .find(Locator::LinkText("Sign up"))
        .await
        .expect("the header links to sign-up")
        .click()
        .await
        .unwrap();
    wait_for(&browser, "#confirm").await;
    browser.screenshot("signup-1-form").await;
    // A taken name, then passwords that differ: said, nothing made.
    fill(&browser, "username", "alice").await;
    fill(&browser, "password", "a-fine-password").await;
    fill(&browser, "confirm", "a-fine-password").await;
    submit(&browser, "Sign up").await;
    assert!(browser
        .text()
        .await
        .contains("The name alice is not available."));
    fill(&browser, "username", "carolyn").await;
    fill(&browser, "password", "a-fine-password").await;
    fill(&browser, "confirm", "another-password").await;
    submit(&browser, "Sign up").await;
    assert!(browser.text().await.contains("The two passwords differ."));
    browser.screenshot("signup-2-errors").await;
    fill(&browser, "username", "carolyn").await;
    fill(&browser, "password", "a-fine-password").await;
    fill(&browser, "confirm", "a-fine-password").await;
    submit(&browser, "Sign up").await;
    let text = browser.text().await;
    assert!(
        text.contains("carolyn") && text.contains("Sign out"),
        "{text}"
    );

    // Settings: a wrong current password, then the change.
    browser.goto(&format!("{base}/settings")).await;
    fill(&browser, "current-password", "not-the-password").await;
    fill(&browser, "new-password", "a-newer-password").await;
    fill(&browser, "confirm-password", "a-newer-password").await;
    submit(&browser, "Change password").await;
    assert!(browser
        .text()
        .await
        .contains("The current password is wrong."));
    fill(&browser, "current-password", "a-fine-password").await;
    fill(&browser, "new-password", "a-newer-password").await;
    fill(&browser, "confirm-password", "a-newer-password").await;
    submit(&browser, "Change password").await;
    let text = browser.text().await;
    assert!(
        text.contains("Password changed.") && text.contains("Sign out"),
        "still signed in: {text}"
    );
    browser.screenshot("settings-password-changed").await;

    // The token endpoint (docker login) takes the new password, not the old one.
    let http = reqwest::Client::new();
    let token = |password: &'static str| {
        http.get(format!("{base}/auth/token?service=berth"))
            .basic_auth("carolyn", Some(password))
            .send()
    };
    assert_eq!(token("a-newer-password").await.unwrap().status(), 200);
    assert_eq!(token("a-fine-password").await.unwrap().status(), 401);
    // Signed out, the new password signs in.
    submit(&browser, "Sign out").await;
    browser.goto(&format!("{base}/signin")).await;
    assert!(browser.text().await.contains("No account yet? Sign up."));
    fill(&browser, "username", "carolyn").await;
    fill(&browser, "password", "a-newer-password").await;
    submit(&browser, "Sign in").await;
    assert!(browser.text().await.contains("Sign out"));
    browser.close().await;

    // Sign-up off (the default): no link, and /signup is a 404 page.
    let off = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    let home = http
        .get(&off.url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!home.contains("/signup"), "{home}");
    let r = http
        .get(format!("{}/signup", off.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .post(format!("{}/signup", off.url))
        .form(&[
            ("username", "mallory"),
            ("password", "whatever-pw"),
            ("confirm", "whatever-pw"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// An organization made and run from the browser: alice creates it in Settings and
/// lands on its page as its admin; adds bobby, changes his role, cannot remove
/// herself as its last admin nor add someone who does not exist, then removes him.
/// bobby, a member, sees the members but no forms (and his posts are refused);
/// anonymous visitors see no members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_is_created_and_its_members_managed_in_the_browser() {
    use crate::auth::BOB;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE, BOB])
        .await
        .unwrap();
    let base = s.url.clone();
    let org = "acmeteam";

    // alice signs in and creates the organization.
    browser.goto(&format!("{base}/signin")).await;
    fill(&browser, "username", ALICE.0).await;
    fill(&browser, "password", ALICE.1).await;
    submit(&browser, "Sign in").await;
    browser.goto(&format!("{base}/settings")).await;
    assert!(browser
        .text()
        .await
        .contains("You belong to no organization."));
    fill(&browser, "org-name", "bobby").await;
    submit(&browser, "Create organization").await;
    assert!(browser
        .text()
        .await
        .contains("The name bobby is not available."));
    fill(&browser, "org-name", org).await;
    submit(&browser, "Create organization").await;
    let text = browser.text().await;
    assert!(
        text.contains("Members") && text.contains("Add member"),
        "{text}"
    );
    browser.screenshot("org-1-created").await;

    // Members: add bobby, change his role, the refusals said.
    let add = |user: &'static str, role: &'static str| {
        let browser = &browser;
        async move {
            fill(browser, "new-member", user).await;
            wait_for(browser, "#new-role")
                .await
                .select_by_value(role)
                .await
                .unwrap();
            submit(browser, "Add member").await;
        }
    };
    add("bobby", "write").await;
    assert!(browser.text().await.contains("Member added."));
    wait_for(&browser, "#role-bobby")
        .await
        .select_by_value("read")
        .await
        .unwrap();
    click(
        &browser,
        Locator::Css("button[aria-label='Change the role of bobby']"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(browser.text().await.contains("Role changed."));
    let listing = s.admin_ok(&["org", "member", "ls", org]);
    assert!(
        listing.contains("alice\tadmin") && listing.contains("bobby\tread"),
        "{listing}"
    );
    add("nosuchuser", "read").await;
    assert!(browser
        .text()
        .await
        .contains("There is no user of that name."));
    click(&browser, Locator::Css("button[aria-label='Remove alice']")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(browser.text().await.contains("would have no admin left"));
    browser.screenshot("org-2-members").await;

    // bobby sees the members, no forms; his post is refused. Anonymous: no members.
    let bob = crate::web::sign_in(&base, BOB).await;
    let page = bob
        .get(format!("{base}/u/{org}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Members") && page.contains("alice") && !page.contains("Add member"));
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let r = bob
        .post(format!("{base}/u/{org}/members"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("user", "bobby"),
            ("role", "admin"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "a member who is not an admin manages nothing"
    );
    let anonymous = reqwest::get(format!("{base}/u/{org}"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!anonymous.contains("Members"), "{anonymous}");

    // alice removes bobby.
    click(&browser, Locator::Css("button[aria-label='Remove bobby']")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(browser.text().await.contains("Member removed."));
    let listing = s.admin_ok(&["org", "member", "ls", org]);
    assert!(!listing.contains("bobby"), "{listing}");
    browser.close().await;
}

/// Stars: alice stars a repository from its page (the button turns to Starred, the
/// count to 1), bobby too; search sorted by most starred puts it first, and the JSON
/// API and `docker search`'s API count them; taking a star back counts down. Nobody
/// stars what they may not see, or without signing in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_are_starred_and_searched_by_stars_in_the_browser() {
    use crate::auth::BOB;
    let Some(browser) = Browser::start().await else {
        return;
    };
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE, BOB])
        .await
        .unwrap();
    let base = s.url.clone();
    let c = s.client();
    for repo in ["alice/starone", "alice/startwo", "alice/starhidden"] {
        push_platform_image(&c, ALICE, repo, "1", "amd64", "RUN star").await;
    }
    s.admin_ok(&["repo", "private", "alice/starhidden"]);

    browser.goto(&format!("{base}/signin")).await;
    fill(&browser, "username", ALICE.0).await;
    fill(&browser, "password", ALICE.1).await;
    submit(&browser, "Sign in").await;
    browser.goto(&format!("{base}/r/alice/startwo")).await;
    assert!(browser.text().await.contains("0 stars"));
    submit(&browser, "☆ Star").await;
    let text = browser.text().await;
    assert!(
        text.contains("★ Starred") && text.contains("1 star"),
        "{text}"
    );
    browser.screenshot("star-1-starred").await;

    // bobby stars it too, over HTTP with his session; not the private one.
    let bob = crate::web::sign_in(&base, BOB).await;
    let page = bob
        .get(format!("{base}/r/alice/startwo"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = crate::web::csrf_of(&page);
    let star = |repo: &'static str, on: &'static str| {
        bob.post(format!("{base}/star"))
            .form(&[("csrf", csrf.as_str()), ("repository", repo), ("star", on)])
            .send()
    };
    assert_eq!(star("alice/startwo", "true").await.unwrap().status(), 303);
    assert_eq!(
        star("alice/startwo", "true").await.unwrap().status(),
        303,
        "twice is once"
    );
    assert_eq!(
        star("alice/starhidden", "true").await.unwrap().status(),
        404
    );
    let anonymous = reqwest::Client::new()
        .post(format!("{base}/star"))
        .form(&[
            ("csrf", "x"),
            ("repository", "alice/startwo"),
            ("star", "true"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Search, most starred first.
    browser.goto(&format!("{base}/search?q=star")).await;
    wait_for(&browser, "#sort")
        .await
        .select_by_value("stars")
        .await
        .unwrap();
    submit(&browser, "Filter").await;
    let first = wait_for(&browser, "ul.repos li a.name")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(first, "alice/startwo");
    assert!(browser.text().await.contains("2 stars"));
    browser.screenshot("star-2-search").await;
    let api: serde_json::Value = reqwest::get(format!("{base}/api/v1/search?q=star&sort=stars"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(api["results"][0]["name"], "alice/startwo");
    assert_eq!(api["results"][0]["star_count"], 2);
    let docker: serde_json::Value = reqwest::get(format!("{base}/v1/search?q=startwo"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(docker["results"][0]["star_count"], 2);
    let bad = reqwest::get(format!("{base}/api/v1/search?sort=sideways"))
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // alice takes hers back.
    browser.goto(&format!("{base}/r/alice/startwo")).await;
    submit(&browser, "★ Starred").await;
    let text = browser.text().await;
    assert!(text.contains("☆ Star") && text.contains("1 star"), "{text}");
    browser.close().await;
}

/// Webhooks in the browser: alice opens them from her repository's page, adds one
/// (an internal address refused where the operator has not allowed them, here
/// allowed), pushes, sees the delivery with its status, sends it again, and removes
/// the webhook.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_added_watched_and_redelivered_in_the_browser() {
    use crate::proxy::fakes::{eventually, FakeUpstream, Reply};
    let Some(browser) = Browser::start().await else {
        return;
    };
    let receiver = FakeUpstream::start(std::sync::Arc::new(|_| {
        Reply::new(200).body(b"{\"ok\":true}".to_vec())
    }))
    .await;
    let s = Berthd::start_configured(
        Db::Sqlite,
        &[ALICE],
        &[("BERTH_WEBHOOKS_ALLOW_PRIVATE", "true")],
    )
    .await
    .unwrap();
    let base = s.url.clone();
    let alice = crate::auth::pusher(&s, ALICE, "alice/hooked").await;
    alice.push_image("alice/hooked", "v1", b"first").await;

    browser.goto(&format!("{base}/signin")).await;
    fill(&browser, "username", ALICE.0).await;
    fill(&browser, "password", ALICE.1).await;
    submit(&browser, "Sign in").await;
    browser.goto(&format!("{base}/r/alice/hooked")).await;
    click(&browser, Locator::LinkText("Webhooks…")).await;
    wait_for(&browser, "#webhook-name").await;
    assert!(browser
        .text()
        .await
        .contains("No webhooks for alice/hooked"));
    fill(&browser, "webhook-name", "deploy").await;
    fill(&browser, "webhook-url", &format!("{}/deploy", receiver.url)).await;
    fill(&browser, "webhook-secret", "s3cret").await;
    submit(&browser, "Add webhook").await;
    let text = browser.text().await;
    assert!(
        text.contains("Added the webhook.") && text.contains("signed"),
        "{text}"
    );

    alice.push_image("alice/hooked", "v2", b"second").await;
    eventually(Duration::from_secs(10), "the delivery", || async {
        match receiver.count("/deploy") {
            1 => Ok(()),
            n => Err(format!("{n} requests")),
        }
    })
    .await;
    let url = browser.client.current_url().await.unwrap().to_string();
    let text = eventually(Duration::from_secs(10), "delivered", || async {
        browser.goto(&url).await;
        let text = browser.text().await;
        match text.contains("delivered") {
            true => Ok(text),
            false => Err(text),
        }
    })
    .await;
    assert!(text.contains("v2") && text.contains("200"), "{text}");
    browser.screenshot("webhooks-1-delivered").await;
    click(&browser, Locator::Css("button[aria-label^='Redeliver']")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(browser.text().await.contains("Sent again"));
    eventually(Duration::from_secs(10), "the redelivery", || async {
        match receiver.count("/deploy") {
            2 => Ok(()),
            n => Err(format!("{n} requests")),
        }
    })
    .await;
    click(
        &browser,
        Locator::Css("button[aria-label='Remove webhook deploy']"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = browser.text().await;
    assert!(text.contains("Removed the webhook."), "{text}");
    browser.screenshot("webhooks-2-removed").await;
    browser.close().await;
}
