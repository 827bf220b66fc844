//! TLS, mutual TLS, identities and HTTP/3 through the real binary, with curl, rustls and
//! an h3 client as the clients.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use weft::tls::devcert::{Authority, Usage};
use weft_conformance::*;

/// A test CA and the files it issued, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: Authority,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Authority::new(name).expect("ca");
        std::fs::write(dir.path().join("ca.pem"), &ca.cert_pem).expect("write ca");
        Pki { dir, ca }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    fn ca(&self) -> String {
        self.path("ca.pem").display().to_string()
    }

    /// Issues and writes `<file>.pem` and `<file>-key.pem`.
    fn issue(&self, file: &str, dns: &[&str], uris: &[&str], usage: Usage) -> (String, String) {
        let issued = self.ca.issue(file, dns, uris, usage).expect("issue");
        self.write(file, &issued.cert_pem, &issued.key_pem)
    }

    fn issue_expired(&self, file: &str, dns: &[&str], uris: &[&str], usage: Usage) -> (String, String) {
        let now = time::OffsetDateTime::now_utc();
        let issued = self
            .ca
            .issue_between(
                file,
                dns,
                uris,
                usage,
                now - time::Duration::days(30),
                now - time::Duration::days(1),
            )
            .expect("issue");
        self.write(file, &issued.cert_pem, &issued.key_pem)
    }

    fn write(&self, file: &str, cert: &str, key: &str) -> (String, String) {
        let (c, k) = (self.path(&format!("{file}.pem")), self.path(&format!("{file}-key.pem")));
        std::fs::write(&c, cert).expect("write cert");
        std::fs::write(&k, key).expect("write key");
        (c.display().to_string(), k.display().to_string())
    }
}

/// A config whose listener, `main`, serves TLS with `certs`; `extra` goes before its
/// `[listeners.tls]` table.
fn tls_listener(certs: &[(String, String)], extra: &str) -> Config {
    let list: Vec<String> = certs
        .iter()
        .map(|(c, k)| format!("{{ cert = \"{c}\", key = \"{k}\" }}"))
        .collect();
    Config::new()
        .listener(extra)
        .listener(&format!("[listeners.tls]\ncertificates = [{}]", list.join(", ")))
}

/// One cluster, `up`, and a route to it for every request.
fn cluster_and_route(config: Config, up: &Upstream) -> String {
    config.proxy_to(&[up.addr]).to_string()
}

/// Runs curl (without blocking the test's runtime, which also runs the upstreams);
/// returns its exit code, stdout and stderr.
async fn curl(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn https(weft: &Weft, host: &str, path: &str) -> String {
    format!("https://{host}:{}{path}", weft.addr.port())
}

fn resolve(weft: &Weft, host: &str) -> String {
    format!("{host}:{}:127.0.0.1", weft.addr.port())
}

#[tokio::test]
async fn curl_over_tls_with_http1_and_http2() {
    let pki = Pki::new("CA");
    let server = pki.issue("server", &["localhost"], &[], Usage::Server);
    let up = Upstream::echo("a").await;
    let weft = Weft::start(&cluster_and_route(tls_listener(&[server], ""), &up)).await;
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let (code, out, err) = curl(&[
            flag,
            "--cacert",
            &pki.ca(),
            "-w",
            "\n%{http_version}",
            &https(&weft, "localhost", "/tls"),
        ])
        .await;
        assert_eq!(code, 0, "{err}");
        let (body, got_version) = out.rsplit_once('\n').expect("version line");
        assert_eq!(got_version, version);
        let echo: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(seen_header(&echo, "x-forwarded-proto"), Some("https"));
    }
}

