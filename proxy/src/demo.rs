//! `weft demo`: an embedded config that proxies to a built-in upstream with the example
//! plugin loaded, so one command shows a proxied, filtered response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use http::{Request, Response, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::body::Body;

/// The demo's config; `{listen}`, `{admin}`, `{upstream}` and `{plugins}` are filled in.
const CONFIG: &str = include_str!("demo.toml");

/// Renders the demo config for the given addresses and plugin directory.
pub fn config_text(listen: SocketAddr, admin: SocketAddr, upstream: SocketAddr, plugins: &Path) -> String {
    CONFIG
        .replace("{listen}", &listen.to_string())
        .replace("{admin}", &admin.to_string())
        .replace("{upstream}", &upstream.to_string())
        .replace("{plugins}", &plugins.display().to_string())
}

/// Starts the built-in upstream on a free loopback port: it answers every request with a
/// JSON description of what it received, so the demo shows what the proxy changed.
pub async fn start_echo_upstream() -> anyhow::Result<SocketAddr> {
    let socket = TcpListener::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let service = service_fn(echo);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn echo(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let (head, body) = req.into_parts();
    let body_len = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
    let headers: serde_json::Map<String, serde_json::Value> = head
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned().into()))
        .collect();
    let seen = serde_json::json!({
        "upstream": "weft demo echo",
        "method": head.method.as_str(),
        "uri": head.uri.to_string(),
        "version": format!("{:?}", head.version),
        "headers": headers,
        "body_bytes": body_len,
    });
    let text = serde_json::to_string_pretty(&seen).unwrap_or_default() + "\n";
    let mut resp = Response::new(Body::full(text));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    Ok(resp)
}
