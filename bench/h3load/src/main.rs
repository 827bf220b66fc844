//! `h3load`: keeps `--connections` QUIC connections with `--streams` requests in flight on
//! each for `--duration`, then prints requests/s and latency percentiles in the format
//! bench/run parses. Debian's h2load is built without QUIC, so HTTP/3 needs its own client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Buf;
use clap::Parser;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[derive(Parser)]
struct Args {
    /// `https://host:port/path`; the host is the TLS server name, the address comes from --addr.
    url: http::Uri,
    #[arg(long)]
    addr: SocketAddr,
    /// CA bundle that signed the server's certificate.
    #[arg(long)]
    ca: PathBuf,
    #[arg(long, default_value_t = 10)]
    connections: usize,
    #[arg(long, default_value_t = 10)]
    streams: usize,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    match unit {
        "s" | "" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        _ => Err(format!("bad duration {s:?}: use 10s or 500ms")),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca).context("reading --ca")? {
        roots.add(cert?)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let host = args.url.host().unwrap_or("localhost").to_owned();

    let deadline = Instant::now() + args.duration;
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let conn = endpoint.connect(args.addr, &host)?.await.context("QUIC handshake")?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
        tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
        for _ in 0..args.streams {
            let (mut send, url) = (send.clone(), args.url.clone());
            tasks.push(tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let started = Instant::now();
                    match request(&mut send, &url).await {
                        Ok(()) => latencies.push(started.elapsed()),
                        Err(_) => errors += 1,
                    }
                }
                (latencies, errors)
            }));
        }
    }
    let started = Instant::now();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().max(args.duration);
    latencies.sort();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)));
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    println!("requests: {} done, {errors} errors", latencies.len());
    println!("req/s: {:.0}", latencies.len() as f64 / elapsed.as_secs_f64());
    println!("p50 ms: {:.3}", ms(pct(0.50)));
    println!("p99 ms: {:.3}", ms(pct(0.99)));
    endpoint.wait_idle().await;
    Ok(())
}

async fn request(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, bytes::Bytes>,
    url: &http::Uri,
) -> anyhow::Result<()> {
    let mut stream = send.send_request(http::Request::get(url.clone()).body(())?).await?;
    stream.finish().await?;
    let resp = stream.recv_response().await?;
    anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
    while let Some(mut chunk) = stream.recv_data().await? {
        chunk.advance(chunk.remaining());
    }
    Ok(())
}