#[tokio::test]
async fn sni_picks_the_certificate_and_clients_reject_bad_ones() {
    let pki = Pki::new("CA");
    let a = pki.issue("a", &["a.test"], &[], Usage::Server);
    let b = pki.issue("b", &["b.test"], &[], Usage::Server);
    let up = Upstream::echo("a").await;
    let weft = Weft::start(&cluster_and_route(tls_listener(&[a, b], ""), &up)).await;
    for host in ["a.test", "b.test"] {
        let (code, _, err) = curl(&[
            "--cacert",
            &pki.ca(),
            "--resolve",
            &resolve(&weft, host),
            &https(&weft, host, "/"),
        ])
        .await;
        assert_eq!(code, 0, "{host}: {err}");
    }
    // A name no certificate has: the default (first) certificate, which curl refuses.
    let (code, _, err) = curl(&[
        "--cacert",
        &pki.ca(),
        "--resolve",
        &resolve(&weft, "c.test"),
        &https(&weft, "c.test", "/"),
    ])
    .await;
    assert_eq!(code, 60, "wrong SAN must be refused: {err}");
    assert!(err.contains("c.test"), "{err}");
    // A CA the client does not trust.
    let (code, _, err) = curl(&["--resolve", &resolve(&weft, "a.test"), &https(&weft, "a.test", "/")]).await;
    assert_eq!(code, 60, "untrusted: {err}");
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused_by_clients() {
    let pki = Pki::new("CA");
    let old = pki.issue_expired("old", &["localhost"], &[], Usage::Server);
    let up = Upstream::echo("a").await;
    let weft = Weft::start(&cluster_and_route(tls_listener(&[old], ""), &up)).await;
    let (code, _, err) = curl(&["--cacert", &pki.ca(), &https(&weft, "localhost", "/")]).await;
    assert_eq!(code, 60, "{err}");
    assert!(err.to_lowercase().contains("expired"), "{err}");
}

fn mtls(pki: &Pki, auth: &str, extra: &str) -> Config {
    let server = pki.issue("server", &["localhost"], &[], Usage::Server);
    // After `[listeners.tls]`: the lines are that table's.
    tls_listener(&[server], extra).listener(&format!("client_ca = \"{}\"\nclient_auth = \"{auth}\"", pki.ca()))
}

#[tokio::test]
async fn mutual_tls_required_checks_client_certificates_and_forwards_the_identity() {
    let pki = Pki::new("CA");
    let good = pki.issue("web", &[], &["spiffe://example.org/ns/prod/sa/web"], Usage::Client);
    let expired = pki.issue_expired("old", &[], &["spiffe://example.org/ns/prod/sa/old"], Usage::Client);
    let stranger_pki = Pki::new("Other CA");
    let stranger = stranger_pki.issue("x", &[], &["spiffe://evil.org/sa/x"], Usage::Client);
    let up = Upstream::echo("a").await;
    let config = cluster_and_route(mtls(&pki, "required", "forward_client_cert = true"), &up);
    let weft = Weft::start(&config).await;
    let url = https(&weft, "localhost", "/");

    let (code, _, err) = curl(&["--cacert", &pki.ca(), &url]).await;
    assert_ne!(code, 0, "no client certificate must be refused: {err}");

    let (code, out, err) = curl(&[
        "--cacert",
        &pki.ca(),
        "--cert",
        &good.0,
        "--key",
        &good.1,
        "-H",
        "x-forwarded-client-cert: By=spoofed",
        &url,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let echo: serde_json::Value = serde_json::from_str(&out).expect("json");
    let xfcc = seen_header(&echo, "x-forwarded-client-cert").expect("xfcc upstream");
    assert!(xfcc.starts_with("Hash="), "{xfcc}");
    assert!(
        xfcc.contains(";Subject=\"CN=web\";URI=spiffe://example.org/ns/prod/sa/web"),
        "{xfcc}"
    );
    assert!(!xfcc.contains("spoofed"), "a client's own XFCC must not pass: {xfcc}");

    for (name, (cert, key)) in [("expired", &expired), ("other CA", &stranger)] {
        let (code, _, err) = curl(&["--cacert", &pki.ca(), "--cert", cert, "--key", key, &url]).await;
        assert_ne!(code, 0, "{name} client certificate must be refused: {err}");
    }
    let log = weft.log();
    assert!(log.contains("TLS handshake failed"), "{log}");
    assert!(
        log.contains("Expired") || log.contains("expired"),
        "the reason is logged:\n{log}"
    );
}

#[tokio::test]
async fn identities_route_and_authorize_requests() {
    let pki = Pki::new("CA");
    let prod = pki.issue("prod", &[], &["spiffe://example.org/ns/prod/sa/web"], Usage::Client);
    let dev = pki.issue("dev", &[], &["spiffe://example.org/ns/dev/sa/web"], Usage::Client);
    let legacy = pki.issue(
        "legacy",
        &[],
        &["spiffe://example.org/ns/prod/sa/legacy"],
        Usage::Client,
    );
    let (prod_up, other_up) = (Upstream::echo("prod").await, Upstream::echo("other").await);
    let config = mtls(&pki, "optional", "")
        .cluster("prod", &[prod_up.addr])
        .cluster("other", &[other_up.addr])
        .native_filter(
            "no-legacy",
            "identity",
            "deny = [\"spiffe://example.org/ns/prod/sa/legacy\"]",
        )
        .native_filter("prod-only", "identity", "allow = [\"spiffe://example.org/ns/prod/*\"]")
        .route("admin", "path_prefix = \"/admin\"", "other", &["prod-only"], "")
        .route(
            "prod",
            "identity = { regex = \"spiffe://example.org/ns/prod/.*\" }",
            "prod",
            &["no-legacy"],
            "",
        )
        .route("rest", "", "other", &[], "")
        .to_string();
    let weft = Weft::start(&config).await;
    let get = async |cert: Option<&(String, String)>, path: &str| {
        let mut args = vec!["--cacert".to_owned(), pki.ca(), "-w".into(), "\n%{http_code}".into()];
        if let Some((c, k)) = cert {
            args.extend(["--cert".into(), c.clone(), "--key".into(), k.clone()]);
        }
        args.push(https(&weft, "localhost", path));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = curl(&refs).await;
        assert_eq!(code, 0, "{err}");
        let (body, status) = out.rsplit_once('\n').expect("status");
        (status.to_owned(), body.to_owned())
    };
    let (status, body) = get(Some(&prod), "/x").await;
    assert_eq!(status, "200");
    assert!(body.contains("\"upstream\":\"prod\""), "{body}");
    let (_, body) = get(Some(&dev), "/x").await;
    assert!(body.contains("\"upstream\":\"other\""), "{body}");
    let (_, body) = get(None, "/x").await;
    assert!(body.contains("\"upstream\":\"other\""), "{body}");
    assert_eq!(
        get(Some(&legacy), "/x").await,
        ("403".to_owned(), "forbidden\n".to_owned())
    );
    assert_eq!(get(Some(&dev), "/admin").await.0, "403");
    assert_eq!(get(None, "/admin").await.0, "403");
    assert_eq!(get(Some(&prod), "/admin").await.0, "200");
}

/// A TLS upstream requiring client certificates from `client_ca`; records the identities
/// it saw and the ALPN protocol negotiated.
async fn tls_upstream(pki: &Pki, client_ca: &Path) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let (cert, key) = pki.issue("upstream", &["upstream.internal"], &[], Usage::Server);
    let read = |path: &Path| std::fs::read(path).expect("PEM file");
    let acceptor = mtls_acceptor(
        &read(Path::new(&cert)),
        &read(Path::new(&key)),
        &read(client_ca),
        &[b"h2", b"http/1.1"],
    );
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen2.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let (_, session) = tls.get_ref();
                let der = session.peer_certificates().and_then(|c| c.first()).cloned();
                let id = der
                    .and_then(|d| weft::tls::PeerIdentity::from_der(&d))
                    .map(|p| p.primary().to_owned());
                let alpn = session.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned());
                if let Ok(mut seen) = seen.lock() {
                    seen.push(format!("{} {}", id.unwrap_or_default(), alpn.unwrap_or_default()));
                }
                let service = hyper::service::service_fn(|req| async move {
                    Ok::<_, std::convert::Infallible>(echo_reply("tls", req).await)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn upstream_tls_and_mtls_with_http1_and_http2() {
    let pki = Pki::new("CA");
    let (proxy_cert, proxy_key) = pki.issue("weft", &[], &["spiffe://example.org/ns/edge/sa/weft"], Usage::Client);
    let (addr, seen) = tls_upstream(&pki, &pki.path("ca.pem")).await;
    // Every request to the cluster `secure`: TLS to `addr` verified as `server_name`, with
    // the proxy's client certificate.
    let secure = |protocol: &str, server_name: &str| {
        let tls = format!(
            "protocol = \"{protocol}\"\ntls = {{ ca = \"{}\", server_name = \"{server_name}\", cert = \"{proxy_cert}\", key = \"{proxy_key}\" }}",
            pki.ca()
        );
        Config::new()
            .cluster_with("secure", &[addr], &tls)
            .route("all", "", "secure", &[], "")
            .to_string()
    };
    for protocol in ["http1", "http2"] {
        let weft = Weft::start(&secure(protocol, "upstream.internal")).await;
        let reply = get(&weft.url("/over-tls")).await;
        assert_eq!(reply.status, 200, "{}\n{}", reply.text(), weft.log());
        let echo = reply.json();
        assert_eq!(
            echo["version"],
            if protocol == "http2" { "HTTP/2.0" } else { "HTTP/1.1" }
        );
    }
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(
        seen,
        [
            "spiffe://example.org/ns/edge/sa/weft http/1.1",
            "spiffe://example.org/ns/edge/sa/weft h2"
        ],
        "the upstream saw the proxy's identity and the negotiated protocol"
    );

    // The wrong server name fails verification: 503 (unreachable), with the reason in the log.
    let weft = Weft::start(&secure("http1", "wrong.internal")).await;
    assert_eq!(get(&weft.url("/")).await.status, 503);
    assert!(
        weft.log().contains("NotValidForName") || weft.log().contains("not valid for name"),
        "{}",
        weft.log()
    );
}

/// One TLS request on a fresh connection; returns the status and the SHA-256 of the
/// certificate the server presented.
async fn tls_request(addr: std::net::SocketAddr, ca: &Path) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots.add(c.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").map_err(|e| e.to_string())?, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no certificate")?;
    let hash = weft::tls::PeerIdentity::from_der(&der)
        .ok_or("unparsable certificate")?
        .hash;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok((status, hash))
}

#[tokio::test]
async fn certificates_rotate_under_load_without_failed_requests() {
    let pki = Pki::new("CA");
    let server = pki.issue("server", &["localhost"], &[], Usage::Server);
    let up = Upstream::echo("a").await;
    let weft = Weft::start(&cluster_and_route(tls_listener(&[server], ""), &up)).await;
    let (addr, ca) = (weft.addr, pki.path("ca.pem"));
    let (_, first_hash) = tls_request(addr, &ca).await.expect("first request");

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, ca) = (stop.clone(), ca.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed, mut hashes) = (0, Vec::new(), std::collections::BTreeSet::new());
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < deadline {
                match tls_request(addr, &ca).await {
                    Ok((200, hash)) => {
                        ok += 1;
                        hashes.insert(hash);
                    }
                    other => failed.push(format!("{other:?}")),
                }
            }
            (ok, failed, hashes)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Rotate: a new certificate and key replace the files in place.
    let fresh = pki
        .ca
        .issue("server", &["localhost"], &[], Usage::Server)
        .expect("issue");
    std::fs::write(pki.path("server-key.pem.tmp"), &fresh.key_pem).expect("write");
    std::fs::write(pki.path("server.pem.tmp"), &fresh.cert_pem).expect("write");
    std::fs::rename(pki.path("server-key.pem.tmp"), pki.path("server-key.pem")).expect("rename");
    std::fs::rename(pki.path("server.pem.tmp"), pki.path("server.pem")).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, hash) = tls_request(addr, &ca).await.expect("request during rotation");
        if hash != first_hash {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not picked up:\n{}",
            weft.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed, hashes) = load.await.expect("load task");
    assert!(
        failed.is_empty(),
        "{} requests failed during rotation: {failed:?}",
        failed.len()
    );
    assert!(ok > 10, "the load ran ({ok} requests)");
    assert_eq!(hashes.len(), 2, "served the old certificate, then the new one");
}

/// One HTTP/3 request with an h3 client over quinn.
async fn h3_get(addr: std::net::SocketAddr, ca: &Path, path: &str) -> (u16, http::HeaderMap, Bytes) {
    h3_request(addr, ca, "localhost", "localhost", path).await
}

/// An HTTP/3 GET whose TLS handshake names `sni` and whose `:authority` is `host`.
async fn h3_request(
    addr: std::net::SocketAddr,
    ca: &Path,
    sni: &str,
    host: &str,
    path: &str,
) -> (u16, http::HeaderMap, Bytes) {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).expect("pem") {
        roots.add(c.expect("ca")).expect("add");
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic config");
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("endpoint");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = endpoint
        .connect(addr, sni)
        .expect("connect")
        .await
        .expect("QUIC handshake");
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn)).await.expect("h3");
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let req = http::Request::get(format!("https://{host}:{}{path}", addr.port()))
        .body(())
        .expect("req");
    let mut stream = send.send_request(req).await.expect("send");
    stream.finish().await.expect("finish");
    let resp = stream.recv_response().await.expect("response");
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.expect("data") {
        while chunk.has_remaining() {
            let part = chunk.chunk().to_vec();
            chunk.advance(part.len());
            body.extend(part);
        }
    }
    (resp.status().as_u16(), resp.headers().clone(), Bytes::from(body))
}

