//! TCP listeners: accept connections (TLS when configured) and drive HTTP/1.1 and HTTP/2
//! on them with hyper, under the listener's limits and timeouts, until shutdown.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::accept::{Gate, Pass, accept_loop};
use super::rest::{Protocol, ReadReady, Rewind, sniff};
use super::watchdog::{Activity, Expiry, Watchdog, Watched};
use crate::body::{Body, BodyError, ClientBody, Hold};
use crate::config::{FrontDoor, ListenerConfig, ListenerLimits, ListenerTimeouts, Transparent};
use crate::conn::ConnInfo;
use crate::state::State;
use crate::tls::{self, PeerIdentity};

/// What every connection of one listener shares.
struct Settings {
    name: Arc<str>,
    trust_forwarded: bool,
    tls: bool,
    forward_client_cert: bool,
    alt_svc: Option<HeaderValue>,
    door: Arc<FrontDoor>,
    timeouts: ListenerTimeouts,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    counters: Arc<crate::metrics::ListenerCounters>,
    /// A sidecar listener's interception settings (`transparent`).
    intercept: Option<super::transparent::Intercept>,
    /// How long a connection may take to finish its in-flight requests once the listener
    /// stops (the process's drain, or the listener dropped by a reload); then it is cut.
    drain: std::time::Duration,
}

/// A bound listener, ready to serve. Its socket becomes a tokio one in `serve`, on the
/// runtime (the worker) that serves it.
pub struct Listener {
    pub name: Arc<str>,
    pub socket: std::net::TcpListener,
    settings: Arc<Settings>,
}

/// Pending connections the kernel queues per socket (tokio's default).
const BACKLOG: i32 = 1024;

/// A listening socket on `addr`; with `reuse_port`, others may bind the same address
/// (each per-core worker has its own: the kernel spreads new connections over them).
fn listen(
    addr: std::net::SocketAddr,
    reuse_port: bool,
    transparent: Option<Transparent>,
) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if let Some(mode) = transparent {
        super::transparent::prepare(&socket, addr, mode)?;
    }
    // As tokio's bind: a restarted proxy binds while old connections are in TIME_WAIT.
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

/// hyper's own limits, from the listener's: HTTP/1.1 heads larger than the read buffer
/// or with too many lines get hyper's 431; HTTP/2 gets the same bounds as SETTINGS.
fn http_builders(
    limits: &ListenerLimits,
    timeouts: &ListenerTimeouts,
) -> (http1::Builder, http2::Builder<TokioExecutor>) {
    let mut h1 = http1::Builder::new();
    // The watchdog times header reads: hyper's timer would also close idle keep-alive
    // connections at the header timeout, which is the idle timeout's job.
    h1.timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        .max_buf_size((limits.max_header_bytes + limits.max_uri_bytes + 1024).max(8192));
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(timeouts.keepalive_interval)
        .keep_alive_timeout(timeouts.keepalive_timeout)
        // Rapid reset (CVE-2023-44487): streams the client opens and cancels before we
        // accept them are capped; past the cap the connection gets GOAWAY.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256));
    (h1, h2)
}

impl Listener {
    /// Binds the listener's address; `reuse_port` when more sockets will join it
    /// ([`Listener::another`]).
    pub fn bind(
        config: &ListenerConfig,
        metrics: &crate::metrics::Metrics,
        reuse_port: bool,
        drain: std::time::Duration,
    ) -> anyhow::Result<Listener> {
        let (name, addr) = (&config.name, config.address);
        let socket = listen(addr, reuse_port, config.transparent)
            .map_err(|e| anyhow::anyhow!("listener {name:?} cannot bind {addr}: {e}"))?;
        // The bound port: the configured one may be 0.
        let port = socket.local_addr()?.port();
        let alt_svc = config
            .http3
            .then(|| HeaderValue::try_from(format!("h3=\":{port}\"; ma=86400")))
            .transpose()?;
        let name: Arc<str> = name.as_str().into();
        let (http1, http2) = http_builders(&config.limits, &config.timeouts);
        Ok(Listener {
            name: name.clone(),
            socket,
            settings: Arc::new(Settings {
                name,
                trust_forwarded: config.trust_forwarded,
                tls: config.tls.is_some(),
                forward_client_cert: config.forward_client_cert,
                alt_svc,
                door: Arc::new(FrontDoor::new(config)),
                timeouts: config.timeouts.clone(),
                http1,
                http2,
                counters: Arc::new(metrics.listener(&config.name)),
                intercept: super::transparent::Intercept::new(config),
                drain,
            }),
        })
    }

