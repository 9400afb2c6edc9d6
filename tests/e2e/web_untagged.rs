//! Untagged images in the web UI, over real HTTP against a real `berthd`: who may list
//! and delete a repository's untagged manifests (JSON API and page), their sizes and
//! freed bytes to the byte for one sharing a layer with a tagged image, a delete
//! through the API that the registry then answers with 404, a tagged digest and one
//! an index lists refused, writes without the CSRF token refused.

use std::collections::BTreeMap;

use berth_tests::*;
use serde_json::{json, Value};

use crate::auth::{pusher, ALICE, BOB};
use crate::web::{cookie_client, sign_in};

const ROOT: (&str, &str, bool) = ("rooty", "rooty-secret-pw", true);

mod with_users {
    use super::*;
    crate::on_both_databases!(
        users = &[ALICE, BOB, ROOT];
        untagged_images_are_previewed_and_deleted_by_owners,
        repositories_without_tags_are_listed_to_their_owners_only,
    );
}

/// Pushes blobs (the first is the config) and an image manifest of them to
/// `repo:reference` (a tag, or `None`: by digest); returns the manifest's digest.
async fn push(c: &Client, repo: &str, tag: Option<&str>, blobs: &[&[u8]]) -> (String, usize) {
    let mut digests = Vec::new();
    for b in blobs {
        digests.push(c.push_blob(repo, b).await);
    }
    let layers: Vec<(&str, usize)> = digests[1..]
        .iter()
        .zip(&blobs[1..])
        .map(|(d, b)| (d.as_str(), b.len()))
        .collect();
    let manifest = image_manifest(&digests[0], blobs[0].len(), &layers, None);
    let digest = sha256(&manifest);
    let r = c
        .push_manifest(repo, tag.unwrap_or(&digest), OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    (digest, manifest.len())
}

fn config(marker: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {"Labels": {"marker": marker}},
    }))
    .unwrap()
}

