//! Sidecar listeners (`transparent = "redirect" | "tproxy"`): connections the kernel
//! redirected here from the address the client dialled. For each one: its original
//! destination (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` under `redirect`, chosen by the
//! client's family as linkerd2-proxy does; the socket's local address under `tproxy`);
//! a destination that is the proxy itself is refused (a loop); then what the client
//! speaks decides the rest ([`super::detect`]): HTTP goes to the listener's HTTP service,
//! and TLS too when the listener has `tls` (a peer sidecar's mTLS: terminated, the
//! caller's identity checked by the route's filters); TLS that is not terminated goes by
//! its SNI to a TLS route's cluster ([`super::sni`]) or else, like anything else, to the
//! original destination byte for byte. With `peer_tls = "strict"` (or on `strict_ports`)
//! only TLS is taken. Every connection is counted by listener, direction and a destination
//! label the config bounds ([`Destination`]), never by an address a client chose.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::detect::{Detected, detect};
use super::sni::{Hello, read_hello};
use crate::config::{Direction, ListenerConfig, PeerTls, Transparent};
use crate::conn::Interception as ConnInterception;
use crate::metrics::{Destination, Interception};
use crate::route::intercept::Routing;
use crate::state::State;

/// What a transparent listener's connections share.
pub struct Intercept {
    pub mode: Transparent,
    /// `inbound`, `outbound` or `unspecified`.
    direction: &'static str,
    opaque_ports: Box<[u16]>,
    detect_timeout: Duration,
    mark: Option<u32>,
    /// The listener terminates TLS (peer sidecars' mTLS).
    tls: bool,
    strict: PeerTls,
    strict_ports: Box<[u16]>,
    /// The ports this process listens on (every listener and the admin API), known once
    /// all are bound and replaced as listeners come and go: a destination on one of them at
    /// a local address is the proxy itself.
    own_ports: OnceLock<Arc<OwnPorts>>,
}

/// The ports the process listens on, shared by its transparent listeners.
pub type OwnPorts = arc_swap::ArcSwap<Box<[u16]>>;

impl Intercept {
    pub fn new(config: &ListenerConfig) -> Option<Intercept> {
        Some(Intercept {
            mode: config.transparent?,
            direction: Direction::label(config.direction),
            opaque_ports: config.opaque_ports.clone().into(),
            detect_timeout: config.detect_timeout,
            mark: config.passthrough_mark,
            tls: config.tls.is_some(),
            strict: config.peer_tls,
            strict_ports: config.strict_ports.clone().into(),
            own_ports: OnceLock::new(),
        })
    }

    /// Tells the listener the ports of the whole process, before it serves.
    pub fn set_own_ports(&self, ports: &Arc<OwnPorts>) {
        let _ = self.own_ports.set(ports.clone());
    }

    fn is_self(&self, dst: SocketAddr) -> bool {
        let own = self.own_ports.get().is_some_and(|p| p.load().contains(&dst.port()));
        own && is_local(dst.ip())
    }

    /// The destination label of `dst`: its port when this listener's settings or the
    /// version's routes name it, else `other`.
    fn destination(&self, dst: Option<SocketAddr>, routing: &Routing) -> Destination {
        match dst.map(|d| d.port()) {
            Some(port)
                if self.opaque_ports.contains(&port)
                    || self.strict_ports.contains(&port)
                    || routing.names_port(port) =>
            {
                Destination::Port(port)
            }
            _ => Destination::Other,
        }
    }
}

/// Readies a transparent listener's socket before it is bound: `IP_TRANSPARENT` for TPROXY,
/// and an IPv6 socket for IPv6 only.
pub fn prepare(socket: &socket2::Socket, addr: SocketAddr, mode: Transparent) -> std::io::Result<()> {
    if mode == Transparent::Tproxy {
        let set = if addr.is_ipv4() {
            socket.set_ip_transparent_v4(true)
        } else {
            socket.set_ip_transparent_v6(true)
        };
        set.map_err(|e| std::io::Error::new(e.kind(), format!("IP_TRANSPARENT (needs CAP_NET_ADMIN): {e}")))?;
    }
    if addr.is_ipv6() {
        // `[::]:15001` beside `0.0.0.0:15001`: each family its own listener, so an IPv4
        // client is never seen as IPv4-mapped.
        socket.set_only_v6(true)?;
    }
    Ok(())
}

