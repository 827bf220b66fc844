//! The conformance harness: starts the real `weft` binary with a config a test writes,
//! real upstreams (small hyper servers), and gives the test real clients.
//!
//! Configs are TOML text in which `{listen}` and `{admin}` stand for loopback addresses
//! the kernel picks when Weft binds them; the harness reads them back from Weft's ready
//! file (see [`Weft::start_with`]). Upstreams bind port 0 too: no test picks a port.

pub mod ads;
mod config;
pub mod h2raw;
pub mod plugins;
pub mod polyglot;
pub mod raw;

pub use config::Config;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// The `weft` binary under test: `$WEFT_BIN`, or the one cargo built beside this test.
pub fn weft_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("WEFT_BIN") {
        return bin.into();
    }
    // Test executables live in target/<profile>/deps/; the binary in target/<profile>/.
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("weft");
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build -p weft` (or set WEFT_BIN)",
        bin.display()
    );
    bin
}

/// An address on 127.0.0.1 where nothing accepts, for the whole test process: a socket
/// bound there but never listening, so connections to it are refused and the kernel hands
/// its port to nobody else (a port merely picked free could be taken by a parallel test).
pub fn dead_addr() -> SocketAddr {
    static DEAD: std::sync::OnceLock<(socket2::Socket, SocketAddr)> = std::sync::OnceLock::new();
    DEAD.get_or_init(|| {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        socket.bind(&any.into()).expect("bind");
        let addr = socket.local_addr().expect("addr").as_socket().expect("inet");
        (socket, addr)
    })
    .1
}

/// A loopback port held for a server a test starts that cannot bind port 0 and say which
/// port it got (`redis-server`), or must come back on the same port after a restart. The
/// socket is bound with `SO_REUSEADDR` and never listens: connections to the port are
/// refused, the kernel hands the port to no `bind(0)` or outgoing connection while it is
/// held, and a server that sets `SO_REUSEADDR` itself (Redis, Go's servers, tokio's) can
/// still bind and listen on it. The server must still prove it is the process the test
/// started (Redis' `INFO server` names its pid).
pub struct ReservedPort {
    _socket: socket2::Socket,
    pub port: u16,
}

impl ReservedPort {
    pub fn new() -> ReservedPort {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
        socket.set_reuse_address(true).expect("SO_REUSEADDR");
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        socket.bind(&any.into()).expect("bind");
        let port = socket.local_addr().expect("addr").as_socket().expect("inet").port();
        ReservedPort { _socket: socket, port }
    }
}

impl Default for ReservedPort {
    fn default() -> ReservedPort {
        ReservedPort::new()
    }
}

/// A TLS acceptor for a test server presenting `chain_pem` with `key_pem`, requiring a
/// client certificate from the CA `ca_pem` (mutual TLS), offering `alpn`.
pub fn mtls_acceptor(chain_pem: &[u8], key_pem: &[u8], ca_pem: &[u8], alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .expect("certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem).expect("key PEM");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.expect("CA PEM")).expect("a CA certificate");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(std::sync::Arc::new(roots), provider.clone())
            .build()
            .expect("verifier");
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("server config");
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
}

/// The port a server announced in its output after `marker` (`ChromeDriver was started
/// successfully on port `, `msg="Listening on" address=127.0.0.1:`): how a process started
/// on port 0 tells which port it got.
pub fn announced_port(output: &str, marker: &str) -> Option<u16> {
    let rest = &output[output.find(marker)? + marker.len()..];
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..digits].parse().ok()
}

/// A running `weft` process; killed when dropped.
pub struct Weft {
    child: Option<Child>,
    /// The bound address of the first listener.
    pub addr: SocketAddr,
    /// The bound admin address (port 0 when the config has no `[admin]`).
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    log_path: PathBuf,
    ready: serde_json::Value,
}

impl Weft {
    /// Writes `config` (placeholders filled) to a temp dir, starts `weft run`, and waits
    /// for its ready file. Panics with the proxy's log if it exits or never gets ready.
    pub async fn start(config: &str) -> Weft {
        Weft::start_with(config, &[]).await
    }