    /// One more socket on the same address and port (the bound one, when the configured
    /// port was 0), with the same settings: for another per-core worker. The first was
    /// bound with `reuse_port`.
    pub fn another(&self) -> anyhow::Result<Listener> {
        let addr = self.socket.local_addr()?;
        let transparent = self.settings.intercept.as_ref().map(|i| i.mode);
        let socket = listen(addr, true, transparent)
            .map_err(|e| anyhow::anyhow!("listener {:?} cannot bind another socket on {addr}: {e}", self.name))?;
        Ok(Listener {
            name: self.name.clone(),
            socket,
            settings: self.settings.clone(),
        })
    }

    /// Gives a transparent listener the ports the process listens on (before serving; kept
    /// up to date as listeners come and go), so that it refuses connections whose original
    /// destination is the proxy itself.
    pub fn set_own_ports(&self, ports: &Arc<super::transparent::OwnPorts>) {
        if let Some(intercept) = &self.settings.intercept {
            intercept.set_own_ports(ports);
        }
    }

    /// Accepts until `shutdown` fires; then each connection finishes its in-flight
    /// requests and closes. Every connection task holds a clone of `drained`, so the
    /// caller knows all are done when the channel closes.
    pub async fn serve(
        self,
        state: Arc<State>,
        gate: Arc<Gate>,
        shutdown: watch::Receiver<bool>,
        drained: mpsc::Sender<()>,
    ) {
        let settings = self.settings;
        let socket = match TcpListener::from_std(self.socket) {
            Ok(socket) => socket,
            Err(e) => return tracing::error!(listener = %self.name, error = %e, "cannot serve the listener's socket"),
        };
        let stop = shutdown.clone();
        accept_loop(socket, gate, stop, move |stream, peer, pass| {
            let _ = stream.set_nodelay(true);
            let (settings, state, shutdown, drained) =
                (settings.clone(), state.clone(), shutdown.clone(), drained.clone());
            tokio::spawn(connection(stream, peer, pass, settings, state, shutdown, drained));
        })
        .await;
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    pass: Pass,
    settings: Arc<Settings>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
    drained: mpsc::Sender<()>,
) {
    let (stream, tls, original_dst, interception) = match &settings.intercept {
        None => (stream, settings.tls, None, None),
        Some(intercept) => {
            // Boxed: detection and passthrough are this listener kind's path only.
            let intercepted = Box::pin(super::transparent::intercept(
                stream,
                peer,
                &settings.name,
                intercept,
                &state,
            ))
            .await;
            let Some(i) = intercepted else { return };
            (i.stream, i.tls, Some(i.original_dst), Some(i.interception))
        }
    };
    let conn = ConnInfo::new(
        peer,
        settings.name.clone(),
        if tls { "https" } else { "http" },
        settings.trust_forwarded,
        settings.door.clone(),
    )
    .with_alt_svc(settings.alt_svc.clone())
    .with_counters(settings.counters.clone())
    .with_original_dst(original_dst)
    .with_interception(interception);
    if !tls {
        return serve_connection(stream, conn, pass, settings, state, shutdown, drained).await;
    }
    // Boxed: the handshake's state and a TLS stream are large, and every connection's task
    // would be as large as the largest path through it.
    Box::pin(tls_connection(stream, conn, pass, settings, state, shutdown, drained)).await
}

async fn tls_connection(
    stream: tokio::net::TcpStream,
    conn: ConnInfo,
    pass: Pass,
    settings: Arc<Settings>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
    drained: mpsc::Sender<()>,
) {
    let peer = conn.peer;
    // Each handshake uses the TLS config of the version serving now, so a reloaded
    // certificate applies to new connections without dropping old ones.
    let runtime = state.current();
    let Some(config) = runtime.tls.get(&*settings.name).cloned() else {
        return;
    };
    let blocks = runtime.server_blocks.get(&*settings.name).cloned();
    drop(runtime);
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let stream = match tokio::time::timeout(settings.timeouts.handshake, handshake).await {
        Ok(Ok(stream)) => {
            state.metrics.tls_handshake(&settings.name, "ok");
            stream
        }
        Ok(Err(e)) => {
            state.metrics.tls_handshake(&settings.name, "failed");
            return tracing::info!(listener = %settings.name, %peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            state.metrics.tls_handshake(&settings.name, "timeout");
            return tracing::info!(listener = %settings.name, %peer, "TLS handshake timed out");
        }
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(PeerIdentity::from_der);
    let sni = stream.get_ref().1.server_name();
    let (identity, xfcc) = tls::client_facts(identity.as_ref(), settings.forward_client_cert);
    let conn = conn.with_peer(identity, xfcc).with_server_block(blocks, sni);
    serve_connection(stream, conn, pass, settings, state, shutdown, drained).await
}

/// What one turn of an HTTP/1.1 connection came to.
enum Turn {
    Done(Result<(), hyper::Error>),
    /// Nothing in progress: take it apart until the client sends again.
    Rest,
    /// A request asked to switch protocols: hyper must finish it with upgrades on.
    Upgrade,
}

type ConnError = Box<dyn std::error::Error + Send + Sync>;

async fn serve_connection<I>(
    io: I,
    conn: ConnInfo,
    pass: Pass,
    settings: Arc<Settings>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    drained: mpsc::Sender<()>,
) where
    I: AsyncRead + AsyncWrite + ReadReady + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let conn = Arc::new(conn);
    let activity = Arc::new(Activity::default());
    let expired = Watchdog::new(activity.clone(), &settings.timeouts).expired();
    tokio::pin!(expired);
    let metrics = state.metrics.clone();
    let requests = activity.clone();
    let mut service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let in_flight = requests.request(req.version() == http::Version::HTTP_2);
        let upgrade = req.extensions().get::<OnUpgrade>().is_some();
        if upgrade {
            requests.upgrade_requested();
        }
        // Bodies still to come keep the connection from being taken apart under them.
        let receiving = (!req.body().is_end_stream()).then(|| requests.exchange());
        let sending = requests.exchange();
        let (state, conn) = (state.clone(), conn.clone());
        async move {
            if upgrade {
                // Not answered within the poll that read the request: the connection's
                // driver turns upgrades on before hyper could see a 101.
                tokio::task::yield_now().await;
            }
            let req = req.map(|body| {
                Body::from_client(
                    ClientBody::new(body, conn.door.max_body_bytes, conn.door.body_idle),
                    receiving,
                )
            });
            let resp = crate::proxy::handle(state, conn, req).await;
            drop(in_flight);
            resp.map(|resp| resp.map(|body| Answer { body, _open: sending }))
        }
    });
    let closing = |expiry: Expiry| {
        metrics.connection_closed(&settings.name, expiry.label());
        tracing::debug!(listener = %settings.name, %peer, reason = expiry.label(), "closing connection");
    };

