//! Pull-through caches in the web UI, in a real headless Chromium: an upstream berthd
//! holds an image, a second berthd mirrors it under `up/` (anyone may pull) and under
//! `team/` (signed-in users only). After pulls through both, the mirrors are marked on
//! Explore and in search results, a mirror's page names what it mirrors and keeps
//! Berth's own pull command, `/u/up` shows the proxy with its statistics, and
//! `/mirrors` lists what the visitor may see; the `team/` mirror appears only once
//! signed in, and mirrors cannot be made public or have tags deleted from the pages.
//! Screenshots land in `target/test-artifacts/web/`.

use std::time::Duration;

use berth_tests::browser::Browser;
use berth_tests::*;
use fantoccini::Locator;
use serde_json::Value;

use crate::auth::{bearer, ALICE};
use crate::web::{cookie_client, csrf_of, sign_in};

const ROOT: (&str, &str, bool) = ("rooty", "rooty-secret-pw", true);

/// Waits until an element with this CSS selector is there.
async fn wait_for(browser: &Browser, css: &str) -> fantoccini::elements::Element {
    browser
        .client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never appeared: {e}"))
}

/// The page's text with runs of whitespace as one space.
async fn text(browser: &Browser) -> String {
    browser
        .text()
        .await
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Pulls `repo:tag` whole (manifest, config, layers) with `c`, as a client would.
async fn pull(c: &Client, repo: &str, tag: &str) -> String {
    let r = c
        .request("GET", &format!("/v2/{repo}/manifests/{tag}"))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "GET {repo}:{tag}");
    let manifest = r.bytes().await.unwrap();
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let mut blobs = vec![m["config"]["digest"].as_str().unwrap().to_owned()];
    for layer in m["layers"].as_array().unwrap() {
        blobs.push(layer["digest"].as_str().unwrap().to_owned());
    }
    for blob in blobs {
        let r = c.call("GET", &format!("/v2/{repo}/blobs/{blob}")).await;
        assert_eq!(r.status(), 200, "GET {repo} blob {blob}");
        assert_eq!(
            sha256(&r.bytes().await.unwrap()),
            blob,
            "{repo} blob content"
        );
    }
    sha256(&manifest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_marked_explained_and_listed_in_the_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let upstream = Berthd::start(Db::Sqlite).await.unwrap();
    let (_, digest) = upstream
        .client()
        .push_image("lib/app", "1", &seeded_bytes(5, 20_000))
        .await;

    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("berth.toml");
    std::fs::write(
        &config,
        format!(
            "[[proxy]]\nprefix = \"up\"\nupstream = \"{0}\"\naccess = \"anonymous\"\n\n\
             [[proxy]]\nprefix = \"team\"\nupstream = \"{0}\"\naccess = \"users\"\nmax_size = \"10MB\"\n",
            upstream.url
        ),
    )
    .unwrap();
    let config = config.display().to_string();
    let s = Berthd::start_configured(Db::Sqlite, &[ALICE, ROOT], &[("BERTH_CONFIG", &config)])
        .await
        .unwrap();
    let base = s.url.clone();
    let c = s.client();

    // Anyone pulls through `up` (twice: a miss, then hits); alice through `team`.
    let anonymous = c.with_token(&bearer(&c, None, "repository:up/lib/app:pull").await);
    assert_eq!(pull(&anonymous, "up/lib/app", "1").await, digest);
    assert_eq!(pull(&anonymous, "up/lib/app", "1").await, digest);
    let alice =
        c.with_token(&bearer(&c, Some((ALICE.0, ALICE.1)), "repository:team/lib/app:pull").await);
    assert_eq!(pull(&alice, "team/lib/app", "1").await, digest);

    // Explore: the `up` mirror, marked with its upstream; `team`'s is not public.
    browser.goto(&format!("{base}/")).await;
    let page = text(&browser).await;
    assert!(page.contains("up/lib/app"), "{page}");
    assert!(
        page.contains(&format!("Mirror mirror of {}", upstream.url)),
        "{page}"
    );
    assert!(!page.contains("team/lib/app"), "{page}");
    let badge = wait_for(&browser, "ul.repos .badge.mirror").await;
    assert_eq!(badge.text().await.unwrap(), "Mirror");
    // The header links to /mirrors: a proxy anyone may use is configured.
    let link = wait_for(&browser, "nav.account a[href='/mirrors']").await;
    assert_eq!(link.text().await.unwrap(), "Mirrors");
    browser.screenshot("mirrors-1-explore").await;

    // The repository page: what it mirrors, and Berth's own pull command.
    browser
        .client
        .find(Locator::LinkText("up/lib/app"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&browser, "p.mirror-line").await;
    let page = text(&browser).await;
    assert!(
        page.contains(&format!("Mirror of {}/lib/app", upstream.url)),
        "{page}"
    );
    assert!(
        page.contains(&format!("docker pull {}/up/lib/app:1", s.addr)),
        "{page}"
    );
    assert!(page.contains("1 tag · last cached"), "{page}");
    browser.screenshot("mirrors-2-repository").await;

    // The proxy's namespace page: upstream, access, TTL, size, statistics, repositories.
    browser
        .client
        .find(Locator::LinkText("up"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(&browser, "section.proxy").await;
    let page = text(&browser).await;
    for expected in [
        &format!("A pull-through cache of {}", upstream.url)[..],
        "Who may pull everyone, without signing in",
        "a cached tag is served for 5 minutes",
        "no size limit",
        "fetched from the upstream",
        "Cached repositories",
        "1 repository",
        "up/lib/app",
    ] {
        assert!(
            page.contains(expected),
            "{expected:?} missing from:\n{page}"
        );
    }
    let stats: Vec<String> = {
        let mut out = Vec::new();
        for e in browser
            .client
            .find_all(Locator::Css("section.proxy .stat"))
            .await
            .unwrap()
        {
            out.push(e.text().await.unwrap());
        }
        out
    };
    let count = |label: &str| -> u64 {
        let stat = stats
            .iter()
            .find(|s| s.contains(label))
            .unwrap_or_else(|| panic!("no {label} in {stats:?}"));
        stat.split_whitespace().next().unwrap().parse().unwrap()
    };
    assert!(count("hit") > 0, "{stats:?}");
    assert!(count("miss") > 0, "{stats:?}");
    browser.screenshot("mirrors-3-proxy").await;

    // /mirrors: `up` for everyone; `team` once signed in.
    browser.goto(&format!("{base}/mirrors")).await;
    wait_for(&browser, "table.mirrors").await;
    let page = text(&browser).await;
    assert!(
        page.contains(&format!(
            "up {} everyone, without signing in 1 repository",
            upstream.url
        )),
        "{page}"
    );
    assert!(!page.contains("team"), "{page}");
    assert!(page.contains("Sign in to see 1 more mirror."), "{page}");
    let up = browser
        .client
        .find(Locator::Css("table.mirrors a[href='/u/up']"))
        .await
        .unwrap();
    assert_eq!(up.text().await.unwrap(), "up");
    browser.screenshot("mirrors-4-list-anonymous").await;
    browser.goto(&format!("{base}/r/team/lib/app")).await;
    assert!(text(&browser).await.contains("Not Found"));

    // Signed in as alice: the users-only mirror is there too, and found by search.
    browser.goto(&format!("{base}/signin")).await;
    wait_for(&browser, "#username")
        .await
        .send_keys(ALICE.0)
        .await
        .unwrap();
    let password = browser.client.find(Locator::Id("password")).await.unwrap();
    password.send_keys(ALICE.1).await.unwrap();
    password.send_keys("\n").await.unwrap();
    wait_for(&browser, "a[href='/settings']").await;
    browser.goto(&format!("{base}/mirrors")).await;
    wait_for(&browser, "table.mirrors").await;
    let page = text(&browser).await;
    assert!(
        page.contains(&format!(
            "team {} signed-in users 1 repository",
            upstream.url
        )),
        "{page}"
    );
    assert!(page.contains("of 10.0 MB"), "{page}");
    assert!(!page.contains("Sign in to see"), "{page}");
    browser.screenshot("mirrors-5-list-signed-in").await;
    browser.goto(&format!("{base}/search?q=app")).await;
    wait_for(&browser, "p.count").await;
    let page = text(&browser).await;
    assert!(page.contains("2 repositories"), "{page}");
    assert!(
        page.contains("team/lib/app private Mirror mirror of"),
        "{page}"
    );
    browser.screenshot("mirrors-6-search").await;
    browser.goto(&format!("{base}/u/team")).await;
    let page = text(&browser).await;
    assert!(page.contains("Who may pull signed-in users"), "{page}");
    assert!(page.contains("of its 10.0 MB size limit"), "{page}");
    browser.screenshot("mirrors-7-proxy-with-a-limit").await;
    browser.close().await;

    // The JSON API marks mirrors too.
    let (_, found) = get_json(&cookie_client(), &format!("{base}/api/v1/search?q=app")).await;
    assert_eq!(found["total"], 1, "anonymous: {found}");
    assert_eq!(
        found["results"][0]["mirror"]["upstream"],
        upstream.url.as_str()
    );
    assert_eq!(found["results"][0]["mirror"]["remote"], "lib/app");
    let (_, repo) = get_json(
        &cookie_client(),
        &format!("{base}/api/v1/repositories/up/lib/app"),
    )
    .await;
    assert_eq!(repo["mirror"]["prefix"], "up", "{repo}");

    // An admin manages a mirror's description, but neither its visibility nor its
    // tags: its content and access are the proxy's.
    let root = sign_in(&base, ROOT).await;
    let page = root
        .get(format!("{base}/r/up/lib/app"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("id=\"manage\""), "the admin manages it");
    assert!(!page.contains("Make private") && !page.contains("Immutable tags"));
    let csrf = csrf_of(&page);
    let r = root
        .post(format!("{base}/manage/visibility"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("repository", "up/lib/app"),
            ("private", "true"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("read-only mirror"));
    let r = root
        .post(format!("{base}/manage/delete-tag"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("repository", "up/lib/app"),
            ("tag", "1"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // Nor its retention, immutable tag rules or untagged images, which the page does
    // not offer either.
    assert!(!page.contains("Retention") && !page.contains("Untagged images"));
    let api = |method: reqwest::Method, path: &str| {
        root.request(method, format!("{base}{path}"))
            .header("X-CSRF-Token", csrf.as_str())
    };
    let r = api(reqwest::Method::PUT, "/api/v1/retention?scope=up/*")
        .json(&serde_json::json!({"keep_last": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("read-only mirror"));
    let r = api(reqwest::Method::POST, "/api/v1/immutable-tag-rules")
        .json(&serde_json::json!({"scope": "up/lib/app", "pattern": "*"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = api(
        reqwest::Method::DELETE,
        &format!("/api/v1/untagged?scope=up/lib/app&digest={digest}"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        pull(&anonymous, "up/lib/app", "1").await,
        digest,
        "still there"
    );
}

async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = http.get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}
