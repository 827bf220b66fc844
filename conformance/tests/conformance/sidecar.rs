//! docs/sidecar.md: Weft as the sidecar of two applications in two network namespaces
//! ("pods" `a` and `b`, joined by a veth pair), their traffic sent through it by the
//! nftables rules `weft sidecar rules --apply` writes, with real applications (a Python
//! HTTP server, a TCP echo, a server-speaks-first echo) and real clients (curl). Needs
//! root: without it the namespaces cannot be made and the tests fail.

use std::path::Path;
use std::time::{Duration, Instant};

use weft_conformance::{Weft, weft_bin};

mod netns;

use netns::{A4, B4, B6, Netns, Pods};

/// The sidecar's outbound and inbound ports, its admin port, its upstream sockets' mark.
const OUTBOUND: u16 = 15001;
const INBOUND: u16 = 15006;
const ADMIN: u16 = 15000;
const MARK: u32 = 0x539;

/// One pod's sidecar config: outbound and inbound listeners for each family; inbound
/// requests through a `headers` filter that names the pod, outbound ones through one that
/// names it too; everything to the original destination.
fn sidecar_config(pod: &str, inbound_mode: &str, dir: &Path, max_destinations: usize) -> String {
    let log = dir.join(format!("access-{pod}.log"));
    format!(
        r#"
[runtime]
watch = false

[admin]
address = "127.0.0.1:{ADMIN}"

[access_log]
path = "{log}"
format = "json"

[[listeners]]
name = "outbound"
address = "0.0.0.0:{OUTBOUND}"
transparent = "redirect"
opaque_ports = [2525]
detect_timeout = "60s"
passthrough_mark = {MARK}
direction = "outbound"

[[listeners]]
name = "outbound6"
address = "[::]:{OUTBOUND}"
transparent = "redirect"
opaque_ports = [2525]
detect_timeout = "60s"
passthrough_mark = {MARK}
direction = "outbound"

[[listeners]]
name = "inbound"
address = "0.0.0.0:{INBOUND}"
transparent = "{inbound_mode}"
opaque_ports = [2525]
detect_timeout = "60s"
passthrough_mark = {MARK}
direction = "inbound"

[[listeners]]
name = "inbound6"
address = "[::]:{INBOUND}"
transparent = "{inbound_mode}"
opaque_ports = [2525]
detect_timeout = "60s"
passthrough_mark = {MARK}
direction = "inbound"

[[clusters]]
name = "original"
kind = "original_destination"
mark = {MARK}
max_destinations = {max_destinations}

[[filters]]
name = "inbound-tag"
native = "headers"
config = {{ request_set = {{ x-inbound-sidecar = "{pod}" }} }}

[[filters]]
name = "outbound-tag"
native = "headers"
config = {{ request_set = {{ x-outbound-sidecar = "{pod}" }} }}

[[filters]]
name = "inbound-wasm"
wasm = "{hello}"
config = {{ header_name = "x-inbound-wasm", header_value = "{pod}", deny_prefix = "/private" }}

# The app's port, named: intercepted connections to it are labelled 8080, not `other`.
[[routes]]
name = "inbound-app"
match = {{ listeners = ["inbound", "inbound6"], destination_port = 8080 }}
filters = ["inbound-tag", "inbound-wasm"]
cluster = "original"

[[routes]]
name = "inbound"
match = {{ listeners = ["inbound", "inbound6"] }}
filters = ["inbound-tag", "inbound-wasm"]
cluster = "original"

[[routes]]
name = "outbound"
match = {{ listeners = ["outbound", "outbound6"] }}
filters = ["outbound-tag"]
cluster = "original"
"#,
        log = log.display(),
        hello = weft_conformance::plugins::HELLO_FILTER,
    )
}

/// Two pods, each with the application and its sidecar, and the rules applied in each.
struct Mesh {
    // Dropped last: the sidecars go first, then the namespaces.
    pods: Pods,
    dir: tempfile::TempDir,
    sidecar_a: Weft,
    sidecar_b: Weft,
}

impl Mesh {
    async fn start(inbound_mode: &str, max_destinations: usize) -> Mesh {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = sidecar_config("a", inbound_mode, dir.path(), max_destinations);
        let b = sidecar_config("b", inbound_mode, dir.path(), 1024);
        Mesh::start_with(inbound_mode, dir, &a, &b).await
    }

    async fn start_with(inbound_mode: &str, dir: tempfile::TempDir, config_a: &str, config_b: &str) -> Mesh {
        Mesh::start_full(inbound_mode, dir, config_a, config_b, None).await
    }

