//! What modern Dockerfiles use, built by `berth image build` and checked by running
//! the image in the Docker Engine: here-documents (RUN scripts, a command's input,
//! COPY of documents with and without variable expansion) and `ADD <url>` from a
//! local HTTP server (named after the URL, mode 0600, the server's time, a checksum
//! checked, a changed file rebuilt, errors for a wrong checksum, a 404 and git).

use std::process::Command;
use std::sync::{Arc, Mutex};

use berth_tests::*;

use crate::cli::{busybox_rootfs, fails, ok};
use crate::clients::docker_available;
use crate::proxy::fakes::{FakeRequest, FakeUpstream, Reply};

fn docker(args: &[&str]) -> String {
    crate::clients::run(Command::new("docker").args(args))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heredocs_and_downloads_build_what_docker_builds() {
    if !docker_available() {
        return;
    }
    let served = Arc::new(Mutex::new(b"downloaded\n".to_vec()));
    let body = served.clone();
    let server = FakeUpstream::start(Arc::new(move |req: &FakeRequest| match req.path.as_str() {
        "/files/tool.txt" => Reply::new(200)
            .header("Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT")
            .body(body.lock().unwrap().clone()),
        _ => Reply::new(404),
    }))
    .await;
    let url = format!("{}/files/tool.txt", server.url);
    let sum = sha256(b"downloaded\n");
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let image = format!("berth-features-{}:1", std::process::id());
    let dockerfile = format!(
        "FROM features-base:1
ARG PORT=8080
RUN <<EOF
echo one > /one
echo two >> /one
EOF
RUN <<EOF
#!/bin/sh
echo \"script $0\" > /script-ran
EOF
RUN /bin/busybox cat > /stdin.txt <<DATA
from stdin
DATA
COPY <<app.conf <<\"raw.txt\" /etc/app/
port=$PORT
app.conf
port=$PORT
raw.txt
ADD --checksum={sum} {url} /opt/
ADD {url} /opt/renamed.txt
"
    );
    std::fs::write(ctx.join("Dockerfile"), &dockerfile).unwrap();
    let (t, h, c, i) = (
        tmp.path().to_owned(),
        home.clone(),
        ctx.clone(),
        image.clone(),
    );
    let (first, again) = tokio::task::spawn_blocking(move || {
        let rootfs = busybox_rootfs(&t, "features");
        ok(
            &h,
            &[
                "image",
                "import",
                rootfs.to_str().unwrap(),
                "features-base:1",
            ],
        );
        let first = ok(&h, &["image", "build", "-t", &i, c.to_str().unwrap()]);
        let again = ok(&h, &["image", "build", "-t", &i, c.to_str().unwrap()]);
        let archive = t.join("features.tar");
        ok(&h, &["image", "save", &i, "-o", archive.to_str().unwrap()]);
        docker(&["load", "-i", archive.to_str().unwrap()]);
        (first, again)
    })
    .await
    .unwrap();
    assert!(
        first.contains(&format!("Step 8/8 : ADD {url} /opt/renamed.txt")),
        "{first}"
    );
    assert_eq!(again.matches("Using cache").count(), 6, "{again}");

    let cat = |path: &str| docker(&["run", "--rm", &image, "/bin/busybox", "cat", path]);
    assert_eq!(cat("/one"), "one\ntwo\n");
    assert_eq!(cat("/script-ran"), "script /.berth-heredoc-script\n");
    assert_eq!(cat("/stdin.txt"), "from stdin\n");
    assert_eq!(cat("/etc/app/app.conf"), "port=8080\n");
    assert_eq!(cat("/etc/app/raw.txt"), "port=$PORT\n");
    assert_eq!(cat("/opt/tool.txt"), "downloaded\n");
    assert_eq!(cat("/opt/renamed.txt"), "downloaded\n");
    let stat = docker(&[
        "run",
        "--rm",
        &image,
        "/bin/busybox",
        "stat",
        "-c",
        "%a %Y",
        "/opt/tool.txt",
    ]);
    assert_eq!(
        stat.trim(),
        "600 1445412480",
        "mode 0600, the server's Last-Modified"
    );
    // The script itself is not left in the image.
    let listing = docker(&["run", "--rm", &image, "/bin/busybox", "ls", "-a", "/"]);
    assert!(!listing.contains("berth-heredoc"), "{listing}");
    docker(&["rmi", "-f", &image]);

    // The file changes on the server: the ADD without a checksum is built again,
    // and the one with the checksum fails, naming its line.
    *served.lock().unwrap() = b"changed\n".to_vec();
    let (h, c, i) = (home.clone(), ctx.clone(), image.clone());
    let err = tokio::task::spawn_blocking(move || {
        fails(&h, &["image", "build", "-t", &i, c.to_str().unwrap()], None)
    })
    .await
    .unwrap();
    assert!(
        err.contains("Dockerfile line 19: ADD")
            && err.contains(&format!(
                "checksum mismatch: --checksum says {sum}, the download is {}",
                sha256(b"changed\n")
            )),
        "{err}"
    );
    let without_checksum = dockerfile.replace(&format!("ADD --checksum={sum} {url} /opt/\n"), "");
    std::fs::write(ctx.join("Dockerfile"), without_checksum).unwrap();
    let (h, c, i) = (home.clone(), ctx.clone(), image.clone());
    let rebuilt = tokio::task::spawn_blocking(move || {
        ok(&h, &["image", "build", "-t", &i, c.to_str().unwrap()])
    })
    .await
    .unwrap();
    assert_eq!(
        rebuilt.matches("Using cache").count(),
        4,
        "the download is new: {rebuilt}"
    );

    // A missing file and a git repository: clear errors with their line.
    for (source, expected) in [
        (
            format!("{}/files/missing", server.url),
            "the server answered 404".to_owned(),
        ),
        (
            "https://github.com/moby/buildkit.git".to_owned(),
            "ADD from a git repository".to_owned(),
        ),
    ] {
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM features-base:1\nADD {source} /x\n"),
        )
        .unwrap();
        let (h, c) = (home.clone(), ctx.clone());
        let err = tokio::task::spawn_blocking(move || {
            fails(
                &h,
                &["image", "build", "-t", "broken:1", c.to_str().unwrap()],
                None,
            )
        })
        .await
        .unwrap();
        assert!(
            err.contains("Dockerfile line 2: ADD") && err.contains(&expected),
            "{err}"
        );
    }
}

