//! Sidecar listeners (`transparent = "redirect" | "tproxy"`): connections the kernel
//! redirected here from the address the client dialled. For each one: its original
//! destination (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` under `redirect`, chosen by the
//! client's family as linkerd2-proxy does; the socket's local address under `tproxy`);
//! a destination that is the proxy itself is refused (a loop); then what the client
//! speaks decides the rest ([`super::detect`]): HTTP goes to the listener's HTTP service,
//! and TLS too when the listener has `tls` (a peer sidecar's mTLS: terminated, the
//! caller's identity checked by the route's filters); anything else is passed on to the
//! original destination byte for byte. With `peer_tls = "strict"` (or on `strict_ports`)
//! only TLS is taken.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::net::TcpStream;

use super::detect::{Detected, detect};
use crate::config::{ListenerConfig, PeerTls, Transparent};
use crate::metrics::Metrics;

/// What a transparent listener's connections share.
pub struct Intercept {
    pub mode: Transparent,
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
    metrics: &Metrics,
) -> Option<Intercepted> {
    let count = |outcome: &'static str| metrics.connection_intercepted(listener, outcome);
    let dst = match original_dst(&stream, i.mode) {
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
        match detect(&stream, i.detect_timeout).await {
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
    count(detected.label());
    match detected {
        Detected::Closed => None,
        Detected::Http => Some(Intercepted {
            stream,
            original_dst: dst,
            tls: false,
        }),
        Detected::Tls if terminate => Some(Intercepted {
            stream,
            original_dst: dst,
            tls: true,
        }),
        Detected::Tls | Detected::Opaque => {
            if !passthrough(stream, dst, i.mark, listener, detected).await {
                count("connect_failed");
            }
            None
        }
    }
}

/// Passes a connection's bytes to `dst` and back, unchanged, until both sides are done.
/// `false` when the original destination could not be reached.
async fn passthrough(
    mut stream: TcpStream,
    dst: SocketAddr,
    mark: Option<u32>,
    listener: &str,
    detected: Detected,
) -> bool {
    let peer = stream.peer_addr().ok();
    let mut upstream = match crate::upstream::connect_marked(dst, mark).await {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::info!(%listener, ?peer, original_dst = %dst, error = %e, "passthrough: cannot connect");
            return false;
        }
    };
    let _ = upstream.set_nodelay(true);
    let _ = stream.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut stream, &mut upstream).await {
        Ok((up, down)) => tracing::info!(
            %listener, ?peer, original_dst = %dst, protocol = detected.label(), bytes_up = up, bytes_down = down,
            "passthrough done"
        ),
        Err(e) => tracing::info!(%listener, ?peer, original_dst = %dst, error = %e, "passthrough ended with an error"),
    }
    true
}
