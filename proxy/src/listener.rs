//! Downstream listeners: accept TCP connections (TLS when configured) and drive HTTP/1.1
//! and HTTP/2 on them with hyper, until shutdown.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::ListenerConfig;
use crate::forward::ConnInfo;
use crate::state::State;
use crate::tls::PeerIdentity;

/// A client that opens a connection and never finishes the handshake holds a socket;
/// this bounds how long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound listener, ready to serve.
pub struct Listener {
    pub name: Arc<str>,
    pub socket: TcpListener,
    trust_forwarded: bool,
    tls: bool,
    forward_client_cert: bool,
    alt_svc: Option<HeaderValue>,
}

type Http = Arc<auto::Builder<TokioExecutor>>;

impl Listener {
    pub async fn bind(config: &ListenerConfig) -> anyhow::Result<Listener> {
        let (name, addr) = (&config.name, config.address);
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("listener {name:?} cannot bind {addr}: {e}"))?;
        let alt_svc = config
            .http3
            .then(|| HeaderValue::try_from(format!("h3=\":{}\"; ma=86400", addr.port())))
            .transpose()?;
        Ok(Listener {
            name: name.as_str().into(),
            socket,
            trust_forwarded: config.trust_forwarded,
            tls: config.tls.is_some(),
            forward_client_cert: config.forward_client_cert,
            alt_svc,
        })
    }

    /// Accepts until `shutdown` fires; then each connection finishes its in-flight
    /// requests and closes. Every connection task holds a clone of `drained`, so the
    /// caller knows all are done when the channel closes.
    pub async fn serve(self, state: Arc<State>, mut shutdown: watch::Receiver<bool>, drained: mpsc::Sender<()>) {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1().timer(TokioTimer::new()).keep_alive(true);
        http.http2().timer(TokioTimer::new());
        let http: Http = Arc::new(http);
        let this = Arc::new(self);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = this.socket.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = %this.name, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let (this, state, http, shutdown, drained) = (
                this.clone(),
                state.clone(),
                http.clone(),
                shutdown.clone(),
                drained.clone(),
            );
            tokio::spawn(async move {
                let conn = ConnInfo::new(
                    peer,
                    this.name.clone(),
                    if this.tls { "https" } else { "http" },
                    this.trust_forwarded,
                )
                .with_alt_svc(this.alt_svc.clone());
                if !this.tls {
                    return serve_connection(stream, conn, state, http, shutdown, drained).await;
                }
                // Each handshake uses the TLS config of the version serving now, so a
                // reloaded certificate applies to new connections without dropping old ones.
                let Some(config) = state.current().tls.get(&*this.name).cloned() else {
                    return;
                };
                let stream = match tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    tokio_rustls::TlsAcceptor::from(config).accept(stream),
                )
                .await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        return tracing::info!(listener = %this.name, %peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => return tracing::info!(listener = %this.name, %peer, "TLS handshake timed out"),
                };
                let identity = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(PeerIdentity::from_der);
                let conn = conn.with_peer(identity.as_ref(), this.forward_client_cert);
                serve_connection(stream, conn, state, http, shutdown, drained).await
            });
        }
        tracing::info!(listener = %this.name, "stopped accepting");
    }
}

async fn serve_connection<I>(
    io: I,
    conn: ConnInfo,
    state: Arc<State>,
    http: Http,
    mut shutdown: watch::Receiver<bool>,
    drained: mpsc::Sender<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let conn = Arc::new(conn);
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        crate::proxy::handle(state.clone(), conn.clone(), req.map(crate::body::Body::from))
    });
    let connection = http.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.changed() => {
            // Finish what is in flight, accept no new request on this connection.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
    drop(drained);
}
