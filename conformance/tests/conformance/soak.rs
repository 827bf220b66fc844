//! A bounded soak: steady load over HTTP/1.1 and h2c through a Wasm filter while the
//! config and the plugin are reloaded every few seconds. Zero failed requests, every
//! request answered exactly once (and seen exactly once upstream), memory and file
//! descriptors flat from start to end.
//!
//! `WEFT_SOAK_SECS` sets the length (default 60; run it for minutes or hours locally).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use weft_conformance::plugins::{HELLO_FILTER, NOOP};
use weft_conformance::*;

fn config(up: &Upstream, plugin: &std::path::Path, generation: u32) -> String {
    Config::new()
        .top("[runtime]\nwatch = false")
        .cluster("up", &[up.addr])
        // A generous CPU budget: on a loaded test machine a 50 ms wall-clock budget can run
        // out for reasons that have nothing to do with reloads, which is what this tests.
        .wasm_filter("hot", plugin, "", "limits = { cpu = \"1s\" }")
        .native_filter(
            "tag",
            "headers",
            &format!("request_set = {{ x-generation = \"{generation}\" }}"),
        )
        .route("all", "path_prefix = \"/\"", "up", &["tag", "hot"], "")
        .to_string()
}

/// Resident memory (KiB) and open file descriptors of a process.
fn footprint(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("proc fd").count();
    (rss, fds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_nothing_and_leak_nothing() {
    let secs: u64 = std::env::var("WEFT_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // The upstream counts each request id it sees.
    let seen: Arc<Mutex<HashMap<u64, u32>>> = Arc::default();
    let counts = seen.clone();
    let up = Upstream::start(move |req| {
        let counts = counts.clone();
        async move {
            if let Some(id) = req
                .headers()
                .get("x-req-id")
                .and_then(|v| v.to_str().ok()?.parse().ok())
            {
                *counts.lock().expect("counts").entry(id).or_insert(0) += 1;
            }
            http::Response::new(full("ok"))
        }
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("filter.wasm");
    std::fs::copy(HELLO_FILTER, &plugin).expect("copy");
    let weft = Weft::start(&config(&up, &plugin, 0)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let next_id = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for n in 0..8 {
        let (stop, next_id, url) = (stop.clone(), next_id.clone(), weft.url("/soak"));
        clients.push(tokio::spawn(async move {
            let client = if n % 2 == 0 { http1_client() } else { h2c_client() };
            let (mut answered, mut failures) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::SeqCst) {
                let id = next_id.fetch_add(1, Ordering::SeqCst);
                let req = http::Request::get(&url)
                    .header("x-req-id", id.to_string())
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                match client.request(req).await {
                    Ok(resp) if resp.status() == 200 => {
                        let _ = resp.into_body().collect().await;
                        answered.push(id);
                    }
                    Ok(resp) => failures.push(format!("request {id}: status {}", resp.status())),
                    Err(e) => failures.push(format!("request {id}: {e}")),
                }
            }
            (answered, failures)
        }));
    }

    // Warm up (instances created, pools filled), then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = weft.pid();
    let (rss_start, fds_start) = footprint(pid);
    let started = Instant::now();
    let mut generation = 0;
    let mut reloads = 0;
    let mut rss_mid = None;
    while started.elapsed() < Duration::from_secs(secs) {
        if rss_mid.is_none() && started.elapsed() >= Duration::from_secs(secs / 2) {
            rss_mid = Some(footprint(pid).0);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        generation += 1;
        // Alternate: a config change, then a different plugin (hello <-> noop).
        if generation % 2 == 0 {
            let with = if generation % 4 == 0 { HELLO_FILTER } else { NOOP };
            let aside = plugin.with_extension("new");
            std::fs::copy(with, &aside).expect("copy plugin");
            std::fs::rename(&aside, &plugin).expect("swap plugin");
        }
        weft.write_config(&config(&up, &plugin, generation));
        let (status, body) = weft.admin("POST", "/reload").await;
        assert_eq!(status, 200, "reload {generation} rejected: {body}");
        reloads += 1;
    }
    let (rss_end, fds_end) = footprint(pid);
    stop.store(true, Ordering::SeqCst);

    let mut answered = Vec::new();
    for client in clients {
        let (ids, failures) = client.await.expect("client task");
        if !failures.is_empty() {
            let log = weft.log();
            let why: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .take(20)
                .collect();
            panic!(
                "failed requests during the soak: {:?}\nweft's warnings:\n{}",
                &failures[..failures.len().min(10)],
                why.join("\n")
            );
        }
        answered.extend(ids);
    }
    let seen = seen.lock().expect("counts");
    assert!(
        answered.len() > 1000,
        "too little load to mean anything: {}",
        answered.len()
    );
    for id in &answered {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "request {id} reached the upstream {:?} times",
            seen.get(id)
        );
    }
    assert_eq!(
        seen.len(),
        answered.len(),
        "the upstream saw requests no client got an answer for"
    );
    eprintln!(
        "soak: {secs}s, {} requests, {reloads} reloads, RSS {rss_start} -> {rss_mid:?} -> {rss_end} KiB, fds {fds_start} -> {fds_end}",
        answered.len()
    );
    // A leak grows with every reload; warm-up does not go on in the second half.
    let rss_mid = rss_mid.unwrap_or(rss_start);
    assert!(
        rss_end < rss_mid + 16 * 1024,
        "RSS kept growing in the second half: {rss_mid} -> {rss_end} KiB"
    );
    // Flat: allocator noise and one config version's worth of instances, not growth per reload.
    assert!(
        rss_end < rss_start + rss_start / 2 + 32 * 1024,
        "RSS grew {rss_start} -> {rss_end} KiB"
    );
    assert!(
        fds_end <= fds_start + 8,
        "file descriptors grew {fds_start} -> {fds_end}"
    );
}