/// `RUN --mount` of each type, checked in the image docker runs: a cache kept between
/// builds, read-only bind mounts of the context and of a stage (their content part of
/// the step's key), a secret as a file and as a variable (in neither the image nor
/// its history), a tmpfs; no mount point left in a layer; a required secret missing
/// and a bind source leaving the context refused; a mount target through an image's
/// symbolic link to /etc stays inside the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_mounts_lend_without_leaving_anything_behind() {
    if !docker_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(ctx.join("data")).unwrap();
    std::fs::write(ctx.join("data/in.txt"), "first\n").unwrap();
    // Left out of COPY, and so of what a bind mount shows.
    std::fs::write(ctx.join("data/ignored.env"), "PASSWORD=x\n").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "data/ignored.env\n").unwrap();
    std::os::unix::fs::symlink("/etc", ctx.join("escape")).unwrap();
    let secret = format!("s3cret-{}", std::process::id());
    let secret_file = tmp.path().join("token");
    std::fs::write(&secret_file, &secret).unwrap();
    let probe = format!("berth-probe-{}", std::process::id());
    let image = format!("berth-mounts-{}:1", std::process::id());
    let dockerfile = format!(
        "FROM mounts-base:1 AS builder
RUN /bin/busybox mkdir /out && echo art > /out/artifact
FROM mounts-base:1
ARG ROUND=1
RUN /bin/busybox ln -s /etc /link
RUN --mount=type=cache,target=/cache,id=counter /bin/busybox sh -c 'echo $ROUND >> /cache/count; /bin/busybox wc -l < /cache/count > /cache-count'
RUN --mount=type=bind,source=data,target=/mnt/data /bin/busybox cp /mnt/data/in.txt /copied.txt
RUN --mount=type=bind,source=data,target=/mnt/data /bin/busybox sh -c 'if echo x > /mnt/data/w 2>/dev/null; then echo writable; else echo readonly; fi > /bind-result'
RUN --mount=type=bind,source=data,target=/mnt/data,rw /bin/busybox sh -c 'echo x > /mnt/data/w && test ! -e /mnt/data/ignored.env && echo written-to-a-copy > /rw-result'
RUN --mount=type=secret,id=token /bin/busybox sh -c '/bin/busybox wc -c < /run/secrets/token > /secret-len'
RUN --mount=type=secret,id=token,env=TOKEN /bin/busybox sh -c 'echo ${{#TOKEN}} > /secret-env-len'
RUN --mount=type=tmpfs,target=/scratch /bin/busybox sh -c '/bin/busybox grep -q \" /scratch tmpfs \" /proc/mounts && echo tmpfs > /tmpfs-result'
RUN --mount=type=tmpfs,target=/link/{probe} /bin/busybox sh -c 'echo inside > /link/{probe}/x'
RUN --mount=type=bind,from=builder,source=/out,target=/from-stage /bin/busybox cp /from-stage/artifact /artifact
"
    );
    std::fs::write(ctx.join("Dockerfile"), &dockerfile).unwrap();
    let build = move |round: &str| {
        let (h, c, i, s) = (
            home.clone(),
            ctx.clone(),
            image.clone(),
            secret_file.clone(),
        );
        let round = round.to_owned();
        move || {
            ok(
                &h,
                &[
                    "image",
                    "build",
                    "-t",
                    &i,
                    "--build-arg",
                    &format!("ROUND={round}"),
                    "--secret",
                    &format!("id=token,src={}", s.display()),
                    c.to_str().unwrap(),
                ],
            )
        }
    };
    let t = tmp.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let rootfs = busybox_rootfs(&t, "mounts");
        ok(
            &t.join("home"),
            &["image", "import", rootfs.to_str().unwrap(), "mounts-base:1"],
        );
    })
    .await
    .unwrap();
    tokio::task::spawn_blocking(build("1")).await.unwrap();
    // A new round: the cache mount keeps what the first build wrote.
    let (h, i, t) = (
        tmp.path().join("home"),
        format!("berth-mounts-{}:1", std::process::id()),
        tmp.path().to_owned(),
    );
    let second = tokio::task::spawn_blocking(build("2")).await.unwrap();
    let archive = t.join("mounts.tar");
    {
        let (h, i, a) = (h.clone(), i.clone(), archive.clone());
        tokio::task::spawn_blocking(move || {
            ok(&h, &["image", "save", &i, "-o", a.to_str().unwrap()]);
        })
        .await
        .unwrap();
    }
    docker(&["load", "-i", archive.to_str().unwrap()]);
    let cat = |path: &str| docker(&["run", "--rm", &i, "/bin/busybox", "cat", path]);
    assert_eq!(
        cat("/cache-count").trim(),
        "2",
        "the cache mount kept the first build's line"
    );
    assert_eq!(cat("/copied.txt"), "first\n");
    assert_eq!(cat("/bind-result"), "readonly\n");
    assert_eq!(cat("/rw-result"), "written-to-a-copy\n");
    assert!(
        !tmp.path().join("ctx/data/w").exists(),
        "a bind mount's writes never reach the context"
    );
    assert_eq!(cat("/secret-len").trim(), secret.len().to_string());
    assert_eq!(cat("/secret-env-len").trim(), secret.len().to_string());
    assert_eq!(cat("/tmpfs-result"), "tmpfs\n");
    assert_eq!(cat("/artifact"), "art\n");
    // No mount point, secret or tmpfs content in the image; the secret nowhere in its
    // history or config.
    let listing = docker(&["run", "--rm", &i, "/bin/busybox", "ls", "-a", "/", "/etc"]);
    for gone in ["cache", "scratch", "run", "mnt", "from-stage", &probe] {
        assert!(
            !listing.split_whitespace().any(|n| n == gone),
            "{gone} left in the image:\n{listing}"
        );
    }
    let history = docker(&["history", "--no-trunc", &i]);
    let inspect = docker(&["image", "inspect", &i]);
    assert!(!history.contains(&secret) && !inspect.contains(&secret));
    assert!(second.contains("--mount=type=secret"), "{second}");
    // The mount through the image's link to /etc stayed inside the image.
    assert!(
        !std::path::Path::new("/etc").join(&probe).exists(),
        "a mount escaped to the host's /etc"
    );
    docker(&["rmi", "-f", &i]);

    // A bind mount's content is part of the step's key: changed, the step runs again.
    std::fs::write(tmp.path().join("ctx/data/in.txt"), "second\n").unwrap();
    let third = tokio::task::spawn_blocking(build("2")).await.unwrap();
    assert!(
        third.contains("cp /mnt/data/in.txt /copied.txt\n ---> ")
            && !third.contains("cp /mnt/data/in.txt /copied.txt\n ---> Using cache"),
        "{third}"
    );

    // Refused: a required secret not given, a bind source outside the context
    // (through `..` or a symbolic link, both resolved inside it), mount targets in
    // /proc (directly, or through the image's own link to it), at /, or one inside
    // another.
    let proc_link = "RUN /bin/busybox ln -s /proc /plink\n";
    for (before, mount, expected) in [
        (
            "",
            "type=secret,id=missing,required",
            "the secret \"missing\" is required",
        ),
        (
            "",
            "type=bind,source=escape/hostname,target=/mnt/h",
            "escape/hostname",
        ),
        (
            "",
            "type=bind,source=../../../../etc/hostname,target=/mnt/h",
            "etc/hostname",
        ),
        (
            "",
            "type=tmpfs,target=/proc/self/root/tmp/x",
            "cannot be /, or in /proc",
        ),
        (
            proc_link,
            "type=tmpfs,target=/plink/self/root/tmp/x",
            "cannot be /, or in /proc",
        ),
        ("", "type=tmpfs,target=/", "cannot be /, or in /proc"),
        (
            "",
            "type=tmpfs,target=/a --mount=type=tmpfs,target=/a/b",
            "inside one another",
        ),
    ] {
        std::fs::write(
            tmp.path().join("ctx/Dockerfile"),
            format!("FROM mounts-base:1\n{before}RUN --mount={mount} /bin/busybox true\n"),
        )
        .unwrap();
        let (h, c) = (h.clone(), tmp.path().join("ctx"));
        let err = tokio::task::spawn_blocking(move || {
            fails(
                &h,
                &["image", "build", "-t", "broken:1", c.to_str().unwrap()],
                None,
            )
        })
        .await
        .unwrap();
        let line = if before.is_empty() { 2 } else { 3 };
        assert!(
            err.contains(&format!("Dockerfile line {line}: RUN")) && err.contains(expected),
            "{mount}: {err}"
        );
    }
}

