//! The one accept loop of the process (TCP listeners, QUIC endpoints, the admin
//! listener): caps on open connections per listener and per client address, checked at
//! accept; exponential back-off when accepting fails (out of file descriptors) instead of
//! spinning; stops at shutdown so the caller can drain.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Something that hands out connections.
pub trait Acceptor: Send + Sync + 'static {
    type Conn: Send + 'static;
    /// The next connection and its peer; `Ok(None)` when the acceptor is closed for good.
    fn accept(&self) -> impl Future<Output = io::Result<Option<(Self::Conn, SocketAddr)>>> + Send;
    /// Turns a connection away (over a cap). Dropping it closes it.
    fn refuse(conn: Self::Conn) {
        drop(conn);
    }
}

impl Acceptor for tokio::net::TcpListener {
    type Conn = tokio::net::TcpStream;
    async fn accept(&self) -> io::Result<Option<(Self::Conn, SocketAddr)>> {
        tokio::net::TcpListener::accept(self).await.map(Some)
    }
}

impl Acceptor for quinn::Endpoint {
    type Conn = quinn::Incoming;
    async fn accept(&self) -> io::Result<Option<(Self::Conn, SocketAddr)>> {
        Ok(quinn::Endpoint::accept(self).await.map(|incoming| {
            let peer = incoming.remote_address();
            (incoming, peer)
        }))
    }
    fn refuse(conn: Self::Conn) {
        // A CONNECTION_REFUSED close, rather than silence the client would retry into.
        conn.refuse();
    }
}

/// The connection caps of one listener, shared by its TCP and QUIC sides.
pub struct Gate {
    listener: Arc<str>,
    open: AtomicUsize,
    max: usize,
    per_client: DashMap<IpAddr, usize>,
    max_per_client: usize,
    metrics: Arc<Metrics>,
    /// `weft_connections_open{listener}`, resolved once.
    open_gauge: prometheus_client::metrics::gauge::Gauge,
}

/// An admitted connection's place under the caps; given back when dropped.
pub struct Pass {
    gate: Arc<Gate>,
    client: IpAddr,
}

impl Gate {
    pub fn new(listener: &str, max: usize, max_per_client: usize, metrics: Arc<Metrics>) -> Arc<Gate> {
        Arc::new(Gate {
            listener: listener.into(),
            open: AtomicUsize::new(0),
            max,
            per_client: DashMap::new(),
            max_per_client,
            open_gauge: metrics.connections_open(listener),
            metrics,
        })
    }

    fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Pass, &'static str> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err("max_connections");
        }
        // The entry holds its shard's lock only for this increment; accept is not the
        // request path.
        let mut count = self.per_client.entry(client).or_insert(0);
        if *count >= self.max_per_client {
            drop(count);
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err("max_connections_per_client");
        }
        *count += 1;
        drop(count);
        self.open_gauge.inc();
        Ok(Pass {
            gate: self.clone(),
            client,
        })
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        let gate = &self.gate;
        gate.per_client.remove_if_mut(&self.client, |_, count| {
            *count -= 1;
            *count == 0
        });
        gate.open.fetch_sub(1, Ordering::AcqRel);
        gate.open_gauge.dec();
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Accepts until `shutdown` fires or the acceptor closes, handing each admitted
/// connection to `serve` (which spawns its task) with its [`Pass`].
pub async fn accept_loop<A, F>(acceptor: A, gate: Arc<Gate>, mut shutdown: watch::Receiver<bool>, mut serve: F)
where
    A: Acceptor,
    F: FnMut(A::Conn, SocketAddr, Pass),
{
    let mut backoff = MIN_BACKOFF;
    loop {
        let accepted = tokio::select! {
            accepted = acceptor.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        match accepted {
            Ok(Some((conn, peer))) => {
                backoff = MIN_BACKOFF;
                match gate.admit(peer.ip()) {
                    Ok(pass) => serve(conn, peer, pass),
                    Err(limit) => {
                        gate.metrics.connection_rejected(&gate.listener, limit);
                        tracing::debug!(listener = %gate.listener, %peer, limit, "connection refused at accept");
                        A::refuse(conn);
                    }
                }
            }
            Ok(None) => break,
            Err(e) => {
                // Out of file descriptors and the like: wait for some to be freed rather
                // than spin on the error.
                tracing::warn!(listener = %gate.listener, error = %e, retry_in = ?backoff, "accept failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    tracing::info!(listener = %gate.listener, "stopped accepting");
}
