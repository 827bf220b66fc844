//! HTTP/3: QUIC (quinn) with h3 on a TLS listener's port number over UDP, feeding the same
//! request path (`proxy::handle`) as HTTP/1.1 and HTTP/2.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::Request;
use http_body::{Body as _, Frame};
use tokio::sync::{mpsc, watch};

use super::accept::{Gate, accept_loop};
use crate::body::ClientBody;
use crate::body::{Body, BodyError};
use crate::config::{FrontDoor, ListenerConfig};
use crate::conn::ConnInfo;
use crate::state::State;
use crate::tls::{self, PeerIdentity};

/// Binds the UDP side of an `http3` listener.
/// Binds the UDP side of `config` at `address` (its TCP side's bound address: the same port).
pub fn bind(
    config: &ListenerConfig,
    address: SocketAddr,
    server: quinn::ServerConfig,
) -> anyhow::Result<quinn::Endpoint> {
    quinn::Endpoint::server(server, address)
        .map_err(|e| anyhow::anyhow!("listener {:?} cannot bind UDP {address} for HTTP/3: {e}", config.name))
}

/// Accepts QUIC connections until shutdown, under the listener's connection caps
/// (shared with its TCP side).
pub async fn serve(
    config: ListenerConfig,
    endpoint: quinn::Endpoint,
    gate: Arc<Gate>,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
    drained: mpsc::Sender<()>,
) {
    let name: Arc<str> = config.name.as_str().into();
    let door = Arc::new(FrontDoor::new(&config));
    let max_field_section = config.limits.max_header_bytes as u64;
    let handshake = config.timeouts.handshake;
    let counters = Arc::new(state.metrics.listener(&config.name));
    let stop = shutdown.clone();
    accept_loop(endpoint, gate, stop, move |incoming, _peer, pass| {
        let (name, state, shutdown, drained, door) = (
            name.clone(),
            state.clone(),
            shutdown.clone(),
            drained.clone(),
            door.clone(),
        );
        let (trust, forward_cert) = (config.trust_forwarded, config.forward_client_cert);
        let counters = counters.clone();
        tokio::spawn(async move {
            let _pass = pass;
            let connection = match tokio::time::timeout(handshake, incoming).await {
                Ok(Ok(c)) => {
                    state.metrics.tls_handshake(&name, "ok");
                    c
                }
                Ok(Err(e)) => {
                    state.metrics.tls_handshake(&name, "failed");
                    return tracing::info!(listener = %name, error = %e, "QUIC handshake failed");
                }
                Err(_) => {
                    state.metrics.tls_handshake(&name, "timeout");
                    return tracing::info!(listener = %name, "QUIC handshake timed out");
                }
            };
            let peer = connection.remote_address();
            let identity = connection
                .peer_identity()
                .and_then(|any| any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok())
                .and_then(|certs| certs.first().and_then(PeerIdentity::from_der));
            let sni = connection
                .handshake_data()
                .and_then(|any| any.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|data| data.server_name);
            let blocks = state.current().server_blocks.get(&*name).cloned();
            let (identity, xfcc) = tls::client_facts(identity.as_ref(), forward_cert);
            let conn = ConnInfo::new(peer, name, "https", trust, door)
                .with_peer(identity, xfcc)
                .with_server_block(blocks, sni.as_deref())
                .with_counters(counters);
            let served = serve_connection(connection, Arc::new(conn), max_field_section, state, shutdown, drained);
            if let Err(e) = served.await {
                tracing::debug!(%peer, error = %e, "HTTP/3 connection ended with an error");
            }
        });
    })
    .await;
}

async fn serve_connection(
    connection: quinn::Connection,
    conn: Arc<ConnInfo>,
    max_field_section: u64,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
    drained: mpsc::Sender<()>,
) -> Result<(), h3::error::ConnectionError> {
    let mut h3 = h3::server::builder()
        .max_field_section_size(max_field_section)
        .build::<_, Bytes>(h3_quinn::Connection::new(connection))
        .await?;
    let mut draining = false;
    loop {
        let resolver = tokio::select! {
            accepted = h3.accept() => match accepted? { Some(r) => r, None => return Ok(()) },
            _ = shutdown.changed(), if !draining => {
                // GOAWAY: requests already accepted finish, new ones go elsewhere.
                draining = true;
                h3.shutdown(0).await?;
                continue;
            }
        };
        let (conn, state, drained) = (conn.clone(), state.clone(), drained.clone());
        tokio::spawn(async move {
            match resolver.resolve_request().await {
                Ok((req, stream)) => {
                    if let Err(e) = answer(req, stream, conn.peer, &conn, state).await {
                        tracing::debug!(peer = %conn.peer, error = %e, "HTTP/3 stream failed");
                    }
                }
                Err(e) => tracing::debug!(peer = %conn.peer, error = %e, "HTTP/3 request unreadable"),
            }
            drop(drained);
        });
    }
}

type Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

async fn answer(
    req: Request<()>,
    stream: Stream,
    _peer: SocketAddr,
    conn: &Arc<ConnInfo>,
    state: Arc<State>,
) -> Result<(), BodyError> {
    let (mut send, recv) = stream.split();
    let body = RequestBody { recv, data_done: false };
    let mut body = ClientBody::new(body, conn.door.max_body_bytes, conn.door.body_idle);
    // Followed before it is boxed, as `proxy::handle` does for the other listeners.
    let upload = body.watch();
    let mut req = req.map(|()| Body::boxed(body));
    if let Some(upload) = upload {
        req.extensions_mut().insert(upload);
    }
    let Ok(resp) = crate::proxy::handle(state, conn.clone(), req).await;
    let (head, mut body) = resp.into_parts();
    send.send_response(http::Response::from_parts(head, ())).await?;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame?;
        if frame.is_data() {
            if let Ok(data) = frame.into_data() {
                send.send_data(data).await?;
            }
        } else if let Ok(trailers) = frame.into_trailers() {
            send.send_trailers(trailers).await?;
        }
    }
    send.finish().await?;
    Ok(())
}

/// The request body of an HTTP/3 stream, as an `http_body::Body`.
struct RequestBody {
    recv: h3::server::RequestStream<h3_quinn::RecvStream, Bytes>,
    data_done: bool,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = h3::error::StreamError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if !self.data_done {
            match self.recv.poll_recv_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Ok(Some(mut buf))) => {
                    let bytes = buf.copy_to_bytes(buf.remaining());
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Poll::Ready(Ok(None)) => self.data_done = true,
            }
        }
        match self.recv.poll_recv_trailers(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(Some(trailers))) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Poll::Ready(Ok(None)) => Poll::Ready(None),
        }
    }
}