/// An arm64 busybox and the kernel's binfmt registration of qemu for arm64 (both set
/// up by `tests/run-all.sh`): what a foreign-platform RUN needs. Missing outside CI:
/// the test is skipped; in CI it fails.
fn arm64_emulation() -> Option<std::path::PathBuf> {
    let busybox = std::env::var_os("BERTH_TEST_ARM64_BUSYBOX").map(std::path::PathBuf::from);
    let registered = std::path::Path::new("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists();
    match busybox {
        Some(path) if registered && path.exists() => Some(path),
        _ => {
            assert!(
                !in_ci(),
                "arm64 emulation is not set up (BERTH_TEST_ARM64_BUSYBOX, binfmt qemu-aarch64): tests/run-all.sh does it"
            );
            eprintln!("skipped: no arm64 emulation (run tests/run-all.sh)");
            None
        }
    }
}

/// `--platform linux/amd64,linux/arm64`: each platform built (the arm64 RUN under
/// qemu, BuildKit's TARGETARCH choosing the binary to copy), an index naming both,
/// pushed whole; docker pulls and runs each platform's image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_platform_build_runs_each_platform() {
    if !docker_available() {
        return;
    }
    let Some(arm64_busybox) = arm64_emulation() else {
        return;
    };
    let s = Berthd::start_with_users(Db::Sqlite, &[crate::cli::ALICE])
        .await
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (home, ctx) = (tmp.path().join("home"), tmp.path().join("ctx"));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::copy("/bin/busybox", ctx.join("busybox-amd64")).unwrap();
    std::fs::copy(&arm64_busybox, ctx.join("busybox-arm64")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nARG TARGETARCH\nCOPY busybox-${TARGETARCH} /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox uname -m > /arch\"]\nCMD [\"/bin/busybox\", \"cat\", \"/arch\"]\n",
    )
    .unwrap();
    let image = format!("{}/alice/twoplatforms:{}", s.addr, std::process::id());
    let (h, c, i, addr) = (home.clone(), ctx.clone(), image.clone(), s.addr.clone());
    let (built, pushed) = tokio::task::spawn_blocking(move || {
        let built = ok(
            &h,
            &[
                "image",
                "build",
                "--platform",
                "linux/amd64,linux/arm64",
                "-t",
                &i,
                c.to_str().unwrap(),
            ],
        );
        berth(
            &h,
            &["login", &addr, "-u", "alice", "--password-stdin"],
            Some(crate::cli::ALICE.1),
        );
        (built, ok(&h, &["image", "push", &i]))
    })
    .await
    .unwrap();
    assert!(
        built.contains("Building for linux/amd64")
            && built.contains("Building for linux/arm64")
            && built.contains("(linux/amd64, linux/arm64)"),
        "{built}"
    );
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    // The registry has an index of both.
    let (index, _, _) = crate::proxy::fakes::get_manifest(
        &s.client().with_token(
            &crate::auth::bearer(
                &s.client(),
                Some(("alice", crate::cli::ALICE.1)),
                "repository:alice/twoplatforms:pull",
            )
            .await,
        ),
        "alice/twoplatforms",
        &std::process::id().to_string(),
    )
    .await;
    let index: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    // docker runs each platform's image: the arm64 one under qemu.
    for (platform, machine) in [("linux/arm64", "aarch64"), ("linux/amd64", "x86_64")] {
        docker(&["rmi", "-f", &image]);
        docker(&["pull", "--platform", platform, &image]);
        let out = docker(&["run", "--rm", "--platform", platform, &image]);
        assert_eq!(out.trim(), machine, "{platform}");
    }
    docker(&["rmi", "-f", &image]);
}

