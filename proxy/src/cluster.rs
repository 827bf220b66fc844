//! Clusters: named groups of upstream endpoints, a load balancer over them, and the
//! connection pool that reaches them.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_rustls::{DefaultServerNameResolver, FixedServerNameResolver, HttpsConnector, ResolveServerName};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::ServerName;

use crate::body::Body;
use crate::config::ConfigError;
use crate::config::{ClusterConfig, Source, UpstreamProtocol};

/// The clusters of one config version, by name.
pub type Clusters = HashMap<Arc<str>, Arc<Cluster>>;

/// One upstream address.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    authority: Authority,
}

/// A named group of endpoints and the pool of connections to them.
pub struct Cluster {
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    client: UpstreamClient,
}

/// Plain and TLS clients are different types; an enum keeps the plain path free of TLS.
enum UpstreamClient {
    Plain(Client<HttpConnector, Body>),
    Tls(Client<HttpsConnector<HttpConnector>, Body>),
}

/// Why an upstream exchange failed; `respond` turns it into 502 or 504.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: SocketAddr, reason: String },
    #[error("exchange with {endpoint} failed: {reason}")]
    Exchange { endpoint: SocketAddr, reason: String },
    #[error("no response head from {endpoint} within {timeout:?}")]
    Timeout { endpoint: SocketAddr, timeout: Duration },
    #[error("the request cannot be sent upstream: {0}")]
    BadRequest(String),
    /// The exchange failed because the client's body did (too large, too slow, malformed).
    #[error("the client's request body failed: {0}")]
    ClientBody(crate::front::ClientBodyFault),
}

impl Cluster {
    pub fn build(spanned: &toml::Spanned<ClusterConfig>, src: &Source) -> Result<Cluster, ConfigError> {
        let config = spanned.get_ref();
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        for endpoint in &config.endpoints {
            let text = endpoint.get_ref();
            let addr = text
                .to_socket_addrs()
                .ok()
                .and_then(|mut addrs| addrs.next())
                .ok_or_else(|| {
                    src.error_at(
                        endpoint.span(),
                        format!("endpoint {text:?} is not a resolvable host:port"),
                    )
                })?;
            let authority = Authority::try_from(addr.to_string())
                .map_err(|e| src.error_at(endpoint.span(), format!("endpoint {text:?}: {e}")))?;
            endpoints.push(Endpoint { addr, authority });
        }

        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.enforce_http(config.tls.is_none());
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_endpoint)
            // The proxy sets Host itself: the client's, or the route's rewrite.
            .set_host(false);
        if config.protocol == UpstreamProtocol::Http2 {
            builder.http2_only(true);
        }
        let client = match &config.tls {
            None => UpstreamClient::Plain(builder.build(connector)),
            Some(tls) => {
                let fail = |e: String| src.error_at(spanned.span(), format!("cluster {:?}: {e}", config.name));
                let client_config =
                    crate::tls::client_config(tls, config.protocol == UpstreamProtocol::Http2).map_err(fail)?;
                let resolver: Arc<dyn ResolveServerName + Send + Sync> = match &tls.server_name {
                    Some(name) => Arc::new(FixedServerNameResolver::new(
                        ServerName::try_from(name.clone()).map_err(|e| fail(format!("server_name {name:?}: {e}")))?,
                    )),
                    None => Arc::new(DefaultServerNameResolver::default()),
                };
                UpstreamClient::Tls(builder.build(HttpsConnector::new(connector, client_config, true, resolver)))
            }
        };
        Ok(Cluster {
            name: config.name.as_str().into(),
            protocol: config.protocol,
            endpoints,
            next: AtomicUsize::new(0),
            client,
        })
    }

    /// Round-robin choice of the next endpoint.
    pub fn pick(&self) -> &Endpoint {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        &self.endpoints[i]
    }

    /// Sends `req` (whose URI holds only path and query) to the next endpoint and waits
    /// at most `timeout` for the response head.
    pub async fn send(&self, mut req: Request<Body>, timeout: Duration) -> Result<Response<Incoming>, UpstreamError> {
        let endpoint = self.pick();
        let path = req
            .uri_mut()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(match self.client {
            UpstreamClient::Plain(_) => Scheme::HTTP,
            UpstreamClient::Tls(_) => Scheme::HTTPS,
        });
        parts.authority = Some(endpoint.authority.clone());
        parts.path_and_query = Some(path);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|e| UpstreamError::BadRequest(e.to_string()))?;

        let exchange = match &self.client {
            UpstreamClient::Plain(client) => client.request(req),
            UpstreamClient::Tls(client) => client.request(req),
        };
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(UpstreamError::Timeout {
                endpoint: endpoint.addr,
                timeout,
            }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) if let Some(fault) = crate::front::ClientBodyFault::find(Some(&e)) => {
                Err(UpstreamError::ClientBody(fault))
            }
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect {
                endpoint: endpoint.addr,
                reason: error_chain(&e),
            }),
            Ok(Err(e)) => Err(UpstreamError::Exchange {
                endpoint: endpoint.addr,
                reason: error_chain(&e),
            }),
        }
    }
}

/// An error and its sources on one line, for logs and error bodies.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
