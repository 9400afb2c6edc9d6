//! The web UI over real HTTP, on SQLite and PostgreSQL: search and its ranking and
//! filters, pages and the JSON API under the registry's access rules, pull counts,
//! sign-in sessions, CSRF protection, owner actions and token settings.
//! (`browser.rs` drives the same pages in a real Chromium.)

use std::time::{Duration, Instant};

use berth_tests::containers::{docker, docker_available, docker_with_config};
use berth_tests::*;
use serde_json::{json, Value};

use crate::auth::{bearer, ALICE, BOB};

crate::on_both_databases!(
    users = &[ALICE, BOB];
    search_pages_and_api_follow_access_rules,
    forms_need_a_csrf_token_and_an_owner,
);

/// A browser-like HTTP client: keeps cookies, does not follow redirects.
pub(crate) fn cookie_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A page's status and HTML (with the templates' escaped slashes, `&#x2f;`, as `/`).
async fn get(http: &reqwest::Client, url: &str) -> (u16, String) {
    let r = http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap().replace("&#x2f;", "/"))
}

async fn get_json(http: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = http.get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// The CSRF token of the first form in `html`.
pub(crate) fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a form with a CSRF token") + marker.len();
    html[start..][..html[start..].find('"').unwrap()].to_owned()
}

async fn post(http: &reqwest::Client, url: &str, form: &[(&str, &str)]) -> (u16, String) {
    let r = http.post(url).form(form).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// Signs in through the form; returns a client holding the session cookie.
pub(crate) async fn sign_in(base: &str, user: (&str, &str, bool)) -> reqwest::Client {
    let http = cookie_client();
    let (_, form) = get(&http, &format!("{base}/signin")).await;
    let (status, _) = post(
        &http,
        &format!("{base}/signin"),
        &[
            ("csrf", &csrf_of(&form)),
            ("username", user.0),
            ("password", user.1),
        ],
    )
    .await;
    assert_eq!(status, 303, "sign-in of {}", user.0);
    http
}

/// Pushes an image for `arch` whose history has one step, `created_by`, to `repo:tag`
/// as `user`. Returns the manifest and its digest.
pub(crate) async fn push_platform_image(
    c: &Client,
    user: (&str, &str, bool),
    repo: &str,
    tag: &str,
    arch: &str,
    created_by: &str,
) -> (Vec<u8>, String) {
    let token = bearer(
        c,
        Some((user.0, user.1)),
        &format!("repository:{repo}:pull,push"),
    )
    .await;
    let c = c.with_token(&token);
    let layer = format!("layer of {repo} for {arch}")
        .repeat(100)
        .into_bytes();
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/app"], "ExposedPorts": {"8080/tcp": {}},
                   "Labels": {"org.example.team": "web"}},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": created_by}],
    }))
    .unwrap();
    let config_digest = c.push_blob(repo, &config).await;
    let layer_digest = c.push_blob(repo, &layer).await;
    let manifest = image_manifest(
        &config_digest,
        config.len(),
        &[(&layer_digest, layer.len())],
        None,
    );
    let r = c.push_manifest(repo, tag, OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let digest = sha256(&manifest);
    (manifest, digest)
}

/// Pushes an index of the given images (manifest, architecture) to `repo:tag`.
pub(crate) async fn push_index(
    c: &Client,
    user: (&str, &str, bool),
    repo: &str,
    tag: &str,
    images: &[(&[u8], &str)],
) -> Vec<u8> {
    let token = bearer(
        c,
        Some((user.0, user.1)),
        &format!("repository:{repo}:pull,push"),
    )
    .await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": images.iter().map(|(m, arch)| json!({
            "mediaType": OCI_MANIFEST, "digest": sha256(m), "size": m.len(),
            "platform": {"os": "linux", "architecture": arch},
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let r = c
        .with_token(&token)
        .push_manifest(repo, tag, OCI_INDEX, &index)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    index
}

