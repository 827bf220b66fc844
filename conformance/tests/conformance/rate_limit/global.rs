//! Global mode: counters in a real `redis-server` started here (installed by
//! `scripts/setup`), shared by two proxies; and what happens when Redis is down.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::*;

/// A `redis-server` on a loopback port, without persistence; killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// Starts Redis on `port` (held by a [`ReservedPort`]: Redis cannot bind port 0 and
    /// say where) and proves that what answers there is this process.
    async fn start(port: &ReservedPort) -> Redis {
        let port = port.port;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server not found: run scripts/setup (it installs the redis-server package)");
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = redis.process_id().await {
                assert_eq!(Some(pid), redis.child.id(), "another Redis answers on {port}");
                return redis;
            }
            let exited = redis.child.try_wait().ok().flatten();
            assert!(
                exited.is_none(),
                "redis-server exited ({exited:?}) instead of listening on {port}"
            );
            assert!(Instant::now() < deadline, "redis-server did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pid of the Redis that answers on the port (`INFO server`'s `process_id`).
    async fn process_id(&self) -> Option<u32> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.ok()?;
        stream.write_all(b"INFO server\r\n").await.ok()?;
        let mut reply = String::new();
        let mut buf = [0u8; 4096];
        // Read until the `process_id:` line is whole.
        while !reply
            .split_once("process_id:")
            .is_some_and(|(_, rest)| rest.contains("\r\n"))
        {
            let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            reply.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let text = reply;
        text.lines()
            .find_map(|l| l.strip_prefix("process_id:")?.trim().parse().ok())
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn kv_table(url: &str) -> String {
    format!("[kv]\nbackend = \"redis\"\nurl = \"{url}\"\ntimeout = \"100ms\"\n")
}

#[tokio::test]
async fn two_proxies_sharing_redis_hold_one_combined_limit() {
    let port = ReservedPort::new();
    let redis = Redis::start(&port).await;
    let up = Upstream::echo("up").await;
    let limits = r#"limits = [{ name = "win", key = ["client_ip"], rate = 7, per = "2s" },
                              { name = "bucket", key = ["header:x-user"], rate = 2, per = "1s", algorithm = "token_bucket", burst = 4 }]"#;
    let kv = kv_table(&redis.url());
    let a = Weft::start(&config(&up, &kv, limits)).await;
    let b = Weft::start(&config(&up, &kv, limits)).await;
    let client = http1_client();

    // The fixed window: 7 between both proxies, whichever gets them.
    next_window(2000).await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        let r = hit(&client, proxy.addr, &[]).await;
        if r.status == 200 {
            assert_eq!(
                rate_headers(&r).1,
                7 - 1 - i,
                "request {i}: remaining counts both proxies"
            );
        }
        statuses.push(r.status);
    }
    let per_request = started.elapsed() / 12;
    assert_eq!(statuses, [[200; 7].as_slice(), &[429; 5]].concat(), "{statuses:?}");
    assert_eq!(up.hits(), 7);
    eprintln!("through Redis: {per_request:?} per request (incr + hand-off set/get)");

    // The token bucket (keyed by user; the window above is spent for this address, so
    // use other addresses): a burst of 4 shared by both proxies, then 2 per second.
    let from = |n| client_from(Ipv4Addr::new(127, 0, 0, n));
    let mut allowed = 0;
    for i in 0..6u8 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        let r = hit(&from(10 + i), proxy.addr, &[("x-user", "carol")]).await;
        allowed += usize::from(r.status == 200);
    }
    assert_eq!(allowed, 4, "one burst of 4 across both proxies");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let r = hit(&from(20), b.addr, &[("x-user", "carol")]).await;
    assert_eq!(r.status, 200, "one token back after 500 ms");
    assert_eq!(hit(&from(21), a.addr, &[("x-user", "carol")]).await.status, 429);
    redis.stop().await;
}

#[tokio::test]
async fn redis_down_fails_open_or_closed_as_configured_counts_and_recovers() {
    let port = ReservedPort::new();
    let up = Upstream::echo("up").await;
    // Nothing listens on `port` yet: the proxy must start anyway.
    let text = Config::new()
        .top(&kv_table(&format!("redis://127.0.0.1:{}", port.port)))
        .cluster("web", &[up.addr])
        .wasm_filter(
            "rl-open",
            PLUGIN,
            r#"limits = [{ key = ["client_ip"], rate = 100, per = "1s" }], on_store_error = "allow""#,
            "",
        )
        .wasm_filter(
            "rl-closed",
            PLUGIN,
            r#"limits = [{ key = ["client_ip"], rate = 100, per = "1s" }], on_store_error = "deny""#,
            "",
        )
        .route("open", "path_prefix = \"/open\"", "web", &["rl-open"], "")
        .route("closed", "path_prefix = \"/closed\"", "web", &["rl-closed"], "")
        .to_string();
    let weft = Weft::start(&text).await;

    let started = Instant::now();
    let open = get(&weft.url("/open")).await;
    assert_eq!(open.status, 200, "fail-open lets the request through: {}", open.text());
    assert!(open.header("ratelimit-limit").is_none(), "no numbers without the store");
    let closed = get(&weft.url("/closed")).await;
    assert_eq!(closed.status, 503, "fail-closed: {}", closed.text());
    assert_eq!(closed.header("retry-after"), Some("1"));
    let both = started.elapsed();
    eprintln!("two requests with Redis down: {both:?}");
    assert!(both < Duration::from_secs(2), "store errors fail fast ({both:?})");

    let kv_errors = weft.metric(r#"weft_kv_errors_total{backend="redis"}"#).await;
    assert!(kv_errors >= 2.0, "host counts store errors: {kv_errors}");
    let series = |f: &str| format!(r#"weft_filter_events_total{{filter="{f}",name="store_errors"}}"#);
    assert_eq!(weft.metric(&series("rl-open")).await, 1.0);
    assert_eq!(weft.metric(&series("rl-closed")).await, 1.0);
    assert!(
        weft.log().contains("kv backend failed"),
        "the host logs it:\n{}",
        weft.log()
    );

    // Redis comes up: the proxy reconnects by itself.
    let redis = Redis::start(&port).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&weft.url("/closed")).await;
        if r.status == 200 {
            assert_eq!(rate_headers(&r).0, 100);
            break;
        }
        assert!(Instant::now() < deadline, "never recovered: {} {}", r.status, r.text());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And goes down again: fail-closed again, fast.
    redis.stop().await;
    let r = get(&weft.url("/closed")).await;
    assert_eq!(r.status, 503);
}