async fn call(http: &reqwest::Client, method: &str, url: &str, csrf: Option<&str>) -> (u16, Value) {
    let mut r = http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    if let Some(token) = csrf {
        r = r.header("X-CSRF-Token", token);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let body = match text.is_empty() {
        true => Value::Null,
        false => serde_json::from_str(&text).unwrap_or(Value::String(text)),
    };
    (status, body)
}

fn message(body: &Value) -> &str {
    body["errors"][0]["message"].as_str().unwrap_or_default()
}

async fn page(http: &reqwest::Client, url: &str) -> (u16, String) {
    let r = http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    let html = r.text().await.unwrap();
    (status, html.replace("&#x2f;", "/").replace("&quot;", "\""))
}

/// The listed manifests by digest.
fn by_digest(body: &Value) -> BTreeMap<String, Value> {
    body["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .map(|m| (m["digest"].as_str().unwrap().to_owned(), m.clone()))
        .collect()
}

async fn untagged_images_are_previewed_and_deleted_by_owners(s: Berthd) {
    let base = &s.url;
    let repo = "alice/app";
    let c = pusher(&s, ALICE, repo).await;
    // A tagged image and an untagged one (pushed by digest) sharing a layer.
    let shared = vec![b's'; 40_000];
    let (tagged_config, tagged_layer) = (config("tagged"), vec![b't'; 2_000]);
    let (old_config, old_layer) = (config("old"), vec![b'o'; 3_000]);
    let (tagged, _) = push(
        &c,
        repo,
        Some("v1"),
        &[&tagged_config, &shared, &tagged_layer],
    )
    .await;
    let (old, _) = push(&c, repo, None, &[&old_config, &shared, &old_layer]).await;
    // An untagged index and the untagged image it lists.
    let (child_config, child_layer) = (config("child"), vec![b'c'; 1_000]);
    let (child, child_len) = push(&c, repo, None, &[&child_config, &child_layer]).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": child_len,
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();
    let index_digest = sha256(&index);
    let r = c
        .push_manifest(repo, &index_digest, OCI_INDEX, &index)
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // A private repository.
    let secret = pusher(&s, ALICE, "alice/secret").await;
    push(
        &secret,
        "alice/secret",
        None,
        &[&config("secret"), b"secret"],
    )
    .await;
    s.admin_ok(&["repo", "private", "alice/secret"]);

    let anonymous = cookie_client();
    let alice = sign_in(base, ALICE).await;
    let bob = sign_in(base, BOB).await;
    let root = sign_in(base, ROOT).await;
    let list = |scope: &str| format!("{base}/api/v1/untagged?scope={scope}");
    let delete = |digest: &str| format!("{base}/api/v1/untagged?scope={repo}&digest={digest}");
    let untagged_page = |r: &str| format!("{base}/manage/untagged?repo={r}");

    // Who may list.
    assert_eq!(call(&anonymous, "GET", &list(repo), None).await.0, 401);
    assert_eq!(
        call(&anonymous, "GET", &list("alice/secret"), None).await.0,
        404
    );
    assert_eq!(call(&bob, "GET", &list(repo), None).await.0, 403);
    assert_eq!(call(&bob, "GET", &list("alice/secret"), None).await.0, 404);
    assert_eq!(page(&bob, &untagged_page(repo)).await.0, 403);
    assert_eq!(page(&anonymous, &untagged_page(repo)).await.0, 401);
    assert_eq!(
        call(&alice, "GET", &list("alice/missing"), None).await.0,
        404
    );
    let (status, body) = call(&alice, "GET", &list("alice/*"), None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(&root, "GET", &list("alice/secret"), None).await;
    assert_eq!((status, by_digest(&body).len()), (200, 1), "{body}");

    // The owner: exact sizes; only what no other manifest references is freed.
    let (status, body) = call(&alice, "GET", &list(repo), None).await;
    assert_eq!(status, 200, "{body}");
    let csrf = body["csrf"].as_str().unwrap().to_owned();
    let listed = by_digest(&body);
    assert_eq!(
        listed.keys().cloned().collect::<Vec<_>>(),
        {
            let mut v = vec![old.clone(), child.clone(), index_digest.clone()];
            v.sort();
            v
        },
        "{body}"
    );
    let m = &listed[&old];
    let old_size = (old_config.len() + shared.len() + old_layer.len()) as u64;
    let old_freed = (old_config.len() + old_layer.len()) as u64;
    assert_eq!(
        (
            &m["size"],
            &m["freed_bytes"],
            &m["kind"],
            &m["listed_by"],
            &m["deletable"]
        ),
        (
            &json!(old_size),
            &json!(old_freed),
            &json!("image"),
            &Value::Null,
            &json!(true)
        ),
        "{m}"
    );
    assert_eq!(m["media_type"], json!(OCI_MANIFEST));
    assert!(
        m["pushed_at"].as_i64().unwrap() > 0 && m["last_pulled_at"].is_null(),
        "{m}"
    );
    let m = &listed[&child];
    let child_size = (child_config.len() + child_layer.len()) as u64;
    assert_eq!(
        (
            &m["size"],
            &m["freed_bytes"],
            &m["listed_by"],
            &m["deletable"]
        ),
        (
            &json!(child_size),
            &json!(child_size),
            &json!(index_digest),
            &json!(false)
        ),
        "{m}"
    );
    assert_eq!(listed[&index_digest]["kind"], json!("index"));
    let freed_by_index = listed[&index_digest]["freed_bytes"].as_u64().unwrap();
    assert_eq!(
        (&body["deletable"], &body["deletable_freed_bytes"]),
        (&json!(2), &json!(old_freed + freed_by_index)),
        "{body}"
    );
    let (status, _) = call(&root, "GET", &list(repo), None).await;
    assert_eq!(status, 200);

    // The page lists them, with a delete button for the deletable ones only.
    let (status, html) = page(&alice, &untagged_page(repo)).await;
    assert_eq!(status, 200);
    assert!(
        html.contains(&old[..19]) && html.contains(&child[..19]),
        "{html}"
    );
    assert!(html.contains("listed by the index"), "{html}");
    assert_eq!(html.matches("/manage/untagged/delete").count(), 2, "{html}");
    let (_, html) = page(&alice, &format!("{base}/r/{repo}")).await;
    assert!(html.contains("/manage/untagged?repo=alice/app"), "{html}");

    // Writes: the CSRF token, the owner, an untagged digest no index lists.
    let (status, body) = call(&alice, "DELETE", &delete(&old), None).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = call(&bob, "DELETE", &delete(&old), Some(&csrf)).await;
    assert_eq!(status, 403, "another's session token is not alice's");
    let (status, body) = call(&alice, "DELETE", &delete(&tagged), Some(&csrf)).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("tagged"), "{body}");
    let (status, body) = call(&alice, "DELETE", &delete(&child), Some(&csrf)).await;
    assert_eq!(status, 409, "{body}");
    assert!(message(&body).contains("listed by the index"), "{body}");
    let unknown = format!("sha256:{}", "0".repeat(64));
    let (status, body) = call(&alice, "DELETE", &delete(&unknown), Some(&csrf)).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(&alice, "DELETE", &delete("sha256:nope"), Some(&csrf)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        c.call("GET", &format!("/v2/{repo}/manifests/{old}"))
            .await
            .status(),
        200
    );
    let (status, body) = call(&alice, "DELETE", &delete(&old), Some(&csrf)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["deleted"]["digest"], json!(old));
    assert_eq!(
        c.call("GET", &format!("/v2/{repo}/manifests/{old}"))
            .await
            .status(),
        404
    );
    assert_eq!(
        c.call("GET", &format!("/v2/{repo}/manifests/{tagged}"))
            .await
            .status(),
        200,
        "the tagged image sharing its layer stays"
    );
    let (_, body) = call(&alice, "GET", &list(repo), None).await;
    assert!(!by_digest(&body).contains_key(&old), "{body}");

    // The page's form: deleting the index, after which its image may go too.
    let form = [
        ("csrf", csrf.as_str()),
        ("repo", repo),
        ("digest", index_digest.as_str()),
    ];
    let r = alice
        .post(format!("{base}/manage/untagged/delete"))
        .form(&form[1..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "no CSRF token");
    let r = alice
        .post(format!("{base}/manage/untagged/delete"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let (status, html) = page(
        &alice,
        &format!("{base}{}", r.headers()["location"].to_str().unwrap()),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        html.contains("Deleted") && html.contains(&index_digest[..19]),
        "{html}"
    );
    let (_, body) = call(&alice, "GET", &list(repo), None).await;
    assert_eq!(by_digest(&body)[&child]["deletable"], json!(true), "{body}");
    // A registry admin may delete too.
    let (_, body) = call(&root, "GET", &list(repo), None).await;
    let root_csrf = body["csrf"].as_str().unwrap().to_owned();
    let (status, body) = call(&root, "DELETE", &delete(&child), Some(&root_csrf)).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = call(&alice, "GET", &list(repo), None).await;
    assert_eq!(body["manifests"], json!([]), "{body}");
}

/// A public repository holding only untagged images has nothing to pull by name: it is
/// not on Explore, in search (the page, the JSON API, `docker search`'s) or counted
/// on its namespace's page for others; its owner still finds it, and the registry's
/// catalog still lists it.
async fn repositories_without_tags_are_listed_to_their_owners_only(s: Berthd) {
    let base = &s.url;
    let c = pusher(&s, ALICE, "alice/bare").await;
    push(
        &c,
        "alice/bare",
        None,
        &[&config("bare"), b"only by digest"],
    )
    .await;
    let c = pusher(&s, ALICE, "alice/dressed").await;
    let (_, _) = push(
        &c,
        "alice/dressed",
        Some("v1"),
        &[&config("dressed"), b"tagged"],
    )
    .await;

    let anonymous = cookie_client();
    let (status, explore) = page(&anonymous, &format!("{base}/")).await;
    assert_eq!(status, 200);
    assert!(
        explore.contains("alice/dressed") && !explore.contains("alice/bare"),
        "{explore}"
    );
    let (_, search) = page(&anonymous, &format!("{base}/search?q=alice")).await;
    assert!(
        search.contains("alice/dressed") && !search.contains("alice/bare"),
        "{search}"
    );
    let (_, api) = call(
        &anonymous,
        "GET",
        &format!("{base}/api/v1/search?q=alice"),
        None,
    )
    .await;
    assert_eq!(api["total"], 1, "{api}");
    let (_, docker) = call(
        &anonymous,
        "GET",
        &format!("{base}/v1/search?q=alice"),
        None,
    )
    .await;
    assert_eq!(docker["num_results"], 1, "{docker}");
    let (_, namespace) = page(&anonymous, &format!("{base}/u/alice")).await;
    assert!(!namespace.contains("alice/bare"), "{namespace}");
    // Its page is still there for whoever has its name.
    let (status, _) = page(&anonymous, &format!("{base}/r/alice/bare")).await;
    assert_eq!(status, 200);

    // The owner sees it in search and on their namespace page.
    let alice = sign_in(base, ALICE).await;
    let (_, api) = call(
        &alice,
        "GET",
        &format!("{base}/api/v1/search?q=alice"),
        None,
    )
    .await;
    assert_eq!(api["total"], 2, "{api}");
    let (_, namespace) = page(&alice, &format!("{base}/u/alice")).await;
    assert!(namespace.contains("alice/bare"), "{namespace}");
    // Another signed-in user does not.
    let bob = sign_in(base, BOB).await;
    let (_, api) = call(&bob, "GET", &format!("{base}/api/v1/search?q=alice"), None).await;
    assert_eq!(api["total"], 1, "{api}");

    // The registry's catalog lists repositories, tagged or not.
    let token = crate::auth::bearer(&s.client(), None, "registry:catalog:*").await;
    let r = s
        .client()
        .with_token(&token)
        .call("GET", "/v2/_catalog")
        .await;
    let catalog: Value = r.json().await.unwrap();
    assert!(
        catalog["repositories"]
            .as_array()
            .unwrap()
            .contains(&json!("alice/bare")),
        "{catalog}"
    );
}
