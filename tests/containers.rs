//! Docker for the tests: the Engine here pulls nothing, so every image is built on
//! this machine — Berth's from the project's `Dockerfile` (its build stage in an image
//! of this machine's toolchain), PostgreSQL, HAProxy and the S3 server from Debian
//! packages and crates by `compose/local-images.sh`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use crate::{in_ci, require_tool, run, run_with_input};

/// Is the Docker Engine here? In CI it must be.
pub fn docker_available() -> bool {
    if !require_tool("docker") {
        return false;
    }
    let ok = docker_ok(&["info"]);
    assert!(ok || !in_ci(), "the Docker Engine is not running");
    ok
}

/// Runs `docker ARGS` with its own client configuration directory (what `docker
/// login` writes), fed `stdin`; its output.
pub fn docker_with_config(config: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    run_with_input(
        Command::new("docker")
            .args(args)
            .env("DOCKER_CONFIG", config),
        stdin,
    )
}

/// Runs `docker ARGS`, which must succeed; its standard output, trimmed.
pub fn docker(args: &[&str]) -> String {
    run(Command::new("docker").args(args)).trim().to_owned()
}

/// Runs `docker ARGS`; whether it succeeded.
pub fn docker_ok(args: &[&str]) -> bool {
    Command::new("docker")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// What a container printed (berthd logs to stderr).
pub fn container_logs(name: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", name])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// The images `compose/local-images.sh` makes.
#[derive(Clone, Debug)]
pub struct LocalImages {
    pub postgres: String,
    pub haproxy: String,
    pub s3: String,
    /// The Dockerfile's build stage (`BUILD_IMAGE`).
    pub builder: String,
}

/// Builds (or finds, they are cached by content) the local images, once per process.
pub fn local_images() -> LocalImages {
    static BUILT: Mutex<Option<LocalImages>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap();
    if let Some(images) = &*built {
        return images.clone();
    }
    let printed = run(&mut Command::new(root().join("compose/local-images.sh")));
    let named = |repository: &str| {
        printed
            .lines()
            .find(|l| l.starts_with(&format!("{repository}:")))
            .unwrap_or_else(|| panic!("no {repository} image in: {printed}"))
            .to_owned()
    };
    let images = LocalImages {
        postgres: named("berth-local/postgres"),
        haproxy: named("berth-local/haproxy"),
        s3: named("berth-local/s3s-fs"),
        builder: named("berth-build-host"),
    };
    *built = Some(images.clone());
    images
}

/// Builds the project's `Dockerfile` as `tag` (unoptimized, to keep CI fast; the
/// stages are a release build's), labelled with `revision`. A second build with
/// another revision reuses the first's build stage until [`prune_build_stages`].
pub fn build_berthd_image(tag: &str, revision: &str) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap();
    let builder = local_images().builder;
    run(Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .args(["--build-arg", &format!("BUILD_IMAGE={builder}")])
        .args(["--build-arg", "PROFILE=dev"])
        .args(["--build-arg", &format!("REVISION={revision}")])
        .arg(root()));
}

/// Removes the build stages' images (gigabytes each).
pub fn prune_build_stages() {
    docker(&[
        "image",
        "prune",
        "-f",
        "--filter",
        "label=berth.stage=build",
    ]);
}