    /// Like [`Weft::start`], with extra command-line arguments before `run`.
    ///
    /// `{listen}` and `{admin}` become `127.0.0.1:0`: the kernel gives each a port when
    /// Weft binds it, and Weft writes what it bound to `--ready-file` once everything is
    /// bound. No port is picked in advance, so no parallel test can take it first, and the
    /// addresses read are the ones this process bound (the file is written by it alone).
    pub async fn start_with(config: &str, global_args: &[&str]) -> Weft {
        Weft::start_command(Command::new(weft_bin()), config, global_args).await
    }

    /// Like [`Weft::start`], inside the network namespace `netns` (`ip netns exec`, which
    /// execs Weft in place: the process is Weft's own).
    pub async fn start_in_netns(config: &str, netns: &str) -> Weft {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns]).arg(weft_bin());
        Weft::start_command(command, config, &[]).await
    }

    /// Like [`Weft::start_in_netns`], as the user and group `uid` with no supplementary
    /// groups and no capabilities (`setpriv`): a sidecar the interception rules exempt by
    /// its uid. Its directory (config, ready file) is handed to `uid`.
    pub async fn start_in_netns_as(config: &str, netns: &str, uid: u32) -> Weft {
        let id = uid.to_string();
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns, "setpriv"])
            .args([format!("--reuid={id}"), format!("--regid={id}")])
            .args(["--clear-groups", "--inh-caps=-all"])
            .arg(weft_bin());
        Weft::start_command_owned(command, config, &[], Some(uid)).await
    }

    /// Like [`Weft::start_with`], with `command` as the program (the `weft` binary, or a
    /// wrapper that execs it in place, such as `taskset -c 0 weft`).
    pub async fn start_command(command: Command, config: &str, global_args: &[&str]) -> Weft {
        Weft::start_command_owned(command, config, global_args, None).await
    }

    async fn start_command_owned(mut command: Command, config: &str, global_args: &[&str], owner: Option<u32>) -> Weft {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(uid) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).expect("chown the sidecar's directory");
        }
        let config_path = dir.path().join("weft.toml");
        std::fs::write(&config_path, fill(config)).expect("write config");
        let log_path = dir.path().join("weft.log");
        let ready_path = dir.path().join("ready.json");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = command
            .args(global_args)
            .arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--ready-file")
            .arg(&ready_path)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start weft");
        let unbound: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut weft = Weft {
            child: Some(child),
            addr: unbound,
            admin: unbound,
            dir,
            config_path,
            log_path,
            ready: serde_json::Value::Null,
        };
        if let Err(log) = weft.wait_ready(&ready_path).await {
            panic!("{log}");
        }
        weft
    }

    /// Waits for the ready file and reads the bound addresses from it; the reason (with
    /// the log) if the process exits first or the file never comes.
    async fn wait_ready(&mut self, ready_path: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("weft exited early ({status}):\n{}", self.log()));
            }
            // Written whole by a rename: it is absent or complete.
            if let Ok(text) = std::fs::read(ready_path) {
                let ready: serde_json::Value = serde_json::from_slice(&text).map_err(|e| format!("ready file: {e}"))?;
                if ready["pid"] != self.pid() {
                    return Err(format!("ready file of another process: {ready}"));
                }
                let addr = |v: &serde_json::Value| v.as_str().and_then(|a| a.parse().ok());
                if let Some(first) = addr(&ready["listeners"][0]["address"]) {
                    self.addr = first;
                }
                if let Some(admin) = addr(&ready["admin"]) {
                    self.admin = admin;
                }
                self.ready = ready;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("weft was not ready within 60s:\n{}", self.log()))
    }

    /// The bound TCP address of the listener `name`.
    pub fn listener(&self, name: &str) -> SocketAddr {
        self.bound(name, "address")
    }

    /// The bound UDP address of the listener `name`'s HTTP/3 side.
    pub fn http3(&self, name: &str) -> SocketAddr {
        self.bound(name, "http3")
    }

    fn bound(&self, name: &str, side: &str) -> SocketAddr {
        let listeners = self.ready["listeners"].as_array().into_iter().flatten();
        listeners
            .filter(|l| l["name"] == name)
            .find_map(|l| l[side].as_str()?.parse().ok())
            .unwrap_or_else(|| panic!("no {side} for listener {name:?} in the ready file: {}", self.ready))
    }

    /// The proxy's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the proxy logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `http://<listener><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Rewrites the config file (placeholders filled as at the start, so a reload keeps
    /// the listeners it has).
    pub fn write_config(&self, config: &str) {
        std::fs::write(&self.config_path, fill(config)).expect("write config");
    }

    /// An admin request as a script sends it, with `X-Weft-Admin: 1` (which `POST /reload`
    /// requires, as proof it is no cross-site form post); returns status and body.
    pub async fn admin(&self, method: &str, path: &str) -> (u16, String) {
        let reply = self.admin_request(method, path, &[("x-weft-admin", "1")]).await;
        (reply.status, reply.text())
    }

    /// An admin request with exactly `headers`, nothing added.
    pub async fn admin_request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.admin));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        send(&http1_client(), req.body(Full::new(Bytes::new())).expect("request")).await
    }

    /// The value of one series in `/metrics` (0 when absent), e.g.
    /// `weft_connections_rejected_total{listener="main",reason="max_connections"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.admin("GET", "/metrics").await.1;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// `method path` on the first listener with `headers` and `body`, over a fresh
    /// HTTP/1.1 client.
    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: impl AsRef<[u8]>) -> Reply {
        let mut req = Request::builder().method(method).uri(self.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let body = Full::new(Bytes::copy_from_slice(body.as_ref()));
        send(&http1_client(), req.body(body).expect("request")).await
    }

    /// `GET path` on the first listener with `headers`.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", path, headers, []).await
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
    }

    /// Waits for the process to exit (after [`Weft::terminate`]); returns whether it exited 0.
    pub async fn wait_exit(&mut self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return status.success();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("weft did not exit within {within:?}:\n{}", self.log());
    }
}

