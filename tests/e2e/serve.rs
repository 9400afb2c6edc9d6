//! The `berthd` command line: help, configuration precedence, zero-config defaults,
//! graceful shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use berth_tests::*;

#[test]
fn help_documents_the_options() {
    let out = Command::new(workspace_bin("berthd"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "--listen",
        "--data-dir",
        "--config",
        "BERTH_LISTEN",
        "BERTH_DATA_DIR",
        "0.0.0.0:5000",
        "./berth-data",
    ] {
        assert!(
            help.contains(needle),
            "serve --help lacks {needle}:\n{help}"
        );
    }
    let out = Command::new(workspace_bin("berthd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("serve"));
}

#[test]
fn bad_configuration_is_reported_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("berth.toml");
    std::fs::write(&cfg, "listen = \"not-an-address\"\n").unwrap();
    let out = Command::new(workspace_bin("berthd"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .env_remove("BERTH_LISTEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("listen") && err.contains("not-an-address"),
        "{err}"
    );
    std::fs::write(&cfg, "lisen = \"127.0.0.1:0\"\n").unwrap();
    let out = Command::new(workspace_bin("berthd"))
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lisen"));
}

/// Which data dir a server started with these sources really uses.
fn data_dir_used(
    cwd: &std::path::Path,
    config: Option<&str>,
    env: Option<&str>,
    flag: Option<&str>,
) -> String {
    let mut cmd = Command::new(workspace_bin("berthd"));
    cmd.current_dir(cwd)
        .arg("serve")
        .env_remove("BERTH_DATA_DIR")
        .env("BERTH_LISTEN", "127.0.0.1:0");
    if let Some(c) = config {
        let path = cwd.join("berth.toml");
        std::fs::write(
            &path,
            format!("data_dir = \"{c}\"\nlisten = \"127.0.0.1:1\"\n"),
        )
        .unwrap();
        cmd.arg("--config").arg(path);
    }
    if let Some(e) = env {
        cmd.env("BERTH_DATA_DIR", e);
    }
    if let Some(f) = flag {
        cmd.args(["--data-dir", f]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufRead::lines(std::io::BufReader::new(child.stderr.as_mut().unwrap()));
    let line = lines
        .map_while(Result::ok)
        .find(|l| l.contains("listening on"))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    line.split("; data in ")
        .nth(1)
        .unwrap_or_default()
        .trim_end()
        .trim_end_matches(')')
        .to_owned()
}

#[test]
fn flags_beat_environment_beat_config_file_beat_defaults() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    assert_eq!(data_dir_used(cwd, None, None, None), "./berth-data");
    assert!(
        cwd.join("berth-data/berth.db").exists(),
        "zero-config data lives in ./berth-data"
    );
    assert_eq!(
        data_dir_used(cwd, Some("from-file"), None, None),
        "from-file"
    );
    assert_eq!(
        data_dir_used(cwd, Some("from-file"), Some("from-env"), None),
        "from-env"
    );
    assert_eq!(
        data_dir_used(cwd, Some("from-file"), Some("from-env"), Some("from-flag")),
        "from-flag"
    );
    // The env listen (127.0.0.1:0) beat the file's 127.0.0.1:1: every server above started.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let mut s = Berthd::start(Db::Sqlite).await.unwrap();
    let c = s.client();
    let data: Vec<u8> = (0..4_000_000u32).map(|i| (i % 199) as u8).collect();
    let digest = sha256(&data);
    let loc = c.start_upload("graceful/app").await;
    let body = slow_body(data.clone(), 500_000, Duration::from_millis(100));
    let patch = tokio::spawn(
        c.request("PATCH", &loc)
            .header("Content-Range", format!("0-{}", data.len() - 1))
            .body(body)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    let stopping = std::thread::spawn(move || {
        let status = s.stop();
        (status, s)
    });
    let r = patch.await.unwrap().expect("the in-flight PATCH completes");
    assert_eq!(r.status(), 202);
    assert_eq!(
        r.headers()["range"],
        format!("0-{}", data.len() - 1).as_str()
    );
    let (status, mut s) = stopping.join().unwrap();
    assert!(status.success());
    assert!(s.log().contains("berthd stopped"));
    let s2 = s.restart();
    let r = s2
        .client()
        .call("PUT", &format!("{loc}?digest={digest}"))
        .await;
    assert_eq!(r.status(), 201);
}