    let mut io = Rewind::new(Watched::new(io, activity.clone(), settings.counters.clone()));
    let mut sniffed = false;
    let result: Result<(), ConnError> = loop {
        // At rest: this task and the socket, until the client sends.
        let ready = tokio::select! {
            biased;
            ready = poll_fn(|cx| io.poll_read_ready(cx)) => ready,
            _ = shutdown.changed() => break Ok(()),
            expiry = expired.as_mut() => {
                closing(expiry);
                break Ok(());
            }
        };
        if let Err(e) = ready {
            break Err(e.into());
        }
        if !sniffed {
            sniffed = true;
            let protocol = tokio::select! {
                biased;
                protocol = sniff(&mut io) => protocol,
                _ = shutdown.changed() => break Ok(()),
                expiry = expired.as_mut() => {
                    closing(expiry);
                    break Ok(());
                }
            };
            match protocol {
                Err(e) => break Err(e.into()),
                Ok(Protocol::Http2) => {
                    let http = settings.http2.serve_connection(TokioIo::new(io), service);
                    break Box::pin(run(http, &mut shutdown, settings.drain, expired.as_mut(), &closing)).await;
                }
                Ok(Protocol::Http1) => {}
            }
        }
        // Boxed: built when the client sends, freed when the connection comes to rest.
        activity.built(true);
        let mut http = Box::new(settings.http1.serve_connection(TokioIo::new(io), service));
        // The watchdog first: its tick is what says the connection may come to rest.
        let turn = tokio::select! {
            biased;
            expiry = expired.as_mut() => {
                closing(expiry);
                if expiry == Expiry::Idle {
                    Pin::new(&mut *http).graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut *http).await;
                }
                break Ok(());
            }
            _ = shutdown.changed() => {
                // Finish what is in flight, accept no new request on this connection.
                Pin::new(&mut *http).graceful_shutdown();
                break within(settings.drain, &mut *http).await;
            }
            turn = poll_fn(|cx| match Pin::new(&mut *http).poll(cx) {
                Poll::Ready(result) => Poll::Ready(Turn::Done(result)),
                Poll::Pending if activity.upgrading() => Poll::Ready(Turn::Upgrade),
                Poll::Pending if activity.at_rest() => Poll::Ready(Turn::Rest),
                Poll::Pending => Poll::Pending,
            }) => turn,
        };
        match turn {
            Turn::Done(result) => break result.map_err(Into::into),
            Turn::Upgrade => {
                activity.built(false);
                let http = Box::pin(http.with_upgrades());
                break run(http, &mut shutdown, settings.drain, expired.as_mut(), &closing).await;
            }
            Turn::Rest => {
                activity.built(false);
                let parts = http.into_parts();
                io = parts.io.into_inner();
                io.rewind(parts.read_buf);
                service = parts.service;
            }
        }
    };
    if let Err(e) = result {
        if let Some(err) = e.downcast_ref::<hyper::Error>()
            && err.is_parse_too_large()
        {
            metrics.downstream_refused(&settings.name, "headers_too_large");
        }
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
    drop(pass);
    drop(drained);
}

