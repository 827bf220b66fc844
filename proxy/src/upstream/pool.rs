//! Connections to one endpoint, reused: a lock-free queue of idle HTTP/1.1 connections,
//! or one shared HTTP/2 connection. Built on hyper's connection-level client
//! (`hyper::client::conn`), so a request costs a queue pop and push rather than the
//! generic pool of hyper-util's legacy client (keyed maps, a channel, boxed futures:
//! ~8.5k instructions per request by callgrind).
//!
//! An HTTP/1.1 connection goes back to the queue when its response body has been read to
//! the end; a connection whose response was abandoned half-read is closed, never reused.
//! A request on a reused connection that the upstream had closed meanwhile (the race every
//! keep-alive pool has) is retried on another connection when hyper hands the request back
//! unsent; an idempotent request without a body that may have gone out is sent again on a
//! new connection, and that send is one of the cluster's tries ([`Replays`]).
//!
//! A connection is lent only when both directions are done: an upstream may answer before
//! it has read the whole request body (nginx and Node do for a 401, 404 or 413) and keep
//! reading it. Such a connection goes back to the pool when its upload ends, or never.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use crossbeam_queue::ArrayQueue;
use http::{Request, Response};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::body::{Body, Checkin, PooledBody};
use crate::worker::PerWorker;

/// How to open a connection to an endpoint of a cluster.
pub(crate) struct Connector {
    pub connect_timeout: Duration,
    pub http2: bool,
    /// TLS client config and the name to verify (SNI), when the cluster uses TLS.
    pub tls: Option<(tokio_rustls::TlsConnector, Option<ServerName<'static>>)>,
    /// The cluster's connection limits, when its circuit breaker sets any.
    pub limits: Option<Arc<ConnLimits>>,
    /// Idle connections kept per endpoint, and for how long.
    pub max_idle: usize,
    pub idle_timeout: Duration,
    /// `SO_MARK` on each socket, so a sidecar's interception rules let it out.
    pub mark: Option<u32>,
}

/// Connections open and being opened to a cluster, against its breaker's limits.
#[derive(Default)]
pub(crate) struct ConnLimits {
    pub max_connections: Option<u32>,
    pub max_pending: Option<u32>,
    open: AtomicU32,
    pending: AtomicU32,
}

impl ConnLimits {
    pub fn new(max_connections: Option<u32>, max_pending: Option<u32>) -> Self {
        ConnLimits {
            max_connections,
            max_pending,
            ..ConnLimits::default()
        }
    }

