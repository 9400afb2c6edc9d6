//! `berth` prints what `docker` prints: the same image, pulled by both from a real
//! berthd, listed, inspected and shown in history by both, compared text for text
//! (names, columns, relative times, sizes, digests); builds compared step for step
//! with docker's own builder; and the errors a docker user knows, in berth's words.

use std::path::Path;
use std::process::{Command, Output};

use berth_tests::*;
use serde_json::Value;

use crate::cli::{busybox_rootfs, fails, ok, ALICE};
use crate::clients::docker_available;

/// A fixed creation time (2023-11-14): "N years ago" does not change during a test.
const EPOCH: &str = "1700000000";

/// `berth ARGS` at [`EPOCH`], which must succeed; its standard output.
fn berth_at_epoch(home: &Path, args: &[&str]) -> String {
    let out = run_with_input(
        Command::new(workspace_bin("berth"))
            .arg("--home")
            .arg(home)
            .args(args)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .env("DOCKER_CONFIG", home.join("no-docker-config")),
        None,
    );
    succeeded(&out, format_args!("berth {args:?}"))
}

fn docker(args: &[&str]) -> String {
    crate::clients::run(Command::new("docker").args(args))
}

fn docker_out(args: &[&str], envs: &[(&str, &str)]) -> Output {
    run_with_input(
        Command::new("docker").args(args).envs(envs.iter().copied()),
        None,
    )
}

