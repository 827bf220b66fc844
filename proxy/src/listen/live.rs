//! The listeners serving now, and how a reload adds and drops them (a TOML reload and an
//! xDS update alike). A listener the new config adds is bound before the new version is
//! swapped in, so that an address in use rejects the reload with nothing changed; it
//! serves once the version that routes for it is current. A listener the new config drops
//! stops accepting at once (its sockets close: new connections are refused) and its open
//! connections finish their in-flight requests, then close, within the drain timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::{mpsc, watch};

use super::transparent::OwnPorts;
use super::{Gate, Listener};
use crate::config::ListenerConfig;
use crate::ready::{Bound, BoundListener, ReadyFile};
use crate::state::{Commit, Listeners, State};

/// Where listeners are served: the one work-stealing runtime, or every per-core worker's
/// runtime (each with a socket of its own on the listener's port).
pub enum Runtimes {
    Shared(Handle),
    PerCore(Vec<Handle>),
}

/// How long a reload waits for a dropped listener's accept loops to close its sockets.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

pub struct Live {
    runtimes: Runtimes,
    drain: Duration,
    own_ports: Arc<OwnPorts>,
    admin_port: Option<u16>,
    state: Weak<State>,
    inner: Mutex<Inner>,
}

struct Inner {
    running: HashMap<String, Running>,
    /// The ready file and what it says, rewritten as listeners come and go.
    ready: Option<(std::path::PathBuf, Bound)>,
    /// Held weakly so the process's drain does not wait on it; gone once shutdown began.
    drained: Option<mpsc::WeakSender<()>>,
}

struct Running {
    bound: SocketAddr,
    /// Dropping it (or sending `true`) stops the listener and drains its connections.
    stop: watch::Sender<bool>,
    /// Closed once every socket of the listener is (its accept loops have ended).
    closed: mpsc::Receiver<()>,
}

/// What each socket of one listener is served with: the listener's stop signal, and a
/// sender held until its accept loop ends (so a reload knows when its sockets are closed).
#[derive(Clone)]
pub struct Serving {
    stop: watch::Receiver<bool>,
    open: mpsc::Sender<()>,
}

impl Serving {
    pub fn serve(
        &self,
        socket: Listener,
        state: Arc<State>,
        gate: Arc<Gate>,
        drained: mpsc::Sender<()>,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (stop, open) = (self.stop.clone(), self.open.clone());
        async move {
            socket.serve(state, gate, stop, drained).await;
            drop(open);
        }
    }
}

/// Listeners bound for a reload that has not been swapped in yet; dropping it closes them.
struct Staged {
    added: Vec<(ListenerConfig, Vec<Listener>)>,
    removed: Vec<String>,
}

impl Listeners for Live {
    fn stage(
        self: Arc<Self>,
        added: Vec<&ListenerConfig>,
        removed: Vec<String>,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Commit, String> {
        let staged = self.bind_added(added, removed, metrics)?;
        Ok(Box::pin(async move { self.commit(staged).await }))
    }
}

impl Live {
    pub fn new(
        runtimes: Runtimes,
        drain: Duration,
        own_ports: Arc<OwnPorts>,
        admin_port: Option<u16>,
        state: &Arc<State>,
        drained: &mpsc::Sender<()>,
    ) -> Live {
        Live {
            runtimes,
            drain,
            own_ports,
            admin_port,
            state: Arc::downgrade(state),
            inner: Mutex::new(Inner {
                running: HashMap::new(),
                ready: None,
                drained: Some(drained.downgrade()),
            }),
        }
    }

    /// The per-core workers' runtimes, once they run.
    pub fn set_runtimes(&mut self, runtimes: Runtimes) {
        self.runtimes = runtimes;
    }

    /// Takes a listener bound at start: each of its sockets is served with [`Serving::serve`].
    pub fn started(&self, name: &str, bound: SocketAddr) -> Serving {
        let (stop, rx) = watch::channel(false);
        let (open, closed) = mpsc::channel::<()>(1);
        let running = Running { bound, stop, closed };
        self.lock().running.insert(name.to_owned(), running);
        Serving { stop: rx, open }
    }

    /// Binds `added` (on every worker); an address that cannot be bound is the error, naming
    /// the listener, the address and the OS's reason, and nothing is kept. An added listener
    /// may not share the port of a running one at an overlapping address: a dropped one
    /// holds it while it drains, and beside a kept one both would bind (per-core workers'
    /// `SO_REUSEPORT`) and the kernel would split the connections between them.
    fn bind_added(
        &self,
        added: Vec<&ListenerConfig>,
        removed: Vec<String>,
        metrics: &crate::metrics::Metrics,
    ) -> Result<Staged, String> {
        {
            let inner = self.lock();
            if inner.drained.is_none() {
                return Err("shutting down: no listener is bound".into());
            }
            for l in &added {
                let Some((name, r)) = inner.running.iter().find(|(_, r)| overlaps(r.bound, l.address)) else {
                    continue;
                };
                return Err(if removed.contains(name) {
                    format!(
                        "listener {:?} would take {} from listener {name:?} on {}, which holds it while it drains: \
                         changing listeners needs a restart when the address stays (a listener on another address \
                         is bound at once)",
                        l.name, l.address, r.bound
                    )
                } else {
                    format!(
                        "listener {:?} on {} overlaps listener {name:?} on {}",
                        l.name, l.address, r.bound
                    )
                });
            }
        }
        let workers = match &self.runtimes {
            Runtimes::Shared(_) => 1,
            Runtimes::PerCore(handles) => handles.len(),
        };
        let mut staged = Staged {
            added: Vec::new(),
            removed,
        };
        for l in added {
            let first = Listener::bind(l, metrics, workers > 1, self.drain).map_err(|e| format!("{e:#}"))?;
            let mut sockets = Vec::with_capacity(workers);
            for _ in 1..workers {
                sockets.push(first.another().map_err(|e| format!("{e:#}"))?);
            }
            sockets.insert(0, first);
            staged.added.push((l.clone(), sockets));
        }
        Ok(staged)
    }

