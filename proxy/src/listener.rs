//! Downstream listeners: accept TCP connections and drive HTTP/1.1 and HTTP/2 (prior
//! knowledge, h2c) on them with hyper, until shutdown.

use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::forward::ConnInfo;
use crate::state::State;

/// A bound listener, ready to serve.
pub struct Listener {
    pub name: Arc<str>,
    pub socket: TcpListener,
    pub trust_forwarded: bool,
}

impl Listener {
    pub async fn bind(name: &str, addr: std::net::SocketAddr, trust_forwarded: bool) -> anyhow::Result<Listener> {
        let socket = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("listener {name:?} cannot bind {addr}: {e}"))?;
        Ok(Listener {
            name: name.into(),
            socket,
            trust_forwarded,
        })
    }

    /// Accepts until `shutdown` fires; then each connection finishes its in-flight
    /// requests and closes. Every connection task holds a clone of `drained`, so the
    /// caller knows all are done when the channel closes.
    pub async fn serve(self, state: Arc<State>, mut shutdown: watch::Receiver<bool>, drained: mpsc::Sender<()>) {
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1().timer(TokioTimer::new()).keep_alive(true);
        http.http2().timer(TokioTimer::new());
        let http = Arc::new(http);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = self.socket.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = %self.name, error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let conn = Arc::new(ConnInfo::new(peer, self.name.clone(), "http", self.trust_forwarded));
            let state = state.clone();
            let service = service_fn(move |req| crate::proxy::handle(state.clone(), conn.clone(), req));
            let http = http.clone();
            let mut shutdown = shutdown.clone();
            let drained = drained.clone();
            tokio::spawn(async move {
                let connection = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
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
            });
        }
        tracing::info!(listener = %self.name, "stopped accepting");
    }
}