    /// A place among the connections being opened, or the limit that refuses it.
    fn start_connect(self: &Arc<Self>) -> Result<(Counted, Counted), PoolError> {
        let pending = Counted::take(self, |l| &l.pending, self.max_pending)
            .ok_or(PoolError::Overloaded("max_pending_requests"))?;
        let open =
            Counted::take(self, |l| &l.open, self.max_connections).ok_or(PoolError::Overloaded("max_connections"))?;
        Ok((pending, open))
    }
}

/// One unit of a `ConnLimits` count, given back when dropped.
pub(crate) struct Counted {
    limits: Arc<ConnLimits>,
    which: fn(&ConnLimits) -> &AtomicU32,
}

impl Counted {
    fn take(limits: &Arc<ConnLimits>, which: fn(&ConnLimits) -> &AtomicU32, max: Option<u32>) -> Option<Counted> {
        let now = which(limits).fetch_add(1, Ordering::AcqRel) + 1;
        let counted = Counted {
            limits: limits.clone(),
            which,
        };
        // Over the limit: dropping `counted` gives the unit back.
        max.is_none_or(|max| now <= max).then_some(counted)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        (self.which)(&self.limits).fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a connection could not be had or used.
#[derive(Debug)]
pub(crate) enum PoolError {
    /// Connecting, TLS or the HTTP handshake failed: the request was not sent.
    Connect(String),
    /// The exchange failed.
    Exchange(hyper::Error),
    /// The cluster's circuit breaker refused a new connection; names the limit.
    Overloaded(&'static str),
}

/// The pool's own sends of a request again, after a reused connection failed under it.
pub(crate) struct Replays {
    /// How many more it may make: each is a try the cluster counts.
    pub left: u32,
    /// How many it made.
    pub used: u32,
    /// The request's try number, when the cluster numbers its tries (`x-weft-attempt`).
    pub numbered: Option<u32>,
}

impl Replays {
    /// Up to `left` sends again, counted and, with `numbered`, renumbered.
    pub fn new(left: u32, numbered: Option<u32>) -> Replays {
        Replays {
            left,
            used: 0,
            numbered,
        }
    }
}

/// An idle HTTP/1.1 connection and when it became idle.
struct Idle {
    sender: http1::SendRequest<Body>,
    since: Instant,
}

/// The connections of one endpoint.
pub(crate) struct EndpointPool {
    addr: SocketAddr,
    /// Per worker (`worker.rs`): a connection's driver task runs on the worker that
    /// opened it, so only that worker's requests use it (another's would wake it for
    /// every exchange). `max_idle` applies to each worker's queue, as nginx's
    /// `keepalive` does to each of its worker processes.
    idle: PerWorker<ArrayQueue<Idle>>,
    idle_timeout: Duration,
    /// Each worker's HTTP/2 connection, for the same reason.
    http2: PerWorker<ArcSwapOption<http2::SendRequest<Body>>>,
    /// One HTTP/2 connect at a time per worker: a burst after the connection dropped
    /// waits for one new connection instead of opening one each. Never taken while a
    /// connection is up.
    connecting: PerWorker<tokio::sync::Mutex<()>>,
}

impl EndpointPool {
    pub fn new(addr: SocketAddr, max_idle: usize, idle_timeout: Duration) -> Arc<EndpointPool> {
        Arc::new(EndpointPool {
            addr,
            idle: PerWorker::new(|| ArrayQueue::new(max_idle.max(1))),
            idle_timeout,
            http2: PerWorker::new(ArcSwapOption::empty),
            connecting: PerWorker::new(|| tokio::sync::Mutex::new(())),
        })
    }

    /// Sends `req` on a pooled or new connection; sends it again on a new connection, as
    /// `replays` allows, when a reused connection failed under it.
    pub async fn send(
        self: &Arc<Self>,
        connector: &Connector,
        req: Request<Body>,
        replays: &mut Replays,
    ) -> Result<Response<PooledBody>, PoolError> {
        if connector.http2 {
            let mut sender = self.http2_sender(connector).await?;
            sender.ready().await.map_err(PoolError::Exchange)?;
            let resp = sender.send_request(req).await.map_err(PoolError::Exchange)?;
            return Ok(resp.map(PooledBody::unpooled));
        }
        let mut req = req;
        let mut replayed = false;
        loop {
            // A replay goes on a new connection: another idle one may be as stale.
            let idle = if replayed { None } else { self.checkout() };
            let (mut sender, reused) = match idle {
                Some(sender) => (sender, true),
                // Boxed: connecting (TCP, TLS, handshake) is the cold path and its state
                // is large; unboxed, every request's future — and the per-connection
                // buffer hyper keeps for it — would carry it.
                None => match Box::pin(self.connect_http1(connector)).await {
                    Ok(sender) => (sender, false),
                    // The breaker's limit is held by connections idle on other workers:
                    // borrow one (its driver's worker is woken for this exchange) rather
                    // than refuse a request the limit allows.
                    Err(PoolError::Overloaded(limit)) => match self.checkout_elsewhere() {
                        Some(sender) => (sender, true),
                        None => return Err(PoolError::Overloaded(limit)),
                    },
                    Err(e) => return Err(e),
                },
            };
            if sender.ready().await.is_err() {
                if reused {
                    continue;
                }
                return Err(PoolError::Connect(
                    "the connection closed before the first request".into(),
                ));
            }
            // The upstream may close an idle connection just as a request goes out on it
            // (its keep-alive timeout): a request that can be sent again harmlessly —
            // idempotent, no body — is, once, on a new connection (RFC 9110 §9.2.2). It
            // may have reached the upstream, so it is a try like any other.
            let replay = (reused && !replayed && replays.left > 0 && replayable(&req)).then(|| copy_head(&req));
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    let pool: Arc<dyn Checkin> = self.clone();
                    return Ok(resp.map(|body| PooledBody::returning(body, pool, sender)));
                }
                Err(mut e) => match (e.take_message(), replay) {
                    // Not sent: the reused connection was closed under us. Try another.
                    (Some(unsent), _) if reused => req = unsent,
                    (None, Some(mut copy)) => {
                        tracing::debug!(endpoint = %self.addr, error = %e.error(), "reused connection failed; sending again");
                        replayed = true;
                        replays.left -= 1;
                        replays.used += 1;
                        if let Some(n) = replays.numbered {
                            super::retry::number(copy.headers_mut(), n + replays.used);
                        }
                        req = copy;
                    }
                    _ => return Err(PoolError::Exchange(e.into_error())),
                },
            }
        }
    }

    /// An idle connection of this worker's, young enough, still open and free, if any.
    fn checkout(self: &Arc<Self>) -> Option<http1::SendRequest<Body>> {
        self.checkout_from(self.idle.get())
    }

    /// An idle connection of any worker's (when this one may open no more).
    fn checkout_elsewhere(self: &Arc<Self>) -> Option<http1::SendRequest<Body>> {
        self.idle.iter().find_map(|queue| self.checkout_from(queue))
    }

    fn checkout_from(self: &Arc<Self>, queue: &ArrayQueue<Idle>) -> Option<http1::SendRequest<Body>> {
        while let Some(idle) = queue.pop() {
            if idle.sender.is_closed() || idle.since.elapsed() >= self.idle_timeout {
                continue;
            }
            if !idle.sender.is_ready() {
                // Its response is read but hyper is still writing its request body, to an
                // upstream that answered early: lent now, the next request would wait for
                // that upload. It comes back when the upload is done (or never, closed).
                let (pool, mut sender) = (self.clone(), idle.sender);
                tokio::spawn(async move {
                    if sender.ready().await.is_ok() {
                        pool.checkin(sender);
                    }
                });
                continue;
            }
            return Some(idle.sender);
        }
        None
    }

    async fn http2_sender(&self, connector: &Connector) -> Result<http2::SendRequest<Body>, PoolError> {
        if let Some(sender) = self.http2.get().load().as_deref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        // Boxed for the same reason as the HTTP/1.1 connect.
        Box::pin(self.connect_http2(connector)).await
    }

    async fn connect_http2(&self, connector: &Connector) -> Result<http2::SendRequest<Body>, PoolError> {
        let _one = self.connecting.get().lock().await;
        // Someone else may have connected while we waited.
        if let Some(sender) = self.http2.get().load().as_deref()
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        let (_pending, open) = match &connector.limits {
            Some(limits) => match limits.start_connect() {
                Ok((pending, open)) => (Some(pending), Some(open)),
                // As for HTTP/1.1: another worker's connection, rather than a refusal.
                Err(refused) => {
                    let other = self
                        .http2
                        .iter()
                        .find_map(|slot| slot.load().as_deref().filter(|sender| !sender.is_closed()).cloned());
                    return other.ok_or(refused);
                }
            },
            None => (None, None),
        };
        let sender = match self.open(connector).await? {
            Io::Plain(tcp) => handshake_http2(tcp, open).await?,
            Io::Tls(tls) => handshake_http2(*tls, open).await?,
        };
        self.http2.get().store(Some(Arc::new(sender.clone())));
        Ok(sender)
    }

    async fn connect_http1(&self, connector: &Connector) -> Result<http1::SendRequest<Body>, PoolError> {
        let (_pending, open) = match &connector.limits {
            Some(limits) => limits.start_connect().map(|(p, o)| (Some(p), Some(o)))?,
            None => (None, None),
        };
        match self.open(connector).await? {
            Io::Plain(tcp) => handshake_http1(tcp, open).await,
            Io::Tls(tls) => handshake_http1(*tls, open).await,
        }
    }

    /// One health probe: `GET path` on a connection of its own (never a pooled one, which
    /// would hide a listener that stopped accepting), answered within `timeout`.
    pub async fn probe(
        &self,
        connector: &Connector,
        path: &http::uri::PathAndQuery,
        host: &http::HeaderValue,
        timeout: Duration,
    ) -> Result<http::StatusCode, String> {
        let exchange = async {
            let io = self.open(connector).await.map_err(|e| format!("{e:?}"))?;
            let mut req = Request::get(path.clone())
                .body(Body::empty())
                .map_err(|e| e.to_string())?;
            req.headers_mut().insert(http::header::HOST, host.clone());
            req.headers_mut().insert(
                http::header::USER_AGENT,
                http::HeaderValue::from_static("weft-health-check"),
            );
            let status = if connector.http2 {
                let mut sender = match io {
                    Io::Plain(tcp) => handshake_http2(tcp, None).await,
                    Io::Tls(tls) => handshake_http2(*tls, None).await,
                }
                .map_err(|e| format!("{e:?}"))?;
                // The host travels as :authority; no Host beside it (RFC 9113 §8.3.1).
                req.headers_mut().remove(http::header::HOST);
                *req.uri_mut() = format!(
                    "{}://{}{}",
                    if connector.tls.is_some() { "https" } else { "http" },
                    self.addr,
                    path
                )
                .parse()
                .map_err(|e: http::uri::InvalidUri| e.to_string())?;
                sender.send_request(req).await.map_err(|e| e.to_string())?.status()
            } else {
                let mut sender = match io {
                    Io::Plain(tcp) => handshake_http1(tcp, None).await,
                    Io::Tls(tls) => handshake_http1(*tls, None).await,
                }
                .map_err(|e| format!("{e:?}"))?;
                req.headers_mut()
                    .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                sender.send_request(req).await.map_err(|e| e.to_string())?.status()
            };
            Ok(status)
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
    }

    async fn open(&self, connector: &Connector) -> Result<Io, PoolError> {
        let connect = async {
            let tcp = connect_marked(self.addr, connector.mark)
                .await
                .map_err(|e| PoolError::Connect(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            match &connector.tls {
                None => Ok(Io::Plain(tcp)),
                Some((tls, name)) => {
                    let name = name
                        .clone()
                        .unwrap_or_else(|| ServerName::IpAddress(self.addr.ip().into()));
                    let stream = tls
                        .connect(name, tcp)
                        .await
                        .map_err(|e| PoolError::Connect(format!("TLS: {e}")))?;
                    Ok(Io::Tls(Box::new(stream)))
                }
            }
        };
        tokio::time::timeout(connector.connect_timeout, connect)
            .await
            .map_err(|_| PoolError::Connect(format!("no connection within {:?}", connector.connect_timeout)))?
    }
}

/// A TCP connection to `addr`, its packets carrying `mark` (`SO_MARK`, which needs
/// CAP_NET_ADMIN) when one is given.
pub async fn connect_marked(addr: SocketAddr, mark: Option<u32>) -> std::io::Result<TcpStream> {
    let Some(mark) = mark else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket2::SockRef::from(&socket)
        .set_mark(mark)
        .map_err(|e| std::io::Error::new(e.kind(), format!("SO_MARK {mark}: {e}")))?;
    socket.connect(addr).await
}

impl Checkin for EndpointPool {
    fn checkin(&self, sender: http1::SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        // A full queue drops the surplus connection: bursts do not pin sockets forever.
        let _ = self.idle.get().push(Idle {
            sender,
            since: Instant::now(),
        });
    }
}

enum Io {
    Plain(TcpStream),
    // Boxed: a TLS stream is ten times the size of a TCP one.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn handshake_http1<I>(io: I, open: Option<Counted>) -> Result<http1::SendRequest<Body>, PoolError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| PoolError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        // Counted against the cluster's max_connections while the connection lives.
        let _open = open;
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

async fn handshake_http2<I>(io: I, open: Option<Counted>) -> Result<http2::SendRequest<Body>, PoolError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| PoolError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        let _open = open;
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(sender)
}

/// Whether a request may be sent twice: an idempotent method and no body.
fn replayable(req: &Request<Body>) -> bool {
    use http_body::Body as _;
    req.method().is_idempotent() && req.body().is_end_stream()
}

/// The request again, for a replay (its body is empty).
fn copy_head(req: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}