#[tokio::test]
async fn http3_on_the_same_port_through_the_same_routes_and_filters() {
    let pki = Pki::new("CA");
    let server = pki.issue("server", &["localhost"], &[], Usage::Server);
    let up = Upstream::echo("a").await;
    let config = tls_listener(&[server], "http3 = true")
        .cluster("up", &[up.addr])
        .native_filter(
            "tag",
            "headers",
            "request_set = { x-tagged = \"yes\" }, response_set = { x-resp = \"1\" }",
        )
        .route("all", "", "up", &["tag"], "")
        .to_string();
    let weft = Weft::start(&config).await;
    // Configured on port 0 (the harness's `{listen}`): UDP is bound on the port TCP got.
    assert_eq!(weft.http3("main"), weft.addr, "the ready file names the HTTP/3 side");
    let (code, out, err) = curl(&["-I", "--cacert", &pki.ca(), &https(&weft, "localhost", "/")]).await;
    assert_eq!(code, 0, "{err}");
    let alt_svc = format!("alt-svc: h3=\":{}\"; ma=86400", weft.addr.port());
    assert!(
        out.to_lowercase().contains(&alt_svc),
        "TCP answers advertise HTTP/3:\n{out}"
    );

    let (status, headers, body) = h3_get(weft.addr, &pki.path("ca.pem"), "/over-h3?q=1").await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("x-resp").map(|v| v.as_bytes()), Some(&b"1"[..]));
    let echo: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(echo["uri"], "/over-h3?q=1");
    assert_eq!(seen_header(&echo, "via"), Some("3.0 weft"));
    assert_eq!(seen_header(&echo, "x-tagged"), Some("yes"));
    assert_eq!(seen_header(&echo, "x-forwarded-proto"), Some("https"));

    // The same front door as TCP: one normal path, and the same refusals.
    let (status, _, body) = h3_get(weft.addr, &pki.path("ca.pem"), "/x/..//%6Fver-h3?q=2").await;
    assert_eq!(status, 200);
    let echo: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(echo["uri"], "/over-h3?q=2");
    let (status, _, _) = h3_get(weft.addr, &pki.path("ca.pem"), "/a%2Fb").await;
    assert_eq!(status, 400, "an encoded slash is refused over HTTP/3 too");
}

