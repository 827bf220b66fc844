//! The admin listener: readiness, metrics, a JSON view of what is running, reloads and
//! drain on request, and the live status page.
//!
//! | request | answer |
//! |---|---|
//! | `GET /ready` | `200` once the proxy serves; `503` after a drain |
//! | `GET /metrics` | OpenMetrics when the `Accept` header asks for it, Prometheus text 0.0.4 otherwise |
//! | `GET /version` | the config version serving now |
//! | `POST /reload` | re-reads the config and plugins; `200` with the new version, or `409` with why it was rejected (the old version keeps serving) |
//! | `GET /api/server` | build, WIT version, uptime, config version, in-flight drain |
//! | `GET /api/config` | the running config's text, secrets masked |
//! | `GET /api/routes`, `/api/clusters` | the running routes and clusters (with endpoints) |
//! | `GET /api/plugins` | loaded Wasm plugins: path, content hash, WIT version, load time |
//! | `GET /api/reloads` | the recent reloads and their outcomes |
//! | `POST /api/drain` | `/ready` answers `503` from now on, so load balancers move away |
//! | `GET /` or `/status` | the status page (static HTML; the data it polls needs access) |
//!
//! Every `GET` also answers `HEAD`: the same status and headers, no body.
//!
//! Who may ask is `access`'s concern: a bearer token when `[admin] token` is set; without
//! one, a `POST` needs `X-Weft-Admin: 1`. What is recorded in the audit log is `audit`'s.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::Body;
use crate::listen::{Gate, accept_loop};
use crate::metrics::{OPENMETRICS, PROMETHEUS_TEXT, to_prometheus_text, wants_openmetrics};
use crate::state::State;

mod access;

pub use access::Access;

/// Serves the admin API on `socket`; `access` is the rule `[admin]` asked for at start.
pub async fn serve(
    socket: TcpListener,
    gate: Arc<Gate>,
    state: Arc<State>,
    access: Access,
    shutdown: watch::Receiver<bool>,
) {
    let access = Arc::new(access);
    accept_loop(socket, gate, shutdown, move |stream, peer, pass| {
        let (state, access) = (state.clone(), access.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(state.clone(), access.clone(), peer, req));
            let http = auto::Builder::new(TokioExecutor::new());
            let connection = http.serve_connection(TokioIo::new(stream), service);
            // An admin client gets the same patience as any other: no connection is held forever.
            let _ = tokio::time::timeout(ADMIN_CONNECTION_LIFETIME, connection).await;
            drop(pass);
        });
    })
    .await;
}

/// Longest an admin connection stays open (a reload of a large config included).
const ADMIN_CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(120);

async fn answer(
    state: Arc<State>,
    access: Arc<Access>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path();
    // HEAD is answered as GET (RFC 9110 §9.3.2: the same header fields), and hyper sends
    // no body for it: a monitor probing with HEAD sees the content-type a scraper gets.
    let reads = method == Method::GET || method == Method::HEAD;
    // Static, and holds no data: a browser must load it before it can be given a token.
    if reads && (path == "/" || path == "/status") {
        let mut resp = text(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE.to_owned());
        resp.headers_mut().insert(
            header::CONTENT_SECURITY_POLICY,
            http::HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        );
        return Ok(resp);
    }
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()));
    if let Err(refusal) = access.check(&method, host, req.headers()) {
        let mut resp = text(refusal.status(), "text/plain", refusal.message().to_owned());
        if let Some(challenge) = refusal.challenge() {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static(challenge));
        }
        state.audit.refusal(call_record(peer, &method, path, resp.status()));
        return Ok(resp);
    }
    let path = path.to_owned();
    let resp = route(&state, &req).await;
    if !reads || path == "/api/config" {
        state.audit.record(call_record(peer, &method, &path, resp.status()));
    }
    Ok(resp)
}

/// The audit record of a call that changed something, read the config, or was refused.
fn call_record(peer: SocketAddr, method: &Method, path: &str, status: StatusCode) -> Value {
    json!({
        "event": "admin",
        "method": method.as_str(),
        "path": path,
        "peer": peer.to_string(),
        "status": status.as_u16(),
    })
}

