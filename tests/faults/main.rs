//! The cluster in containers, under faults and load: three `berthd` replicas (the
//! project's image) behind HAProxy (`compose/haproxy.cfg`), on PostgreSQL and an S3
//! server (images from `compose/local-images.sh`), on two Docker networks this test
//! makes — `front` (HAProxy and replicas) and `back` (replicas, PostgreSQL, S3), as in
//! `docker-compose.yml`. Clients push unique images and pull them back while faults
//! are injected one after another; afterwards every acknowledged push must pull whole.
//!
//! Its own test binary, so nothing else runs beside it (its timings are real).

mod load;
mod stack;

use std::time::{Duration, Instant};

use berth_tests::containers::{build_berthd_image, container_logs, docker, docker_available};
use berth_tests::{in_ci, succeeded};

use load::Load;
use stack::Stack;

/// Calm load between faults: errors here fail the test.
const CALM: Duration = Duration::from_secs(8);
/// How long after a fault ends clients may still see its errors (requests that were in
/// flight, HAProxy's next checks).
const AFTERMATH: Duration = Duration::from_secs(12);
/// Every replica is ready within this of its dependency returning.
const RECOVERY_LIMIT: Duration = Duration::from_secs(10);

/// One stack at a time: their timings are measured, and the compose stack has a fixed port.
static ONE_STACK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One injected fault, as the table prints it.
struct Fault {
    name: &'static str,
    start: Instant,
    end: Instant,
    /// From the dependency's return (or the replica's restart) to every replica ready.
    recovery: Duration,
}