/// A user with subordinate ids for rootless builds (made when missing; needs root).
fn rootless_user() -> Option<(String, u32)> {
    let name = "berthrootless";
    let uid = || {
        let out = Command::new("id").args(["-u", name]).output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .ok()
    };
    if uid().is_none() {
        let made = Command::new("useradd").args(["-m", name]).status();
        if !made.is_ok_and(|s| s.success()) {
            assert!(
                !in_ci(),
                "cannot make the rootless test's user (run as root)"
            );
            return None;
        }
    }
    let listed = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
    if !listed.lines().any(|l| l.starts_with(&format!("{name}:"))) {
        let added = Command::new("usermod")
            .args([
                "--add-subuids",
                "300000-365535",
                "--add-subgids",
                "300000-365535",
                name,
            ])
            .status();
        assert!(added.is_ok_and(|s| s.success()), "usermod --add-subuids");
    }
    Some((name.to_owned(), uid()?))
}

/// `berth image build` by a user who is not root: RUN runs in a user namespace where
/// the user is root and their subordinate ids are the image's (newuidmap); files keep
/// the owners the build gives them (a `chown 1000` stays 1000, root's files stay 0),
/// and the store is the user's own on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_needs_no_root() {
    if !docker_available() || !require_tool("newuidmap") {
        return;
    }
    let Some((user, uid)) = rootless_user() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (home, ctx) = (tmp.path().join("home"), tmp.path().join("ctx"));
    std::fs::create_dir_all(&ctx).unwrap();
    let rootfs = busybox_rootfs(tmp.path(), "rootless");
    std::fs::copy(&rootfs, ctx.join("rootfs.tar")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM rootless-base:1\nRUN /bin/busybox sh -c 'echo made > /made && /bin/busybox touch /owned && /bin/busybox chown 1000:1000 /owned && /bin/busybox id -u > /id'\n",
    )
    .unwrap();
    for path in [tmp.path(), &ctx] {
        Command::new("chown")
            .args(["-R", &user])
            .arg(path)
            .status()
            .unwrap();
    }
    let image = format!("berth-rootless-{}:1", std::process::id());
    let as_user = |args: &[&str]| {
        let out = Command::new("runuser")
            .args(["-u", &user, "--"])
            .arg(workspace_bin("berth"))
            .arg("--home")
            .arg(&home)
            .args(args)
            .env("HOME", tmp.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "berth {args:?} as {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let archive = tmp.path().join("rootless.tar");
    let (ctx_s, archive_s) = (
        ctx.to_str().unwrap().to_owned(),
        archive.to_str().unwrap().to_owned(),
    );
    as_user(&[
        "image",
        "import",
        &format!("{ctx_s}/rootfs.tar"),
        "rootless-base:1",
    ]);
    let built = as_user(&["image", "build", "-t", &image, &ctx_s]);
    assert!(built.contains("Successfully tagged"), "{built}");
    as_user(&["image", "save", &image, "-o", &archive_s]);
    // The store belongs to the user on the host.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(home.join("images/index.json"))
            .unwrap()
            .uid(),
        uid
    );
    docker(&["load", "-i", &archive_s]);
    let listing = docker(&[
        "run",
        "--rm",
        &image,
        "/bin/busybox",
        "ls",
        "-ln",
        "/owned",
        "/made",
    ]);
    let owners: Vec<(String, String)> = listing
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[2].to_owned(), f[f.len() - 1].to_owned())
        })
        .collect();
    assert_eq!(
        owners,
        [
            ("0".to_owned(), "/made".to_owned()),
            ("1000".to_owned(), "/owned".to_owned())
        ],
        "{listing}"
    );
    assert_eq!(
        docker(&["run", "--rm", &image, "/bin/busybox", "cat", "/id"]).trim(),
        "0"
    );
    docker(&["rmi", "-f", &image]);
}
