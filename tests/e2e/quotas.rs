//! Quotas and usage through real clients: `docker push` over a namespace's quota is
//! refused with the usage and the quota in docker's own output, a push of layers the
//! namespace already stores still goes through, and `berthd usage` counts a layer
//! shared by repositories of one namespace once.

use std::process::Command;

use berth_tests::*;
use serde_json::Value;

use crate::clients::{docker_available, docker_build_busybox, run};

/// The distinct blob bytes an image manifest references.
async fn image_bytes(s: &Berthd, repo: &str, tag: &str) -> u64 {
    let manifest: Value = s
        .client()
        .request("GET", &format!("/v2/{repo}/manifests/{tag}"))
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut sizes = std::collections::BTreeMap::new();
    for d in std::iter::once(&manifest["config"]).chain(manifest["layers"].as_array().unwrap()) {
        sizes.insert(
            d["digest"].as_str().unwrap().to_owned(),
            d["size"].as_u64().unwrap(),
        );
    }
    sizes.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_over_quota_is_refused_with_usage_and_quota() {
    if !docker_available() {
        return;
    }
    let s = Berthd::start(Db::Sqlite).await.unwrap();
    let first = format!("{}/acme/one:1", s.addr);
    let marker = format!("quota-{}", std::process::id());
    docker_build_busybox(&first, &marker);
    run(Command::new("docker").args(["push", &first]));
    let used = image_bytes(&s, "acme/one", "1").await;

    // The same image in a second repository of the namespace: shared, counted once.
    let shared = format!("{}/acme/shared:1", s.addr);
    run(Command::new("docker").args(["tag", &first, &shared]));
    run(Command::new("docker").args(["push", &shared]));
    let usage = s.admin(&["usage", "acme"]);
    assert!(usage.status.success());
    let text = String::from_utf8_lossy(&usage.stdout);
    assert!(
        text.contains(&format!("({used} bytes)")),
        "{text} (expected {used} bytes)"
    );
    let repo = s.admin(&["usage", "acme/shared"]);
    assert!(String::from_utf8_lossy(&repo.stdout).contains(&format!("({used} bytes)")));

    // A quota at today's usage: a new image is refused, and docker says why.
    let set = s.admin(&["quota", "set", "acme", &used.to_string()]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    // The server rereads quotas every 5 s.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    // /metrics shows it (measured on the first scrape, then once a minute).
    let metrics = s
        .client()
        .call("GET", "/metrics")
        .await
        .text()
        .await
        .unwrap();
    for line in [
        format!("berth_quota_limit_bytes{{namespace=\"acme\"}} {used}"),
        format!("berth_quota_used_bytes{{namespace=\"acme\"}} {used}"),
    ] {
        assert!(metrics.contains(&line), "{line} not in /metrics");
    }
    assert!(metrics.contains("berth_storage_stored_bytes "));
    let second = format!("{}/acme/two:1", s.addr);
    docker_build_busybox(&second, &format!("{marker}-other"));
    let refused = Command::new("docker")
        .args(["push", &second])
        .output()
        .unwrap();
    assert!(!refused.status.success(), "a push over the quota succeeded");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(
        said.contains("denied")
            && said.contains("namespace acme is over its storage quota")
            && said.contains("used of"),
        "docker's output: {said}"
    );
    // Nothing of the refused push became visible; what was stored is untouched.
    let r = s.client().call("GET", "/v2/acme/two/manifests/1").await;
    assert_eq!(r.status(), 404);
    assert_eq!(image_bytes(&s, "acme/one", "1").await, used);
    // Layers the namespace already stores add nothing: this push still goes through.
    let third = format!("{}/acme/three:1", s.addr);
    run(Command::new("docker").args(["tag", &first, &third]));
    run(Command::new("docker").args(["push", &third]));
    // Another namespace has no quota.
    let elsewhere = format!("{}/other/two:1", s.addr);
    run(Command::new("docker").args(["tag", &second, &elsewhere]));
    run(Command::new("docker").args(["push", &elsewhere]));
    let list = s.admin(&["quota", "list"]);
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("acme\t") && list.contains(&format!("({used} bytes)")),
        "{list}"
    );
    run(Command::new("docker").args(["rmi", "-f", &first, &shared, &second, &third, &elsewhere]));
}
