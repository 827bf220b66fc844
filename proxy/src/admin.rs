//! The admin listener: readiness, Prometheus metrics, and reloads on request.
//!
//! | request | answer |
//! |---|---|
//! | `GET /ready` | `200` once the proxy serves |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /version` | the config version serving now |
//! | `POST /reload` | re-reads the config and plugins; `200` with the new version, or `409` with why it was rejected (the old version keeps serving) |
//!
//! Who may ask is `access`'s concern: a bearer token when `[admin] token` is set; without
//! one, `POST /reload` needs `X-Weft-Admin: 1`.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::Body;
use crate::listen::{Gate, accept_loop};
use crate::state::State;

mod access;

pub use access::Access;

pub async fn serve(socket: TcpListener, gate: Arc<Gate>, state: Arc<State>, shutdown: watch::Receiver<bool>) {
    accept_loop(socket, gate, shutdown, move |stream, _peer, pass| {
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(state.clone(), req));
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

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()));
    if let Err(refusal) = state.admin.check(req.method(), req.uri().path(), host, req.headers()) {
        let mut resp = text(refusal.status(), "text/plain", refusal.message().to_owned());
        if let Some(challenge) = refusal.challenge() {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static(challenge));
        }
        return Ok(resp);
    }
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready") => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics.encode(),
        ),
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
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "unknown admin path; try /ready /metrics /version /reload\n".to_owned(),
        ),
    };
    Ok(text(status, content_type, body))
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}