/// The address the client dialled before the kernel sent its connection here.
pub fn original_dst(stream: &TcpStream, mode: Transparent) -> std::io::Result<SocketAddr> {
    let addr = match mode {
        Transparent::Tproxy => stream.local_addr()?,
        Transparent::Redirect => {
            let socket = socket2::SockRef::from(stream);
            // The client's family says which table conntrack holds the entry in; an IPv4
            // client of a dual-stack socket shows as IPv4-mapped and is asked as IPv4.
            let v4 = match stream.peer_addr()?.ip() {
                IpAddr::V4(_) => true,
                IpAddr::V6(ip) => ip.to_ipv4_mapped().is_some(),
            };
            let found = if v4 {
                socket.original_dst_v4()?
            } else {
                socket.original_dst_v6()?
            };
            found
                .as_socket()
                .ok_or_else(|| std::io::Error::other("SO_ORIGINAL_DST gave no IP address"))?
        }
    };
    Ok(unmapped(addr))
}

/// `::ffff:a.b.c.d` as the IPv4 address it is.
pub fn unmapped(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

/// Whether `ip` is one of this host's (network namespace's) addresses: binding to it works.
fn is_local(ip: IpAddr) -> bool {
    ip.is_unspecified() || ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// What the listener's HTTP service is to do with an intercepted connection.
pub struct Intercepted {
    pub stream: TcpStream,
    pub original_dst: SocketAddr,
    /// A TLS ClientHello on a listener with `tls`: terminate it (a peer sidecar's mTLS).
    pub tls: bool,
    /// The direction and answer counters of its requests.
    pub interception: Box<ConnInterception>,
}

/// Where a passed-through connection goes.
struct Target {
    addr: SocketAddr,
    mark: Option<u32>,
    connect_timeout: Option<Duration>,
}

/// Takes an intercepted connection as far as it goes here: its original destination
/// found and checked, then passed through when it is not HTTP (nor TLS this listener
/// terminates). Returns it for the listener's HTTP service, or `None` when it was refused
/// or has been passed through to its end.
pub async fn intercept(
    stream: TcpStream,
    peer: SocketAddr,
    listener: &str,
    i: &Intercept,
    state: &State,
) -> Option<Intercepted> {
    let metrics = &state.metrics;
    // Detection and the ClientHello share one deadline: a client trickling bytes holds
    // the listener's attention for `detect_timeout` at most.
    let deadline = Instant::now() + i.detect_timeout;
    let runtime = state.current();
    let found = original_dst(&stream, i.mode);
    let at = Interception {
        listener,
        direction: i.direction,
        destination: i.destination(found.as_ref().ok().copied(), &runtime.intercept),
    };
    let count = |outcome: &'static str| metrics.connection_intercepted(at, outcome);
    let dst = match found {
        Ok(dst) => dst,
        Err(e) => {
            tracing::info!(%listener, %peer, error = %e, "intercepted connection without an original destination: closed");
            count("no_original_dst");
            return None;
        }
    };
    if i.is_self(dst) {
        // Dialled the proxy's own port (directly, or a rule sent it back here): serving it
        // would loop through the proxy until file descriptors run out.
        tracing::warn!(%listener, %peer, original_dst = %dst, "original destination is this proxy: refused (loop)");
        count("loop");
        return None;
    }
    let detected = if i.opaque_ports.contains(&dst.port()) {
        Detected::Opaque
    } else {
        match detect(&stream, deadline).await {
            Ok(detected) => detected,
            Err(e) => {
                tracing::debug!(%listener, %peer, error = %e, "intercepted connection failed before it spoke");
                count("closed");
                return None;
            }
        }
    };
    let strict = i.strict == PeerTls::Strict || i.strict_ports.contains(&dst.port());
    let terminate = detected == Detected::Tls && i.tls;
    if strict && !terminate && detected != Detected::Closed {
        tracing::info!(%listener, %peer, original_dst = %dst, protocol = detected.label(), "plaintext refused (peer_tls strict)");
        count("plaintext_refused");
        return None;
    }
    if detected == Detected::Closed {
        count("closed");
        return None;
    }
    if detected == Detected::Http || terminate {
        count(detected.label());
        return Some(Intercepted {
            stream,
            original_dst: dst,
            tls: terminate,
            interception: Box::new(ConnInterception {
                direction: i.direction,
                responses: metrics.intercepted_responses(at),
            }),
        });
    }
    let original = Target {
        addr: dst,
        mark: i.mark,
        connect_timeout: None,
    };
    let (outcome, target, route) = match detected {
        Detected::Tls if runtime.intercept.tls.any_for(listener) => {
            match Box::pin(read_hello(&stream, deadline)).await {
                Ok(Hello::Sni(Some(sni))) => match runtime.intercept.tls.find(listener, &sni) {
                    Some(route) => {
                        let Some((addr, mark, timeout)) = route.cluster.pick_for_passthrough() else {
                            tracing::info!(%listener, %peer, %sni, route = %route.name, "TLS route's cluster has no endpoint: closed");
                            count("connect_failed");
                            return None;
                        };
                        let target = Target {
                            addr,
                            mark: mark.or(i.mark),
                            connect_timeout: Some(timeout),
                        };
                        ("tls_routed", target, Some(route.name.clone()))
                    }
                    None => ("tls", original, None),
                },
                Ok(Hello::Sni(None)) => ("tls", original, None),
                Ok(Hello::Invalid(why)) => {
                    tracing::info!(%listener, %peer, original_dst = %dst, problem = why, "TLS ClientHello not understood: passed on opaque");
                    ("tls_invalid", original, None)
                }
                Ok(Hello::Closed) | Err(_) => {
                    count("closed");
                    return None;
                }
            }
        }
        Detected::Tls => ("tls", original, None),
        _ => ("opaque", original, None),
    };
    // The version is not held while the bytes flow: the cluster was taken out of it.
    drop(runtime);
    count(outcome);
    let bytes = metrics.passthrough_bytes(at);
    if !passthrough(stream, dst, target, listener, outcome, route.as_deref(), bytes).await {
        count("connect_failed");
    }
    None
}

/// Passes a connection's bytes to `target` (its original destination `original_dst`, or a
/// TLS route's endpoint) and back, unchanged, until both sides are done, counting them as
/// they go. `false` when the target could not be reached.
async fn passthrough(
    stream: TcpStream,
    original_dst: SocketAddr,
    target: Target,
    listener: &str,
    protocol: &'static str,
    route: Option<&str>,
    (from_client, from_server): (Counter, Counter),
) -> bool {
    let peer = stream.peer_addr().ok();
    let dst = target.addr;
    let connect = crate::upstream::connect_marked(dst, target.mark);
    let connected = match target.connect_timeout {
        Some(limit) => tokio::time::timeout(limit, connect)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))),
        None => connect.await,
    };
    let upstream = match connected {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::info!(%listener, ?peer, %original_dst, to = %dst, ?route, error = %e, "passthrough: cannot connect");
            return false;
        }
    };
    let _ = upstream.set_nodelay(true);
    let _ = stream.set_nodelay(true);
    let mut client = CountedStream {
        inner: stream,
        read: from_client,
    };
    let mut server = CountedStream {
        inner: upstream,
        read: from_server,
    };
    match tokio::io::copy_bidirectional(&mut client, &mut server).await {
        Ok((up, down)) => tracing::info!(
            %listener, ?peer, %original_dst, to = %dst, ?route, protocol, bytes_up = up, bytes_down = down,
            "passthrough done"
        ),
        Err(e) => {
            tracing::info!(%listener, ?peer, %original_dst, to = %dst, ?route, error = %e, "passthrough ended with an error")
        }
    }
    true
}

/// A socket whose bytes read are added to a counter as they arrive: a long-lived
/// passthrough shows in the metrics while it runs, and one cut by an error is counted too.
struct CountedStream {
    inner: TcpStream,
    read: Counter,
}

impl AsyncRead for CountedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.read.inc_by(n as u64);
        }
        polled
    }
}

impl AsyncWrite for CountedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
