//! A real headless Chromium for the web UI tests, driven over WebDriver (fantoccini)
//! through Debian's `chromedriver`, which the test starts on a free loopback port.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::{free_port, require_tool};

pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Where screenshots go: `target/test-artifacts/web/` (kept after the run).
    artifacts: PathBuf,
}

impl Browser {
    /// Chromium, or `None` outside CI when chromium or chromedriver is missing.
    pub async fn start() -> Option<Browser> {
        if !require_tool("chromium") || !require_tool("chromedriver") {
            return None;
        }
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1000"],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) if start.elapsed() < Duration::from_secs(20) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("chromedriver did not start a browser: {e}"),
            }
        };
        let artifacts =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/web");
        std::fs::create_dir_all(&artifacts).expect("artifact dir");
        Some(Browser {
            client,
            driver,
            artifacts,
        })
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// The visible text of the page.
    pub async fn text(&self) -> String {
        self.client
            .find(Locator::Css("body"))
            .await
            .expect("a body")
            .text()
            .await
            .expect("body text")
    }

    /// Saves a PNG of the window as `<name>.png` among the test artifacts.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Browser {
    /// Ends the browser session (closing Chromium), then the driver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
