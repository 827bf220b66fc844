//! TCP listeners: accept connections (TLS when configured) and drive HTTP/1.1 and HTTP/2
//! on them with hyper, under the listener's limits and timeouts, until shutdown.

use std::sync::Arc;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::accept::{Gate, Pass, accept_loop};
use super::watchdog::{Activity, Expiry, Watchdog, Watched};
use crate::config::{ListenerConfig, ListenerLimits, ListenerTimeouts};
use crate::forward::ConnInfo;
use crate::front::FrontDoor;
use crate::state::State;
use crate::tls::PeerIdentity;

/// What every connection of one listener shares.
struct Settings {
    name: Arc<str>,
    trust_forwarded: bool,
    tls: bool,
    forward_client_cert: bool,
    alt_svc: Option<HeaderValue>,
    door: Arc<FrontDoor>,
    timeouts: ListenerTimeouts,
    http: auto::Builder<TokioExecutor>,
}

/// A bound listener, ready to serve.
pub struct Listener {
    pub name: Arc<str>,
    pub socket: TcpListener,
    settings: Arc<Settings>,
}

/// hyper's own limits, from the listener's: HTTP/1.1 heads larger than the read buffer
/// or with too many lines get hyper's 431; HTTP/2 gets the same bounds as SETTINGS.
fn http_builder(limits: &ListenerLimits, timeouts: &ListenerTimeouts) -> auto::Builder<TokioExecutor> {
    let mut http = auto::Builder::new(TokioExecutor::new());
    // The watchdog times header reads: hyper's timer would also close idle keep-alive
    // connections at the header timeout, which is the idle timeout's job.
    http.http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(None)
        .max_headers(limits.max_headers)
        .max_buf_size((limits.max_header_bytes + limits.max_uri_bytes + 1024).max(8192));
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(timeouts.keepalive_interval)
        .keep_alive_timeout(timeouts.keepalive_timeout)
        // Rapid reset (CVE-2023-44487): streams the client opens and cancels before we
        // accept them are capped; past the cap the connection gets GOAWAY.
        .max_pending_accept_reset_streams(Some(20))
        .max_local_error_reset_streams(Some(256));
    http
}

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
        let name: Arc<str> = name.as_str().into();
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
                http: http_builder(&config.limits, &config.timeouts),
            }),
        })
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
        let stop = shutdown.clone();
        accept_loop(self.socket, gate, stop, move |stream, peer, pass| {
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
    let conn = ConnInfo::new(
        peer,
        settings.name.clone(),
        if settings.tls { "https" } else { "http" },
        settings.trust_forwarded,
        settings.door.clone(),
    )
    .with_alt_svc(settings.alt_svc.clone());
    if !settings.tls {
        return serve_connection(stream, conn, pass, settings, state, shutdown, drained).await;
    }
    // Each handshake uses the TLS config of the version serving now, so a reloaded
    // certificate applies to new connections without dropping old ones.
    let Some(config) = state.current().tls.get(&*settings.name).cloned() else {
        return;
    };
    let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let stream = match tokio::time::timeout(settings.timeouts.handshake, handshake).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            return tracing::info!(listener = %settings.name, %peer, error = %e, "TLS handshake failed");
        }
        Err(_) => return tracing::info!(listener = %settings.name, %peer, "TLS handshake timed out"),
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(PeerIdentity::from_der);
    let conn = conn.with_peer(identity.as_ref(), settings.forward_client_cert);
    serve_connection(stream, conn, pass, settings, state, shutdown, drained).await
}

async fn serve_connection<I>(
    io: I,
    conn: ConnInfo,
    pass: Pass,
    settings: Arc<Settings>,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    drained: mpsc::Sender<()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = conn.peer;
    let conn = Arc::new(conn);
    let activity = Arc::new(Activity::default());
    let watchdog = Watchdog::new(activity.clone(), &settings.timeouts);
    let metrics = state.metrics.clone();
    let requests = activity.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let in_flight = requests.request(req.version() == http::Version::HTTP_2);
        let (state, conn) = (state.clone(), conn.clone());
        async move {
            let req = req.map(|body| crate::body::Body::from_client(body, &conn.door));
            let resp = crate::proxy::handle(state, conn, req).await;
            drop(in_flight);
            resp
        }
    });
    let io = TokioIo::new(Watched::new(io, activity));
    let connection = settings.http.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = shutdown.changed() => {
            // Finish what is in flight, accept no new request on this connection.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
        expiry = watchdog.expired() => {
            metrics.connection_closed(&settings.name, expiry.label());
            tracing::debug!(listener = %settings.name, %peer, reason = expiry.label(), "closing connection");
            if expiry == Expiry::Idle {
                // HTTP/2 says GOAWAY first; a client that does not finish quickly is cut.
                connection.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), connection.as_mut()).await;
            }
            Ok(())
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
