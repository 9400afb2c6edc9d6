//! The `berth` command line against a real berthd (with accounts) and the Docker
//! Engine: import a busybox root filesystem, log in, push, pull with docker and run
//! it, pull with berth into an empty store (and again: nothing downloaded), list,
//! inspect, history, tag, rm, prune, and the errors a user meets.

use std::path::Path;
use std::process::Command;

use berth_tests::*;
use serde_json::Value;

use crate::clients::docker_available;

pub(crate) const ALICE: (&str, &str, bool) = ("alice", "alice-password", false);

/// stdout of a `berth` command that must succeed.
pub(crate) fn ok(home: &Path, args: &[&str]) -> String {
    succeeded(&berth(home, args, None), format_args!("berth {args:?}"))
}

/// stderr of a `berth` command that must fail.
pub(crate) fn fails(home: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = berth(home, args, stdin);
    assert!(!out.status.success(), "berth {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A root filesystem with busybox as /bin/sh and a marker file, as a tarball.
pub(crate) fn busybox_rootfs(dir: &Path, marker: &str) -> std::path::PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
    std::fs::write(root.join("marker"), marker).unwrap();
    let tarball = dir.join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    tarball
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_push_pull_and_inspect_images() {
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let marker = format!("imported-by-berth-{}", std::process::id());
    let tarball = busybox_rootfs(tmp.path(), &marker);
    let image = format!("{}/alice/bb:1", s.addr);

    // Import, then the local views.
    let id = ok(
        &home,
        &["image", "import", tarball.to_str().unwrap(), &image],
    );
    assert!(id.trim().starts_with("sha256:"), "{id}");
    // One JSON object per line, as docker's `--format json`.
    let listed = ok(&home, &["image", "ls", "--no-trunc", "--format", "json"]);
    let listed: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(listed["Repository"], format!("{}/alice/bb", s.addr));
    assert_eq!(listed["Tag"], "1");
    assert_eq!(listed["ID"], id.trim());
    let table = ok(&home, &["image", "ls", "--digests"]);
    assert!(
        table.contains("REPOSITORY") && table.contains("alice/bb"),
        "{table}"
    );
    let inspect: Value = serde_json::from_str(&ok(&home, &["image", "inspect", &image])).unwrap();
    assert_eq!(inspect[0]["Id"], id.trim());
    assert_eq!(inspect[0]["Os"], "linux");
    assert_eq!(inspect[0]["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    let history = ok(&home, &["image", "history", "--no-trunc", &image]);
    assert!(history.contains("berth image import"), "{history}");

    // Push needs a login; a wrong password is refused and not saved.
    let err = fails(&home, &["image", "push", &image], None);
    assert!(err.contains("berth login"), "{err}");
    let err = fails(
        &home,
        &["login", &s.addr, "-u", "alice", "--password-stdin"],
        Some("wrong-password"),
    );
    assert!(err.contains("incorrect username or password"), "{err}");
    let out = berth(
        &home,
        &["login", &s.addr, "-u", "alice", "--password-stdin"],
        Some(ALICE.1),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(home.join("config.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let pushed = ok(&home, &["image", "push", &image]);
    let digest = pushed
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("push prints the digest")
        .to_owned();
    let again = ok(&home, &["image", "push", &image]);
    // One line per layer, as docker's (the config goes without one).
    assert_eq!(again.matches("Layer already exists").count(), 1, "{again}");
    assert!(!again.contains("Pushed"), "{again}");

    // Pull into an empty store: same manifest; a second pull downloads nothing.
    let home2 = tmp.path().join("home2");
    let pulled = ok(&home2, &["image", "pull", &image]);
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
    let gets = |log: &str| log.matches("method=GET path=/v2/alice/bb/blobs/").count();
    let before = gets(&s.log());
    assert_eq!(before, 2, "config and layer downloaded once");
    let pulled = ok(&home2, &["image", "pull", &image]);
    // One line per layer, none for the config.
    assert_eq!(pulled.matches("Already exists").count(), 1, "{pulled}");
    assert!(
        pulled.contains("Status: Image is up to date for"),
        "{pulled}"
    );
    assert_eq!(gets(&s.log()), before, "nothing downloaded the second time");
    let inspect2: Value = serde_json::from_str(&ok(&home2, &["image", "inspect", &image])).unwrap();
    assert_eq!(inspect2[0]["Id"], id.trim());

    // tag, rm, prune.
    let other = format!("{}/alice/bb:other", s.addr);
    ok(&home2, &["image", "tag", &image, &other]);
    assert_eq!(ok(&home2, &["image", "ls"]).matches("alice/bb").count(), 2);
    ok(&home2, &["image", "rm", &image]);
    assert!(
        ok(&home2, &["image", "prune"]).contains("0B"),
        "still used by the other tag"
    );
    ok(&home2, &["image", "rm", &other]);
    let reclaimed = ok(&home2, &["image", "prune"]);
    assert!(!reclaimed.contains(" 0B"), "{reclaimed}");
    assert!(!ok(&home2, &["image", "ls"]).contains("alice/bb"));

    // Errors say what is wrong.
    let err = fails(&home2, &["image", "inspect", &image], None);
    assert!(err.contains("no such image"), "{err}");
    let err = fails(
        &home2,
        &["image", "pull", &format!("{}/alice/none:1", s.addr)],
        None,
    );
    // A missing repository is answered as a private one would be (no existence
    // oracle), in docker's words, without claiming credentials were refused.
    assert!(
        err.contains(&format!(
            "pull access denied for {}/alice/none, repository does not exist or may require 'berth login'",
            s.addr
        )) && !err.contains("credentials"),
        "{err}"
    );
    let err = fails(&home2, &["image", "pull", "127.0.0.1:1/x/y:1"], None);
    assert!(err.contains("cannot reach"), "{err}");
    let err = fails(&home2, &["image", "import", "/etc/hostname", "x/y:1"], None);
    assert!(err.contains("not a tar archive"), "{err}");
    let err = fails(&home2, &["image", "pull", "Bad/Name"], None);
    assert!(err.contains("invalid image reference"), "{err}");

    // The Docker Engine pulls what berth pushed and runs it.
    if !docker_available() {
        return;
    }
    let docker = |args: &[&str]| crate::clients::run(Command::new("docker").args(args));
    docker(&["pull", &image]);
    let out = docker(&["run", "--rm", &image, "/bin/busybox", "cat", "/marker"]);
    assert_eq!(out.trim(), marker);
    let repo_digest = docker(&["inspect", "--format", "{{index .RepoDigests 0}}", &image]);
    assert!(repo_digest.trim().ends_with(&digest), "{repo_digest}");
    docker(&["rmi", "-f", &image]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_resumes_after_a_dropped_connection() {
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    // Cut once after 20 MiB: in the second 16 MiB chunk of the layer.
    let proxy = CuttingProxy::start(&s.addr, 20 * 1024 * 1024).await;
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let tarball = busybox_rootfs(tmp.path(), "big");
    // Random bytes do not compress: a layer of about 40 MiB.
    let mut noise = vec![0u8; 40 * 1024 * 1024];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut noise,
    )
    .unwrap();
    std::fs::write(tmp.path().join("rootfs/noise"), noise).unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(tmp.path().join("rootfs"))
        .args(["-rf"])
        .arg(&tarball)
        .arg("./noise")
        .status()
        .unwrap();
    assert!(status.success());
    let image = format!("{}/alice/big:1", proxy.addr);
    let (h, i, t) = (home.clone(), image.clone(), tarball.clone());
    let pushed = tokio::task::spawn_blocking(move || {
        ok(&h, &["image", "import", t.to_str().unwrap(), &i]);
        let out = berth(
            &h,
            &[
                "login",
                i.split('/').next().unwrap(),
                "-u",
                "alice",
                "--password-stdin",
            ],
            Some(ALICE.1),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        ok(&h, &["image", "push", "--quiet", &i])
    })
    .await
    .unwrap();
    assert!(proxy.has_cut(), "the connection was cut during the push");
    let log = s.log();
    assert!(
        log.contains("method=GET path=/v2/alice/big/blobs/uploads/"),
        "berth asked the registry how far the upload got"
    );
    let digest = pushed
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("digest printed")
        .to_owned();
    let r = s
        .client()
        .with_token(&crate::auth::bearer(&s.client(), None, "repository:alice/big:pull").await)
        .call("GET", "/v2/alice/big/manifests/1")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_work_against_distribution_too() {
    let Some(registry) = Distribution::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let marker = format!("through-distribution-{}", std::process::id());
    let tarball = busybox_rootfs(tmp.path(), &marker);
    let image = format!("{}/team/bb:1", registry.addr);
    let (home, fresh) = (tmp.path().join("home"), tmp.path().join("fresh"));
    let (h, f, i) = (home.clone(), fresh.clone(), image.clone());
    let (pushed, pulled) = tokio::task::spawn_blocking(move || {
        ok(&h, &["image", "import", tarball.to_str().unwrap(), &i]);
        (
            ok(&h, &["image", "push", &i]),
            ok(&f, &["image", "pull", &i]),
        )
    })
    .await
    .unwrap();
    let digest = pushed
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("digest printed")
        .to_owned();
    assert!(pulled.contains(&format!("Digest: {digest}")), "{pulled}");
    let a: Value = serde_json::from_str(&ok(&home, &["image", "inspect", &image])).unwrap();
    let b: Value = serde_json::from_str(&ok(&fresh, &["image", "inspect", &image])).unwrap();
    assert_eq!(a[0]["Id"], b[0]["Id"]);
    if docker_available() {
        let docker = |args: &[&str]| crate::clients::run(Command::new("docker").args(args));
        docker(&["pull", &image]);
        let out = docker(&["run", "--rm", &image, "/bin/busybox", "cat", "/marker"]);
        assert_eq!(out.trim(), marker);
        docker(&["rmi", "-f", &image]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_save_and_load() {
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let marker = format!("saved-by-berth-{}", std::process::id());
    let tarball = busybox_rootfs(tmp.path(), &marker);
    let image = format!("{}/alice/bb:1", s.addr);
    let copy = format!("{}/alice/copy:1", s.addr);
    ok(
        &home,
        &["image", "import", tarball.to_str().unwrap(), &image],
    );
    let out = berth(
        &home,
        &["login", &s.addr, "-u", "alice", "--password-stdin"],
        Some(ALICE.1),
    );
    assert!(out.status.success());
    ok(&home, &["image", "push", &image]);
    // Another repository of the same registry: the blobs are mounted, not uploaded.
    ok(&home, &["image", "tag", &image, &copy]);
    let pushed = ok(&home, &["image", "push", &copy]);
    assert!(!pushed.contains("Pushed"), "{pushed}");
    assert_eq!(
        pushed.matches("Mounted from alice/bb").count(),
        1,
        "{pushed}"
    );
    assert!(s
        .log()
        .contains("path=/v2/alice/copy/blobs/uploads/ status=201"));
    let token = crate::auth::bearer(&s.client(), None, "repository:alice/copy:pull").await;
    let r = s
        .client()
        .with_token(&token)
        .call("GET", "/v2/alice/copy/manifests/1")
        .await;
    assert_eq!(r.status(), 200, "public repository, pulled anonymously");

    let err = fails(&home, &["image", "load", "-i", "/etc/hostname"], None);
    assert!(err.contains("not an image archive"), "{err}");
    if !docker_available() {
        return;
    }
    let docker = |args: &[&str]| crate::clients::run(Command::new("docker").args(args));
    // berth save -> docker load -> docker run.
    let saved = tmp.path().join("saved.tar");
    ok(
        &home,
        &["image", "save", &image, "-o", saved.to_str().unwrap()],
    );
    let loaded = docker(&["load", "-i", saved.to_str().unwrap()]);
    assert!(loaded.contains(&image), "{loaded}");
    let out = docker(&["run", "--rm", &image, "/bin/busybox", "cat", "/marker"]);
    assert_eq!(out.trim(), marker);
    // docker save -> berth load (a fresh store) -> the same image, pushable.
    let from_docker = tmp.path().join("from-docker.tar");
    docker(&["save", "-o", from_docker.to_str().unwrap(), &image]);
    docker(&["rmi", "-f", &image]);
    let fresh = tmp.path().join("fresh");
    let loaded = ok(
        &fresh,
        &["image", "load", "-i", from_docker.to_str().unwrap()],
    );
    assert!(
        loaded.contains(&format!("Loaded image: {image}")),
        "{loaded}"
    );
    let a: Value = serde_json::from_str(&ok(&home, &["image", "inspect", &image])).unwrap();
    let b: Value = serde_json::from_str(&ok(&fresh, &["image", "inspect", &image])).unwrap();
    assert_eq!(a[0]["Id"], b[0]["Id"], "same config, same image id");
    assert_eq!(a[0]["RootFS"], b[0]["RootFS"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_credential_helpers_are_used() {
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    // A credential helper speaking Docker's protocol, named in Docker's config.
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-berthtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{}\" ] || exit 1\necho '{{\"ServerURL\":\"'$server'\",\"Username\":\"alice\",\"Secret\":\"{}\"}}'\n",
            s.addr, ALICE.1
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let docker_config = tmp.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    std::fs::write(
        docker_config.join("config.json"),
        format!("{{\"credHelpers\": {{\"{}\": \"berthtest\"}}}}", s.addr),
    )
    .unwrap();
    let tarball = busybox_rootfs(tmp.path(), "helper");
    let image = format!("{}/alice/helped:1", s.addr);
    ok(
        &home,
        &["image", "import", tarball.to_str().unwrap(), &image],
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = Command::new(workspace_bin("berth"))
        .arg("--home")
        .arg(&home)
        .args(["image", "push", &image])
        .env("DOCKER_CONFIG", &docker_config)
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "push with the helper's credentials: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!home.join("config.json").exists(), "nothing saved by berth");
}

/// A build context: a Dockerfile FROM `base` using ARG, ENV, WORKDIR, COPY (a file, a
/// directory, the whole context minus .dockerignore), RUN that writes and deletes
/// files, LABEL, EXPOSE, CMD.
fn build_context(dir: &Path, base: &str) -> std::path::PathBuf {
    let ctx = dir.join("context");
    std::fs::create_dir_all(ctx.join("conf")).unwrap();
    std::fs::write(ctx.join("app.txt"), "the app file\n").unwrap();
    std::fs::write(ctx.join("conf/app.conf"), "port=8080\n").unwrap();
    std::fs::write(ctx.join("secret.txt"), "never in the image\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "secret.txt\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "# built by berth\n\
             ARG BASE={base}\n\
             FROM $BASE\n\
             ARG GREETING=hello\n\
             ENV APP_HOME=/app\n\
             WORKDIR $APP_HOME\n\
             COPY app.txt ./\n\
             COPY conf/ /etc/app/\n\
             COPY . /ctx/\n\
             RUN /bin/busybox --install -s /bin \\\n\
             \x20 && echo \"$GREETING from the build\" > greeting \\\n\
             \x20 && rm /marker && mkdir -p /tmp/scratch && rm -r /tmp/scratch \\\n\
             \x20 && test ! -e /ctx/secret.txt\n\
             LABEL org.example.built-by=berth\n\
             EXPOSE 8080\n\
             CMD [\"/bin/sh\", \"-c\", \"cat greeting app.txt /etc/app/app.conf; test -e /marker || echo marker-gone\"]\n"
        ),
    )
    .unwrap();
    ctx
}

/// The manifest digest the local store in `home` names `name` by (a built image's,
/// which no registry knows yet).
pub(crate) fn stored_digest(home: &Path, name: &str) -> String {
    let index: Value =
        serde_json::from_slice(&std::fs::read(home.join("images/index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .unwrap_or_else(|| panic!("{name} is not in {index}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_push_run_and_rebuild_from_the_cache() {
    if !docker_available() {
        return;
    }
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let tarball = busybox_rootfs(tmp.path(), "base marker");
    let ctx = build_context(tmp.path(), "bb-base:1");
    let image = format!("{}/alice/built:1", s.addr);
    let docker = |args: &[&str]| crate::clients::run(Command::new("docker").args(args));
    let (h, c, i, t) = (home.clone(), ctx.clone(), image.clone(), tarball.clone());
    let (built, rebuilt, history) = tokio::task::spawn_blocking(move || {
        ok(&h, &["image", "import", t.to_str().unwrap(), "bb-base:1"]);
        let build = |h: &Path| {
            ok(
                h,
                &[
                    "image",
                    "build",
                    "-t",
                    &i,
                    "--build-arg",
                    "GREETING=bonjour",
                    c.to_str().unwrap(),
                ],
            )
        };
        let built = build(&h);
        let built_digest = stored_digest(&h, &i);
        let blobs = std::fs::read_dir(h.join("images/blobs/sha256"))
            .unwrap()
            .count();
        let rebuilt = build(&h);
        assert_eq!(built_digest, stored_digest(&h, &i), "same digest");
        assert_eq!(
            std::fs::read_dir(h.join("images/blobs/sha256"))
                .unwrap()
                .count(),
            blobs,
            "a rebuild with nothing changed writes no new blob"
        );
        berth(
            &h,
            &[
                "login",
                i.split('/').next().unwrap(),
                "-u",
                ALICE.0,
                "--password-stdin",
            ],
            Some(ALICE.1),
        );
        ok(&h, &["image", "push", &i]);
        (
            built,
            rebuilt,
            ok(&h, &["image", "history", "--no-trunc", &i]),
        )
    })
    .await
    .unwrap();
    assert!(built.contains("Successfully tagged"), "{built}");
    assert_eq!(rebuilt.matches("Using cache").count(), 9, "{rebuilt}");

    // docker pulls it, runs it, and sees the RUN's effects and the build argument.
    docker(&["pull", &image]);
    let out = docker(&["run", "--rm", &image]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "bonjour from the build",
            "the app file",
            "port=8080",
            "marker-gone"
        ]
    );
    let inspect: Value = serde_json::from_str(&docker(&["image", "inspect", &image])).unwrap();
    let config = &inspect[0]["Config"];
    assert_eq!(config["WorkingDir"], "/app");
    assert_eq!(config["Labels"]["org.example.built-by"], "berth");
    assert!(config["ExposedPorts"]["8080/tcp"].is_object());
    assert!(config["Env"]
        .as_array()
        .unwrap()
        .contains(&Value::from("APP_HOME=/app")));
    // `docker history` shows the steps berth recorded.
    let steps = docker(&[
        "history",
        "--no-trunc",
        "--format",
        "{{.CreatedBy}}",
        &image,
    ]);
    let steps: Vec<&str> = steps.lines().filter(|l| !l.is_empty()).collect();
    assert!(steps.len() >= 9, "{steps:?}");
    for step in &steps {
        assert!(
            history.contains(step),
            "docker shows {step:?}; berth history:\n{history}"
        );
    }
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("RUN |1 GREETING=bonjour /bin/sh -c /bin/busybox --install")),
        "{steps:?}"
    );
    docker(&["rmi", "-f", &image]);

    // The same inputs with SOURCE_DATE_EPOCH give the same digest, from an empty cache.
    let epoch_build = |home: std::path::PathBuf| {
        let (c, t) = (ctx.clone(), tarball.clone());
        tokio::task::spawn_blocking(move || {
            let berth_at_epoch = |args: &[&str]| {
                let out = run_with_input(
                    Command::new(workspace_bin("berth"))
                        .arg("--home")
                        .arg(&home)
                        .args(args)
                        .env("SOURCE_DATE_EPOCH", "1700000000"),
                    None,
                );
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8_lossy(&out.stdout).into_owned()
            };
            berth_at_epoch(&["image", "import", t.to_str().unwrap(), "bb-base:1"]);
            berth_at_epoch(&["image", "build", "-t", "repro:1", c.to_str().unwrap()]);
            stored_digest(&home, "docker.io/library/repro:1")
        })
    };
    let first = epoch_build(tmp.path().join("repro-a")).await.unwrap();
    let second = epoch_build(tmp.path().join("repro-b")).await.unwrap();
    assert_eq!(first, second, "reproducible with SOURCE_DATE_EPOCH");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_images_work_with_distribution_and_errors_name_the_line() {
    let Some(registry) = Distribution::start() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let tarball = busybox_rootfs(tmp.path(), "base marker");
    let ctx = build_context(tmp.path(), "bb-base:1");
    let image = format!("{}/team/built:1", registry.addr);
    let (h, c, i) = (home.clone(), ctx.clone(), image.clone());
    tokio::task::spawn_blocking(move || {
        ok(
            &h,
            &["image", "import", tarball.to_str().unwrap(), "bb-base:1"],
        );
        ok(&h, &["image", "build", "-q", "-t", &i, c.to_str().unwrap()]);
        ok(&h, &["image", "push", &i]);
        // Errors: an unknown instruction with its line; a failing RUN; nothing listed.
        // The stderr of a build of `dockerfile` that must fail.
        let failed_build = |name: &str, dockerfile: &str| {
            let path = c.join(name);
            std::fs::write(&path, dockerfile).unwrap();
            let args = [
                "image",
                "build",
                "-f",
                path.to_str().unwrap(),
                "-t",
                "failed-build:1",
            ];
            fails(&h, &[&args[..], &[c.to_str().unwrap()]].concat(), None)
        };
        let e = failed_build("Bad", "FROM bb-base:1\nRUN true\nFROBNICATE now\n");
        assert!(
            e.contains("Dockerfile line 3: unknown instruction FROBNICATE"),
            "{e}"
        );
        let e = failed_build("Fails", "FROM bb-base:1\nRUN /bin/busybox false\n");
        assert!(
            e.contains("Dockerfile line 2") && e.contains("non-zero code: 1"),
            "{e}"
        );
        let e = failed_build("Missing", "FROM bb-base:1\nCOPY nothing-here /x\n");
        assert!(e.contains("nothing-here: no such file"), "{e}");
        assert!(
            !ok(&h, &["image", "ls"]).contains("failed-build"),
            "a failed build lists nothing"
        );
        // A base that is not in the local store is pulled (from Distribution here).
        let fresh = h.with_file_name("fresh");
        let derived = c.join("Derived");
        std::fs::write(
            &derived,
            format!("FROM {i}\nRUN /bin/busybox touch /derived\n"),
        )
        .unwrap();
        let out = ok(
            &fresh,
            &[
                "image",
                "build",
                "-f",
                derived.to_str().unwrap(),
                "-t",
                "derived:1",
                c.to_str().unwrap(),
            ],
        );
        assert!(out.contains("Successfully tagged"), "{out}");
        assert!(
            ok(&fresh, &["image", "ls"]).contains("team/built"),
            "the base was pulled"
        );
        let history = ok(&fresh, &["image", "history", "--no-trunc", "derived:1"]);
        assert!(
            history.contains("RUN /bin/sh -c /bin/busybox touch /derived")
                && history.contains("LABEL org.example.built-by=berth"),
            "{history}"
        );
    })
    .await
    .unwrap();
    if docker_available() {
        let docker = |args: &[&str]| crate::clients::run(Command::new("docker").args(args));
        docker(&["pull", &image]);
        let out = docker(&["run", "--rm", &image]);
        assert!(
            out.starts_with("hello from the build"),
            "the ARG default: {out}"
        );
        docker(&["rmi", "-f", &image]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_stage_builds_targets_add_and_users() {
    if !docker_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let tarball = busybox_rootfs(tmp.path(), "base marker");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(ctx.join("archive")).unwrap();
    std::fs::write(ctx.join("archive/inside.txt"), "from the archive\n").unwrap();
    let status = Command::new("tar")
        .arg("-C")
        .arg(ctx.join("archive"))
        .arg("-czf")
        .arg(ctx.join("files.tar.gz"))
        .arg("inside.txt")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(ctx.join("plain.txt"), "plain\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM bb-base:1 AS tools\n\
         RUN /bin/busybox mkdir -p /out && /bin/busybox sh -c 'echo built-in-stage > /out/artifact'\n\
         FROM scratch AS never-built\n\
         COPY does-not-exist /x\n\
         FROM bb-base:1\n\
         SHELL [\"/bin/busybox\", \"sh\", \"-c\"]\n\
         COPY --from=tools --chown=1000:1000 --chmod=640 /out/artifact /artifact\n\
         ADD files.tar.gz /unpacked/\n\
         ADD plain.txt /plain.txt\n\
         RUN /bin/busybox mkdir -m 777 /scratch\n\
         USER 1000:1000\n\
         RUN /bin/busybox id -u > /scratch/uid\n\
         RUN [\"/bin/busybox\", \"touch\", \"/scratch/exec-form\"]\n\
         HEALTHCHECK --interval=30s --retries=2 CMD [\"/bin/busybox\", \"true\"]\n\
         VOLUME /data\n\
         ENTRYPOINT [\"/bin/busybox\", \"cat\"]\n\
         CMD [\"/artifact\"]\n",
    )
    .unwrap();
    let archive = tmp.path().join("images.tar");
    let (h, c, a) = (home.clone(), ctx.clone(), archive.clone());
    tokio::task::spawn_blocking(move || {
        ok(
            &h,
            &["image", "import", tarball.to_str().unwrap(), "bb-base:1"],
        );
        ok(
            &h,
            &["image", "build", "-t", "berth-multi:1", c.to_str().unwrap()],
        );
        ok(
            &h,
            &[
                "image",
                "build",
                "--target",
                "tools",
                "-t",
                "berth-tools:1",
                c.to_str().unwrap(),
            ],
        );
        let e = fails(
            &h,
            &[
                "image",
                "build",
                "--target",
                "never-built",
                "-t",
                "x:1",
                c.to_str().unwrap(),
            ],
            None,
        );
        assert!(e.contains("does-not-exist"), "{e}");
        ok(
            &h,
            &[
                "image",
                "save",
                "berth-multi:1",
                "berth-tools:1",
                "-o",
                a.to_str().unwrap(),
            ],
        );
    })
    .await
    .unwrap();
    let docker = |args: &[&str]| crate::clients::run(Command::new("docker").args(args));
    docker(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        docker(&["run", "--rm", "berth-multi:1"]).trim(),
        "built-in-stage"
    );
    let shell = |image: &str, script: &str| {
        docker(&[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/busybox",
            image,
            "sh",
            "-c",
            script,
        ])
    };
    assert_eq!(
        shell(
            "berth-multi:1",
            "cat /unpacked/inside.txt /plain.txt /scratch/uid; \
             stat -c '%a %u' /artifact /scratch/exec-form; id -u"
        ),
        "from the archive\nplain\n1000\n640 1000\n644 1000\n1000\n"
    );
    let inspect: Value =
        serde_json::from_str(&docker(&["image", "inspect", "berth-multi:1"])).unwrap();
    assert!(inspect[0]["Config"]["Volumes"]["/data"].is_object());
    assert_eq!(inspect[0]["Config"]["User"], "1000:1000");
    let health = &inspect[0]["Config"]["Healthcheck"];
    assert_eq!(
        health["Test"],
        serde_json::json!(["CMD", "/bin/busybox", "true"])
    );
    assert_eq!(
        (health["Interval"].as_i64(), health["Retries"].as_i64()),
        (Some(30_000_000_000), Some(2))
    );
    assert_eq!(
        shell("berth-tools:1", "cat /out/artifact").trim(),
        "built-in-stage"
    );
    docker(&["rmi", "-f", "berth-multi:1", "berth-tools:1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_platform_images_are_pushed_whole() {
    if !require_tool("skopeo") {
        return;
    }
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    let c = s.client();
    use crate::web::{push_index, push_platform_image};
    let (amd64, _) = push_platform_image(&c, ALICE, "alice/src", "amd64", "amd64", "RUN a").await;
    let (arm64, _) = push_platform_image(&c, ALICE, "alice/src", "arm64", "arm64", "RUN a").await;
    let index = push_index(
        &c,
        ALICE,
        "alice/src",
        "multi",
        &[(&amd64, "amd64"), (&arm64, "arm64")],
    )
    .await;
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let archive = tmp.path().join("multi.tar");
    crate::clients::run(
        Command::new("skopeo")
            .args([
                "copy",
                "--all",
                "--preserve-digests",
                "--src-tls-verify=false",
            ])
            .arg(format!("--src-creds={}:{}", ALICE.0, ALICE.1))
            .arg(format!("docker://{}/alice/src:multi", s.addr))
            .arg(format!(
                "oci-archive:{}:alice/copy:multi",
                archive.display()
            )),
    );
    let (h, a) = (home.clone(), archive.clone());
    let target = format!("{}/alice/copy:multi", s.addr);
    let t = target.clone();
    let pushed = tokio::task::spawn_blocking(move || {
        ok(&h, &["image", "load", "-i", a.to_str().unwrap()]);
        ok(&h, &["image", "tag", "alice/copy:multi", &t]);
        berth(
            &h,
            &[
                "login",
                t.split('/').next().unwrap(),
                "-u",
                ALICE.0,
                "--password-stdin",
            ],
            Some(ALICE.1),
        );
        ok(&h, &["image", "push", &t])
    })
    .await
    .unwrap();
    assert!(pushed.contains(&sha256(&index)), "{pushed}");
    let token =
        crate::auth::bearer(&c, Some((ALICE.0, ALICE.1)), "repository:alice/copy:pull").await;
    let c = c.with_token(&token);
    let r = c.call("GET", "/v2/alice/copy/manifests/multi").await;
    assert_eq!(
        r.bytes().await.unwrap().to_vec(),
        index,
        "the index, byte for byte"
    );
    for child in [&amd64, &arm64] {
        let r = c
            .call(
                "GET",
                &format!("/v2/alice/copy/manifests/{}", sha256(child)),
            )
            .await;
        assert_eq!(r.status(), 200, "each platform's image is there");
    }
    // Pulled by berth, one platform is stored, and the digest it is listed and
    // inspected with is the index's, as docker shows a multi-platform pull.
    let fresh = tmp.path().join("fresh");
    let index_digest = sha256(&index);
    tokio::task::spawn_blocking(move || {
        let pulled = ok(
            &fresh,
            &["image", "pull", "--platform", "linux/arm64", &target],
        );
        assert!(
            pulled.contains(&format!("Digest: {index_digest}")),
            "{pulled}"
        );
        let listed = ok(
            &fresh,
            &["image", "ls", "--digests", "--format", "{{.Digest}}"],
        );
        assert_eq!(listed.trim(), index_digest);
        let inspect: Value =
            serde_json::from_str(&ok(&fresh, &["image", "inspect", &target])).unwrap();
        assert_eq!(inspect[0]["Architecture"], "arm64");
        assert_eq!(
            inspect[0]["RepoDigests"],
            serde_json::json!([format!(
                "{}@{index_digest}",
                target.trim_end_matches(":multi")
            )])
        );
    })
    .await
    .unwrap();
}
