//! Clusters: named groups of upstream endpoints and a load balancer over them.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use rustls::pki_types::ServerName;

use crate::body::Body;
use crate::config::ConfigError;
use crate::config::{ClusterConfig, Source, UpstreamProtocol};

use super::pool::{Connector, EndpointPool, PoolError, PooledBody};

/// The clusters of one config version, by name.
pub type Clusters = HashMap<Arc<str>, Arc<Cluster>>;

/// One upstream address and its connections.
pub struct Endpoint {
    pub addr: SocketAddr,
    authority: Authority,
    pool: Arc<EndpointPool>,
}

/// A named group of endpoints and the pools of connections to them.
pub struct Cluster {
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    connector: Connector,
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
            let pool = EndpointPool::new(addr, config.max_idle_per_endpoint, config.idle_timeout);
            endpoints.push(Endpoint { addr, authority, pool });
        }

        let http2 = config.protocol == UpstreamProtocol::Http2;
        let tls = match &config.tls {
            None => None,
            Some(tls) => {
                let fail = |e: String| src.error_at(spanned.span(), format!("cluster {:?}: {e}", config.name));
                let client_config = crate::tls::client_config(tls, http2).map_err(fail)?;
                let name = match &tls.server_name {
                    Some(name) => Some(
                        ServerName::try_from(name.clone()).map_err(|e| fail(format!("server_name {name:?}: {e}")))?,
                    ),
                    None => None,
                };
                Some((tokio_rustls::TlsConnector::from(Arc::new(client_config)), name))
            }
        };
        Ok(Cluster {
            name: config.name.as_str().into(),
            protocol: config.protocol,
            endpoints,
            next: AtomicUsize::new(0),
            connector: Connector {
                connect_timeout: config.connect_timeout,
                http2,
                tls,
            },
        })
    }

    /// Round-robin choice of the next endpoint.
    pub fn pick(&self) -> &Endpoint {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        &self.endpoints[i]
    }

    /// Sends `req` to the next endpoint and waits at most `timeout` for the response head.
    pub async fn send(&self, mut req: Request<Body>, timeout: Duration) -> Result<Response<PooledBody>, UpstreamError> {
        let endpoint = self.pick();
        if self.connector.http2 {
            // HTTP/2 carries the target as :scheme and :authority.
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(if self.connector.tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            });
            parts.authority = Some(endpoint.authority.clone());
            parts.path_and_query = Some(path);
            *req.uri_mut() = Uri::from_parts(parts).map_err(|e| UpstreamError::BadRequest(e.to_string()))?;
        } else if req.uri().authority().is_some() {
            // HTTP/1.1 to an origin: origin-form (the Host header names the host).
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(path);
        }

        let exchange = endpoint.pool.send(&self.connector, req);
        match tokio::time::timeout(timeout, exchange).await {
            Err(_) => Err(UpstreamError::Timeout {
                endpoint: endpoint.addr,
                timeout,
            }),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(PoolError::Connect(reason))) => Err(UpstreamError::Connect {
                endpoint: endpoint.addr,
                reason,
            }),
            Ok(Err(PoolError::Exchange(e))) => match crate::front::ClientBodyFault::find(Some(&e)) {
                Some(fault) => Err(UpstreamError::ClientBody(fault)),
                None => Err(UpstreamError::Exchange {
                    endpoint: endpoint.addr,
                    reason: error_chain(&e),
                }),
            },
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
