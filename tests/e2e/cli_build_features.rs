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
