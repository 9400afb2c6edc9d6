//! The project's `Dockerfile`: built on this machine's Docker Engine, run, pushed to.
//! No image can be pulled here, so the build stage runs in an image made from this
//! machine's own toolchain (`tests/host-build-image.sh`, through
//! `compose/local-images.sh`); the runtime stage is `scratch`, as shipped.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::containers::{
    build_berthd_image, container_logs as logs, docker, docker_available, prune_build_stages,
};
use berth_tests::*;

use crate::clients::{docker_build_busybox, run};

/// Removes the container however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dockerfile_builds_an_image_docker_pushes_to() {
    if !docker_available() {
        return;
    }
    let tag = "berthd:e2e";
    build_berthd_image(tag, "e2e");
    prune_build_stages();
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

/// The compose file is valid for this machine's docker-compose, alone (its upstream
/// images cannot be pulled here: `tests/faults` starts it with `compose/local.yml`).
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
    assert_eq!(services, ["berth", "lb", "postgres", "s3"]);
}
