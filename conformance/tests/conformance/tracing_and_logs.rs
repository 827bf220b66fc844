//! Access logs and tracing through the real binary: records read back from the file the
//! proxy writes, spans received by real OTLP receivers (HTTP/protobuf and gRPC) started
//! here and decoded with the `opentelemetry-proto` types, trace context as the upstream
//! and a Wasm filter see it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::net::TcpListener;
use weft_conformance::{Config, Upstream, Weft, full, http1_client, plugins, raw, seen_header, send};

/// A span as received, with its service name and resource.
#[derive(Clone, Debug)]
struct Got {
    service: String,
    resource: Vec<(String, Val)>,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent: String,
    attributes: Vec<(String, Val)>,
    /// The span status code: 0 unset, 1 ok, 2 error.
    status: i32,
}

/// An attribute's value, with its OTLP type.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Str(String),
    Int(i64),
    Other(String),
}

impl Got {
    fn attr(&self, key: &str) -> Option<&Val> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn str(&self, key: &str) -> Option<&str> {
        match self.attr(key) {
            Some(Val::Str(s)) => Some(s),
            _ => None,
        }
    }
}

fn values(attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<(String, Val)> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => Val::Str(s.clone()),
                Some(Value::IntValue(i)) => Val::Int(*i),
                other => Val::Other(format!("{other:?}")),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

type Spans = Arc<Mutex<Vec<Got>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn collect(request: ExportTraceServiceRequest, into: &Spans) {
    let mut spans = into.lock().expect("spans");
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(|v| format!("{:?}", v.value))
            .unwrap_or_default();
        let attributes = values(resource.resource.as_ref().map_or(&[][..], |r| &r.attributes));
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(Got {
                    service: service.clone(),
                    resource: attributes.clone(),
                    name: span.name,
                    kind: span.kind,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    attributes: values(&span.attributes),
                    status: span.status.as_ref().map_or(0, |s| s.code),
                });
            }
        }
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`.
async fn otlp_http() -> (SocketAddr, Spans) {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let spans: Spans = Arc::default();
    let store = spans.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let store = store.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(
                            req.headers().get("content-type").and_then(|v| v.to_str().ok()),
                            Some("application/x-protobuf")
                        );
                        let body = req.into_body().collect().await.expect("body").to_bytes();
                        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP export request");
                        collect(request, &store);
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::from(answer)))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, spans)
}

struct Collector(Spans);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        collect(request.into_inner(), &self.0);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver: the generated `TraceService` server, over HTTP/2 from hyper.
async fn otlp_grpc() -> (SocketAddr, Spans) {
    use tonic::codegen::Service;
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let spans: Spans = Arc::default();
    let server = TraceServiceServer::new(Collector(spans.clone()));
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let server = server.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let mut server = server.clone();
                    async move { server.call(req).await }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, spans)
}

/// Waits until `spans` holds what `done` looks for (15 s at most).
async fn spans_until(spans: &Spans, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = spans.lock().expect("spans").clone();
        if done(&now) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The access-log records in `path` once there are at least `n` (10 s at most).
async fn records(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON record ({e}): {l:?}")))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A route to the echo upstream through the capabilities filter, one straight to a
/// slow upstream with a short timeout, and the rest to the echo upstream.
fn proxied(echo: SocketAddr, slow: SocketAddr, top: &str) -> String {
    Config::new()
        .top(top)
        .cluster("echo", &[echo])
        .cluster("slow", &[slow])
        .wasm_filter("cap", plugins::CAPABILITIES, "", "")
        .route("filtered", "path_prefix = \"/cap\"", "echo", &["cap"], "")
        .route("slow", "path_prefix = \"/slow\"", "slow", &[], "timeout = \"200ms\"")
        .route("quiet", "path_prefix = \"/health\"", "echo", &[], "access_log = false")
        .route("plain", "path_prefix = \"/\"", "echo", &[], "")
        .to_string()
}

async fn slow_upstream() -> Upstream {
    Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(full("late"))
    })
    .await
}

#[tokio::test]
async fn access_log_records_a_success_a_filter_denial_and_an_upstream_timeout() {
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let top = format!("[access_log]\npath = \"{}\"\n", log.display());
    let weft = Weft::start(&proxied(echo.addr, slow.addr, &top)).await;

    let ok = weft.get_with("/plain/ok?x=1", &[]).await;
    assert_eq!(ok.status, 200);
    let denied = weft.get_with("/cap/deny", &[("x-cap-respond", "403")]).await;
    assert_eq!(denied.status, 403);
    let timeout = weft.get_with("/slow", &[]).await;
    assert_eq!(timeout.status, 504);
    let quiet = weft.get_with("/health", &[]).await;
    assert_eq!(quiet.status, 200);
    // A Host with a tab (legal in a header value) must not break the record's line.
    let host_tab = raw::exchange(
        weft.addr,
        b"GET /plain/tab HTTP/1.1\r\nHost: a\tb\r\nConnection: close\r\n\r\n",
    )
    .await;
    let tab_status = raw::status(&host_tab).expect("an answer");

    let all = records(&log, 4).await;
    assert_eq!(all.len(), 4, "the quiet route writes nothing: {all:#?}");
    let by_path = |p: &str| {
        all.iter()
            .find(|r| r["path"] == p)
            .unwrap_or_else(|| panic!("no record for {p}: {all:#?}"))
    };

    let ok = by_path("/plain/ok?x=1");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["method"], "GET");
    assert_eq!(ok["authority"], weft.addr.to_string());
    assert_eq!(ok["protocol"], "HTTP/1.1");
    assert_eq!(ok["route"], "plain");
    assert_eq!(ok["listener"], "main");
    assert_eq!(ok["upstream"], echo.addr.to_string());
    assert_eq!(ok["flags"], serde_json::json!([]));
    assert_eq!(ok["answered_by"], serde_json::Value::Null);
    assert!(ok["client"].as_str().expect("client").starts_with("127.0.0.1:"));
    assert!(ok["upstream_ms"].as_f64().expect("upstream_ms") <= ok["duration_ms"].as_f64().expect("duration"));
    assert_eq!(
        ok["bytes_sent"].as_u64(),
        Some(weft.get_with("/plain/ok?x=1", &[]).await.body.len() as u64)
    );
    assert!(ok["time"].as_str().expect("time").ends_with('Z'));

    let denied = by_path("/cap/deny");
    assert_eq!(denied["status"], 403);
    assert_eq!(denied["flags"], serde_json::json!(["filter_answered"]));
    assert_eq!(denied["answered_by"], "cap");
    assert_eq!(denied["upstream"], serde_json::Value::Null);
    assert!(denied["filter_ms"]["cap.request"].as_f64().is_some(), "{denied}");

    let timeout = by_path("/slow");
    assert_eq!(timeout["status"], 504);
    assert_eq!(timeout["flags"], serde_json::json!(["upstream_timeout"]));
    assert_eq!(timeout["upstream"], slow.addr.to_string());
    assert!(timeout["upstream_ms"].as_f64().expect("upstream_ms") >= 200.0);

    let tab = by_path("/plain/tab");
    assert_eq!(tab["status"], tab_status);
    assert_eq!(tab["authority"], "a\tb", "kept, escaped");
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !text.contains('\t'),
        "a raw control character reached the log: {text:?}"
    );
}

/// The writer formats what came meanwhile into one batch and writes it with one call:
/// concurrent requests must each still leave exactly one whole line.
#[tokio::test]
async fn a_burst_of_concurrent_requests_leaves_one_whole_record_each() {
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let top = format!("[access_log]\npath = \"{}\"\n", log.display());
    let weft = Arc::new(Weft::start(&proxied(echo.addr, slow.addr, &top)).await);
    let (tasks, each) = (16, 40);
    let mut running = Vec::new();
    for t in 0..tasks {
        let weft = weft.clone();
        running.push(tokio::spawn(async move {
            let client = http1_client();
            for i in 0..each {
                let req = Request::get(weft.url(&format!("/plain/burst/{t}/{i}")))
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                assert_eq!(send(&client, req).await.status, 200);
            }
        }));
    }
    for task in running {
        task.await.expect("task");
    }
    let all = records(&log, tasks * each).await;
    let mut paths: Vec<String> = all
        .iter()
        .map(|r| r["path"].as_str().expect("path").to_owned())
        .collect();
    paths.sort();
    let mut want: Vec<String> = (0..tasks)
        .flat_map(|t| (0..each).map(move |i| format!("/plain/burst/{t}/{i}")))
        .collect();
    want.sort();
    assert_eq!(paths, want, "each request logged once, none torn or lost");
    assert_eq!(weft.metric("weft_access_log_dropped_total").await, 0.0);
}

#[tokio::test]
async fn a_format_string_writes_the_named_fields() {
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let top = format!(
        "[access_log]\npath = \"{}\"\nformat = \"%method% %path% %status% %route% %upstream% 100%%\"\n",
        log.display()
    );
    let weft = Weft::start(&proxied(echo.addr, slow.addr, &top)).await;
    assert_eq!(weft.get_with("/plain/x", &[]).await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while text.is_empty() && Instant::now() < deadline {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(text, format!("GET /plain/x 200 plain {} 100%\n", echo.addr));
}

#[tokio::test]
async fn sigusr1_reopens_the_log_file_after_logrotate_moves_it() {
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    let top = format!("[access_log]\npath = \"{}\"\n", log.display());
    let weft = Weft::start(&proxied(echo.addr, slow.addr, &top)).await;

    weft.get_with("/before", &[]).await;
    assert_eq!(records(&log, 1).await.len(), 1);
    std::fs::rename(&log, &rotated).expect("rotate");
    weft.get_with("/between", &[]).await;
    // Until told, the proxy writes to the file it has open: the rotated one.
    assert_eq!(records(&rotated, 2).await[1]["path"], "/between");

    let kill = std::process::Command::new("kill")
        .args(["-USR1", &weft.pid().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    weft.get_with("/after", &[]).await;
    let fresh = records(&log, 1).await;
    assert_eq!(fresh.len(), 1, "{fresh:#?}");
    assert_eq!(fresh[0]["path"], "/after");
    assert_eq!(records(&rotated, 2).await.len(), 2, "the old file is left alone");
    assert!(weft.log().contains("access log reopened"), "{}", weft.log());
}

#[tokio::test]
async fn a_stuck_log_writer_drops_and_counts_records_and_never_blocks_requests() {
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let dir = tempfile::tempdir().expect("dir");
    // A pipe whose reader never reads: once its buffer is full the writer thread blocks.
    let fifo = dir.path().join("access.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    // O_NONBLOCK (Linux): opening the read end does not wait for a writer.
    let _reader = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(0o4000)
            .open(&fifo)
            .expect("open the read end")
    };
    let top = format!("[access_log]\npath = \"{}\"\nbuffer = 1\n", fifo.display());
    let weft = Weft::start(&proxied(echo.addr, slow.addr, &top)).await;

    let client = http1_client();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let client = client.clone();
        let url = weft.url(&format!("/flood/{worker}/{}", "x".repeat(200)));
        tasks.push(tokio::spawn(async move {
            for _ in 0..150 {
                let req = Request::get(&url).body(Full::new(Bytes::new())).expect("request");
                assert_eq!(send(&client, req).await.status, 200);
            }
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("requests kept flowing while the log writer was stuck")
            .expect("worker");
    }
    let dropped = weft.metric("weft_access_log_dropped_total").await;
    assert!(
        dropped > 0.0,
        "no drops counted:\n{}",
        weft.admin("GET", "/metrics").await.1
    );
    assert!(dropped <= 1200.0);
}

const PARENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";

fn traceparent_parts(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "{value}");
    assert_eq!((parts[0], value.len()), ("00", 55), "{value}");
    (parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
}

async fn traced(protocol: &str, otlp: SocketAddr, sample: &str) -> (Weft, Upstream, Upstream) {
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let endpoint = match protocol {
        "grpc" => format!("http://{otlp}"),
        _ => format!("http://{otlp}/v1/traces"),
    };
    let top = format!(
        "[tracing]\nendpoint = \"{endpoint}\"\nprotocol = \"{protocol}\"\nsample = {sample}\ninterval = \"100ms\"\nservice_name = \"edge\"\n"
    );
    let weft = Weft::start(&proxied(echo.addr, slow.addr, &top)).await;
    (weft, echo, slow)
}

/// One traced request with a sampled parent, checked end to end: what the upstream and
/// the filter saw, and the spans the receiver got.
async fn a_trace_arrives(protocol: &str) {
    let (otlp, spans) = match protocol {
        "grpc" => otlp_grpc().await,
        _ => otlp_http().await,
    };
    let (weft, _echo, _slow) = traced(protocol, otlp, "1.0").await;
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let reply = weft
        .get_with(
            "/cap/traced",
            &[
                ("traceparent", parent.as_str()),
                ("tracestate", "vendor=opaque"),
                ("x-cap-ctx-from", "weft/trace-id"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200);
    let seen = reply.json();
    let (trace, upstream_parent, flags) = traceparent_parts(seen_header(&seen, "traceparent").expect("traceparent"));
    assert_eq!(trace, PARENT_TRACE, "the trace continues upstream");
    assert_ne!(
        upstream_parent, PARENT_SPAN,
        "the proxy's span is the upstream's parent"
    );
    assert_eq!(flags, "01");
    assert_eq!(seen_header(&seen, "tracestate"), Some("vendor=opaque"));
    assert_eq!(
        seen_header(&seen, "x-ctx-from"),
        Some(PARENT_TRACE),
        "the filter sees the trace id"
    );

    let got = spans_until(&spans, |s| s.iter().filter(|g| g.trace_id == PARENT_TRACE).count() >= 4).await;
    let ours: Vec<&Got> = got.iter().filter(|g| g.trace_id == PARENT_TRACE).collect();
    let server = ours
        .iter()
        .find(|g| g.kind == SpanKind::Server as i32)
        .unwrap_or_else(|| panic!("no server span: {got:#?}"));
    assert_eq!(server.parent, PARENT_SPAN, "the request span's parent is the caller's");
    assert_eq!(server.name, "GET /cap/*", "{{method}} {{http.route}}");
    assert!(server.service.contains("edge"), "{server:?}");
    let upstream = ours
        .iter()
        .find(|g| g.kind == SpanKind::Client as i32)
        .unwrap_or_else(|| panic!("no upstream span: {got:#?}"));
    assert_eq!(upstream.parent, server.span_id);
    assert_eq!(
        upstream.span_id, upstream_parent,
        "the upstream's parent is the attempt's span"
    );
    for phase in ["filter cap request", "filter cap response"] {
        let span = ours
            .iter()
            .find(|g| g.name == phase)
            .unwrap_or_else(|| panic!("no {phase:?} span: {got:#?}"));
        assert_eq!(span.parent, server.span_id, "{phase}");
    }
}

#[tokio::test]
async fn a_trace_reaches_an_otlp_http_receiver_with_parent_and_children() {
    a_trace_arrives("http").await;
}

#[tokio::test]
async fn a_trace_reaches_an_otlp_grpc_receiver_with_parent_and_children() {
    a_trace_arrives("grpc").await;
}

/// An attribute's type in the conventions.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Type {
    Str,
    Int,
}

/// Its requirement level; conditionally required ones are checked where the condition
/// holds.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Level {
    Required,
    Conditional,
    Recommended,
    OptIn,
}

/// The stable HTTP semantic conventions' server span (docs/http/http-spans.md), the
/// attributes Weft may set; any other must be Weft's own (`weft.*`).
const SERVER_SPAN: &[(&str, Type, Level)] = &[
    ("http.request.method", Type::Str, Level::Required),
    ("url.path", Type::Str, Level::Required),
    ("url.scheme", Type::Str, Level::Required),
    ("error.type", Type::Str, Level::Conditional),
    ("http.request.method_original", Type::Str, Level::Conditional),
    ("http.response.status_code", Type::Int, Level::Conditional),
    ("http.route", Type::Str, Level::Conditional),
    ("server.port", Type::Int, Level::Conditional),
    ("url.query", Type::Str, Level::Conditional),
    ("client.address", Type::Str, Level::Recommended),
    ("network.peer.address", Type::Str, Level::Recommended),
    ("network.peer.port", Type::Int, Level::Recommended),
    ("network.protocol.version", Type::Str, Level::Recommended),
    ("server.address", Type::Str, Level::Recommended),
    ("user_agent.original", Type::Str, Level::Recommended),
    ("client.port", Type::Int, Level::OptIn),
];

/// The same for the client span.
const CLIENT_SPAN: &[(&str, Type, Level)] = &[
    ("http.request.method", Type::Str, Level::Required),
    ("server.address", Type::Str, Level::Required),
    ("server.port", Type::Int, Level::Required),
    ("url.full", Type::Str, Level::Required),
    ("error.type", Type::Str, Level::Conditional),
    ("http.request.method_original", Type::Str, Level::Conditional),
    ("http.response.status_code", Type::Int, Level::Conditional),
    ("http.request.resend_count", Type::Int, Level::Recommended),
    ("network.peer.address", Type::Str, Level::Recommended),
    ("network.peer.port", Type::Int, Level::Recommended),
    ("network.protocol.version", Type::Str, Level::Recommended),
];

/// Every attribute of `span` is in `table` with its type (or is `weft.*`), every required
/// one is there, and so is every conditionally required one named in `present`.
fn conforms(span: &Got, table: &[(&str, Type, Level)], present: &[&str]) {
    for (key, value) in &span.attributes {
        if key.starts_with("weft.") {
            continue;
        }
        let (_, kind, _) = table
            .iter()
            .find(|(name, _, _)| name == key)
            .unwrap_or_else(|| panic!("{key} is not a convention of this span kind: {span:#?}"));
        let ok = matches!((kind, value), (Type::Str, Val::Str(_)) | (Type::Int, Val::Int(_)));
        assert!(ok, "{key} should be {kind:?}, is {value:?}");
    }
    for (name, _, level) in table {
        if *level == Level::Required || present.contains(name) {
            assert!(span.attr(name).is_some(), "{name} ({level:?}) missing: {span:#?}");
        }
    }
}

fn parent_for(trace: &str) -> String {
    format!("00-{trace}-{PARENT_SPAN}-01")
}

/// A request's server and client spans (the latter when it went upstream), once exported.
async fn spans_of(spans: &Spans, trace: &str, client: bool) -> (Got, Option<Got>) {
    let wanted = if client { 2 } else { 1 };
    let got = spans_until(spans, |s| {
        s.iter()
            .filter(|g| g.trace_id == trace && g.kind != SpanKind::Internal as i32)
            .count()
            >= wanted
    })
    .await;
    let ours: Vec<&Got> = got.iter().filter(|g| g.trace_id == trace).collect();
    let server = ours
        .iter()
        .find(|g| g.kind == SpanKind::Server as i32)
        .map(|g| (*g).clone())
        .unwrap_or_else(|| panic!("no server span for {trace}: {got:#?}"));
    let upstream = ours
        .iter()
        .find(|g| g.kind == SpanKind::Client as i32)
        .map(|g| (*g).clone());
    assert_eq!(upstream.is_some(), client, "{ours:#?}");
    (server, upstream)
}

async fn traced_with(otlp: SocketAddr, tracing: &str) -> (Weft, Upstream, Upstream) {
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let top = format!(
        "[tracing]\nendpoint = \"http://{otlp}/v1/traces\"\ninterval = \"100ms\"\nservice_name = \"edge\"\n{tracing}\n"
    );
    let weft = Weft::start(&proxied(echo.addr, slow.addr, &top)).await;
    (weft, echo, slow)
}

#[tokio::test]
async fn spans_follow_the_http_semantic_conventions() {
    let (otlp, spans) = otlp_http().await;
    let (weft, echo, _slow) = traced_with(otlp, "").await;
    let port = i64::from(weft.addr.port());

    // A proxied request with secrets in its query, spelled every way an upstream reads.
    let trace = "11111111111111111111111111111111";
    let query = "q=secret1&sig=secret2&flag&%73ig=secret3;token=secret4";
    let reply = weft
        .get_with(
            &format!("/cap/traced?{query}"),
            &[
                ("traceparent", &parent_for(trace)),
                ("user-agent", "conformance/1.0"),
                // Claims a listener that does not trust what is in front of it ignores.
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200);
    let (server, client) = spans_of(&spans, trace, true).await;
    let client = client.expect("client span");
    conforms(
        &server,
        SERVER_SPAN,
        &["http.response.status_code", "http.route", "server.port", "url.query"],
    );
    assert_eq!(server.name, "GET /cap/*", "{{method}} {{http.route}}");
    assert_eq!(server.str("http.request.method"), Some("GET"));
    assert_eq!(server.str("url.scheme"), Some("http"));
    assert_eq!(server.str("url.path"), Some("/cap/traced"), "no query in url.path");
    assert_eq!(
        server.str("url.query"),
        Some("q=REDACTED&sig=REDACTED&flag&%73ig=REDACTED;token=REDACTED"),
        "keys kept, values dropped"
    );
    assert_eq!(server.str("server.address"), Some("127.0.0.1"), "without the port");
    assert_eq!(server.attr("server.port"), Some(&Val::Int(port)));
    assert_eq!(server.str("client.address"), Some("127.0.0.1"));
    assert!(matches!(server.attr("client.port"), Some(Val::Int(p)) if *p > 0));
    assert_eq!(server.str("network.protocol.version"), Some("1.1"));
    assert_eq!(server.str("user_agent.original"), Some("conformance/1.0"));
    assert_eq!(server.str("http.route"), Some("/cap/*"), "a path template");
    assert_eq!(server.str("weft.route"), Some("filtered"));
    assert_eq!(server.attr("http.response.status_code"), Some(&Val::Int(200)));
    assert_eq!((server.attr("error.type"), server.status), (None, 0));

    conforms(&client, CLIENT_SPAN, &["http.response.status_code"]);
    assert_eq!(client.name, "GET");
    assert_eq!(client.str("http.request.method"), Some("GET"));
    assert_eq!(client.str("server.address"), Some("127.0.0.1"));
    assert_eq!(client.attr("server.port"), Some(&Val::Int(i64::from(echo.addr.port()))));
    assert_eq!(
        client.str("url.full"),
        Some(
            format!(
                "http://{}/cap/traced?q=REDACTED&sig=REDACTED&flag&%73ig=REDACTED;token=REDACTED",
                echo.addr
            )
            .as_str()
        )
    );
    assert_eq!(client.attr("http.response.status_code"), Some(&Val::Int(200)));
    assert_eq!(client.str("network.protocol.version"), Some("1.1"));

    // The resource says what made the spans.
    let resource = |key: &str| server.resource.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    assert_eq!(resource("service.name"), Some(Val::Str("edge".into())));
    assert_eq!(resource("telemetry.sdk.name"), Some(Val::Str("opentelemetry".into())));
    assert_eq!(resource("telemetry.sdk.language"), Some(Val::Str("rust".into())));
    for key in ["telemetry.sdk.version", "service.version"] {
        assert!(
            matches!(resource(key), Some(Val::Str(v)) if !v.is_empty()),
            "{key}: {:?}",
            server.resource
        );
    }

    // A method the conventions do not know is `_OTHER`, and `HTTP` in the name.
    let trace = "22222222222222222222222222222222";
    let req = Request::builder()
        .method("FOO")
        .uri(weft.url("/plain/x"))
        .header("traceparent", parent_for(trace))
        .body(Full::new(Bytes::new()))
        .expect("request");
    assert_eq!(send(&http1_client(), req).await.status, 200);
    let (server, client) = spans_of(&spans, trace, true).await;
    conforms(&server, SERVER_SPAN, &["http.request.method_original", "http.route"]);
    assert_eq!(server.name, "HTTP /*");
    assert_eq!(server.str("http.request.method"), Some("_OTHER"));
    assert_eq!(server.str("http.request.method_original"), Some("FOO"));
    assert_eq!(server.attr("url.query"), None, "no query, no url.query");
    let client = client.expect("client span");
    conforms(&client, CLIENT_SPAN, &["http.request.method_original"]);
    assert_eq!(client.name, "HTTP");

    // An upstream timeout: both spans are errors, and say which.
    let trace = "33333333333333333333333333333333";
    let reply = weft.get_with("/slow/x", &[("traceparent", &parent_for(trace))]).await;
    assert_eq!(reply.status, 504);
    let (server, client) = spans_of(&spans, trace, true).await;
    let client = client.expect("client span");
    conforms(&server, SERVER_SPAN, &["error.type", "http.response.status_code"]);
    conforms(&client, CLIENT_SPAN, &["error.type"]);
    assert_eq!(server.str("error.type"), Some("upstream_timeout"));
    assert_eq!(client.str("error.type"), Some("upstream_timeout"));
    assert_eq!((server.status, client.status), (2, 2), "Error");
    assert_eq!(client.attr("http.response.status_code"), None, "none was received");

    // No span anywhere carries a value of the query.
    let all = spans.lock().expect("spans").clone();
    for span in &all {
        for (key, value) in &span.attributes {
            assert!(
                !format!("{value:?}").contains("secret"),
                "{key} = {value:?} in {span:#?}"
            );
        }
    }
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_client_and_scheme_are_the_original_ones() {
    let (otlp, spans) = otlp_http().await;
    let echo = Upstream::echo("echo").await;
    let config = Config::new()
        .listener("trust_forwarded = true")
        .top(&format!(
            "[tracing]\nendpoint = \"http://{otlp}/v1/traces\"\ninterval = \"100ms\"\n"
        ))
        .cluster("echo", &[echo.addr])
        .route("plain", "path_prefix = \"/\"", "echo", &[], "")
        .to_string();
    let weft = Weft::start(&config).await;
    let trace = "55555555555555555555555555555555";
    weft.get_with(
        "/x",
        &[
            ("traceparent", &parent_for(trace)),
            ("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("host", "shop.example"),
        ],
    )
    .await;
    let (server, _) = spans_of(&spans, trace, true).await;
    conforms(&server, SERVER_SPAN, &["server.port"]);
    assert_eq!(server.str("client.address"), Some("203.0.113.7"), "the original client");
    assert_eq!(server.attr("client.port"), None, "its port is not known");
    assert_eq!(
        server.str("network.peer.address"),
        Some("127.0.0.1"),
        "the proxy in front"
    );
    assert_eq!(server.str("url.scheme"), Some("https"));
    assert_eq!(server.str("server.address"), Some("shop.example"));
    assert_eq!(server.attr("server.port"), Some(&Val::Int(443)), "https's default port");
}

#[tokio::test]
async fn query_full_shows_values_but_never_a_credential() {
    let (otlp, spans) = otlp_http().await;
    let (weft, echo, _slow) = traced_with(otlp, "query = \"full\"").await;
    let trace = "44444444444444444444444444444444";
    let query = "page=2&SIG=s1&api%5Fkey=s2;X-Goog-Signature=s3&password=s4&AWSAccessKeyId=s5";
    weft.get_with(&format!("/plain/x?{query}"), &[("traceparent", &parent_for(trace))])
        .await;
    let (server, client) = spans_of(&spans, trace, true).await;
    let shown =
        "page=2&SIG=REDACTED&api%5Fkey=REDACTED;X-Goog-Signature=REDACTED&password=REDACTED&AWSAccessKeyId=REDACTED";
    assert_eq!(server.str("url.query"), Some(shown));
    assert_eq!(server.str("url.path"), Some("/plain/x"));
    assert_eq!(
        client.expect("client span").str("url.full"),
        Some(format!("http://{}/plain/x?{shown}", echo.addr).as_str())
    );
}

#[tokio::test]
async fn sample_zero_records_no_new_trace_but_follows_a_sampled_parent() {
    let (otlp, spans) = otlp_http().await;
    let (weft, _echo, _slow) = traced("http", otlp, "0.0").await;
    for _ in 0..5 {
        let seen = weft.get_with("/plain/unsampled", &[]).await.json();
        let (_, _, flags) = traceparent_parts(seen_header(&seen, "traceparent").expect("propagated anyway"));
        assert_eq!(flags, "00", "not sampled, and says so upstream");
    }
    let unsampled_parent = "00-11111111111111111111111111111111-2222222222222222-00";
    weft.get_with("/plain/parent-says-no", &[("traceparent", unsampled_parent)])
        .await;
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    let seen = weft
        .get_with("/plain/sampled", &[("traceparent", parent.as_str())])
        .await
        .json();
    assert!(seen_header(&seen, "traceparent").expect("traceparent").ends_with("-01"));

    let got = spans_until(&spans, |s| {
        s.iter().any(|g| g.trace_id == PARENT_TRACE && g.parent == PARENT_SPAN)
    })
    .await;
    assert!(
        got.iter().any(|g| g.trace_id == PARENT_TRACE),
        "the sampled parent was followed: {got:#?}"
    );
    // Give any stray export time to arrive, then look again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = spans.lock().expect("spans").clone();
    let others: Vec<&Got> = got.iter().filter(|g| g.trace_id != PARENT_TRACE).collect();
    assert!(others.is_empty(), "sample = 0 exported other traces: {others:#?}");
}

/// Every way a client says "sample this": W3C, B3 multi (sampled, debug) and single.
fn forced_sampling(trace: &str) -> [Vec<(&'static str, String)>; 5] {
    [
        vec![("traceparent", format!("00-{trace}-{PARENT_SPAN}-01"))],
        vec![
            ("x-b3-traceid", trace.to_owned()),
            ("x-b3-spanid", PARENT_SPAN.to_owned()),
            ("x-b3-sampled", "1".to_owned()),
        ],
        vec![
            ("x-b3-traceid", trace.to_owned()),
            ("x-b3-spanid", PARENT_SPAN.to_owned()),
            ("x-b3-flags", "1".to_owned()),
        ],
        vec![("b3", format!("{trace}-{PARENT_SPAN}-1"))],
        vec![("b3", format!("{trace}-{PARENT_SPAN}-d"))],
    ]
}

/// Sends each of `forced_sampling` `rounds` times; returns how many the proxy followed
/// (sent upstream as sampled), after checking that each kept its trace id.
async fn followed(weft: &Weft, rounds: usize) -> usize {
    let mut followed = 0;
    for round in 0..rounds {
        let trace = format!("{:032x}", 0xabc0_0000 + round);
        for headers in forced_sampling(&trace) {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let seen = weft.get_with("/plain/forced", &headers).await.json();
            let (id, _, flags) = traceparent_parts(seen_header(&seen, "traceparent").expect("traceparent"));
            assert_eq!(id, trace, "the trace continues, sampled or not: {headers:?}");
            followed += usize::from(flags == "01");
        }
    }
    followed
}

#[tokio::test]
async fn a_client_cannot_make_every_request_a_sampled_trace() {
    let (otlp, _spans) = otlp_http().await;
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let top = |extra: &str| {
        format!("[tracing]\nendpoint = \"http://{otlp}/v1/traces\"\nsample = 0.0\ninterval = \"100ms\"\n{extra}\n")
    };

    // Followed for at most `client_sampled` requests a second, in bursts of as many.
    let weft = Weft::start(&proxied(echo.addr, slow.addr, &top("client_sampled = 2"))).await;
    let started = Instant::now();
    let rounds = 10;
    let n = followed(&weft, rounds).await;
    let most = 2.0 + 2.0 * started.elapsed().as_secs_f64();
    assert!(
        n >= 2 && n as f64 <= most,
        "{n} of {} forced requests sampled; at most {most:.1} allowed",
        rounds * 5
    );
    drop(weft);

    // On a listener that ignores clients, `sample` alone decides, both ways.
    let weft = Weft::start(&proxied(
        echo.addr,
        slow.addr,
        &top("client_sampled = 1000\nignore_client_sampled = [\"main\"]"),
    ))
    .await;
    assert_eq!(followed(&weft, 2).await, 0, "sample = 0 and the client ignored");
    drop(weft);
    let weft = Weft::start(&proxied(
        echo.addr,
        slow.addr,
        &top("ignore_client_sampled = [\"main\"]").replace("sample = 0.0", "sample = 1.0"),
    ))
    .await;
    let says_no = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-00");
    let seen = weft
        .get_with("/plain/unforced", &[("traceparent", says_no.as_str())])
        .await
        .json();
    let (id, _, flags) = traceparent_parts(seen_header(&seen, "traceparent").expect("traceparent"));
    assert_eq!(
        (id.as_str(), flags.as_str()),
        (PARENT_TRACE, "01"),
        "sample = 1 decides"
    );
    drop(weft);

    // Where Weft decides for an id the client chose, the id does not steer it: ids whose
    // low 64 bits are zero pass any ratio sampler by id.
    let weft = Weft::start(&proxied(
        echo.addr,
        slow.addr,
        &top("client_sampled = 0").replace("sample = 0.0", "sample = 0.01"),
    ))
    .await;
    let mut sampled = 0;
    for round in 0..20 {
        let trace = format!("{:016x}{:016x}", round + 1, 0);
        for headers in [
            vec![("traceparent", format!("00-{trace}-{PARENT_SPAN}-01"))],
            // B3 without a decision: Weft's to make.
            vec![("b3", format!("{trace}-{PARENT_SPAN}"))],
        ] {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let seen = weft.get_with("/plain/chosen", &headers).await.json();
            let (_, _, flags) = traceparent_parts(seen_header(&seen, "traceparent").expect("traceparent"));
            sampled += usize::from(flags == "01");
        }
    }
    assert_eq!(sampled, 0, "1% of 40 requests is none of them");
}

#[tokio::test]
async fn b3_context_is_accepted_and_sent_on_as_traceparent() {
    let (otlp, _spans) = otlp_http().await;
    let (weft, _echo, _slow) = traced("http", otlp, "1.0").await;
    let single = format!("{PARENT_TRACE}-{PARENT_SPAN}-1");
    let seen = weft.get_with("/plain/b3", &[("b3", single.as_str())]).await.json();
    let (trace, _, flags) = traceparent_parts(seen_header(&seen, "traceparent").expect("traceparent"));
    assert_eq!((trace.as_str(), flags.as_str()), (PARENT_TRACE, "01"));
    assert_eq!(seen_header(&seen, "b3"), None, "the stale B3 context is not passed on");

    let seen = weft
        .get_with(
            "/plain/b3-multi",
            &[
                ("x-b3-traceid", "a3ce929d0e0e4736"),
                ("x-b3-spanid", PARENT_SPAN),
                ("x-b3-sampled", "1"),
            ],
        )
        .await
        .json();
    let (trace, _, _) = traceparent_parts(seen_header(&seen, "traceparent").expect("traceparent"));
    assert_eq!(trace, "0000000000000000a3ce929d0e0e4736");
    assert_eq!(seen_header(&seen, "x-b3-traceid"), None);
}

#[tokio::test]
async fn hostile_trace_context_starts_a_new_trace_and_never_reaches_the_log() {
    let (otlp, _spans) = otlp_http().await;
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let top = format!(
        "[access_log]\npath = \"{}\"\n[tracing]\nendpoint = \"http://{otlp}/v1/traces\"\ninterval = \"100ms\"\n",
        log.display()
    );
    let weft = Weft::start(&proxied(echo.addr, slow.addr, &top)).await;
    let oversized = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01{}", "-evil".repeat(1500));
    let hostile = [
        format!("00-{PARENT_TRACE}-{PARENT_SPAN}-1"),
        format!("00-{}-{PARENT_SPAN}-01", PARENT_TRACE.to_uppercase()),
        format!("00-00000000000000000000000000000000-{PARENT_SPAN}-01"),
        format!("ff-{PARENT_TRACE}-{PARENT_SPAN}-01"),
        format!("00-{PARENT_TRACE}-{PARENT_SPAN}-zz"),
        "00-abc-def-01".to_owned(),
        oversized,
    ];
    let mut ids = Vec::new();
    for (i, value) in hostile.iter().enumerate() {
        let reply = weft
            .get_with(&format!("/plain/hostile/{i}"), &[("traceparent", value.as_str())])
            .await;
        assert_eq!(reply.status, 200, "{value}");
        let (trace, _, _) = traceparent_parts(seen_header(&reply.json(), "traceparent").expect("a new context"));
        assert_ne!(trace, PARENT_TRACE, "{value}");
        ids.push(trace);
    }
    // Two traceparent headers: neither is believed.
    let twice = raw::exchange(
        weft.addr,
        format!(
            "GET /plain/hostile/twice HTTP/1.1\r\nHost: x\r\ntraceparent: 00-{PARENT_TRACE}-{PARENT_SPAN}-01\r\n\
             traceparent: 00-{PARENT_TRACE}-{PARENT_SPAN}-01\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(raw::status(&twice), Some(200), "{twice}");
    let body = twice.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    let seen: serde_json::Value = serde_json::from_str(body).expect("the echo's JSON");
    let (trace, _, _) = traceparent_parts(seen_header(&seen, "traceparent").expect("a new context"));
    assert_ne!(trace, PARENT_TRACE, "a duplicated traceparent is ignored");

    let all = records(&log, hostile.len() + 1).await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !text.contains("evil") && !text.contains("00-abc"),
        "raw header text reached the log"
    );
    for (i, id) in ids.iter().enumerate() {
        let record = all
            .iter()
            .find(|r| r["path"] == format!("/plain/hostile/{i}"))
            .expect("record");
        assert_eq!(record["trace_id"], id.as_str(), "the log names the new trace");
    }
}

#[tokio::test]
async fn a_reload_moves_the_access_log_and_a_log_that_cannot_open_is_rejected() {
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let dir = tempfile::tempdir().expect("dir");
    let (first, second) = (dir.path().join("first.log"), dir.path().join("second.log"));
    let config = |path: &Path| {
        proxied(
            echo.addr,
            slow.addr,
            &format!(
                "[runtime]\nwatch = false\n[access_log]\npath = \"{}\"\n",
                path.display()
            ),
        )
    };
    let weft = Weft::start(&config(&first)).await;
    weft.get_with("/one", &[]).await;
    assert_eq!(records(&first, 1).await[0]["path"], "/one");

    weft.write_config(&config(&second));
    assert_eq!(weft.admin("POST", "/reload").await.0, 200);
    weft.get_with("/two", &[]).await;
    assert_eq!(records(&second, 1).await[0]["path"], "/two");

    weft.write_config(&config(&dir.path().join("no-such-dir/third.log")));
    let (status, body) = weft.admin("POST", "/reload").await;
    assert_ne!(status, 200, "{body}");
    assert!(body.contains("[access_log] cannot open"), "{body}");
    weft.get_with("/three", &[]).await;
    let kept = records(&second, 2).await;
    assert_eq!(kept.len(), 2, "the running log keeps being written: {kept:#?}");
    assert_eq!(
        records(&first, 1).await.len(),
        1,
        "the first log got nothing after the reload"
    );
}

#[tokio::test]
async fn spans_and_records_still_queued_at_shutdown_are_written() {
    let (otlp, spans) = otlp_http().await;
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    // An export interval far beyond the test: only the shutdown flush can send the span.
    let top = format!(
        "[access_log]\npath = \"{}\"\n[tracing]\nendpoint = \"http://{otlp}/v1/traces\"\ninterval = \"1h\"\n",
        log.display()
    );
    let mut weft = Weft::start(&proxied(echo.addr, slow.addr, &top)).await;
    let parent = format!("00-{PARENT_TRACE}-{PARENT_SPAN}-01");
    assert_eq!(
        weft.get_with("/plain/last", &[("traceparent", parent.as_str())])
            .await
            .status,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(spans.lock().expect("spans").is_empty(), "exported before the interval");
    weft.terminate();
    assert!(weft.wait_exit(Duration::from_secs(20)).await, "{}", weft.log());
    let got = spans.lock().expect("spans").clone();
    assert!(
        got.iter()
            .any(|g| g.trace_id == PARENT_TRACE && g.kind == SpanKind::Server as i32),
        "the queued span was not exported at shutdown: {got:#?}\n{}",
        weft.log()
    );
    assert_eq!(records(&log, 1).await[0]["path"], "/plain/last");
}

#[tokio::test]
async fn sample_logs_that_fraction_of_requests() {
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let dir = tempfile::tempdir().expect("dir");
    let log = dir.path().join("access.log");
    let top = format!("[access_log]\npath = \"{}\"\nsample = 0.25\n", log.display());
    let weft = Weft::start(&proxied(echo.addr, slow.addr, &top)).await;
    for i in 0..20 {
        assert_eq!(weft.get_with(&format!("/plain/{i}"), &[]).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(records(&log, 5).await.len(), 5, "a quarter of 20");
}

#[tokio::test]
async fn a_full_span_queue_drops_and_counts_spans_and_requests_go_on() {
    let (otlp, spans) = otlp_http().await;
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    // One span may wait for export: a burst overflows it.
    let top = format!("[tracing]\nendpoint = \"http://{otlp}/v1/traces\"\nqueue = 1\n");
    let weft = Weft::start(&proxied(echo.addr, slow.addr, &top)).await;
    let client = http1_client();
    let mut burst = Vec::new();
    for i in 0..20 {
        let req = Request::get(weft.url(&format!("/plain/{i}")))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let client = client.clone();
        burst.push(tokio::spawn(async move { send(&client, req).await.status }));
    }
    for request in burst {
        assert_eq!(request.await.expect("request"), 200);
    }
    // Each request ends two spans (its own and the upstream attempt's): every one of the
    // 40 is either exported or counted as dropped.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut dropped, mut received) = (0.0, 0);
    while Instant::now() < deadline {
        dropped = weft.metric("weft_trace_spans_dropped_total").await;
        received = spans.lock().expect("spans").len();
        if dropped + received as f64 == 40.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        dropped + received as f64,
        40.0,
        "dropped {dropped}, received {received}"
    );
    assert!(dropped > 0.0, "a queue of one took a burst of 40 spans");
}

#[tokio::test]
async fn a_reload_switches_the_exporter_and_tracing_off() {
    let (first, first_spans) = otlp_http().await;
    let (second, second_spans) = otlp_grpc().await;
    let echo = Upstream::echo("echo").await;
    let slow = slow_upstream().await;
    let config = |tracing: &str| proxied(echo.addr, slow.addr, &format!("[runtime]\nwatch = false\n{tracing}"));
    let weft = Weft::start(&config(&format!(
        "[tracing]\nendpoint = \"http://{first}/v1/traces\"\ninterval = \"100ms\"\n"
    )))
    .await;
    let traced = |trace: &'static str| format!("00-{trace}-{PARENT_SPAN}-01");
    let one = "11111111111111111111111111111111";
    weft.get_with("/plain/1", &[("traceparent", traced(one).as_str())])
        .await;
    spans_until(&first_spans, |s| s.iter().any(|g| g.trace_id == one)).await;

    weft.write_config(&config(&format!(
        "[tracing]\nendpoint = \"http://{second}\"\nprotocol = \"grpc\"\ninterval = \"100ms\"\nservice_name = \"moved\"\n"
    )));
    assert_eq!(weft.admin("POST", "/reload").await.0, 200);
    let two = "22222222222222222222222222222222";
    weft.get_with("/plain/2", &[("traceparent", traced(two).as_str())])
        .await;
    let got = spans_until(&second_spans, |s| s.iter().any(|g| g.trace_id == two)).await;
    let span = got
        .iter()
        .find(|g| g.trace_id == two)
        .expect("exported to the new endpoint");
    assert!(span.service.contains("moved"), "{span:?}");

    weft.write_config(&config(""));
    assert_eq!(weft.admin("POST", "/reload").await.0, 200);
    let seen = weft
        .get_with("/plain/3", &[("traceparent", traced(PARENT_TRACE).as_str())])
        .await
        .json();
    assert_eq!(
        seen_header(&seen, "traceparent"),
        Some(traced(PARENT_TRACE).as_str()),
        "tracing off: the client's context passes through untouched"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let all: Vec<Got> = first_spans
        .lock()
        .expect("spans")
        .iter()
        .chain(second_spans.lock().expect("spans").iter())
        .cloned()
        .collect();
    assert!(
        all.iter().all(|g| g.trace_id != PARENT_TRACE),
        "exported after tracing was turned off"
    );
    assert!(
        first_spans.lock().expect("spans").iter().all(|g| g.trace_id == one),
        "the old exporter got only the old traffic"
    );
}
