//! Retention through the operator's command line and the background pass: `berthd repo
//! retention preview` lists exactly what `run` deletes, and with a policy set, the
//! server's garbage collection pass applies it on its own and then frees the blobs.

use std::time::{Duration, Instant};

use berth_tests::*;

async fn tags(s: &Berthd, repo: &str) -> Vec<String> {
    let list: serde_json::Value = s
        .client()
        .call("GET", &format!("/v2/{repo}/tags/list"))
        .await
        .json()
        .await
        .unwrap();
    let mut tags: Vec<String> = list["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    tags.sort();
    tags
}

async fn push_tags(s: &Berthd, repo: &str, names: &[&str]) {
    let client = s.client();
    for t in names {
        client
            .push_image(repo, t, format!("layer of {repo}:{t}").as_bytes())
            .await;
        // Push times are milliseconds: keep the order unambiguous.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_lists_what_run_deletes() {
    let s = Berthd::start(Db::Sqlite).await.unwrap();
    push_tags(&s, "acme/app", &["v1", "v2", "v3", "v4", "stable"]).await;
    s.admin_ok(&[
        "repo",
        "retention",
        "set",
        "acme/*",
        "--keep-last",
        "2",
        "--keep",
        "stable",
    ]);
    let list = s.admin_ok(&["repo", "retention", "list"]);
    assert!(list.contains("acme/*\t2\tstable\t-\t-"), "{list}");
    let preview = s.admin_ok(&["repo", "retention", "preview", "acme/*"]);
    let doomed = |out: &str| {
        let mut t: Vec<String> = out
            .lines()
            .skip(1)
            .filter(|l| l.starts_with("acme/app\t"))
            .map(|l| l.split('\t').nth(1).unwrap().to_owned())
            .collect();
        t.sort();
        t
    };
    // The two most recently pushed (stable, v4) stay, stable also by the pattern.
    assert_eq!(doomed(&preview), ["v1", "v2", "v3"], "{preview}");
    assert!(
        preview.contains("would delete 3 tags and 3 manifests"),
        "{preview}"
    );
    let run = s.admin_ok(&["repo", "retention", "run", "acme/*"]);
    assert_eq!(doomed(&run), doomed(&preview));
    assert_eq!(tags(&s, "acme/app").await, ["stable", "v4"]);
    // Bad input is refused with a reason and changes nothing.
    for bad in [
        vec!["acme/*", "--keep-last", "0"],
        vec!["../x", "--keep-last", "1"],
        vec!["acme/*", "--unpulled-for", "soon"],
        vec!["acme/*", "--keep", "a/b", "--keep-last", "1"],
        vec!["acme/*"],
    ] {
        let mut args = vec!["repo", "retention", "set"];
        args.extend(bad.iter());
        let out = s.admin(&args);
        assert!(!out.status.success(), "{bad:?} accepted");
        assert!(!out.stderr.is_empty());
    }
    assert!(s
        .admin_ok(&["repo", "retention", "list"])
        .contains("acme/*\t2\tstable"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_pass_applies_policies_then_frees_blobs() {
    let s = Berthd::start_configured(
        Db::Sqlite,
        &[],
        &[("BERTH_GC_INTERVAL", "300ms"), ("BERTH_GC_GRACE", "1s")],
    )
    .await
    .unwrap();
    push_tags(&s, "team/svc", &["a", "b", "c"]).await;
    let blobs_of = || crate::retention::files(&s.data_dir.join("blobs"));
    let before = blobs_of();
    s.admin_ok(&["repo", "retention", "set", "team/svc", "--keep-last", "1"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while tags(&s, "team/svc").await != ["c"] {
        assert!(
            Instant::now() < deadline,
            "the pass never applied the policy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Their layers (a and b) go once the grace has passed; the shared config stays.
    while blobs_of() > before - 2 {
        assert!(Instant::now() < deadline, "the blobs were never collected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(blobs_of(), before - 2);
    assert!(
        s.log().contains("retention policies deleted 2 tags"),
        "{}",
        s.log()
    );
    // What is left pulls whole.
    let client = s.client();
    let r = client.call("GET", "/v2/team/svc/manifests/c").await;
    assert_eq!(r.status(), 200);
    let manifest: serde_json::Value = r.json().await.unwrap();
    for d in [&manifest["config"], &manifest["layers"][0]] {
        let digest = d["digest"].as_str().unwrap();
        let body = client
            .call("GET", &format!("/v2/team/svc/blobs/{digest}"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(sha256(&body), digest);
    }
}

/// Files under `dir` (objects of the local blob store).
pub(crate) fn files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| match e.path().is_dir() {
                true => files(&e.path()),
                false => 1,
            })
            .sum()
    })
}