fn names(found: &Value) -> Vec<String> {
    found["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn pull_count(http: &reqwest::Client, base: &str, repo: &str) -> i64 {
    let (_, repo) = get_json(http, &format!("{base}/api/v1/repositories/{repo}")).await;
    repo["pull_count"].as_i64().unwrap()
}

/// Waits (the counts are written in batches) until `repo` shows `want` pulls.
async fn wait_for_pulls(http: &reqwest::Client, base: &str, repo: &str, want: i64) {
    let start = Instant::now();
    loop {
        let have = pull_count(http, base, repo).await;
        if have == want {
            return;
        }
        assert!(
            have < want && start.elapsed() < Duration::from_secs(10),
            "{repo}: {have} pulls, expected {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `docker search` (the daemon's v1 calls, then the Docker CLI itself): the public
/// repositories matching, never a private one, whoever's session comes along.
async fn docker_search_lists_what_anyone_may_pull(s: &Berthd) {
    let base = &s.url;
    let res = reqwest::get(format!("{base}/v1/_ping")).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-docker-registry-standalone"], "true");
    let alice = sign_in(base, ALICE).await;
    for http in [cookie_client(), alice] {
        let (status, found) = get_json(&http, &format!("{base}/v1/search?q=app&n=25")).await;
        assert_eq!(status, 200, "{found}");
        assert_eq!(
            (found["query"].as_str(), found["num_results"].as_i64()),
            (Some("app"), Some(3)),
            "{found}"
        );
        let names: Vec<&str> = found["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names[0], "alice/app");
        assert!(!names.contains(&"alice/secret-app"), "{found}");
        assert_eq!(found["results"][0]["is_official"], false);
    }
    // Hostile and odd parameters: limits clamped, pages from 1, text taken as words.
    for (query, results, page_size, page) in [
        ("q=app&n=0", 1, 1, 1),
        ("q=app&n=1000", 3, 100, 1),
        ("q=app&n=2&page=2", 1, 2, 2),
        ("q=app&page=0", 3, 25, 1),
        ("q=%25%27%22%3B--%20app", 3, 25, 1),
        ("q=..%2F..%2Fetc", 0, 25, 1),
        ("", 3, 25, 1),
    ] {
        let (status, found) =
            get_json(&cookie_client(), &format!("{base}/v1/search?{query}")).await;
        assert_eq!(status, 200, "{query}: {found}");
        assert_eq!(
            (
                found["results"].as_array().map(Vec::len),
                found["page_size"].as_u64(),
                found["page"].as_u64()
            ),
            (Some(results), Some(page_size), Some(page)),
            "{query}: {found}"
        );
    }
    for query in ["q=app&n=-1", "q=app&page=two", "n=99999999999999999999999"] {
        let (status, body) = get_json(&cookie_client(), &format!("{base}/v1/search?{query}")).await;
        assert_eq!(
            (status, body["errors"][0]["code"].as_str()),
            (400, Some("UNSUPPORTED")),
            "{query}: {body}"
        );
    }

    if !docker_available() {
        return;
    }
    let out = docker(&[
        "search",
        "--no-trunc",
        "--format",
        "{{.Name}}|{{.StarCount}}|{{.IsOfficial}}",
        &format!("{}/app", s.addr),
    ]);
    // Official images are marked "[OK]"; none of these is.
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    let mut expected = [
        "alice/app|0|",
        "alice/application|0|",
        "bobby/my-app-server|0|",
    ];
    expected.sort();
    assert_eq!(lines, expected, "docker search printed:\n{out}");
    let out = docker(&["search", "--limit", "1", &format!("{}/app", s.addr)]);
    assert_eq!(out.lines().count(), 2, "a header and one result:\n{out}");
    assert!(out.lines().next().unwrap().starts_with("NAME"), "{out}");

    // Signed in (`docker login`): the daemon sends what it has with its search, and the
    // results are still what anyone may pull.
    let config = tempfile::tempdir().unwrap();
    succeeded(
        &docker_with_config(
            config.path(),
            &["login", &s.addr, "-u", ALICE.0, "--password-stdin"],
            Some(ALICE.1),
        ),
        "docker login",
    );
    let out = succeeded(
        &docker_with_config(
            config.path(),
            &[
                "search",
                "--format",
                "{{.Name}}",
                &format!("{}/app", s.addr),
            ],
            None,
        ),
        "docker search",
    );
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        ["alice/app", "alice/application", "bobby/my-app-server"],
        "signed-in docker search printed:\n{out}"
    );
}

async fn search_pages_and_api_follow_access_rules(s: Berthd) {
    let c = s.client();
    let base = &s.url;
    let (app, _) = push_platform_image(&c, ALICE, "alice/app", "1", "amd64", "RUN make app").await;
    push_platform_image(&c, ALICE, "alice/app", "latest", "amd64", "RUN make app").await;
    let (app_arm, _) =
        push_platform_image(&c, ALICE, "alice/app", "arm", "arm64", "RUN make app").await;
    push_index(
        &c,
        ALICE,
        "alice/app",
        "multi",
        &[(&app, "amd64"), (&app_arm, "arm64")],
    )
    .await;
    push_platform_image(&c, ALICE, "alice/application", "1", "arm64", "RUN make").await;
    push_platform_image(&c, BOB, "bobby/my-app-server", "1", "amd64", "RUN make").await;
    push_platform_image(&c, ALICE, "alice/secret-app", "1", "amd64", "RUN make").await;
    let out = berthd_command(
        &s.data_dir,
        s.database_url.as_deref(),
        &["repo", "private", "alice/secret-app"],
        None,
    );
    assert!(out.status.success());

    let anonymous = cookie_client();
    let search = |http: &reqwest::Client, query: &str| {
        let url = format!("{base}/api/v1/search?{query}");
        let http = http.clone();
        async move {
            let (status, found) = get_json(&http, &url).await;
            assert_eq!(status, 200, "{found}");
            found
        }
    };
    // Ranked: the exact name first; the private repository absent for strangers.
    let found = search(&anonymous, "q=app").await;
    assert_eq!(found["total"], 3, "{found}");
    assert_eq!(names(&found)[0], "alice/app");
    let mut rest = names(&found)[1..].to_vec();
    rest.sort();
    assert_eq!(rest, ["alice/application", "bobby/my-app-server"]);
    assert_eq!(
        names(&search(&anonymous, "q=app&arch=arm64").await)[..],
        ["alice/app", "alice/application"]
    );
    assert_eq!(
        names(&search(&anonymous, "q=app&namespace=bobby").await),
        ["bobby/my-app-server"]
    );
    assert_eq!(
        names(&search(&anonymous, "q=serv").await),
        ["bobby/my-app-server"],
        "prefixes match"
    );
    assert_eq!(search(&anonymous, "q=secret").await["total"], 0);
    let second = search(&anonymous, "q=app&per_page=1&page=2").await;
    assert_eq!(
        (second["total"].as_i64(), names(&second).len()),
        (Some(3), 1)
    );
    assert_eq!(search(&anonymous, "q=nothing-like-it").await["total"], 0);

    // Pages and API answers treat the private repository as absent.
    for path in ["/r/alice/secret-app", "/r/alice/secret-app/tags/1"] {
        assert_eq!(
            get(&anonymous, &format!("{base}{path}")).await.0,
            404,
            "{path}"
        );
    }
    for path in [
        "/api/v1/repositories/alice/secret-app",
        "/api/v1/repositories/alice/secret-app/tags",
        "/api/v1/repositories/alice/secret-app/tags/1",
    ] {
        let (status, body) = get_json(&anonymous, &format!("{base}{path}")).await;
        assert_eq!(
            (status, body["errors"][0]["code"].as_str()),
            (404, Some("NAME_UNKNOWN")),
            "{path}"
        );
    }
    let (_, namespace) = get(&anonymous, &format!("{base}/u/alice")).await;
    assert!(namespace.contains("alice/application") && !namespace.contains("secret"));
    let (_, explore) = get(&anonymous, &format!("{base}/")).await;
    assert!(explore.contains("bobby/my-app-server") && !explore.contains("secret"));
    let (_, search_page) = get(&anonymous, &format!("{base}/search?q=app")).await;
    assert!(search_page.contains("3 repositories") && !search_page.contains("secret"));
    docker_search_lists_what_anyone_may_pull(&s).await;
    let (_, nothing) = get(&anonymous, &format!("{base}/search?q=nothing-like-it")).await;
    assert!(
        nothing.contains("No results for “nothing-like-it”"),
        "{nothing}"
    );
    // A namespace no account, proxy or repository holds is not there; error pages have
    // the site's header (Sign in, or who is signed in), and so does a path no page is at.
    let (status, missing) = get(&anonymous, &format!("{base}/u/nobody-here")).await;
    assert_eq!(status, 404, "{missing}");
    assert!(
        missing.contains("namespace nobody-here not found"),
        "{missing}"
    );
    assert!(missing.contains(">Sign in</a>"), "{missing}");
    let alice = sign_in(base, ALICE).await;
    for path in ["/u/nobody-here", "/r/nobody/nothing", "/no/such/page?x=<b>"] {
        let (status, page) = get(&alice, &format!("{base}{path}")).await;
        assert_eq!(status, 404, "{path}: {page}");
        assert!(
            page.contains("href=\"/u/alice\"") && page.contains("Sign out"),
            "{path}: {page}"
        );
        assert!(!page.contains("<b>"), "{path}: the path is escaped");
    }
    let (status, body) = get_json(&anonymous, &format!("{base}/api/v1/no-such-thing")).await;
    assert_eq!(
        (status, body["errors"][0]["code"].as_str()),
        (404, Some("UNSUPPORTED")),
        "{body}"
    );
    let out = berthd_command(
        &s.data_dir,
        s.database_url.as_deref(),
        &["user", "add", "carol", "--password-stdin"],
        Some("carol-has-no-repositories"),
    );
    assert!(out.status.success());
    let (status, _) = get(&anonymous, &format!("{base}/u/carol")).await;
    assert_eq!(status, 200, "a user without repositories is still there");
    // HEAD on pages and API answers: the GET's status and headers, no body.
    for (path, status) in [
        ("/", 200),
        ("/search?q=app", 200),
        ("/r/alice/app", 200),
        ("/u/alice", 200),
        ("/api/v1/search?q=app", 200),
        ("/u/nobody-here", 404),
        ("/r/alice/secret-app", 404),
    ] {
        let res = anonymous
            .head(format!("{base}{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "HEAD {path}");
        assert!(res.headers().contains_key("content-type"), "HEAD {path}");
        assert!(res.bytes().await.unwrap().is_empty(), "HEAD {path}");
    }

    // The owner sees it everywhere; another user does not.
    let alice = sign_in(base, ALICE).await;
    assert_eq!(search(&alice, "q=app").await["total"], 4);
    assert_eq!(
        get(&alice, &format!("{base}/r/alice/secret-app")).await.0,
        200
    );
    let (_, namespace) = get(&alice, &format!("{base}/u/alice")).await;
    assert!(namespace.contains("secret-app"));
    let bob = sign_in(base, BOB).await;
    assert_eq!(search(&bob, "q=app").await["total"], 3);
    assert_eq!(
        get(&bob, &format!("{base}/r/alice/secret-app")).await.0,
        404
    );

    // The repository page's Tags tab: every tag, each platform of the index, sizes,
    // pull commands.
    let (status, page) = get(&anonymous, &format!("{base}/r/alice/app?tab=tags")).await;
    assert_eq!(status, 200);
    for expected in [
        "linux/amd64",
        "linux/arm64",
        &format!("docker pull {}/alice/app:multi", s.addr),
        ">multi</a>",
        ">arm</a>",
        "4 tags",
    ] {
        assert!(
            page.contains(expected),
            "{expected} missing from the repository page"
        );
    }
    let (_, tags) = get_json(
        &anonymous,
        &format!("{base}/api/v1/repositories/alice/app/tags"),
    )
    .await;
    let multi = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "multi")
        .unwrap();
    let platforms: Vec<&str> = multi["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    assert!(multi["images"][0]["size"].as_i64().unwrap() > 2000);
    // Filtered by name (LIKE's wildcards taken literally) and sorted A–Z; the total
    // counts the matches; a sort it does not know is a 400.
    let tag_names = |v: &Value| -> Vec<String> {
        v["tags"]
            .as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, filtered) = get_json(
        &anonymous,
        &format!("{base}/api/v1/repositories/alice/app/tags?name=a&sort=name"),
    )
    .await;
    assert_eq!(
        (tag_names(&filtered), &filtered["total"]),
        (vec!["arm".to_owned(), "latest".to_owned()], &json!(2))
    );
    for wildcard in ["%25", "_"] {
        let (_, none) = get_json(
            &anonymous,
            &format!("{base}/api/v1/repositories/alice/app/tags?name={wildcard}"),
        )
        .await;
        assert_eq!(none["total"], 0, "{wildcard}: {none}");
    }
    let (status, bad) = get_json(
        &anonymous,
        &format!("{base}/api/v1/repositories/alice/app/tags?sort=sideways"),
    )
    .await;
    assert_eq!(
        (status, &bad["errors"][0]["code"]),
        (400, &json!("UNSUPPORTED"))
    );
    // Every search order runs on this database (stars counted by a subquery).
    for sort in ["best", "pulls", "stars", "updated"] {
        let (status, found) = get_json(
            &anonymous,
            &format!("{base}/api/v1/search?q=app&sort={sort}"),
        )
        .await;
        assert_eq!(status, 200, "{sort}: {found}");
        assert!(found["results"][0]["star_count"].is_number(), "{found}");
    }
    // The Overview tab: description and README first, no tag table.
    let (_, overview) = get(&anonymous, &format!("{base}/r/alice/app")).await;
    assert!(overview.contains("README") && !overview.contains("<table class=\"tags\">"));

    // The tag detail: layers, history and config per platform.
    let (status, detail) = get_json(
        &anonymous,
        &format!("{base}/api/v1/repositories/alice/app/tags/multi"),
    )
    .await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(
        detail["pull"],
        format!("docker pull {}/alice/app:multi", s.addr)
    );
    // A forwarded host, which anyone may send, does not name the registry to pull
    // from; and a shared cache in front must ask again before reusing an answer.
    let forwarded = anonymous
        .get(format!("{base}/api/v1/repositories/alice/app/tags/multi"))
        .header("X-Forwarded-Host", "evil.example")
        .header("Forwarded", "host=evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(forwarded.headers()["cache-control"], "no-cache");
    let text = forwarded.text().await.unwrap();
    assert!(
        text.contains(&format!("docker pull {}/alice/app:multi", s.addr)) && !text.contains("evil"),
        "{text}"
    );
    let page = anonymous
        .get(format!("{base}/r/alice/app"))
        .header("X-Forwarded-Host", "evil.example")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!page.contains("evil"), "{page}");
    let images = detail["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[1]["platform"], "linux/arm64");
    assert_eq!(
        detail["platforms"],
        json!([images[0]["platform"], images[1]["platform"]])
    );
    assert_eq!(images[0]["history"][0]["created_by"], "RUN make app");
    assert_eq!(
        images[0]["history"][0]["size"],
        images[0]["layers"][0]["size"]
    );
    assert_eq!(images[0]["config"]["exposed_ports"], json!(["8080/tcp"]));
    assert_eq!(
        images[0]["config"]["labels"],
        json!([["org.example.team", "web"]])
    );
    let (status, tag_page) = get(&anonymous, &format!("{base}/r/alice/app/tags/1")).await;
    assert_eq!(status, 200);
    assert!(tag_page.contains("RUN make app") && tag_page.contains("8080/tcp"));
    assert_eq!(
        get(&anonymous, &format!("{base}/r/alice/app/tags/nope"))
            .await
            .0,
        404
    );

    // Pull counts: a tag pull counts once; an index and then its platform image, once.
    let token = bearer(&c, None, "repository:alice/app:pull").await;
    let puller = c.with_token(&token);
    assert_eq!(
        puller
            .call("GET", "/v2/alice/app/manifests/1")
            .await
            .status(),
        200
    );
    assert_eq!(
        puller
            .call("HEAD", "/v2/alice/app/manifests/1")
            .await
            .status(),
        200
    );
    wait_for_pulls(&anonymous, base, "alice/app", 1).await;
    assert_eq!(
        puller
            .call("GET", "/v2/alice/app/manifests/multi")
            .await
            .status(),
        200
    );
    let r = puller
        .call(
            "GET",
            &format!("/v2/alice/app/manifests/{}", sha256(&app_arm)),
        )
        .await;
    assert_eq!(r.status(), 200);
    wait_for_pulls(&anonymous, base, "alice/app", 2).await;
    let found = search(&anonymous, "").await;
    assert_eq!(
        names(&found)[0],
        "alice/app",
        "most pulled first without a query"
    );
}

async fn forms_need_a_csrf_token_and_an_owner(s: Berthd) {
    let c = s.client();
    let base = &s.url;
    push_platform_image(&c, ALICE, "alice/site", "1", "amd64", "RUN build").await;
    push_platform_image(&c, ALICE, "alice/site", "2", "amd64", "RUN build").await;
    let alice = sign_in(base, ALICE).await;
    let (_, page) = get(&alice, &format!("{base}/r/alice/site")).await;
    let csrf = csrf_of(&page);
    let readme = "# Site\n\nServes **pages**.\n\n<script>alert(1)</script>\n\n\
                  <iframe src=\"https://example.com\"></iframe>\n\n[click](javascript:alert(2))\n\n\
                  <a href=\"javascript:alert(3)\" onclick=\"alert(4)\">x</a>";
    let describe = |csrf: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("repository", "alice/site".to_owned()),
            ("description", "Static site server for brochures".to_owned()),
            ("readme", readme.to_owned()),
        ]
    };
    let url = format!("{base}/manage/description");
    let send = |http: &reqwest::Client, form: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(&url)
                .form(&form)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // No token, a wrong token, another visitor's token: refused, nothing changes.
    let mut without = describe("");
    without.remove(0);
    assert_eq!(send(&alice, without).await, 403);
    assert_eq!(send(&alice, describe("forged")).await, 403);
    let anonymous = cookie_client();
    let (_, signin_page) = get(&anonymous, &format!("{base}/signin")).await;
    assert_eq!(send(&alice, describe(&csrf_of(&signin_page))).await, 403);
    assert_eq!(
        send(&anonymous, describe(&csrf_of(&signin_page))).await,
        401,
        "sign in first"
    );
    let bob = sign_in(base, BOB).await;
    let (_, bob_page) = get(&bob, &format!("{base}/r/alice/site")).await;
    assert!(!bob_page.contains("/manage/"), "no owner forms for others");
    let bob_csrf = csrf_of(&bob_page);
    assert_eq!(send(&bob, describe(&bob_csrf)).await, 403, "not the owner");
    let (_, unchanged) = get_json(
        &anonymous,
        &format!("{base}/api/v1/repositories/alice/site"),
    )
    .await;
    assert_eq!(unchanged["description"], "");

    // The owner's edit: description searchable, README rendered harmless.
    assert_eq!(send(&alice, describe(&csrf)).await, 303);
    let (_, page) = get(&anonymous, &format!("{base}/r/alice/site")).await;
    assert!(page.contains("Static site server for brochures"));
    let start = page
        .find("<div class=\"markdown\">")
        .expect("a rendered README");
    let rendered = &page[start..][..page[start..].find("</section>").unwrap()];
    assert!(
        rendered.contains("<h1>Site</h1>") && rendered.contains("<strong>pages</strong>"),
        "{rendered}"
    );
    for bad in ["<script", "alert(", "<iframe", "javascript:", "onclick"] {
        assert!(
            !rendered.contains(bad),
            "{bad} survived in the README: {rendered}"
        );
    }
    let (_, found) = get_json(&anonymous, &format!("{base}/api/v1/search?q=brochures")).await;
    assert_eq!(names(&found), ["alice/site"]);

    // Visibility: private hides it from everyone else, public shows it again.
    let vis_url = format!("{base}/manage/visibility");
    let visibility = |private| {
        [
            ("csrf", csrf.as_str()),
            ("repository", "alice/site"),
            ("private", private),
        ]
    };
    assert_eq!(post(&alice, &vis_url, &visibility("true")).await.0, 303);
    assert_eq!(
        get(&anonymous, &format!("{base}/r/alice/site")).await.0,
        404
    );
    assert_eq!(get(&alice, &format!("{base}/r/alice/site")).await.0, 200);
    let by_bob = [
        ("csrf", bob_csrf.as_str()),
        ("repository", "alice/site"),
        ("private", "false"),
    ];
    assert_eq!(
        post(&bob, &vis_url, &by_bob).await.0,
        404,
        "a private repository does not exist for others"
    );
    assert_eq!(post(&alice, &vis_url, &visibility("false")).await.0, 303);
    assert_eq!(
        get(&anonymous, &format!("{base}/r/alice/site")).await.0,
        200
    );

    // Deleting a tag: a confirmation page, then the POST.
    let (status, confirm) = get(
        &alice,
        &format!("{base}/manage/delete-tag?repository=alice/site&tag=1"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(confirm.contains("Delete tag alice/site:1?"));
    let delete = [
        ("csrf", csrf.as_str()),
        ("repository", "alice/site"),
        ("tag", "1"),
    ];
    let del_url = format!("{base}/manage/delete-tag");
    assert_eq!(
        post(
            &bob,
            &del_url,
            &[
                ("csrf", &bob_csrf),
                ("repository", "alice/site"),
                ("tag", "1")
            ]
        )
        .await
        .0,
        403
    );
    assert_eq!(
        post(&alice, &del_url, &delete[1..]).await.0,
        403,
        "no token"
    );
    assert_eq!(post(&alice, &del_url, &delete).await.0, 303);
    let token = bearer(&c, None, "repository:alice/site:pull").await;
    assert_eq!(
        c.with_token(&token)
            .call("GET", "/v2/alice/site/manifests/1")
            .await
            .status(),
        404
    );
    assert_eq!(
        c.with_token(&token)
            .call("GET", "/v2/alice/site/manifests/2")
            .await
            .status(),
        200
    );

    // Tokens: shown once, usable as the password, revocable.
    let settings = format!("{base}/settings");
    assert_eq!(get(&anonymous, &settings).await.0, 401);
    let (status, created) = post(
        &alice,
        &format!("{settings}/tokens"),
        &[
            ("csrf", &csrf),
            ("name", "ci"),
            ("scope", "read"),
            ("expires_in_days", "30"),
        ],
    )
    .await;
    assert_eq!(status, 201);
    let start = created.find("berth_pat_").expect("the new token is shown");
    let secret: String = created[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let (_, later) = get(&alice, &settings).await;
    assert!(
        later.contains(">ci<") && !later.contains(&secret),
        "listed, never shown again"
    );
    let with_pat = |secret: String| {
        let c = c.clone();
        async move {
            c.request(
                "GET",
                "/auth/token?service=berth&scope=repository:alice/site:pull,push",
            )
            .basic_auth("alice", Some(secret))
            .send()
            .await
            .unwrap()
        }
    };
    let r = with_pat(secret.clone()).await;
    assert_eq!(r.status(), 200);
    let granted: Value = r.json().await.unwrap();
    assert!(granted["token"].is_string());
    assert_eq!(
        post(
            &alice,
            &format!("{settings}/tokens"),
            &[("csrf", &csrf), ("name", ""), ("scope", "read")]
        )
        .await
        .0,
        400
    );
    assert_eq!(
        post(
            &alice,
            &format!("{settings}/tokens"),
            &[("name", "x"), ("scope", "read")]
        )
        .await
        .0,
        403
    );
    let id_marker = "name=\"id\" value=\"";
    let id_start = later.find(id_marker).unwrap() + id_marker.len();
    let id = &later[id_start..][..later[id_start..].find('"').unwrap()];
    assert_eq!(
        post(
            &bob,
            &format!("{settings}/tokens/revoke"),
            &[("csrf", &bob_csrf), ("id", id)]
        )
        .await
        .0,
        404,
        "not bob's"
    );
    assert_eq!(
        post(
            &alice,
            &format!("{settings}/tokens/revoke"),
            &[("csrf", &csrf), ("id", id)]
        )
        .await
        .0,
        303
    );
    assert_eq!(with_pat(secret).await.status(), 401, "revoked");

    // Sign-in failures and sign-out.
    let (_, form) = get(&anonymous, &format!("{base}/signin")).await;
    let (status, page) = post(
        &anonymous,
        &format!("{base}/signin"),
        &[
            ("csrf", &csrf_of(&form)),
            ("username", "alice"),
            ("password", "wrong-password"),
        ],
    )
    .await;
    assert_eq!(status, 401);
    assert!(page.contains("Wrong username or password."));
    assert_eq!(post(&alice, &format!("{base}/signout"), &[]).await.0, 403);
    assert_eq!(
        post(&alice, &format!("{base}/signout"), &[("csrf", &csrf)])
            .await
            .0,
        303
    );
    assert_eq!(get(&alice, &settings).await.0, 401, "signed out");
}