#[tokio::test]
async fn a_host_another_certificate_serves_is_misdirected() {
    let pki = Pki::new("CA");
    let a = pki.issue("a", &["a.test"], &[], Usage::Server);
    let b = pki.issue("b", &["b.test", "*.b.test"], &[], Usage::Server);
    let up = Upstream::echo("a").await;
    let weft = Weft::start(&cluster_and_route(tls_listener(&[a, b], "http3 = true"), &up)).await;
    let mut answered = 0;
    let mut refused = 0;
    for flag in ["--http1.1", "--http2"] {
        for (sni, host, want) in [
            ("a.test", "a.test", "200"),
            ("a.test", "b.test", "421"),
            ("a.test", "B.Test.", "421"),
            ("a.test", "x.b.test:8443", "421"),
            ("b.test", "a.test", "421"),
            ("b.test", "x.b.test", "200"),
            // No certificate names it: the connection's own business, as before.
            ("a.test", "c.test", "200"),
            ("a.test", "127.0.0.1", "200"),
        ] {
            let header = format!("Host: {host}");
            let (code, out, err) = curl(&[
                flag,
                "--cacert",
                &pki.ca(),
                "--resolve",
                &resolve(&weft, sni),
                "-H",
                &header,
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &https(&weft, sni, "/"),
            ])
            .await;
            assert_eq!((code, out.as_str()), (0, want), "{flag} SNI {sni}, Host {host}: {err}");
            match want {
                "200" => answered += 1,
                _ => refused += 1,
            }
        }
    }
    // HTTP/3 takes the same check, with the SNI of its QUIC handshake.
    for (sni, host, want) in [
        ("a.test", "a.test", 200),
        ("a.test", "b.test", 421),
        ("b.test", "a.test", 421),
    ] {
        let (status, _, _) = h3_request(weft.addr, &pki.path("ca.pem"), sni, host, "/").await;
        assert_eq!(status, want, "HTTP/3 SNI {sni}, host {host}");
        match want {
            200 => answered += 1,
            _ => refused += 1,
        }
    }
    assert_eq!(up.hits(), answered, "a misdirected request never reaches the upstream");
    let counted = weft
        .metric("weft_downstream_refused_total{listener=\"main\",reason=\"misdirected\"}")
        .await;
    assert_eq!(counted as usize, refused);
}