    /// Pod `a`'s sidecar runs as `uid_a` when given (and its rules exempt that uid), else
    /// as root like `b`'s.
    async fn start_full(
        inbound_mode: &str,
        dir: tempfile::TempDir,
        config_a: &str,
        config_b: &str,
        uid_a: Option<u32>,
    ) -> Mesh {
        let mut pods = Pods::new();
        // Pod a calls pod b by name too.
        pods.a.hosts(&format!("{B4} orders\n"));
        let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/sidecar/app.py");
        let state = dir.path().join("app-b");
        std::fs::create_dir(&state).expect("state dir");
        // The app's own TLS (HTTPS on 8443), which the sidecars pass through unopened.
        let ca = weft::tls::devcert::Authority::new("app CA").expect("ca");
        let app_cert = ca
            .issue("orders", &[B4, "orders"], &[], weft::tls::devcert::Usage::Server)
            .expect("cert");
        std::fs::write(state.join("app.pem"), app_cert.cert_pem).expect("write");
        std::fs::write(state.join("app-key.pem"), app_cert.key_pem).expect("write");
        // Another TLS service of pod b (port 9443), reached by TLS routes' SNI.
        let payments = ca
            .issue(
                "payments",
                &["payments.shop.test", "eu.payments.test"],
                &[],
                weft::tls::devcert::Usage::Server,
            )
            .expect("cert");
        std::fs::write(state.join("payments.pem"), payments.cert_pem).expect("write");
        std::fs::write(state.join("payments-key.pem"), payments.key_pem).expect("write");
        std::fs::write(state.join("app-ca.pem"), &ca.cert_pem).expect("write");
        pods.b.spawn(&[
            "python3",
            app.to_str().expect("path"),
            "serve",
            "b",
            state.to_str().expect("path"),
        ]);
        let sidecar_a = match uid_a {
            Some(uid) => {
                // Its access log is written in `dir`.
                std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).expect("chown");
                Weft::start_in_netns_as(config_a, &pods.a.name, uid).await
            }
            None => Weft::start_in_netns(config_a, &pods.a.name).await,
        };
        let sidecar_b = Weft::start_in_netns(config_b, &pods.b.name).await;
        apply_rules(&pods.a, inbound_mode, uid_a);
        apply_rules(&pods.b, inbound_mode, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !state.join("ready").exists() {
            assert!(Instant::now() < deadline, "the application in pod b did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Mesh {
            pods,
            dir,
            sidecar_a,
            sidecar_b,
        }
    }

    fn access_log(&self, pod: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.path().join(format!("access-{pod}.log"))).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// The access-log record of `path` in `pod`'s sidecar, waiting for the writer thread.
    async fn logged(&self, pod: &str, path: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(record) = self.access_log(pod).into_iter().find(|r| r["path"] == path) {
                return record;
            }
            assert!(
                Instant::now() < deadline,
                "no access-log record of {path} in pod {pod}: {:?}",
                self.access_log(pod)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// curl in pod `a`, its body as JSON.
    fn curl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["curl", "-sS", "--max-time", "20"];
        full.extend_from_slice(args);
        let out = self.pods.a.must(&full);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// The TCP client in pod `a`: sends `text` to `host:port`, returns what it read.
    fn tcp(&self, host: &str, port: u16, text: &str, banner: bool) -> String {
        let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/sidecar/app.py");
        let port = port.to_string();
        let mut args = vec!["python3", app.to_str().expect("path"), "tcp", host, &port, text];
        if banner {
            args.push("banner");
        }
        let out = self.pods.a.run(&args);
        let read = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "TCP through the sidecars to {host}:{port}: read {read:?}; {}\nsidecar a:\n{}\nsidecar b:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.sidecar_a.log(),
            self.sidecar_b.log()
        );
        read
    }
}

/// `weft sidecar rules --apply` in `ns`; with `proxy_uid`, that uid's connections are let
/// out too (`--proxy-uid`), besides marked ones.
fn apply_rules(ns: &Netns, inbound_mode: &str, proxy_uid: Option<u32>) {
    let weft = weft_bin();
    let weft = weft.to_str().expect("path");
    let mark = format!("{MARK:#x}"); // as nft writes it: the CLI takes hex too
    let exclude = ADMIN.to_string();
    let uid = proxy_uid.map(|u| u.to_string());
    let (inbound, outbound) = (INBOUND.to_string(), OUTBOUND.to_string());
    let mut args = vec![
        weft,
        "sidecar",
        "rules",
        "--inbound-port",
        &inbound,
        "--outbound-port",
        &outbound,
        "--inbound-mode",
        inbound_mode,
        "--mark",
        &mark,
        "--exclude-ports",
        &exclude,
        "--apply",
    ];
    if let Some(uid) = &uid {
        args.extend(["--proxy-uid", uid]);
    }
    ns.must(&args);
    let listed = ns.must(&["nft", "list", "table", "inet", "weft"]);
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains(&format!("redirect to :{OUTBOUND}")),
        "the rules are in place"
    );
}

/// What both modes must do: HTTP/1.1, h2c and IPv6 from `a` to `b`'s raw address go
/// through `a`'s outbound and `b`'s inbound sidecar (each access log shows them, `b`'s
/// filter ran), a forged `x-forwarded-for` is replaced, and a raw TCP echo and a
/// server-speaks-first protocol pass through byte for byte.
async fn traffic_flows_through_both_sidecars(mesh: &Mesh) {
    let url = format!("http://{B4}:8080/hello");
    let echo = mesh.curl_json(&[
        "-H",
        "x-forwarded-for: 203.0.113.66",
        "-H",
        "x-inbound-sidecar: forged",
        &url,
    ]);
    assert_eq!(echo["app"], "b", "{echo}");
    assert_eq!(
        echo["headers"]["x-outbound-sidecar"], "a",
        "a's outbound filter ran: {echo}"
    );
    assert_eq!(
        echo["headers"]["x-inbound-sidecar"], "b",
        "b's inbound filter ran (and set, not appended): {echo}"
    );
    let xff = echo["headers"]["x-forwarded-for"].as_str().unwrap_or("");
    assert!(
        !xff.contains("203.0.113.66"),
        "a forged x-forwarded-for is replaced: {xff}"
    );
    assert_eq!(xff, A4, "b's sidecar saw a's sidecar, from a's address");
    // b's Wasm filter ran inbound: its response header, and its own answer under /private.
    let head = mesh
        .pods
        .a
        .must(&["curl", "-sS", "--max-time", "20", "-D", "-", "-o", "/dev/null", &url]);
    let head = String::from_utf8_lossy(&head.stdout).to_ascii_lowercase();
    assert!(head.contains("x-inbound-wasm: b"), "{head}");
    let private = mesh.pods.a.must(&[
        "curl",
        "-sS",
        "--max-time",
        "20",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{B4}:8080/private"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&private.stdout),
        "403",
        "b's Wasm filter answers inbound"
    );
    let out = mesh.logged("a", "/hello").await;
    assert_eq!(out["listener"], "outbound", "{out}");
    assert_eq!(
        out["upstream"],
        format!("{B4}:8080"),
        "a forwarded to the original destination: {out}"
    );
    assert_eq!(
        (out["direction"].as_str(), out["original_dst"].as_str()),
        (Some("outbound"), Some("10.77.0.2:8080")),
        "{out}"
    );
    let inbound = mesh.logged("b", "/hello").await;
    assert_eq!(inbound["listener"], "inbound", "{inbound}");
    assert_eq!(inbound["upstream"], format!("{B4}:8080"), "{inbound}");
    assert_eq!(
        (inbound["direction"].as_str(), inbound["original_dst"].as_str()),
        (Some("inbound"), Some("10.77.0.2:8080")),
        "{inbound}"
    );

    // By name: the app resolves `orders` (its hosts file) and dials the address; the
    // sidecar takes it like any other, the name kept in the request.
    for (flags, path) in [
        (&[][..], "/by-name"),
        (&["--http2-prior-knowledge"][..], "/by-name-h2c"),
    ] {
        let port = if flags.is_empty() { 8080 } else { 8081 };
        let mut args = flags.to_vec();
        let url = format!("http://orders:{port}{path}");
        args.push(&url);
        let echo = mesh.curl_json(&args);
        assert_eq!(
            (echo["app"].as_str(), echo["port"].as_u64()),
            (Some("b"), Some(port)),
            "{echo}"
        );
        assert_eq!(echo["headers"]["x-outbound-sidecar"], "a", "{echo}");
        assert_eq!(echo["headers"]["x-inbound-sidecar"], "b", "{echo}");
        let out = mesh.logged("a", path).await;
        assert_eq!(out["authority"], format!("orders:{port}"), "{out}");
        assert_eq!(out["upstream"], format!("{B4}:{port}"), "{out}");
        assert_eq!(out["original_dst"], format!("{B4}:{port}"), "{out}");
        assert_eq!(mesh.logged("b", path).await["direction"], "inbound");
    }

    let echo = mesh.curl_json(&["--http2-prior-knowledge", &format!("http://{B4}:8081/h2c")]);
    assert_eq!(
        (echo["app"].as_str(), echo["port"].as_u64()),
        (Some("b"), Some(8081)),
        "{echo}"
    );
    assert_eq!(echo["headers"]["x-inbound-sidecar"], "b", "{echo}");
    let h2 = mesh.logged("a", "/h2c").await;
    assert_eq!(h2["protocol"], "HTTP/2.0", "a took h2c with prior knowledge: {h2}");
    assert_eq!(h2["upstream"], format!("{B4}:8081"), "{h2}");

    let echo = mesh.curl_json(&["-g", &format!("http://[{B6}]:8080/v6")]);
    assert_eq!(echo["headers"]["x-outbound-sidecar"], "a", "{echo}");
    assert_eq!(echo["headers"]["x-inbound-sidecar"], "b", "{echo}");
    let v6 = mesh.logged("a", "/v6").await;
    assert_eq!(v6["listener"], "outbound6", "{v6}");
    assert_eq!(v6["upstream"], format!("[{B6}]:8080"), "{v6}");
    assert_eq!(mesh.logged("b", "/v6").await["listener"], "inbound6");

    // The app's own TLS: a ClientHello the sidecars pass through unopened (the app's
    // certificate reaches the client, verified against the app's CA).
    let ca = mesh.dir.path().join("app-b/app-ca.pem");
    let echo = mesh.curl_json(&[
        "--cacert",
        ca.to_str().expect("path"),
        &format!("https://{B4}:8443/tls"),
    ]);
    assert_eq!(echo["path"], "/tls", "{echo}");
    assert!(
        echo["headers"].get("x-inbound-sidecar").is_none(),
        "TLS is not opened: {echo}"
    );

    // Not HTTP: bytes that no detector claims, through both sidecars and back unchanged.
    let binary = "\u{1}\u{2}weft\u{7f} raw bytes \r\n\r\n";
    assert_eq!(mesh.tcp(B4, 9000, binary, false), binary);
    assert_eq!(mesh.tcp(B6, 9000, "over IPv6", false), "over IPv6");
    // Server speaks first: on an opaque port nothing waits for the client to speak (the
    // detection timeout is 60 s; the client gives up on the banner after 30 s).
    assert_eq!(mesh.tcp(B4, 2525, "EHLO a\r\n", true), "220 app ready\r\nEHLO a\r\n");
    // Counted by direction and destination: 8080 is named by a route, 2525 is opaque,
    // 8081 and 9000 are nothing the config names.
    for (ns, listener) in [(&mesh.pods.a, "outbound"), (&mesh.pods.b, "inbound")] {
        let metrics = Metrics::read(ns);
        let conns = |labels: &[(&str, &str)]| {
            let mut all = vec![("listener", listener), ("direction", listener)];
            all.extend_from_slice(labels);
            metrics.sum("weft_intercepted_connections_total", &all)
        };
        // (b sees fewer: a's sidecar keeps its connections to b open for the next request.)
        assert!(conns(&[("outcome", "http")]) >= 2.0, "{listener}: HTTP/1.1 and h2c");
        assert!(
            conns(&[("destination", "8080"), ("outcome", "http")]) >= 1.0,
            "{listener}"
        );
        assert!(
            conns(&[("destination", "other"), ("outcome", "http")]) >= 1.0,
            "{listener}: 8081"
        );
        assert!(
            conns(&[("outcome", "opaque")]) >= 2.0,
            "{listener}: the echo and the banner"
        );
        assert_eq!(
            conns(&[("destination", "2525"), ("outcome", "opaque")]),
            1.0,
            "{listener}"
        );
        assert_eq!(conns(&[("outcome", "tls")]), 1.0, "{listener}: the app's own TLS");
        let answers = |class: &str| {
            metrics.sum(
                "weft_intercepted_responses_total",
                &[
                    ("listener", listener),
                    ("direction", listener),
                    ("destination", "8080"),
                    ("class", class),
                ],
            )
        };
        assert!(answers("2xx") >= 2.0, "{listener}");
        assert_eq!(answers("4xx"), 1.0, "{listener}: b's Wasm filter's 403");
        let bytes = |destination: &str, from: &str| {
            metrics.sum(
                "weft_passthrough_bytes_total",
                &[
                    ("listener", listener),
                    ("direction", listener),
                    ("destination", destination),
                    ("from", from),
                ],
            )
        };
        assert_eq!(bytes("2525", "client"), 8.0, "{listener}: EHLO a\\r\\n");
        assert_eq!(bytes("2525", "server"), 23.0, "{listener}: the banner and the echo");
        assert!(bytes("other", "client") >= binary.len() as f64, "{listener}: the echo");
    }
    for (pod, weft) in [("a", &mesh.sidecar_a), ("b", &mesh.sidecar_b)] {
        let log = weft.log();
        assert!(
            log.contains("passthrough done") && log.contains("original_dst=10.77.0.2:9000"),
            "pod {pod}'s sidecar passed the echo through:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pods_talk_through_their_sidecars_redirect() {
    let mesh = Mesh::start("redirect", 8).await;
    traffic_flows_through_both_sidecars(&mesh).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pods_talk_through_their_sidecars_tproxy() {
    let mesh = Mesh::start("tproxy", 8).await;
    traffic_flows_through_both_sidecars(&mesh).await;
    let listed = mesh.pods.b.must(&["nft", "list", "table", "inet", "weft"]);
    assert!(String::from_utf8_lossy(&listed.stdout).contains(&format!("tproxy ip to :{INBOUND}")));
}

/// An application connecting to its sidecar's own ports, or to the peer sidecar's, gets
/// no service: a destination that is the proxy itself would loop through it.
#[tokio::test(flavor = "multi_thread")]
async fn connections_to_the_sidecar_itself_are_refused() {
    let mesh = Mesh::start("redirect", 8).await;
    for url in [
        format!("http://127.0.0.1:{OUTBOUND}/loop"),
        format!("http://{A4}:{INBOUND}/loop"),
        format!("http://{B4}:{INBOUND}/loop"),
    ] {
        let out = mesh.pods.a.run(&[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ]);
        assert!(
            !out.status.success(),
            "{url} must not be served: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let (a, b) = (mesh.sidecar_a.log(), mesh.sidecar_b.log());
    assert!(
        a.matches("original destination is this proxy").count() >= 2,
        "sidecar a refused both:\n{a}"
    );
    assert!(
        b.contains("original destination is this proxy"),
        "sidecar b refused it:\n{b}"
    );
    assert!(mesh.access_log("a").iter().all(|r| r["path"] != "/loop"));
    // 127.0.0.1:15001 reached the outbound listener, a's own :15006 the inbound one.
    for listener in ["outbound", "inbound"] {
        let labels = [("listener", listener), ("direction", listener), ("outcome", "loop")];
        assert_eq!(
            metric(&mesh.pods.a, "weft_intercepted_connections_total", &labels),
            1.0,
            "each refusal is counted: {labels:?}"
        );
    }
    // The sidecar still serves.
    let echo = mesh.curl_json(&[&format!("http://{B4}:8080/after")]);
    assert_eq!(echo["app"], "b");
}

/// A client dialling many destinations cannot grow the outbound pools without bound: with
/// `max_destinations = 2` and two destinations busy, a third is refused with 503, and
/// once they are done a new one is served.
#[tokio::test(flavor = "multi_thread")]
async fn distinct_destinations_are_bounded() {
    let mut mesh = Mesh::start("redirect", 2).await;
    let state = mesh.dir.path().join("app-b");
    let held: Vec<usize> = [8081, 8082]
        .iter()
        .map(|port| {
            let url = format!("http://{B4}:{port}/hold");
            mesh.pods.a.spawn(&["curl", "-sS", "--max-time", "60", &url])
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(state.join("held-8081").exists() && state.join("held-8082").exists()) {
        assert!(Instant::now() < deadline, "the held requests did not arrive");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = mesh.pods.a.must(&[
        "curl",
        "-sS",
        "--max-time",
        "20",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{B4}:8080/third"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "503",
        "a third destination is refused"
    );
    std::fs::write(state.join("release"), "").expect("release");
    for index in held {
        let out = mesh.pods.a.wait(index);
        assert!(out.status.success(), "a held request completes");
        let echo: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(echo["app"], "b");
    }
    let echo = mesh.curl_json(&[&format!("http://{B4}:8080/fourth")]);
    assert_eq!(echo["path"], "/fourth", "destinations no request uses are let go");
}

/// Certificates of one trust domain: pod `b`'s server certificate (its addresses, its
/// SPIFFE ID) and two client certificates, `web` (allowed) and `intruder` (not).
fn mesh_certificates(dir: &Path) {
    use weft::tls::devcert::{Authority, Usage};
    let ca = Authority::new("mesh CA").expect("ca");
    let orders = ca
        .issue(
            "orders",
            &[B4, B6],
            &["spiffe://weft.test/ns/shop/sa/orders"],
            Usage::Server,
        )
        .expect("server");
    let web = ca
        .issue("web", &[], &["spiffe://weft.test/ns/shop/sa/web"], Usage::Client)
        .expect("client");
    let intruder = ca
        .issue(
            "intruder",
            &[],
            &["spiffe://weft.test/ns/shop/sa/intruder"],
            Usage::Client,
        )
        .expect("client");
    std::fs::write(dir.join("ca.pem"), &ca.cert_pem).expect("write");
    for (name, issued) in [("orders", orders), ("web", web), ("intruder", intruder)] {
        std::fs::write(dir.join(format!("{name}.pem")), issued.cert_pem).expect("write");
        std::fs::write(dir.join(format!("{name}-key.pem")), issued.key_pem).expect("write");
    }
}

/// Pod `a` calls `b` over mTLS: port 8080 as `web`, 8081 as `intruder`, 8082 in plaintext.
fn mtls_config_a(dir: &Path) -> String {
    let d = dir.display();
    let mut config = sidecar_config("a", "redirect", dir, 8);
    // The plain outbound route goes last: the first route that matches wins.
    let plain = config.split_off(config.find("[[routes]]\nname = \"outbound\"").expect("outbound route"));
    for (cluster, identity, port) in [("mesh-web", "web", 8080), ("mesh-intruder", "intruder", 8081)] {
        config.push_str(&format!(
            r#"
[[clusters]]
name = "{cluster}"
kind = "original_destination"
mark = {MARK}
tls = {{ ca = "{d}/ca.pem", cert = "{d}/{identity}.pem", key = "{d}/{identity}-key.pem" }}

[[routes]]
name = "{cluster}"
match = {{ listeners = ["outbound"], destination = "{B4}", destination_port = {port} }}
cluster = "{cluster}"
"#
        ));
    }
    config.push_str(&plain);
    config
}

/// Pod `b` takes only mTLS inbound, forwards the caller's certificate, and lets only
/// `web` through.
fn mtls_config_b(dir: &Path) -> String {
    let d = dir.display();
    let config = sidecar_config("b", "redirect", dir, 1024);
    let tls = format!(
        r#"peer_tls = "strict"
forward_client_cert = true
tls = {{ certificates = [{{ cert = "{d}/orders.pem", key = "{d}/orders-key.pem" }}], client_ca = "{d}/ca.pem" }}
"#
    );
    let config = config.replacen(
        "name = \"inbound\"\naddress",
        &format!("name = \"inbound\"\n{tls}address"),
        1,
    );
    let config = config.replace(
        "filters = [\"inbound-tag\", \"inbound-wasm\"]",
        "filters = [\"only-web\", \"inbound-tag\", \"inbound-wasm\"]",
    );
    format!(
        r#"{config}
[[filters]]
name = "only-web"
native = "identity"
config = {{ allow = ["spiffe://weft.test/ns/shop/sa/web"] }}
"#
    )
}

/// Two sidecars speak mTLS with SPIFFE identities: the allowed caller reaches the app
/// (its identity forwarded), another identity of the same trust domain gets 403 from the
/// route's policy, and plaintext to a strict inbound listener is refused.
#[tokio::test(flavor = "multi_thread")]
async fn peer_sidecars_speak_mtls_and_refuse_a_wrong_caller() {
    let dir = tempfile::tempdir().expect("tempdir");
    mesh_certificates(dir.path());
    let (a, b) = (mtls_config_a(dir.path()), mtls_config_b(dir.path()));
    let mesh = Mesh::start_with("redirect", dir, &a, &b).await;

    let forged =
        "x-forwarded-client-cert: By=spiffe://weft.test/ns/shop/sa/orders;URI=spiffe://weft.test/ns/shop/sa/admin";
    let echo = mesh.curl_json(&["-H", forged, &format!("http://{B4}:8080/as-web")]);
    assert_eq!(echo["app"], "b", "{echo}");
    assert_eq!(echo["headers"]["x-inbound-sidecar"], "b", "{echo}");
    let xfcc = echo["headers"]["x-forwarded-client-cert"].as_str().unwrap_or("");
    assert!(
        xfcc.contains("URI=spiffe://weft.test/ns/shop/sa/web"),
        "the caller's identity: {echo}"
    );
    assert!(
        !xfcc.contains("sa/admin"),
        "a forged identity header is not passed on: {xfcc}"
    );
    assert_eq!(mesh.logged("a", "/as-web").await["route"], "mesh-web");
    assert_eq!(mesh.logged("b", "/as-web").await["listener"], "inbound");

    let status = |port: u16, path: &str| {
        let url = format!("http://{B4}:{port}{path}");
        let out = mesh.pods.a.must(&[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &url,
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(
        status(8081, "/as-intruder"),
        "403",
        "the identity policy refuses another caller"
    );
    let plain = status(8082, "/plaintext");
    assert!(
        plain.starts_with('5'),
        "plaintext to a strict inbound listener fails: {plain}"
    );
    let log = mesh.sidecar_b.log();
    assert!(
        log.contains("plaintext refused"),
        "b refused the plaintext connection:\n{log}"
    );
    assert!(mesh.access_log("b").iter().all(|r| r["path"] != "/plaintext"));
}

/// A sidecar's `/metrics`, read from inside its namespace.
struct Metrics(String);

impl Metrics {
    fn read(ns: &Netns) -> Metrics {
        let out = ns.must(&[
            "curl",
            "-sS",
            "--max-time",
            "20",
            &format!("http://127.0.0.1:{ADMIN}/metrics"),
        ]);
        Metrics(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The series of `name` (with `_total`) whose labels include all of `labels`.
    fn series<'m>(&'m self, name: &str, labels: &[(&str, &str)]) -> Vec<(&'m str, f64)> {
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        self.0
            .lines()
            .filter_map(|l| {
                let rest = l.strip_prefix(name)?.strip_prefix('{')?;
                let (set, value) = rest.split_once("} ")?;
                let mine: Vec<&str> = set.split(',').collect();
                wanted
                    .iter()
                    .all(|w| mine.contains(&w.as_str()))
                    .then(|| (set, value.trim().parse().unwrap_or(0.0)))
            })
            .collect()
    }

    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.series(name, labels).iter().map(|(_, v)| v).sum()
    }
}

/// One series of a sidecar's `/metrics` (0 when absent), or the sum of those that carry
/// its labels.
fn metric(ns: &Netns, name: &str, labels: &[(&str, &str)]) -> f64 {
    Metrics::read(ns).sum(name, labels)
}

/// A client dialling hundreds of distinct original destination ports cannot grow the
/// metrics: every port the config does not name is `destination="other"`, so the flood
/// adds a handful of series, however many ports it tries — and each connection is counted.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_destination_ports_makes_a_bounded_number_of_series() {
    const PORTS: usize = 400;
    let mesh = Mesh::start("redirect", 8).await;
    let families = [
        "weft_intercepted_connections_total",
        "weft_intercepted_responses_total",
        "weft_passthrough_bytes_total",
    ];
    let count = |m: &Metrics| families.iter().map(|f| m.series(f, &[]).len()).sum::<usize>();
    let before = (count(&Metrics::read(&mesh.pods.a)), count(&Metrics::read(&mesh.pods.b)));
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/sidecar/app.py");
    let out = mesh.pods.a.must(&[
        "python3",
        app.to_str().expect("path"),
        "flood",
        B4,
        "20000",
        &PORTS.to_string(),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        PORTS.to_string(),
        "every connection was taken by a's sidecar"
    );
    // The sidecar counts each once it has been detected: wait for all of them.
    let other = [
        ("listener", "outbound"),
        ("destination", "other"),
        ("outcome", "opaque"),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&mesh.pods.a, "weft_intercepted_connections_total", &other) < PORTS as f64 {
        assert!(
            Instant::now() < deadline,
            "a's sidecar counted {} of {PORTS} connections:\n{}",
            metric(&mesh.pods.a, "weft_intercepted_connections_total", &other),
            Metrics::read(&mesh.pods.a).0
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (a, b) = (Metrics::read(&mesh.pods.a), Metrics::read(&mesh.pods.b));
    let after = (count(&a), count(&b));
    assert!(
        after.0 <= before.0 + 6 && after.1 <= before.1 + 6,
        "{PORTS} ports made {} new series in a and {} in b:\n{}",
        after.0 - before.0,
        after.1 - before.1,
        a.0
    );
    for m in [&a, &b] {
        for family in families {
            for (labels, _) in m.series(family, &[]) {
                assert!(
                    !(20000..20000 + PORTS).any(|p| labels.contains(&format!("\"{p}\""))),
                    "a client-chosen port became a label: {family}{{{labels}}}"
                );
            }
        }
    }
    let echo = mesh.curl_json(&[&format!("http://{B4}:8080/after-flood")]);
    assert_eq!(echo["app"], "b", "the sidecars still serve");
}

/// Pod `a`'s sidecar sends TLS it does not terminate by its SNI: `payments.shop.test` and
/// `*.payments.test` to the `payments` cluster (pod b's port 9443, whose certificate
/// names them), any other name and no name to the original destination, bytes unchanged
/// either way. A ClientHello that is garbage, larger than the sidecar reads, or never
/// finished (within `detect_timeout`) is passed on opaque and counted.
#[tokio::test(flavor = "multi_thread")]
async fn tls_is_routed_by_its_sni_without_being_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a =
        sidecar_config("a", "redirect", dir.path(), 8).replace("detect_timeout = \"60s\"", "detect_timeout = \"3s\"");
    a.push_str(&format!(
        r#"
[[clusters]]
name = "payments"
endpoints = ["{B4}:9443"]
mark = {MARK}

[[tls_routes]]
name = "payments"
listeners = ["outbound"]
hostnames = ["payments.shop.test", "*.payments.test"]
cluster = "payments"
"#
    ));
    let b = sidecar_config("b", "redirect", dir.path(), 1024);
    let mesh = Mesh::start_with("redirect", dir, &a, &b).await;
    let ca = mesh.dir.path().join("app-b/app-ca.pem");
    let ca = ca.to_str().expect("path");
    let https = |name: &str, path: &str| {
        let resolve = format!("{name}:8443:{B4}");
        mesh.curl_json(&[
            "--cacert",
            ca,
            "--resolve",
            &resolve,
            &format!("https://{name}:8443{path}"),
        ])
    };
    // Dialled 8443; the SNI sends it to 9443, and the certificate there is verified.
    for name in ["payments.shop.test", "eu.payments.test"] {
        let echo = https(name, "/routed");
        assert_eq!(
            (echo["port"].as_u64(), echo["path"].as_str()),
            (Some(9443), Some("/routed")),
            "{name}: {echo}"
        );
        assert!(
            echo["headers"].get("x-inbound-sidecar").is_none(),
            "TLS is not opened: {echo}"
        );
    }
    // A ClientHello cut into 64-byte records, each in its own write: read whole, routed.
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/sidecar/app.py");
    let out = mesh.pods.a.must(&[
        "python3",
        app.to_str().expect("path"),
        "tlsfrag",
        B4,
        "8443",
        "payments.shop.test",
        ca,
        "/fragmented",
    ]);
    let echo: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(echo["port"], 9443, "{echo}");
    // Another name, and no name (an IP address): the original destination, 8443.
    assert_eq!(https("orders", "/unrouted")["port"], 8443);
    let echo = mesh.curl_json(&["--cacert", ca, &format!("https://{B4}:8443/no-sni")]);
    assert_eq!(echo["port"], 8443, "{echo}");

    // Not ClientHellos the sidecar understands: the echo (9000) gets the bytes as they are.
    let garbage = "hex:160301000568656c6c6f";
    let oversized = format!("hex:1603014000{}{}", "01007f00", "41".repeat(16_380));
    let unfinished = "hex:16030100c8010000c40303";
    // (`tcp` fails unless the echo is the bytes sent.)
    for bytes in [garbage, &oversized, unfinished] {
        mesh.tcp(B4, 9000, bytes, false);
    }
    let outcome = |outcome: &str| {
        metric(
            &mesh.pods.a,
            "weft_intercepted_connections_total",
            &[
                ("listener", "outbound"),
                ("direction", "outbound"),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(outcome("tls_routed"), 3.0, "the two names of the route, one fragmented");
    assert_eq!(outcome("tls"), 2.0, "another name, and none");
    assert_eq!(outcome("tls_invalid"), 3.0, "garbage, oversized, unfinished");
    let log = mesh.sidecar_a.log();
    assert!(log.contains("route=Some(\"payments\")"), "{log}");
    for problem in ["malformed", "oversized", "timeout"] {
        assert!(
            log.contains(&format!("problem=\"{problem}\"")) || log.contains(&format!("problem={problem}")),
            "{problem}:\n{log}"
        );
    }
    let echo = mesh.curl_json(&[&format!("http://{B4}:8080/after-tls")]);
    assert_eq!(echo["app"], "b", "the sidecar still serves");
}

/// The uid the sidecar of the next test runs as, and the rules exempt.
const PROXY_UID: u32 = 1337;

/// Pod `a`'s sidecar runs as an unprivileged uid with no capabilities, so it cannot mark
/// its sockets: its config sets no mark, and its rules let that uid's connections out
/// (`--proxy-uid`). Its own upstream connections are not caught again — each request
/// crosses it once — and HTTP and a raw TCP echo reach pod b.
#[tokio::test(flavor = "multi_thread")]
async fn a_sidecar_exempt_by_its_uid_needs_no_mark() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = sidecar_config("a", "redirect", dir.path(), 8)
        .replace(&format!("passthrough_mark = {MARK}\n"), "")
        .replace(&format!("mark = {MARK}\n"), "");
    assert!(!a.contains("mark"), "no mark anywhere in a's config:\n{a}");
    let b = sidecar_config("b", "redirect", dir.path(), 1024);
    let mesh = Mesh::start_full("redirect", dir, &a, &b, Some(PROXY_UID)).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", mesh.sidecar_a.pid())).expect("status");
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        uid.split_whitespace().skip(1).all(|u| u == PROXY_UID.to_string()),
        "a's sidecar runs as {PROXY_UID}: {uid}"
    );
    let rules = mesh.pods.a.must(&["nft", "list", "table", "inet", "weft"]);
    assert!(
        String::from_utf8_lossy(&rules.stdout).contains("meta skuid"),
        "the rules exempt the uid"
    );

    for path in ["/uid-1", "/uid-2"] {
        let echo = mesh.curl_json(&[&format!("http://{B4}:8080{path}")]);
        assert_eq!(echo["app"], "b", "{echo}");
        assert_eq!(echo["headers"]["x-outbound-sidecar"], "a", "{echo}");
        assert_eq!(echo["headers"]["x-inbound-sidecar"], "b", "{echo}");
        let logged = mesh.logged("a", path).await;
        assert_eq!(logged["upstream"], format!("{B4}:8080"), "{logged}");
    }
    mesh.logged("b", "/uid-2").await;
    // A loop would show as more than one record per request, or as refusals.
    for (pod, path) in [("a", "/uid-1"), ("a", "/uid-2"), ("b", "/uid-1"), ("b", "/uid-2")] {
        let records = mesh.access_log(pod).into_iter().filter(|r| r["path"] == path).count();
        assert_eq!(records, 1, "pod {pod} saw {path} once");
    }
    assert_eq!(mesh.tcp(B4, 9000, "unmarked bytes", false), "unmarked bytes");
    let a_metrics = Metrics::read(&mesh.pods.a);
    assert_eq!(
        a_metrics.sum("weft_intercepted_connections_total", &[("outcome", "loop")]),
        0.0
    );
    assert_eq!(
        a_metrics.sum(
            "weft_intercepted_connections_total",
            &[("listener", "outbound"), ("outcome", "opaque")]
        ),
        1.0,
        "the echo crossed a's outbound listener once"
    );
    assert_eq!(
        a_metrics.sum("weft_intercepted_connections_total", &[("listener", "inbound")]),
        0.0,
        "nothing of a's own came back in"
    );
}

/// A reload may change TLS routes (they are a config version's, like routes) but not a
/// transparent listener's own settings in place, which it read at bind: on the same
/// address that would be a listener removed and another added on its port, which is
/// refused with the reason; a bad TLS route is refused and names itself. The running
/// version keeps serving either way.
#[tokio::test(flavor = "multi_thread")]
async fn reloads_change_tls_routes_but_not_a_transparent_listeners_settings() {
    // A fixed port: with port 0 a changed listener would simply be bound anew elsewhere.
    let port = weft_conformance::ReservedPort::new();
    let config = &r#"
[runtime]
watch = false

[admin]
address = "{admin}"

[[listeners]]
name = "outbound"
address = "127.0.0.1:PORT"
transparent = "redirect"
direction = "outbound"
opaque_ports = [3306]

[[clusters]]
name = "egress"
endpoints = ["127.0.0.1:9"]

[[tls_routes]]
name = "egress"
hostnames = ["api.example.com"]
cluster = "egress"
"#
    .replace("PORT", &port.port.to_string());
    let weft = Weft::start(config).await;
    weft.write_config(&config.replace("api.example.com", "*.example.com"));
    let (status, body) = weft.admin("POST", "/reload").await;
    assert_eq!(status, 200, "TLS routes change on reload: {body}");
    for (change, wanted) in [
        (
            config.replace("[3306]", "[3306, 5432]"),
            "changing listeners needs a restart when the address stays",
        ),
        (
            config.replace("direction = \"outbound\"", "direction = \"inbound\""),
            "changing listeners needs a restart when the address stays",
        ),
        (
            config.replace("api.example.com", "api.*.com"),
            "tls_route \"egress\": hostnames",
        ),
        (
            config.replace("cluster = \"egress\"", "cluster = \"gone\""),
            "is no cluster",
        ),
    ] {
        weft.write_config(&change);
        let (status, body) = weft.admin("POST", "/reload").await;
        assert_ne!(status, 200, "{change}");
        assert!(body.contains(wanted), "{wanted}: {body}");
    }
    let (status, _) = weft.admin("GET", "/ready").await;
    assert_eq!(status, 200, "the running version keeps serving");
}
