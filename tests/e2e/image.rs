//! The project's `Dockerfile`: built on this machine's Docker Engine, run, pushed to.
//! No image can be pulled here, so the build stage runs in an image made from this
//! machine's own toolchain (`tests/host-build-image.sh`); the runtime stage is
//! `scratch`, as shipped.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::*;

use crate::clients::{docker_available, docker_build_busybox, run};

/// The repository of the build images `tests/host-build-image.sh` makes.
const BUILD_IMAGE: &str = "berth-build-host";

/// Removes the container however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args)).trim().to_owned()
}

/// What the container printed (berthd logs to stderr).
fn logs(name: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfile_builds_an_image_docker_pushes_to() {
    if !docker_available() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    // The build image carries the crates Cargo.lock names: one per Cargo.lock.
    let lock = std::fs::read(root.join("Cargo.lock")).unwrap();
    let builder = format!("{BUILD_IMAGE}:{}", &sha256(&lock)[7..19]);
    let have_builder = Command::new("docker")
        .args(["image", "inspect", &builder])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_builder {
        let old = docker(&["images", "-q", BUILD_IMAGE]);
        for id in old.lines() {
            let _ = Command::new("docker").args(["rmi", "-f", id]).output();
        }
        run(Command::new(root.join("tests/host-build-image.sh")).arg(&builder));
    }
    // The unoptimized profile keeps CI fast; the stages are the same as a release build.
    let tag = "berthd:e2e";
    run(Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .args(["--build-arg", &format!("BUILD_IMAGE={builder}")])
        .args(["--build-arg", "PROFILE=dev"])
        .arg(root));
    // The build stage's image is gigabytes; only the runtime image is kept.
    docker(&[
        "image",
        "prune",
        "-f",
        "--filter",
        "label=berth.stage=build",
    ]);
    assert_eq!(
        docker(&["image", "inspect", "-f", "{{.Config.User}}", tag]),
        "10001:10001",
        "runs as a non-root user"
    );

    let port = free_port();
    let name = format!("berth-e2e-{}", std::process::id());
    let container = Container(name.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &container.0,
        "-p",
        &format!("127.0.0.1:{port}:5000"),
        tag,
    ]);
    // Its own health check (`berthd probe`) turns it healthy.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let health = docker(&["inspect", "-f", "{{.State.Health.Status}}", &name]);
        if health == "healthy" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "container not healthy ({health}); logs:\n{}",
            logs(&name)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let base = Client::new(&format!("http://127.0.0.1:{port}"));
    assert_eq!(base.call("GET", "/v2/").await.status(), 200);

    let image = format!("127.0.0.1:{port}/test/in-container:1");
    let marker = format!("served-by-the-image-{}", std::process::id());
    docker_build_busybox(&image, &marker);
    docker(&["push", &image]);
    docker(&["rmi", "-f", &image]);
    docker(&["pull", &image]);
    assert_eq!(docker(&["run", "--rm", &image]), marker);
    docker(&["rmi", "-f", &image]);
    // Data went to the image's volume, as the non-root user could write it.
    let printed = logs(&name);
    assert!(printed.contains("data in /data"), "{printed}");
}

/// The compose file is valid for this machine's docker-compose (its images, MinIO,
/// PostgreSQL and nginx, cannot be pulled here, so it is not started).
#[test]
fn the_compose_file_is_valid() {
    if !require_tool("docker-compose") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let services = run(Command::new("docker-compose")
        .arg("-f")
        .arg(root.join("docker-compose.yml"))
        .args(["config", "--services"]));
    let mut services: Vec<&str> = services.lines().collect();
    services.sort();
    assert_eq!(
        services,
        ["berth-1", "berth-2", "bucket", "lb", "minio", "postgres"]
    );
}