impl Drop for Weft {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `{listen}` and `{admin}` are bound on port 0 (see [`Weft::start_with`]).
pub fn fill(config: &str) -> String {
    config
        .replace("{listen}", "127.0.0.1:0")
        .replace("{admin}", "127.0.0.1:0")
}

/// A whole config as a user writes it: the listener `main` on 127.0.0.1:8080, the cluster
/// `web` and a route to it, whose table ends the text (line 12 is the next key appended).
/// Raw text with fixed addresses, for tests of what `weft check` or `weft run` say of a
/// file (its summary, the line an error points at): nothing binds them.
pub const FILE_CONFIG: &str = r#"[[listeners]]
name = "main"
address = "127.0.0.1:8080"

[[clusters]]
name = "web"
endpoints = ["127.0.0.1:3000"]

[[routes]]
match = { path_prefix = "/" }
cluster = "web"
"#;

/// `weft check` on `config` (placeholders filled, see [`fill`]), written in a temp dir
/// beside `files` (name, contents): whether it passed, and what it printed (stdout, then
/// stderr).
pub fn weft_check(config: &str, files: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weft.toml");
    std::fs::write(&path, fill(config)).expect("write config");
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).expect("write file");
    }
    let out = Command::new(weft_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run weft check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// Clients sending `GET url` in a loop until stopped (or for `within` at most), each with
/// its own connection pool, counting every 200 by the value of one response header: the
/// load a test keeps up while it swaps a plugin or a config, to show no request failed.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<(Tally, Vec<String>)>>,
}

/// 200s by the value of the header a [`Load`] counts by (`None`: the header was absent).
pub type Tally = std::collections::HashMap<Option<String>, u32>;

