//! The workers (docs/performance.md, "Thread per core"), through the real binary: with the
//! per-core scheduler each worker is its own thread with its own listening socket on the
//! port (`SO_REUSEPORT`) and its own idle upstream connections; the connection caps still
//! hold for the whole listener; `--workers` overrides `[runtime] workers`; the
//! work-stealing scheduler serves on one socket.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weft_conformance::raw::{read_to_close, status};
use weft_conformance::*;

fn config(up: &Upstream, runtime: &str, listener: &str) -> String {
    Config::new()
        .top(&format!("[runtime]\n{runtime}\n"))
        .listener(listener)
        .cluster("up", &[up.addr])
        .route("all", "path_prefix = \"/\"", "up", &[], "")
        .to_string()
}

/// The names of the process's threads.
fn threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the process's threads")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    names.sort();
    names
}

/// Sockets listening on `addr` (IPv4), from /proc/net/tcp: `SO_REUSEPORT` sockets each
/// have their own line.
fn listening_sockets(addr: SocketAddr) -> usize {
    let std::net::IpAddr::V4(ip) = addr.ip() else {
        panic!("an IPv4 listener")
    };
    // /proc shows the address as the in-memory u32 in hex (little-endian here) and the port in hex.
    let local = format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), addr.port());
    std::fs::read_to_string("/proc/net/tcp")
        .expect("/proc/net/tcp")
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A") // TCP_LISTEN
        })
        .count()
}

/// One request on a connection of its own; its status.
async fn one_request(addr: SocketAddr) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    status(&read_to_close(&mut stream, Duration::from_secs(5)).await.0)
}

#[tokio::test]
async fn per_core_workers_accept_on_their_own_sockets_and_keep_their_own_upstream_connections() {
    let up = Upstream::echo("up").await;
    let weft = Weft::start(&config(&up, "workers = 2", "")).await;
    let names = threads(weft.pid());
    assert!(
        names.contains(&"weft-worker-0".to_owned()) && names.contains(&"weft-worker-1".to_owned()),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n == "weft-worker-2"), "{names:?}");
    assert_eq!(listening_sockets(weft.addr), 2, "one SO_REUSEPORT socket per worker");
    // Sequential requests, each on a new client connection: the kernel spreads them over
    // both sockets (by the client's port: all 40 on one would be a 1 in 2^39 chance).
    // Each worker reuses its own upstream connection, so the upstream sees exactly two:
    // one shared pool would show one, no pooling forty.
    for i in 0..40 {
        assert_eq!(one_request(weft.addr).await, Some(200), "request {i}");
    }
    assert_eq!(up.hits(), 40);
    assert_eq!(up.connections(), 2, "one pooled upstream connection per worker");
}

#[tokio::test]
async fn the_connection_caps_hold_for_the_listener_across_workers() {
    let up = Upstream::echo("up").await;
    let weft = Weft::start(&config(
        &up,
        "workers = 2",
        "limits = { max_connections = 4, max_connections_per_client = 4 }",
    ))
    .await;
    // A flood of idle connections lands on both workers; the cap counts them together.
    let mut held = Vec::new();
    for _ in 0..16 {
        held.push(TcpStream::connect(weft.addr).await.expect("connect"));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let refused = weft
            .metric("weft_connections_rejected_total{listener=\"main\",reason=\"max_connections\"}")
            .await;
        if refused >= 12.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{refused} of 16 connections refused over a cap of 4"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(weft.metric("weft_connections_open{listener=\"main\"}").await, 4.0);
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while weft.metric("weft_connections_open{listener=\"main\"}").await > 0.0 {
        assert!(std::time::Instant::now() < deadline, "the places were not given back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(one_request(weft.addr).await, Some(200));
}

#[tokio::test]
async fn the_workers_flag_overrides_the_config() {
    let up = Upstream::echo("up").await;
    let weft = Weft::start_with(&config(&up, "workers = 1", ""), &["--workers", "3"]).await;
    // A thread names itself once it runs: on a loaded machine a worker may not have yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let names = threads(weft.pid());
        let workers = names.iter().filter(|n| n.starts_with("weft-worker-")).count();
        if workers == 3 {
            break;
        }
        assert!(workers < 3 && std::time::Instant::now() < deadline, "{names:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listening_sockets(weft.addr), 3);
    assert_eq!(one_request(weft.addr).await, Some(200));
}

#[tokio::test]
async fn the_work_stealing_scheduler_serves_on_one_socket() {
    let up = Upstream::echo("up").await;
    let weft = Weft::start(&config(&up, "workers = 2\nscheduler = \"work-stealing\"", "")).await;
    assert_eq!(listening_sockets(weft.addr), 1);
    let names = threads(weft.pid());
    assert!(!names.iter().any(|n| n.starts_with("weft-worker-")), "{names:?}");
    for _ in 0..10 {
        assert_eq!(one_request(weft.addr).await, Some(200));
    }
    // Its threads share one pool: sequential requests reuse one upstream connection.
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn a_breaker_connection_limit_below_the_workers_is_shared_not_a_refusal() {
    let up = Upstream::echo("up").await;
    let config = Config::new()
        .top("[runtime]\nworkers = 2\n")
        .listener("")
        .cluster("up", &[up.addr])
        .route("all", "path_prefix = \"/\"", "up", &[], "")
        .to_string()
        .replace(
            &format!("endpoints = [\"{}\"]", up.addr),
            &format!(
                "endpoints = [\"{}\"]\n[clusters.circuit_breaker]\nmax_connections = 1",
                up.addr
            ),
        );
    assert!(config.contains("max_connections = 1"), "{config}");
    let weft = Weft::start(&config).await;
    // Sequential requests on new client connections land on both workers; the one
    // upstream connection the limit allows, idle on one worker, serves the other's too.
    // A request that arrives before the previous one's connection is back in its pool
    // finds the limit held and is refused, as it should be (a loaded machine): it is sent
    // again a moment later. A worker that could not borrow the other's idle connection
    // would refuse about half of the first tries (the kernel spreads new connections).
    let mut refused_first = 0;
    for i in 0..20 {
        let mut tries = 0;
        while one_request(weft.addr).await != Some(200) {
            tries += 1;
            assert!(tries < 10, "request {i} refused {tries} times: {}", weft.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        refused_first += usize::from(tries > 0);
    }
    assert!(
        refused_first <= 4,
        "{refused_first} of 20 first tries refused: {}",
        weft.log()
    );
    assert_eq!(up.connections(), 1, "never past the breaker's limit");
}
