//! The stack in containers, on networks of its own: PostgreSQL and the S3 server on
//! `back`, HAProxy on `front`, replicas on both (answering to `berth` on `front`, the
//! name `compose/haproxy.cfg` resolves). Everything is removed when it is dropped.

use std::path::Path;
use std::time::{Duration, Instant};

use berth_tests::containers::{container_logs, docker, docker_ok, local_images};

const DB_PASSWORD: &str = "faults-db-password";
const S3_KEY: &str = "faults";
const S3_SECRET: &str = "faults-secret-key";

pub struct Stack {
    /// The registry, through HAProxy.
    pub url: String,
    /// HAProxy's statistics (`/stats;csv`).
    stats: String,
    pub front: String,
    pub back: String,
    pub postgres: String,
    pub s3: String,
    pub replicas: Vec<String>,
    run: String,
}

impl Stack {
    pub async fn start(run: &str, image: &str) -> Stack {
        let images = local_images();
        let (front, back) = (format!("{run}-front"), format!("{run}-back"));
        docker(&["network", "create", &front]);
        docker(&["network", "create", &back]);
        let postgres = format!("{run}-postgres");
        let s3 = format!("{run}-s3");
        let mut stack = Stack {
            url: String::new(),
            stats: String::new(),
            front,
            back,
            postgres,
            s3,
            replicas: (1..=3).map(|i| format!("{run}-berth-{i}")).collect(),
            run: run.to_owned(),
        };
        docker(&[
            "run",
            "-d",
            "--name",
            &stack.postgres,
            "--network",
            &stack.back,
            "--network-alias",
            "postgres",
            "-e",
            "POSTGRES_USER=berth",
            "-e",
            &format!("POSTGRES_PASSWORD={DB_PASSWORD}"),
            "-e",
            "POSTGRES_DB=berth",
            &images.postgres,
        ]);
        docker(&[
            "run", "-d", "--name", &stack.s3, "--network", &stack.back, "--network-alias", "s3",
            "--entrypoint", "sh", &images.s3, "-c",
            &format!("mkdir -p /data/registry && exec s3s-fs --host 0.0.0.0 --port 3900 --access-key {S3_KEY} --secret-key {S3_SECRET} /data"),
        ]);
        stack.postgres_ready_within(Duration::from_secs(60)).await;
        for replica in &stack.replicas {
            stack.start_replica(replica, image);
        }
        let config = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("compose/haproxy.cfg");
        let lb = format!("{run}-lb");
        docker(&[
            "run",
            "-d",
            "--name",
            &lb,
            "--network",
            &stack.front,
            "-p",
            "127.0.0.1::5000",
            "-p",
            "127.0.0.1::8404",
            "-v",
            &format!("{}:/usr/local/etc/haproxy/haproxy.cfg:ro", config.display()),
            &images.haproxy,
        ]);
        stack.url = format!(
            "http://{}",
            docker(&["port", &lb, "5000"]).lines().next().unwrap()
        );
        stack.stats = format!(
            "http://{}/stats;csv",
            docker(&["port", &lb, "8404"]).lines().next().unwrap()
        );
        stack.all_ready_within(Duration::from_secs(90)).await;
        for replica in &stack.replicas {
            stack
                .wait_balancer_state(replica, "UP", Duration::from_secs(30))
                .await;
        }
        stack
    }

    /// Runs `docker ARGS`, which must succeed.
    pub fn docker(&self, args: &[&str]) -> String {
        docker(args)
    }

    /// Creates and starts replica `name` on `image`, on both networks.
    pub fn start_replica(&self, name: &str, image: &str) {
        let env = [
            format!("BERTH_DATABASE_URL=postgres://berth:{DB_PASSWORD}@postgres:5432/berth"),
            "BERTH_STORAGE_BACKEND=s3".into(),
            "BERTH_STORAGE_BUCKET=registry".into(),
            "BERTH_STORAGE_ENDPOINT=http://s3:3900".into(),
            "BERTH_STORAGE_REGION=us-east-1".into(),
            format!("AWS_ACCESS_KEY_ID={S3_KEY}"),
            format!("AWS_SECRET_ACCESS_KEY={S3_SECRET}"),
            "BERTH_LOG=info,sqlx=warn".into(),
        ];
        let mut args = vec!["create", "--name", name, "--network", &self.back];
        for e in &env {
            args.extend(["-e", e.as_str()]);
        }
        args.push(image);
        docker(&args);
        docker(&["network", "connect", "--alias", "berth", &self.front, name]);
        docker(&["start", name]);
    }

    fn replica_ready(name: &str) -> bool {
        docker_ok(&[
            "exec",
            name,
            "/berthd",
            "probe",
            "http://127.0.0.1:5000/readyz",
        ])
    }

    /// When `name` answered ready, waiting at most `limit`.
    pub async fn replica_ready_within(&self, name: &str, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        while !Self::replica_ready(name) {
            assert!(
                Instant::now() < deadline,
                "{name} not ready within {limit:?}; logs:\n{}",
                tail(&container_logs(name))
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Instant::now()
    }

    /// Waits until `name` reports not ready (its dependencies out of reach).
    pub async fn replica_not_ready_within(&self, name: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Self::replica_ready(name) {
            assert!(
                Instant::now() < deadline,
                "{name} still ready after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// When every replica answered ready.
    pub async fn all_ready_within(&self, limit: Duration) -> Instant {
        let mut last = Instant::now();
        for replica in &self.replicas {
            last = self.replica_ready_within(replica, limit).await;
        }
        last
    }

    pub async fn postgres_ready_within(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !docker_ok(&[
            "exec",
            &self.postgres,
            "pg_isready",
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "berth",
            "-d",
            "berth",
        ]) {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL not ready; logs:\n{}",
                tail(&container_logs(&self.postgres))
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// HAProxy's view of `name` (`UP`, `DOWN`, …), found by its address on `front`.
    async fn balancer_state(&self, name: &str) -> Option<String> {
        let ip = docker(&[
            "inspect",
            "-f",
            &format!(
                "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
                self.front
            ),
            name,
        ]);
        let csv = reqwest::get(&self.stats).await.ok()?.text().await.ok()?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let column = |n: &str| header.iter().position(|h| *h == n);
        let (addr, status) = (column("addr")?, column("status")?);
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.get(addr).is_some_and(|a| *a == format!("{ip}:5000")))
            .map(|f| f[status].to_owned())
    }

    /// Waits until HAProxy holds `name` `UP` (routes to it) or `DOWN` (routes around it).
    pub async fn wait_balancer_state(&self, name: &str, want: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let state = self.balancer_state(name).await;
            let reached = match (&state, want) {
                (Some(s), "UP") => s.starts_with("UP"),
                // Out of rotation: failing its checks, or gone from DNS.
                (s, _) => s
                    .as_deref()
                    .is_none_or(|s| s.starts_with("DOWN") || s.starts_with("MAINT")),
            };
            if reached {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "HAProxy holds {name} {state:?}, not {want}, after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The end of a log, enough to see why.
fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Drop for Stack {
    fn drop(&mut self) {
        let ids = docker(&["ps", "-aq", "--filter", &format!("name=^{}-", self.run)]);
        for id in ids.lines() {
            let _ = docker_ok(&["rm", "-f", "-v", id]);
        }
        for network in [&self.front, &self.back] {
            let _ = docker_ok(&["network", "rm", network]);
        }
    }
}