async fn route(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let method = if req.method() == Method::HEAD {
        &Method::GET
    } else {
        req.method()
    };
    let (status, content_type, body) = match (method, req.uri().path()) {
        (&Method::GET, "/ready") if state.draining.load(Ordering::Relaxed) => {
            (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n".to_owned())
        }
        (&Method::GET, "/ready") => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
        (&Method::GET, "/metrics") => {
            let accept = req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok());
            let exposition = state.metrics.encode();
            if accept.is_some_and(wants_openmetrics) {
                (StatusCode::OK, OPENMETRICS, exposition)
            } else {
                (StatusCode::OK, PROMETHEUS_TEXT, to_prometheus_text(&exposition))
            }
        }
        (&Method::GET, "/version") => (StatusCode::OK, "text/plain", format!("{}\n", state.current().version)),
        (&Method::POST, "/reload") => match state.reload("admin").await {
            Ok(version) => (
                StatusCode::OK,
                "text/plain",
                format!("reloaded: config version {version}\n"),
            ),
            // Config errors mask URL passwords and secret-named values (config::redact).
            Err(e) => (
                StatusCode::CONFLICT,
                "text/plain",
                format!("reload rejected, old config kept:\n{e}\n"),
            ),
        },
        (&Method::GET, path) if path.starts_with("/api/") => match api(state, path) {
            Some(value) => (StatusCode::OK, "application/json", json_text(&value)),
            None => not_found(),
        },
        (&Method::POST, "/api/drain") => {
            state.draining.store(true, Ordering::Relaxed);
            tracing::info!("drain requested through the admin API: /ready answers 503");
            let value = json!({ "draining": true });
            (StatusCode::OK, "application/json", json_text(&value))
        }
        _ => not_found(),
    };
    text(status, content_type, body)
}

fn not_found() -> (StatusCode, &'static str, String) {
    (
        StatusCode::NOT_FOUND,
        "text/plain",
        "unknown admin path; try /ready /metrics /version /reload /status /api/server /api/config \
         /api/routes /api/clusters /api/plugins /api/reloads /api/drain\n"
            .to_owned(),
    )
}

/// The JSON views, from the config version serving now.
fn api(state: &State, path: &str) -> Option<Value> {
    let runtime = state.current();
    Some(match path {
        "/api/server" => json!({
            "name": "weft",
            "version": env!("CARGO_PKG_VERSION"),
            "wit": crate::wasm::WIT_VERSION,
            "pid": std::process::id(),
            "started_at": humantime::format_rfc3339_seconds(state.started_at).to_string(),
            "uptime_seconds": state.started.elapsed().as_secs(),
            "config_version": runtime.version,
            "config": runtime.source.origin,
            "draining": state.draining.load(Ordering::Relaxed),
        }),
        "/api/config" => json!({
            "version": runtime.version,
            "origin": runtime.source.origin,
            // URL passwords, secret-named values and credential headers masked, as config
            // errors quote them (config::redact).
            "text": crate::config::redact::text(&runtime.source.text),
        }),
        "/api/routes" => json!({ "version": runtime.version, "routes": runtime.view["routes"] }),
        "/api/clusters" => json!({ "version": runtime.version, "clusters": live_clusters(&runtime) }),
        "/api/plugins" => {
            let plugins: Vec<Value> = runtime
                .plugins
                .iter()
                .map(|(filter, p)| {
                    json!({
                        "filter": filter,
                        "path": p.path.display().to_string(),
                        "sha256": p.sha256,
                        "wit": p.wit,
                        "loaded_at": humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(p.loaded_at)
                        ).to_string(),
                    })
                })
                .collect();
            json!({ "version": runtime.version, "plugins": plugins })
        }
        "/api/reloads" => json!({ "reloads": state.recent_reloads() }),
        // The xDS stream (docs/xds.md): 404 when the config comes from a file alone.
        "/api/xds" => match &state.source {
            crate::state::ConfigSource::Provided(p) => p.status()?,
            _ => return None,
        },
        _ => return None,
    })
}

fn json_text(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    text
}

/// The live status page: one file, inline CSS and script, no external resources.
const STATUS_PAGE: &str = include_str!("admin/status.html");

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}

/// The clusters as configured, each with the endpoints serving now (names resolved, files
/// read) and their health: `endpoints` is live, `configured_endpoints` as written.
fn live_clusters(runtime: &crate::state::Version) -> Value {
    let mut clusters = runtime.view["clusters"].clone();
    for cluster in clusters.as_array_mut().into_iter().flatten() {
        let Some(live) = cluster["name"].as_str().and_then(|n| runtime.clusters.get(n)) else {
            continue;
        };
        let endpoints: Vec<Value> = live
            .endpoint_states()
            .into_iter()
            .map(|(addr, health)| json!({ "address": addr.to_string(), "health": health }))
            .collect();
        cluster["configured_endpoints"] = cluster["endpoints"].take();
        cluster["endpoints"] = Value::Array(endpoints);
    }
    clusters
}
