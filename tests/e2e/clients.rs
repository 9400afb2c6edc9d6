//! Real registry clients against a real berthd: skopeo (with an umoci-built OCI image),
//! the Docker Engine (docker build / push / pull / run), and a multi-arch index.

use std::path::Path;
use std::process::Command;

use berth_tests::*;
use serde_json::{json, Value};

pub(crate) use berth_tests::run;

fn sh(script: &str) -> String {
    run(Command::new("sh").arg("-ec").arg(script))
}

/// A small runnable OCI image (busybox-static as /bin/sh, `marker` in /marker, so images
/// made for different tests differ) in an OCI layout at `dir:busybox`.
pub(crate) fn umoci_busybox(dir: &Path, marker: &str) {
    let d = dir.display();
    sh(&format!(
        "cd {d}
         umoci init --layout img
         umoci new --image img:busybox
         umoci unpack --rootless --image img:busybox bundle
         mkdir -p bundle/rootfs/bin
         cp /bin/busybox bundle/rootfs/bin/busybox
         ln -s busybox bundle/rootfs/bin/sh
         echo {marker} > bundle/rootfs/marker
         umoci repack --image img:busybox bundle
         umoci config --image img:busybox --os linux --architecture amd64 --config.cmd /bin/sh"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_an_oci_image_in_and_out_unchanged() {
    if !require_tool("skopeo") || !require_tool("umoci") {
        return;
    }
    let s = Berthd::start(Db::Sqlite).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    umoci_busybox(tmp.path(), "clients");
    let dir = tmp.path().display();
    let reference = format!("docker://{}/test/busybox:1", s.addr);
    run(Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{dir}/img:busybox"))
        .arg(&reference));
    run(Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(&reference)
        .arg(format!("dir:{dir}/pulled")));
    // The manifest and every blob come back byte-identical.
    let local_manifest = run(Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("oci:{dir}/img:busybox")));
    let remote_manifest = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(&reference));
    assert_eq!(local_manifest, remote_manifest);
    let manifest: Value = serde_json::from_str(&remote_manifest).unwrap();
    let mut digests = vec![manifest["config"]["digest"].as_str().unwrap().to_owned()];
    digests.extend(
        manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned()),
    );
    for d in digests {
        let hex = d.strip_prefix("sha256:").unwrap();
        let original = std::fs::read(tmp.path().join("img/blobs/sha256").join(hex)).unwrap();
        let pulled = std::fs::read(tmp.path().join("pulled").join(hex)).unwrap();
        assert_eq!(sha256(&pulled), d);
        assert_eq!(original, pulled);
    }
    let inspect: Value = serde_json::from_str(&run(Command::new("skopeo")
        .args(["inspect", "--tls-verify=false"])
        .arg(&reference)))
    .unwrap();
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Digest"], sha256(remote_manifest.as_bytes()));
}

pub(crate) use berth_tests::containers::docker_available;