    /// Once the version that routes for them is current: the added listeners serve, the
    /// removed ones stop accepting and drain. Returns once the removed listeners' sockets
    /// are closed, so that when a reload is reported done, their addresses refuse
    /// connections.
    async fn commit(&self, staged: Staged) {
        let Some(state) = self.state.upgrade() else { return };
        let mut closing = Vec::new();
        let mut added = Vec::with_capacity(staged.added.len());
        {
            let mut inner = self.lock();
            for name in &staged.removed {
                if let Some(r) = inner.running.remove(name) {
                    let _ = r.stop.send(true);
                    tracing::info!(listener = %name, address = %r.bound, drain_timeout = ?self.drain, "listener removed: stopped accepting, draining its connections");
                    closing.push(r.closed);
                }
            }
            let Some(drained) = inner.drained.as_ref().and_then(mpsc::WeakSender::upgrade) else {
                return;
            };
            for (config, sockets) in staged.added {
                let Some(bound) = sockets.first().and_then(|s| s.socket.local_addr().ok()) else {
                    continue;
                };
                let (stop, rx) = watch::channel(false);
                let (open, closed) = mpsc::channel::<()>(1);
                let running = Running { bound, stop, closed };
                inner.running.insert(config.name.clone(), running);
                added.push((config, bound, sockets, Serving { stop: rx, open }));
            }
            self.own_ports.store(Arc::new(own_ports(&inner, self.admin_port)));
            rewrite_ready_file(&mut inner);
            for (config, bound, sockets, serving) in added {
                let gate = Gate::new(
                    &config.name,
                    config.limits.max_connections,
                    config.limits.max_connections_per_client,
                    state.metrics.clone(),
                );
                tracing::info!(listener = %config.name, address = %bound, "listener added: listening");
                for (i, socket) in sockets.into_iter().enumerate() {
                    socket.set_own_ports(&self.own_ports);
                    let serve = serving.serve(socket, state.clone(), gate.clone(), drained.clone());
                    match &self.runtimes {
                        Runtimes::Shared(handle) => drop(handle.spawn(serve)),
                        Runtimes::PerCore(handles) => drop(handles[i].spawn(serve)),
                    }
                }
            }
        }
        for mut closed in closing {
            // Every sender is gone once its accept loop ended; a worker that never gets to
            // it does not hold the reload up.
            let _ = tokio::time::timeout(CLOSE_WAIT, closed.recv()).await;
        }
    }

    /// The ready file was written with `bound`: it is kept up to date from now on.
    pub fn ready_file(&self, path: &std::path::Path, bound: Bound) {
        self.lock().ready = Some((path.to_owned(), bound));
    }

    /// Every listener stops accepting and drains (the process is shutting down).
    pub fn stop_all(&self) {
        let mut inner = self.lock();
        inner.drained = None;
        inner.ready = None;
        for r in inner.running.values() {
            let _ = r.stop.send(true);
        }
    }

    /// The ports the process listens on now.
    pub fn ports(&self) -> Box<[u16]> {
        own_ports(&self.lock(), self.admin_port)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The ready file names the listeners serving now (a dropped one's entry goes, an added
/// one's comes, by name); a failure to write it is logged, never fatal.
fn rewrite_ready_file(inner: &mut Inner) {
    let Inner { running, ready, .. } = inner;
    let Some((path, bound)) = ready else { return };
    bound
        .listeners
        .retain(|l| running.get(&l.name).is_some_and(|r| r.bound == l.address));
    let mut added: Vec<BoundListener> = running
        .iter()
        .filter(|(name, _)| !bound.listeners.iter().any(|l| l.name == **name))
        .map(|(name, r)| BoundListener {
            name: name.clone(),
            address: r.bound,
            http3: None,
        })
        .collect();
    added.sort_by(|a, b| a.name.cmp(&b.name));
    bound.listeners.extend(added);
    if let Err(e) = ReadyFile::rewrite(path, bound) {
        tracing::warn!(error = %e, "cannot rewrite the ready file");
    }
}

fn own_ports(inner: &Inner, admin: Option<u16>) -> Box<[u16]> {
    inner.running.values().map(|r| r.bound.port()).chain(admin).collect()
}

/// Two listening addresses that would take the same connections: one family and port (not
/// 0), and one address or a wildcard. (`[::]` beside `0.0.0.0` is how a listener serves
/// both families: the kernel refuses the pair if the IPv6 socket is dual-stack.)
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
        && a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::overlaps;

    #[test]
    fn listening_addresses_overlap_on_one_port_at_one_address_or_a_wildcard() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().expect("addr");
        assert!(overlaps(addr("127.0.0.1:80"), addr("127.0.0.1:80")));
        assert!(overlaps(addr("0.0.0.0:80"), addr("10.0.0.1:80")));
        assert!(overlaps(addr("[::]:80"), addr("[fd00::1]:80")));
        assert!(
            !overlaps(addr("[::]:15001"), addr("0.0.0.0:15001")),
            "one listener per family"
        );
        assert!(!overlaps(addr("127.0.0.1:80"), addr("127.0.0.2:80")));
        assert!(!overlaps(addr("0.0.0.0:80"), addr("0.0.0.0:81")));
        assert!(
            !overlaps(addr("127.0.0.1:8080"), addr("127.0.0.1:0")),
            "the kernel picks another port"
        );
    }
}