impl Fault {
    /// A fault that began at `start` and ends now.
    fn ended(name: &'static str, start: Instant, recovery: Duration) -> Fault {
        Fault {
            name,
            start,
            end: Instant::now(),
            recovery,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_survives_faults_under_load() {
    if !docker_available() {
        return;
    }
    assert!(
        berth_tests::require_tool("s3s-fs") || !in_ci(),
        "s3s-fs is needed for the S3 image"
    );
    let _alone = ONE_STACK.lock().await;
    let run = format!("f{}", std::process::id());
    let (first, upgrade) = (format!("berthd:{run}-a"), format!("berthd:{run}-b"));
    build_berthd_image(&first, "first");
    // The upgrade: the same source built again as a new image.
    build_berthd_image(&upgrade, "upgrade");
    let stack = Stack::start(&run, &first).await;
    let load = Load::start(&stack.url, 4);
    let mut faults = Vec::new();

    tokio::time::sleep(CALM).await;
    // A replica killed with pushes in flight, started again.
    let start = Instant::now();
    stack.docker(&["kill", &stack.replicas[0]]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    stack.docker(&["start", &stack.replicas[0]]);
    let back = Instant::now();
    let ready = stack
        .replica_ready_within(&stack.replicas[0], Duration::from_secs(30))
        .await;
    faults.push(Fault::ended(
        "replica killed (docker kill), started 3 s later",
        start,
        ready - back,
    ));

    tokio::time::sleep(CALM).await;
    // A replica frozen for 30 s: HAProxy's checks time out and route around it.
    let start = Instant::now();
    stack.docker(&["pause", &stack.replicas[1]]);
    stack
        .wait_balancer_state(&stack.replicas[1], "DOWN", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    stack.docker(&["unpause", &stack.replicas[1]]);
    let back = Instant::now();
    let ready = stack
        .replica_ready_within(&stack.replicas[1], Duration::from_secs(30))
        .await;
    stack
        .wait_balancer_state(&stack.replicas[1], "UP", Duration::from_secs(10))
        .await;
    faults.push(Fault::ended(
        "replica paused 30 s (docker pause)",
        start,
        ready - back,
    ));

    tokio::time::sleep(CALM).await;
    // A replica cut off from PostgreSQL and S3 (still reachable by HAProxy): it fails
    // readiness, HAProxy routes around it, it recovers on reconnection by itself.
    let start = Instant::now();
    let cut = &stack.replicas[2];
    stack.docker(&["network", "disconnect", &stack.back, cut]);
    stack
        .replica_not_ready_within(cut, Duration::from_secs(15))
        .await;
    stack
        .wait_balancer_state(cut, "DOWN", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    stack.docker(&["network", "connect", &stack.back, cut]);
    let back = Instant::now();
    let ready = stack
        .replica_ready_within(cut, Duration::from_secs(30))
        .await;
    stack
        .wait_balancer_state(cut, "UP", Duration::from_secs(10))
        .await;
    faults.push(Fault::ended(
        "replica cut off from the back network 10 s",
        start,
        ready - back,
    ));

    tokio::time::sleep(CALM).await;
    let start = Instant::now();
    stack.docker(&["restart", "-t", "10", &stack.postgres]);
    stack.postgres_ready_within(Duration::from_secs(60)).await;
    let back = Instant::now();
    let ready = stack.all_ready_within(Duration::from_secs(30)).await;
    faults.push(Fault::ended("PostgreSQL restarted", start, ready - back));

    tokio::time::sleep(CALM).await;
    let start = Instant::now();
    stack.docker(&["stop", "-t", "2", &stack.s3]);
    tokio::time::sleep(Duration::from_secs(15)).await;
    stack.docker(&["start", &stack.s3]);
    let back = Instant::now();
    let ready = stack.all_ready_within(Duration::from_secs(30)).await;
    faults.push(Fault::ended("S3 server stopped 15 s", start, ready - back));

    tokio::time::sleep(CALM).await;
    // A rolling upgrade: each replica in turn stopped (SIGTERM: it finishes what is in
    // flight), replaced by one on the new image, ready before the next goes.
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    // The replaced replicas' logs, kept to explain a wrong answer.
    let mut old_logs = Vec::new();
    for replica in &stack.replicas {
        stack.docker(&["stop", "-t", "40", replica]);
        old_logs.push(container_logs(replica));
        stack.docker(&["rm", replica]);
        stack.start_replica(replica, &upgrade);
        let started = Instant::now();
        let ready = stack
            .replica_ready_within(replica, Duration::from_secs(60))
            .await;
        stack
            .wait_balancer_state(replica, "UP", Duration::from_secs(10))
            .await;
        slowest = slowest.max(ready - started);
    }
    faults.push(Fault::ended(
        "rolling upgrade, one replica at a time",
        start,
        slowest,
    ));
    let new_image = stack.docker(&["image", "inspect", "-f", "{{.Id}}", &upgrade]);
    for replica in &stack.replicas {
        assert_eq!(
            stack.docker(&["inspect", "-f", "{{.Image}}", replica]),
            new_image
        );
    }

    tokio::time::sleep(CALM).await;
    let report = load.stop().await;
    let verified = load::verify_all(&stack.url, &report.acknowledged).await;

    // The table.
    println!(
        "\n{:<48} {:>8} {:>8} {:>30} {:>10}",
        "fault", "at s", "lasted s", "client errors", "recovery s"
    );
    let t0 = report.started;
    for f in &faults {
        let errors = report.errors_between(f.start, f.end + AFTERMATH);
        println!(
            "{:<48} {:>8.1} {:>8.1} {:>30} {:>10.1}",
            f.name,
            (f.start - t0).as_secs_f64(),
            (f.end - f.start).as_secs_f64(),
            errors,
            f.recovery.as_secs_f64()
        );
    }
    println!(
        "\n{} pushes acknowledged ({} chunked), {} interrupted by an error; {} pulls verified; every acknowledged push pulled back byte-identical: {}",
        report.acknowledged.len(),
        report.acknowledged.iter().filter(|p| p.chunked).count(),
        report.interrupted,
        report.pulls_verified,
        verified.is_ok()
    );

    if let Err(lost) = verified {
        panic!(
            "acknowledged pushes that do not pull back whole:\n{}",
            lost.join("\n")
        );
    }
    assert!(
        report.acknowledged.len() >= 50,
        "too little load: {}",
        report.acknowledged.len()
    );
    if !report.wrong.is_empty() {
        // Every replica's log lines about the requests answered wrongly.
        let logs: Vec<String> = old_logs
            .into_iter()
            .chain(stack.replicas.iter().map(|r| container_logs(r)))
            .collect();
        for wrong in &report.wrong {
            let Some((_, id)) = wrong.rsplit_once("(request id ") else {
                continue;
            };
            let id = id.trim_end_matches(')');
            println!("logs about request {id}:");
            for line in logs
                .iter()
                .flat_map(|l| l.lines())
                .filter(|l| l.contains(id))
            {
                println!("  {line}");
            }
        }
    }
    assert!(
        report.wrong.is_empty(),
        "answers no fault explains:\n{}",
        report.wrong.join("\n")
    );
    let unexplained: Vec<String> = report
        .errors
        .iter()
        .filter(|e| {
            !faults
                .iter()
                .any(|f| e.at >= f.start && e.at <= f.end + AFTERMATH)
        })
        .map(|e| format!("{:.1} s: {}", (e.at - t0).as_secs_f64(), e.what))
        .collect();
    assert!(
        unexplained.is_empty(),
        "errors outside every fault:\n{}",
        unexplained.join("\n")
    );
    for f in &faults {
        assert!(
            f.recovery <= RECOVERY_LIMIT,
            "{}: ready again only after {:?}",
            f.name,
            f.recovery
        );
    }
    drop(stack);
    docker(&["rmi", &first, &upgrade]);
}

/// The stack an operator starts — `docker-compose.yml` with the images
/// `compose/local.yml` builds here — comes up with one command and serves a push and a
/// pull through HAProxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_starts_with_one_command() {
    if !docker_available() {
        return;
    }
    let _alone = ONE_STACK.lock().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    // `compose/local.sh ARGS`, on a project of this test's own, fed `stdin`.
    let local = |args: &[&str], stdin: Option<&str>| {
        berth_tests::run_with_input(
            std::process::Command::new(root.join("compose/local.sh"))
                .args(args)
                .env(
                    "COMPOSE_PROJECT_NAME",
                    format!("berth-test-{}", std::process::id()),
                ),
            stdin,
        )
    };
    /// Removes the stack, its networks and volumes however the test ends.
    struct Down<F: Fn(&[&str], Option<&str>) -> std::process::Output>(F);
    impl<F: Fn(&[&str], Option<&str>) -> std::process::Output> Drop for Down<F> {
        fn drop(&mut self) {
            (self.0)(&["down"], None);
        }
    }
    let down = Down(local);
    let local = &down.0;
    succeeded(&local(&["up"], None), "compose/local.sh up");
    // The file turns authentication on: a user, then a token for the push.
    let add = [
        "exec",
        "-T",
        "berth",
        "/berthd",
        "user",
        "add",
        "alice",
        "--password-stdin",
    ];
    succeeded(&local(&add, Some("alice-password-123")), "berthd user add");
    let anonymous = berth_tests::Client::new("http://127.0.0.1:5000");
    assert_eq!(anonymous.call("GET", "/v2/").await.status(), 401);
    let r = anonymous
        .request(
            "GET",
            "/auth/token?service=berth&scope=repository:alice/app:push,pull",
        )
        .basic_auth("alice", Some("alice-password-123"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let token: serde_json::Value = r.json().await.unwrap();
    let c = anonymous.with_token(token["token"].as_str().unwrap());
    let layer = b"a layer pushed through the compose stack".repeat(1000);
    let (manifest, digest) = c.push_image("alice/app", "v1", &layer).await;
    let r = c.call("GET", "/v2/alice/app/manifests/v1").await;
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let r = c
        .call(
            "GET",
            &format!("/v2/alice/app/blobs/{}", berth_tests::sha256(&layer)),
        )
        .await;
    assert_eq!(r.bytes().await.unwrap(), layer);
    // Three replicas behind HAProxy, as the file says.
    let ps = succeeded(&local(&["ps", "-q", "berth"], None), "compose/local.sh ps");
    assert_eq!(ps.lines().count(), 3);
}
