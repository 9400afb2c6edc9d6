//! Restarts and crashes: data survives a clean restart, and `kill -9` in the middle of
//! uploads and manifest pushes leaves nothing corrupt or half-visible.

use std::time::Duration;

use berth_tests::*;
use serde_json::Value;

crate::on_both_databases!(
    restart_keeps_every_image,
    kill_during_upload_then_resume,
    kill_during_manifest_pushes_leaves_consistent_state,
);

async fn restart_keeps_every_image(mut s: Berthd) {
    let c = s.client();
    let (manifest, digest) = c
        .push_image("keep/app", "v1", b"layer that must survive")
        .await;
    let status = s.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    let s2 = s.restart();
    let c = s2.client();
    let r = c.call("GET", "/v2/keep/app/manifests/v1").await;
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let r = c.call("GET", &format!("/v2/keep/app/blobs/{layer}")).await;
    assert_eq!(r.bytes().await.unwrap(), &b"layer that must survive"[..]);
}

async fn kill_during_upload_then_resume(mut s: Berthd) {
    let c = s.client();
    let data: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest = sha256(&data);
    let loc = c.start_upload("crash/upload").await;
    // Stream the body slowly so the kill lands in the middle of it.
    let body = slow_body(data.clone(), 1_000_000, Duration::from_millis(20));
    let patch = tokio::spawn(c.request("PATCH", &loc).body(body).send());
    tokio::time::sleep(Duration::from_millis(150)).await;
    s.kill();
    assert!(
        patch.await.unwrap().is_err(),
        "the request died with the server"
    );
    let s2 = s.restart();
    let c = s2.client();
    let st = c.call("GET", &loc).await;
    assert_eq!(
        st.status(),
        204,
        "the upload is still known after the crash"
    );
    let range = st.headers()["range"].to_str().unwrap();
    let received: usize = range.split('-').nth(1).unwrap().parse::<usize>().unwrap();
    let received = if received == 0 { 0 } else { received + 1 };
    assert!(
        received < data.len(),
        "nothing was committed past what arrived"
    );
    // Resume from what the server reports, then complete: the digest must verify.
    c.finish_upload(&loc, &data, received, &digest).await;
    let r = c
        .call("GET", &format!("/v2/crash/upload/blobs/{digest}"))
        .await;
    assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
}

async fn kill_during_manifest_pushes_leaves_consistent_state(mut s: Berthd) {
    let c = s.client();
    let (manifest, _) = c.push_image("crash/manifests", "base", b"base layer").await;
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    let config = m["config"]["digest"].as_str().unwrap().to_owned();
    let layer = m["layers"][0]["digest"].as_str().unwrap().to_owned();
    // Many distinct manifests pushed concurrently while the server is killed.
    let pushes: Vec<_> = (0..200)
        .map(|i| {
            let c = c.clone();
            let mut m = m.clone();
            m["annotations"] = serde_json::json!({"n": i.to_string()});
            let body = serde_json::to_vec(&m).unwrap();
            tokio::spawn(async move {
                let _ = c
                    .request("PUT", &format!("/v2/crash/manifests/manifests/t{i}"))
                    .header("Content-Type", OCI_MANIFEST)
                    .body(body)
                    .send()
                    .await;
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(40)).await;
    s.kill();
    for p in pushes {
        let _ = p.await;
    }
    let s2 = s.restart();
    let c = s2.client();
    let tags: Value = c
        .call("GET", "/v2/crash/manifests/tags/list")
        .await
        .json()
        .await
        .unwrap();
    let tags = tags["tags"].as_array().unwrap();
    assert!(tags.iter().any(|t| t == "base"));
    // Every tag that exists resolves to a whole manifest whose digest matches.
    for t in tags {
        let r = c
            .call(
                "GET",
                &format!("/v2/crash/manifests/manifests/{}", t.as_str().unwrap()),
            )
            .await;
        assert_eq!(r.status(), 200);
        let digest = r.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = r.bytes().await.unwrap();
        assert_eq!(sha256(&body), digest);
        let parsed: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["config"]["digest"], config.as_str());
    }
    for d in [config, layer] {
        let r = c
            .call("GET", &format!("/v2/crash/manifests/blobs/{d}"))
            .await;
        assert_eq!(sha256(&r.bytes().await.unwrap()), d);
    }
    // And the server takes new pushes on the same data.
    assert_eq!(
        c.push_manifest("crash/manifests", "after", OCI_MANIFEST, &manifest)
            .await
            .status(),
        201
    );
}

/// On local disk a PATCH is answered before its bytes are flushed (the next request on
/// the upload flushes them). After a reboot, bytes never flushed may be lost: the
/// upload goes back to the last offset known durable, and the client resumes there.
/// The reboot is simulated by changing the boot id the upload was written in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reboot_drops_only_the_unflushed_tail_of_an_upload() {
    let Some(mut s) = Berthd::start(Db::Postgres).await else {
        return;
    };
    let c = s.client();
    let data: Vec<u8> = (0..15_000_000u32).map(|i| (i % 241) as u8).collect();
    let mut location = c.start_upload("crash/reboot").await;
    for range in [0..5_000_000, 5_000_000..10_000_000] {
        location = c.append_chunk(&location, &data, range).await;
    }
    s.kill();
    // The second PATCH flushed the first one's bytes; its own were not flushed yet.
    let url = s.database_url.clone().unwrap();
    let psql = |sql: &str| psql(&url, sql);
    assert_eq!(
        psql("SELECT size, synced_size FROM uploads"),
        "10000000|5000000"
    );
    psql("UPDATE uploads SET written_boot = 'an-earlier-boot'");
    let s2 = s.restart();
    let c = s2.client();
    let st = c.call("GET", &location).await;
    assert_eq!(st.status(), 204);
    assert_eq!(
        st.headers()["range"],
        "0-4999999",
        "back to the durable offset"
    );
    let r = c
        .request("PATCH", &location)
        .header("Content-Range", "10000000-14999999")
        .body(data[10_000_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416, "the client must resend from 5000000");
    assert_eq!(r.headers()["range"], "0-4999999");
    c.finish_upload(&location, &data, 5_000_000, &sha256(&data))
        .await;
    let r = c
        .call("GET", &format!("/v2/crash/reboot/blobs/{}", sha256(&data)))
        .await;
    assert_eq!(r.bytes().await.unwrap(), data);
    // Within one boot (a kill -9 only) nothing is dropped: the kernel kept the bytes.
    let location = c.start_upload("crash/reboot").await;
    let r = c
        .request("PATCH", &location)
        .body(data[..1_000_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let mut s2 = s2;
    s2.kill();
    let s3 = s2.restart();
    let st = s3.client().call("GET", &location).await;
    assert_eq!(st.headers()["range"], "0-999999");
}
