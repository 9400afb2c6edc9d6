//! The web UI benchmark (run by `bench/web.sh`): seeds a running berthd through the
//! registry API with many repositories and tags, then requests the search and
//! repository pages and reports the server time each took (its `Server-Timing`).
//!
//! `web_bench URL [REPOS] [TAGS_PER_REPO]` (defaults 10000 and 10). The registry must
//! be open (authentication off): descriptions are set through the web UI's form.

use std::sync::Arc;
use std::time::Instant;

use berth_tests::sha256;
use futures::StreamExt;
use serde_json::json;

const WORDS: [&str; 20] = [
    "nginx",
    "redis",
    "postgres",
    "api",
    "web",
    "worker",
    "proxy",
    "cache",
    "queue",
    "auth",
    "search",
    "metrics",
    "gateway",
    "billing",
    "mailer",
    "scheduler",
    "frontend",
    "backend",
    "storage",
    "runner",
];
const PARALLEL: usize = 16;

fn repo_name(i: usize) -> String {
    format!(
        "team{}/{}-{}-{i}",
        i % 100,
        WORDS[i % 20],
        WORDS[(i / 20) % 20]
    )
}

async fn check(r: reqwest::Result<reqwest::Response>, what: &str) {
    let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = r.status();
    assert!(
        status.is_success() || status.is_redirection(),
        "{what}: {status} {}",
        r.text().await.unwrap_or_default()
    );
}

async fn seed_one(http: &reqwest::Client, base: &str, i: usize, tags: usize) {
    let repo = repo_name(i);
    let arch = ["amd64", "arm64"][i % 2];
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
        "history": [{"created_by": format!("RUN build {repo}")}],
    }))
    .unwrap();
    let layer = format!("layer {i}").into_bytes();
    for blob in [&config, &layer] {
        let url = format!("{base}/v2/{repo}/blobs/uploads/?digest={}", sha256(blob));
        check(http.post(url).body(blob.clone()).send().await, "blob").await;
    }
    for t in 0..tags {
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len()}],
            "annotations": {"org.example.build": t.to_string()},
        }))
        .unwrap();
        let url = format!("{base}/v2/{repo}/manifests/v{t}");
        let put = http
            .put(url)
            .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest)
            .send()
            .await;
        check(put, "manifest").await;
    }
}

async fn describe(http: &reqwest::Client, base: &str, csrf: &str, i: usize) {
    let repo = repo_name(i);
    let description = format!(
        "The {} service for {} teams, built nightly",
        WORDS[(i / 7) % 20],
        WORDS[(i / 3) % 20]
    );
    let form = [
        ("csrf", csrf),
        ("repository", repo.as_str()),
        ("description", description.as_str()),
        ("readme", "# Usage\n\nRun it with `docker run`.\n"),
    ];
    check(
        http.post(format!("{base}/manage/description"))
            .form(&form)
            .send()
            .await,
        "description",
    )
    .await;
}

/// The server time of one page, from its `Server-Timing: app;dur=MS` header.
async fn server_ms(http: &reqwest::Client, url: &str) -> f64 {
    let r = http.get(url).send().await.unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    let timing = r.headers()["server-timing"].to_str().unwrap().to_owned();
    let _ = r.bytes().await.unwrap();
    timing
        .split("dur=")
        .nth(1)
        .and_then(|d| d.parse().ok())
        .expect("app;dur=")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .expect("usage: web_bench URL [REPOS] [TAGS_PER_REPO]")
        .clone();
    let repos: usize = args.get(2).map_or(10_000, |a| a.parse().unwrap());
    let tags: usize = args.get(3).map_or(10, |a| a.parse().unwrap());
    let http = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(PARALLEL)
        .build()
        .unwrap();

    let started = Instant::now();
    let base_ref = Arc::new(base.clone());
    futures::stream::iter(0..repos)
        .for_each_concurrent(PARALLEL, |i| {
            let http = http.clone();
            let base = base_ref.clone();
            async move { seed_one(&http, &base, i, tags).await }
        })
        .await;
    // Authentication is off (there is no sign-in page): the CSRF token comes from a
    // repository page's form.
    let repo_page = http
        .get(format!("{base}/r/{}", repo_name(0)))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = "name=\"csrf\" value=\"";
    let at = repo_page
        .find(marker)
        .expect("a form on the repository page")
        + marker.len();
    let csrf = repo_page[at..][..repo_page[at..].find('"').unwrap()].to_owned();
    futures::stream::iter(0..repos)
        .for_each_concurrent(PARALLEL, |i| {
            let http = http.clone();
            let base = base_ref.clone();
            let csrf = csrf.clone();
            async move { describe(&http, &base, &csrf, i).await }
        })
        .await;
    println!(
        "seeded: {repos} repositories, {} tags in {:.0} s",
        repos * tags,
        started.elapsed().as_secs_f64()
    );

    let pages: Vec<(&str, Vec<String>)> = vec![
        ("explore", vec![format!("{base}/")]),
        (
            "search (one word)",
            WORDS
                .iter()
                .map(|w| format!("{base}/search?q={w}"))
                .collect(),
        ),
        (
            "search (two words, prefix)",
            WORDS
                .iter()
                .map(|w| format!("{base}/search?q={w}+serv"))
                .collect(),
        ),
        (
            "search (exact name)",
            (0..20)
                .map(|i| format!("{base}/search?q={}", repo_name(i * 37)))
                .collect(),
        ),
        (
            "search (word + arch filter)",
            WORDS
                .iter()
                .map(|w| format!("{base}/search?q={w}&arch=arm64"))
                .collect(),
        ),
        (
            "search (arch filter only, page 5)",
            vec![format!("{base}/search?arch=arm64&page=5")],
        ),
        (
            "search (namespace filter)",
            (0..20)
                .map(|i| format!("{base}/search?q=web&namespace=team{i}"))
                .collect(),
        ),
        (
            "repository page",
            (0..20)
                .map(|i| format!("{base}/r/{}", repo_name(i * 499 % repos)))
                .collect(),
        ),
        (
            "tag page",
            (0..20)
                .map(|i| format!("{base}/r/{}/tags/v{}", repo_name(i * 499 % repos), i % tags))
                .collect(),
        ),
        (
            "api search",
            WORDS
                .iter()
                .map(|w| format!("{base}/api/v1/search?q={w}"))
                .collect(),
        ),
    ];
    println!("server time per page (ms), 200 requests each:");
    for (name, urls) in pages {
        let mut times = Vec::with_capacity(200);
        for n in 0..200 {
            times.push(server_ms(&http, &urls[n % urls.len()]).await);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{name}: p50 {:.2}  p99 {:.2}  max {:.2}",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times[times.len() - 1]
        );
    }
}