/// The lines of docker's non-terminal pull output that berth prints too: the
/// "Pulling from" line, each layer's final status, the digest, the status and the
/// reference (docker also reports each layer's intermediate states).
fn pull_summary(output: &str) -> (Vec<String>, Vec<String>) {
    let lines: Vec<&str> = output.lines().collect();
    let mut layers: Vec<String> = lines
        .iter()
        .filter(|l| l.ends_with(": Pull complete") || l.ends_with(": Already exists"))
        .map(|l| l.to_string())
        .collect();
    layers.sort();
    let others = lines
        .iter()
        .filter(|l| {
            l.contains(": Pulling from ")
                || l.starts_with("Using default tag")
                || l.starts_with("Digest: ")
                || l.starts_with("Status: ")
        })
        .chain(lines.last())
        .map(|l| l.to_string())
        .collect();
    (others, layers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_prints_what_docker_prints() {
    if !docker_available() {
        return;
    }
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (maker, home) = (tmp.path().join("maker"), tmp.path().join("home"));
    let tag = std::process::id();
    let image = format!("{}/alice/parity:1", s.addr);
    let hub_name = format!("berth-parity-{tag}");
    let addr = s.addr.clone();
    let (t, i, h, m) = (
        tmp.path().to_owned(),
        image.clone(),
        home.clone(),
        maker.clone(),
    );
    let hub = hub_name.clone();
    tokio::task::spawn_blocking(move || {
        // An image with an ARG, a RUN layer, symbolic links, a COPY and a label, made
        // by berth at a fixed time, pushed; then pulled by docker and by berth.
        let rootfs = busybox_rootfs(&t, "parity");
        berth_at_epoch(&m, &["image", "import", rootfs.to_str().unwrap(), "parity-base:1"]);
        let ctx = t.join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("file.txt"), "some content\n").unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            "FROM parity-base:1\nARG GREETING=hello\nRUN /bin/busybox sh -c 'echo $GREETING > /greeting && /bin/busybox ln -s /greeting /link'\nCOPY file.txt /file.txt\nLABEL org.example.kind=parity\n",
        )
        .unwrap();
        berth_at_epoch(&m, &["image", "build", "-t", &i, ctx.to_str().unwrap()]);
        berth(&m, &["login", &addr, "-u", ALICE.0, "--password-stdin"], Some(ALICE.1));
        ok(&m, &["image", "push", &i]);

        // Pull: the same lines (docker also prints each layer's intermediate states).
        let docker_pull = docker(&["pull", &i]);
        let berth_pull = ok(&h, &["image", "pull", &i]);
        assert_eq!(pull_summary(&berth_pull), pull_summary(&docker_pull), "berth:\n{berth_pull}\ndocker:\n{docker_pull}");
        assert!(berth_pull.contains("1: Pulling from alice/parity"), "{berth_pull}");
        assert_eq!(berth_pull.matches(": Pull complete").count(), 3, "one line per layer, none for the config:\n{berth_pull}");
        let docker_again = docker(&["pull", &i]);
        let berth_again = ok(&h, &["image", "pull", &i]);
        assert_eq!(pull_summary(&berth_again).0, pull_summary(&docker_again).0);
        assert!(berth_again.contains("Status: Image is up to date for"), "{berth_again}");

        // Docker Hub names as docker shows them, and a tag in another repository.
        docker(&["tag", &i, &format!("{hub}:v2")]);
        ok(&h, &["image", "tag", &i, &format!("{hub}:v2")]);

        // image ls, in every form, for both repositories: the same text.
        for name in [i.trim_end_matches(":1"), hub.as_str()] {
            for flags in [
                &[][..],
                &["--digests"],
                &["--no-trunc"],
                &["-q"],
                &["--format", "json"],
                &["--format", "{{.Repository}}:{{.Tag}} {{.ID}} {{json .Size}}"],
                &["--format", r"table {{.Repository}}\t{{.Tag}}\t{{.CreatedAt}}\t{{.VirtualSize}}"],
            ] {
                let mut d = vec!["images"];
                d.extend(flags);
                d.push(name);
                let mut b = vec!["image", "ls"];
                b.extend(flags);
                b.push(name);
                assert_eq!(ok(&h, &b), docker(&d), "image ls {flags:?} {name}");
            }
        }
        // history, in every form: the same text.
        for flags in [
            &[][..],
            &["--no-trunc"],
            &["-H=false"],
            &["-q"],
            &["--format", "json"],
        ] {
            let mut d = vec!["history"];
            d.extend(flags);
            d.push(&i);
            let mut b = vec!["image", "history"];
            b.extend(flags);
            b.push(&i);
            assert_eq!(ok(&h, &b), docker(&d), "history {flags:?}");
        }
        // inspect: docker's fields in docker's order (less the daemon's own), the
        // same values.
        let b: Value = serde_json::from_str(&ok(&h, &["image", "inspect", &i])).unwrap();
        let d: Value = serde_json::from_str(&docker(&["image", "inspect", &i])).unwrap();
        let (b, d) = (&b[0], &d[0]);
        let in_order = |b: &Value, d: &Value| {
            let dk: Vec<&String> = d.as_object().unwrap().keys().collect();
            let positions: Vec<usize> = b
                .as_object()
                .unwrap()
                .keys()
                .map(|k| dk.iter().position(|x| *x == k).unwrap_or_else(|| panic!("docker has no {k}")))
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{:?} against {dk:?}", b.as_object().unwrap().keys());
        };
        in_order(b, d);
        in_order(&b["Config"], &d["Config"]);
        for (key, value) in b.as_object().unwrap() {
            if key == "RepoTags" {
                let mut x: Vec<&Value> = value.as_array().unwrap().iter().collect();
                let mut y: Vec<&Value> = d[key].as_array().unwrap().iter().collect();
                x.sort_by_key(|v| v.to_string());
                y.sort_by_key(|v| v.to_string());
                assert_eq!(x, y);
            } else {
                assert_eq!(value, &d[key], "inspect {key}");
            }
        }
        // An image that was loaded, not pulled, has no RepoDigests.
        let saved = t.join("saved.tar");
        ok(&h, &["image", "save", &format!("{hub}:v2"), "-o", saved.to_str().unwrap()]);
        let loaded_home = t.join("loaded");
        ok(&loaded_home, &["image", "load", "-i", saved.to_str().unwrap()]);
        let loaded: Value =
            serde_json::from_str(&ok(&loaded_home, &["image", "inspect", &format!("{hub}:v2")])).unwrap();
        assert_eq!(loaded[0]["RepoDigests"], serde_json::json!([]));
        assert_eq!(loaded[0]["RepoTags"], serde_json::json!([format!("{hub}:v2")]));
    })
    .await
    .unwrap();
    docker(&["rmi", "-f", &image, &format!("{hub_name}:v2")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_print_dockers_steps_and_write_oci_images() {
    if !docker_available() {
        return;
    }
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE])
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let tag = std::process::id();
    let (t, addr) = (tmp.path().to_owned(), s.addr.clone());
    let base = format!("{addr}/alice/docker-base:{tag}");
    let docker_config = tmp.path().join("docker-config");
    let (b, h) = (base.clone(), home.clone());
    let pushed = tokio::task::spawn_blocking(move || {
        let home = h;
        // A base image docker made and pushed: a Docker manifest, Docker layer types.
        let rootfs = busybox_rootfs(&t, "docker base");
        docker(&["import", rootfs.to_str().unwrap(), &b]);
        let login = containers::docker_with_config(&docker_config, &["login", &addr, "-u", ALICE.0, "--password-stdin"], Some(ALICE.1));
        assert!(login.status.success(), "{}", String::from_utf8_lossy(&login.stderr));
        let push = containers::docker_with_config(&docker_config, &["push", &b], None);
        assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));

        // The same Dockerfile through docker's builder and berth's: the same steps.
        let ctx = t.join("ctx");
        std::fs::create_dir_all(&ctx).unwrap();
        std::fs::write(ctx.join("app.txt"), "app\n").unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {b}\nARG WHO=world\nENV GREETING=hello\nRUN /bin/busybox sh -c 'echo $GREETING $WHO > /greeting'\nCOPY app.txt /app.txt\nLABEL built=yes\n"),
        )
        .unwrap();
        let built_name = format!("berth-built-{tag}:1");
        let legacy = docker_out(&["build", "-t", &built_name, ctx.to_str().unwrap()], &[("DOCKER_BUILDKIT", "0")]);
        assert!(legacy.status.success(), "{}", String::from_utf8_lossy(&legacy.stderr));
        let legacy = String::from_utf8_lossy(&legacy.stdout).into_owned();
        berth(&home, &["login", &addr, "-u", ALICE.0, "--password-stdin"], Some(ALICE.1));
        let built = ok(&home, &["image", "build", "-t", &built_name, ctx.to_str().unwrap()]);
        let steps = |out: &str| -> Vec<String> {
            out.lines().filter(|l| l.starts_with("Step ") || l.starts_with("Successfully tagged")).map(str::to_owned).collect()
        };
        assert_eq!(steps(&built), steps(&legacy), "berth:\n{built}\ndocker:\n{legacy}");
        assert!(built.lines().any(|l| l == "Step 2/6 : ARG WHO=world"), "{built}");
        // " ---> <id>" after every step, the last one the image built.
        let ids: Vec<&str> = built.lines().filter_map(|l| l.strip_prefix(" ---> ")).collect();
        assert_eq!(ids.len(), 6, "{built}");
        assert!(ids.iter().all(|id| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit())), "{built}");
        let image_id = ok(&home, &["image", "ls", "-q", &built_name]);
        assert_eq!(ids.last().unwrap(), &image_id.trim());
        assert!(built.contains(&format!("Successfully built {}", image_id.trim())), "{built}");

        // Written as an OCI image: the Docker-typed base layer is described with
        // its OCI type, so the manifest mixes no media types.
        let pushed = format!("{addr}/alice/built:{tag}");
        ok(&home, &["image", "tag", &built_name, &pushed]);
        ok(&home, &["image", "push", &pushed]);
        pushed
    })
    .await
    .unwrap();
    // The manifest pushed: the bytes the local store holds.
    let digest = crate::cli::stored_digest(&home, &pushed);
    let blob = home
        .join("images/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let manifest: Value = serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
    let (t, home) = (tmp.path().to_owned(), home.clone());
    let built_name = format!("berth-built-{tag}:1");
    tokio::task::spawn_blocking(move || {
        let types: Vec<&str> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["mediaType"].as_str().unwrap())
            .collect();
        assert_eq!(
            manifest["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
        assert!(
            types
                .iter()
                .all(|t| *t == "application/vnd.oci.image.layer.v1.tar+gzip"),
            "{types:?}"
        );
        // And docker runs it.
        docker(&["pull", &pushed]);
        assert_eq!(
            docker(&["run", "--rm", &pushed, "/bin/busybox", "cat", "/greeting"]).trim(),
            "hello world"
        );

        // A stage whose base sets no PATH gets docker's default, as with docker.
        let scratch = t.join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::write(
            scratch.join("Dockerfile"),
            "FROM scratch\nCOPY Dockerfile /\n",
        )
        .unwrap();
        ok(
            &home,
            &[
                "image",
                "build",
                "-t",
                "from-scratch:1",
                scratch.to_str().unwrap(),
            ],
        );
        let inspect: Value =
            serde_json::from_str(&ok(&home, &["image", "inspect", "from-scratch:1"])).unwrap();
        assert_eq!(
            inspect[0]["Config"]["Env"],
            serde_json::json!([
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
            ])
        );

        // A missing COPY source names its Dockerfile line.
        std::fs::write(
            scratch.join("Dockerfile"),
            "FROM scratch\nARG X\nCOPY missing.txt /\n",
        )
        .unwrap();
        let err = fails(
            &home,
            &[
                "image",
                "build",
                "-t",
                "broken:1",
                scratch.to_str().unwrap(),
            ],
            None,
        );
        assert!(
            err.contains("Dockerfile line 3: COPY missing.txt /: missing.txt: no such file"),
            "{err}"
        );
        docker(&["rmi", "-f", &base, &built_name, &pushed]);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_docker_says() {
    let s = Berthd::start_with_users(Db::Sqlite, &[ALICE, ("bobby", "bobby-password", false)])
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let rootfs = busybox_rootfs(tmp.path(), "errors");
    let bobs = format!("{}/bobby/app:1", s.addr);
    ok(&home, &["image", "import", rootfs.to_str().unwrap(), &bobs]);

    // A wrong password at login says so, without suggesting the same command.
    let err = fails(
        &home,
        &["login", &s.addr, "-u", "alice", "--password-stdin"],
        Some("wrong"),
    );
    assert!(
        err.contains(&format!(
            "login to {} failed: incorrect username or password",
            s.addr
        )) && !err.contains("berth login"),
        "{err}"
    );
    // Logged out: a push says to log in; a pull of a missing or private repository
    // says what docker says, without claiming credentials were refused.
    let err = fails(&home, &["image", "push", &bobs], None);
    assert!(
        err.contains(&format!(
            "not logged in to {} (run 'berth login {}')",
            s.addr, s.addr
        )),
        "{err}"
    );
    let err = fails(
        &home,
        &["image", "pull", &format!("{}/bobby/missing:1", s.addr)],
        None,
    );
    assert!(
        err.contains(&format!("pull access denied for {}/bobby/missing, repository does not exist or may require 'berth login'", s.addr))
            && !err.contains("credentials"),
        "{err}"
    );
    // Logged in as alice: a push into bob's namespace names who is logged in and
    // where alice may push.
    berth(
        &home,
        &["login", &s.addr, "-u", ALICE.0, "--password-stdin"],
        Some(ALICE.1),
    );
    let err = fails(&home, &["image", "push", &bobs], None);
    assert!(
        err.contains(&format!(
            "push access to {}/bobby/app denied for alice (logged in to {})",
            s.addr, s.addr
        )) && err.contains(&format!("alice may push to {}/alice/", s.addr)),
        "{err}"
    );
    // A tag that does not exist in a repository alice may pull.
    let mine = format!("{}/alice/app:1", s.addr);
    ok(&home, &["image", "tag", &bobs, &mine]);
    ok(&home, &["image", "push", &mine]);
    let err = fails(
        &home,
        &["image", "pull", &format!("{}/alice/app:nope", s.addr)],
        None,
    );
    assert!(
        err.contains(&format!(
            "manifest for {}/alice/app:nope not found: manifest unknown",
            s.addr
        )),
        "{err}"
    );
    // Unknown template fields are named.
    let err = fails(&home, &["image", "ls", "--format", "{{.Nope}}"], None);
    assert!(err.contains("no field .Nope"), "{err}");

    // A refusal that is not about access is the registry's own reason: here an
    // immutable tag, not "access denied".
    s.admin_ok(&["repo", "immutable", "add", "alice/*", "v*"]);
    let v1 = format!("{}/alice/app:v1", s.addr);
    ok(&home, &["image", "tag", &mine, &v1]);
    ok(&home, &["image", "push", &v1]);
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    let rootfs = busybox_rootfs(&other, "another image");
    ok(&home, &["image", "import", rootfs.to_str().unwrap(), &v1]);
    let err = fails(&home, &["image", "push", &v1], None);
    assert!(
        err.contains(&format!("{} refused: DENIED: tag v1 is immutable", s.addr))
            && !err.contains("may push to"),
        "{err}"
    );
}

/// A registry that lies or floods: a manifest pulled by digest whose content has
/// another digest is refused (nothing listed), and a manifest over 4 MiB is not read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_registry_is_caught() {
    use crate::proxy::fakes::{FakeRequest, FakeUpstream, Reply};
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(config), "size": config.len()},
        "layers": [],
    }))
    .unwrap();
    let served = manifest.clone();
    let fake = FakeUpstream::start(std::sync::Arc::new(move |req: &FakeRequest| {
        match req.path.as_str() {
            "/v2/" => Reply::new(200),
            p if p.ends_with("/manifests/huge") => Reply::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .body(vec![b' '; 5 << 20]),
            p if p.contains("/manifests/") => Reply::new(200)
                .header("Content-Type", OCI_MANIFEST)
                .body(served.clone()),
            p if p.contains("/blobs/") => Reply::new(200).body(config.to_vec()),
            _ => Reply::new(404),
        }
    }))
    .await;
    let host = fake.url.trim_start_matches("http://").to_owned();
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let pinned = format!("sha256:{}", "a".repeat(64));
    let real = sha256(&manifest);
    tokio::task::spawn_blocking(move || {
        let err = fails(&home, &["image", "pull", &format!("{host}/x/y@{pinned}")], None);
        assert!(
            err.contains(&format!("manifest verification failed for {host}/x/y@{pinned}: the registry sent content of digest {real}")),
            "{err}"
        );
        assert_eq!(ok(&home, &["image", "ls", "-q"]), "", "nothing listed");
        let err = fails(&home, &["image", "pull", &format!("{host}/x/y:huge")], None);
        assert!(err.contains("larger than 4 MiB"), "{err}");
        // The honest answer by digest is taken.
        let pulled = ok(&home, &["image", "pull", &format!("{host}/x/y@{real}")]);
        assert!(pulled.contains(&format!("Digest: {real}")), "{pulled}");
    })
    .await
    .unwrap();
}