impl Load {
    pub fn start(url: String, clients: usize, header: &'static str, within: Duration) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let clients = (0..clients)
            .map(|_| {
                let (stop, url) = (stop.clone(), url.clone());
                tokio::spawn(async move {
                    let client = http1_client();
                    let (mut tally, mut failures) = (Tally::new(), Vec::new());
                    let deadline = Instant::now() + within;
                    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                        let req = Request::get(&url).body(Full::new(Bytes::new())).expect("request");
                        match client.request(req).await {
                            Ok(resp) if resp.status() == 200 => {
                                let value = resp
                                    .headers()
                                    .get(header)
                                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                                *tally.entry(value).or_default() += 1;
                                let _ = resp.into_body().collect().await;
                            }
                            Ok(resp) => failures.push(format!("status {}", resp.status())),
                            Err(e) => failures.push(e.to_string()),
                        }
                    }
                    (tally, failures)
                })
            })
            .collect();
        Load { stop, clients }
    }

    /// Stops the clients; every 200 counted, and what failed.
    pub async fn stop(self) -> (Tally, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        let (mut tally, mut failures) = (Tally::new(), Vec::new());
        for client in self.clients {
            let (t, f) = client.await.expect("client task");
            for (value, n) in t {
                *tally.entry(value).or_default() += n;
            }
            failures.extend(f);
        }
        (tally, failures)
    }
}

/// A log as text, its terminal colour codes (`ESC [ … m`) taken out.
pub fn without_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut rest = log;
    while let Some(i) = rest.find('\x1b') {
        out.push_str(&rest[..i]);
        rest = rest[i..].find('m').map_or("", |end| &rest[i + end + 1..]);
    }
    out.push_str(rest);
    out
}

/// A plain HTTP/1.1 client (keep-alive pool).
pub fn http1_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// A response read whole.
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub version: http::Version,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (the echo upstream's answer).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request with the given client and reads the whole answer.
pub async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Reply {
    let resp = client.request(req).await.expect("request through weft");
    let (head, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: head.status.as_u16(),
        headers: head.headers,
        body,
        version: head.version,
    }
}

/// `GET url` over HTTP/1.1.
pub async fn get(url: &str) -> Reply {
    send(
        &http1_client(),
        Request::get(url).body(Full::new(Bytes::new())).expect("request"),
    )
    .await
}

/// A real HTTP server on 127.0.0.1 (HTTP/1.1 and h2c), answering with a handler.
pub struct Upstream {
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

type Handler =
    Arc<dyn Fn(Request<Incoming>) -> std::pin::Pin<Box<dyn Future<Output = Response<UpBody>> + Send>> + Send + Sync>;

/// The body an upstream handler answers with.
pub type UpBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// A whole body for an upstream answer.
pub fn full(data: impl Into<Bytes>) -> UpBody {
    Full::new(data.into()).boxed()
}

impl Upstream {
    /// Starts a server whose every request is answered by `handler`.
    pub async fn start<F, Fut>(handler: F) -> Upstream
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<UpBody>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = socket.local_addr().expect("addr");
        let hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (h, c) = (hits.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let (handler, hits) = (handler.clone(), h.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let fut = handler(req);
                        async move { Ok::<_, Infallible>(fut.await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            hits,
            connections,
            task,
        }
    }

    /// Answers with JSON describing the request it received: method, uri, version,
    /// headers (name → list of values), body (as text) and the upstream's own `name`.
    pub async fn echo(name: &'static str) -> Upstream {
        Upstream::start(move |req| async move { echo_reply(name, req).await }).await
    }

    /// Requests served so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The echo upstream's answer for one request.
pub async fn echo_reply(name: &str, req: Request<Incoming>) -> Response<UpBody> {
    let (head, body) = req.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let mut headers = serde_json::Map::new();
    for (n, v) in &head.headers {
        let entry = headers
            .entry(n.as_str())
            .or_insert_with(|| serde_json::Value::Array(vec![]));
        if let serde_json::Value::Array(values) = entry {
            values.push(String::from_utf8_lossy(v.as_bytes()).into_owned().into());
        }
    }
    let seen = serde_json::json!({
        "upstream": name,
        "method": head.method.as_str(),
        "uri": head.uri.to_string(),
        "version": format!("{:?}", head.version),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "body_len": body.len(),
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(full(seen.to_string()))
        .expect("response")
}

/// The first value of a header in an echo answer.
pub fn seen_header<'a>(echo: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    echo["headers"][name].get(0).and_then(|v| v.as_str())
}
