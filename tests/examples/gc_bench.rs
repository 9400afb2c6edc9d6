//! The garbage collection benchmark's client (run by `bench/gc.sh`): pushes COUNT
//! distinct small blobs into one repository of a running, open berthd, each in one
//! request (`POST …/blobs/uploads/?digest=`), PARALLEL at a time, and prints the rate.
//!
//! `gc_bench URL COUNT [PARALLEL] [SEED]` (defaults: 16 in flight, seed 0; different
//! seeds push different blobs).

use std::time::Instant;

use berth_tests::sha256;
use futures::StreamExt;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args
        .get(1)
        .expect("usage: gc_bench URL COUNT [PARALLEL] [SEED]")
        .clone();
    let count: usize = args.get(2).map_or(100_000, |a| a.parse().expect("COUNT"));
    let parallel: usize = args.get(3).map_or(16, |a| a.parse().expect("PARALLEL"));
    let seed: u64 = args.get(4).map_or(0, |a| a.parse().expect("SEED"));
    let client = reqwest::Client::new();
    let started = Instant::now();
    let failures = futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            async move {
                let body = format!("gc-bench blob {seed} {i}").into_bytes();
                let digest = sha256(&body);
                let r = client
                    .post(format!("{url}/v2/bench/gc/blobs/uploads/?digest={digest}"))
                    .body(body)
                    .send()
                    .await;
                !matches!(r, Ok(r) if r.status() == 201)
            }
        })
        .buffer_unordered(parallel)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "pushed {count} blobs in {secs:.2} s: {:.0} blobs/s ({failures} failed)",
        count as f64 / secs
    );
    assert_eq!(failures, 0, "every push must succeed");
}