/// Builds a runnable image FROM scratch with busybox-static; returns its local tag.
pub(crate) fn docker_build_busybox(tag: &str, marker: &str) {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy("/bin/busybox", ctx.path().join("busybox")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo {marker} > /marker\"]\nCMD [\"/bin/busybox\", \"cat\", \"/marker\"]\n"
        ),
    )
    .unwrap();
    run(Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(ctx.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_pull_and_run_through_berth() {
    if !docker_available() {
        return;
    }
    let s = Berthd::start(Db::Sqlite).await.unwrap();
    let image = format!("{}/test/docker-bb:1", s.addr);
    let marker = format!("pushed-through-berth-{}", std::process::id());
    docker_build_busybox(&image, &marker);
    let push = run(Command::new("docker").args(["push", &image]));
    let pushed_digest = push
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("docker push prints the digest")
        .to_owned();
    run(Command::new("docker").args(["rmi", "-f", &image]));
    run(Command::new("docker").args(["pull", &image]));
    let out = run(Command::new("docker").args(["run", "--rm", &image]));
    assert_eq!(out.trim(), marker);
    let repo_digest = run(Command::new("docker").args([
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &image,
    ]));
    assert!(
        repo_digest.trim().ends_with(&pushed_digest),
        "{repo_digest} vs {pushed_digest}"
    );
    // A second tag of the same image: docker finds every blob already there.
    let again = format!("{}/test/docker-bb:2", s.addr);
    run(Command::new("docker").args(["tag", &image, &again]));
    let push2 = run(Command::new("docker").args(["push", &again]));
    assert!(push2.contains("Layer already exists"), "{push2}");
    run(Command::new("docker").args(["rmi", "-f", &image, &again]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_index_pushed_and_pulled_by_docker_and_skopeo() {
    if !docker_available() || !require_tool("skopeo") {
        return;
    }
    let s = Berthd::start(Db::Sqlite).await.unwrap();
    let c = s.client();
    // The amd64 image comes from docker; an arm64 sibling shares its layers.
    let amd64 = format!("{}/test/multi:amd64", s.addr);
    let marker = format!("multi-arch-{}", std::process::id());
    docker_build_busybox(&amd64, &marker);
    run(Command::new("docker").args(["push", &amd64]));
    let r = c
        .request("GET", "/v2/test/multi/manifests/amd64")
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    let amd64_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    let amd64_manifest = r.bytes().await.unwrap().to_vec();
    let m: Value = serde_json::from_slice(&amd64_manifest).unwrap();
    let config_digest = m["config"]["digest"].as_str().unwrap();
    let config = c
        .call("GET", &format!("/v2/test/multi/blobs/{config_digest}"))
        .await
        .bytes()
        .await
        .unwrap();
    let mut arm_config: Value = serde_json::from_slice(&config).unwrap();
    arm_config["architecture"] = json!("arm64");
    let arm_config = serde_json::to_vec(&arm_config).unwrap();
    let arm_config_digest = c.push_blob("test/multi", &arm_config).await;
    let mut arm_manifest = m.clone();
    arm_manifest["config"]["digest"] = json!(arm_config_digest);
    arm_manifest["config"]["size"] = json!(arm_config.len());
    let arm_manifest = serde_json::to_vec(&arm_manifest).unwrap();
    assert_eq!(
        c.push_manifest("test/multi", "arm64", &amd64_type, &arm_manifest)
            .await
            .status(),
        201
    );
    let list_type = "application/vnd.docker.distribution.manifest.list.v2+json";
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": list_type,
        "manifests": [
            {"mediaType": amd64_type, "digest": sha256(&amd64_manifest), "size": amd64_manifest.len(), "platform": {"os": "linux", "architecture": "amd64"}},
            {"mediaType": amd64_type, "digest": sha256(&arm_manifest), "size": arm_manifest.len(), "platform": {"os": "linux", "architecture": "arm64"}},
        ]
    }))
    .unwrap();
    assert_eq!(
        c.push_manifest("test/multi", "1", list_type, &index)
            .await
            .status(),
        201
    );
    // docker pulls the index and picks the host's platform.
    let multi = format!("{}/test/multi:1", s.addr);
    run(Command::new("docker").args(["rmi", "-f", &amd64]));
    run(Command::new("docker").args(["pull", &multi]));
    assert_eq!(
        run(Command::new("docker").args(["run", "--rm", &multi])).trim(),
        marker
    );
    let repo_digest = run(Command::new("docker").args([
        "inspect",
        "--format",
        "{{index .RepoDigests 0}}",
        &multi,
    ]));
    assert!(
        repo_digest.trim().ends_with(&sha256(&index)),
        "pulled by the index digest: {repo_digest}"
    );
    run(Command::new("docker").args(["rmi", "-f", &multi]));
    // skopeo copies every platform out and back in; the index digest is unchanged.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().display();
    run(Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
        ])
        .arg(format!("docker://{multi}"))
        .arg(format!("dir:{dir}/multi")));
    run(Command::new("skopeo")
        .args([
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("dir:{dir}/multi"))
        .arg(format!("docker://{}/test/copied:1", s.addr)));
    let r = c.call("HEAD", "/v2/test/copied/manifests/1").await;
    assert_eq!(
        r.headers()["docker-content-digest"],
        sha256(&index).as_str()
    );
    for child in ["amd64", "arm64"] {
        let d = sha256(if child == "amd64" {
            &amd64_manifest
        } else {
            &arm_manifest
        });
        let r = c
            .call("HEAD", &format!("/v2/test/copied/manifests/{d}"))
            .await;
        assert_eq!(r.status(), 200, "{child} manifest copied");
    }
}