/// A connection hyper drives to its end (HTTP/2, or HTTP/1.1 after a protocol switch),
/// closed gracefully at shutdown and when its watchdog expires.
async fn run<C>(
    mut http: C,
    shutdown: &mut watch::Receiver<bool>,
    drain: std::time::Duration,
    expired: Pin<&mut impl Future<Output = Expiry>>,
    closing: &impl Fn(Expiry),
) -> Result<(), ConnError>
where
    C: Future<Output = Result<(), hyper::Error>> + Graceful + Unpin,
{
    tokio::select! {
        result = &mut http => result.map_err(Into::into),
        _ = shutdown.changed() => {
            // Finish what is in flight, accept no new request on this connection.
            Pin::new(&mut http).graceful();
            within(drain, http).await
        }
        expiry = expired => {
            closing(expiry);
            if expiry == Expiry::Idle {
                // HTTP/2 says GOAWAY first; a client that does not finish quickly is cut.
                Pin::new(&mut http).graceful();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), &mut http).await;
            }
            Ok(())
        }
    }
}

/// A connection told to shut down gracefully, given `drain` to finish; then it is dropped
/// (closed) with whatever is still in flight.
async fn within(
    drain: std::time::Duration,
    http: impl Future<Output = Result<(), hyper::Error>>,
) -> Result<(), ConnError> {
    match tokio::time::timeout(drain, http).await {
        Ok(result) => result.map_err(Into::into),
        Err(_) => Err("the drain timeout passed with requests in flight".into()),
    }
}

/// hyper's connections, each with its own `graceful_shutdown`.
trait Graceful {
    fn graceful(self: Pin<&mut Self>);
}

impl<C: Graceful + ?Sized> Graceful for Pin<Box<C>> {
    fn graceful(self: Pin<&mut Self>) {
        self.get_mut().as_mut().graceful();
    }
}

impl<I, S, B> Graceful for http2::Connection<I, S, TokioExecutor>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<BodyError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    B: HttpBody + 'static,
    B::Error: Into<BodyError>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = B>,
    S::Error: Into<BodyError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: HttpBody + 'static,
    B::Error: Into<BodyError>,
{
    fn graceful(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

pin_project_lite::pin_project! {
    /// A response on its way to the client; the connection is not at rest before hyper
    /// has taken all of its body and dropped it.
    struct Answer {
        #[pin]
        body: Body,
        _open: Hold,
    }
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
