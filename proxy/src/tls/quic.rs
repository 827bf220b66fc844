//! The QUIC server config of an `http3` listener: its TLS config with the `h3` ALPN, and
//! the transport limits one connection lives under.

use std::sync::Arc;

use crate::config::{ListenerConfig, ListenerTlsConfig};

/// QUIC needs TLS 1.3 and the `h3` ALPN; otherwise the listener's TLS settings apply,
/// and its limits bound what one connection may open and buffer.
pub fn server_config(listener: &ListenerConfig, tls: &ListenerTlsConfig) -> Result<quinn::ServerConfig, String> {
    let (rustls, _) = super::server_config(tls, &[b"h3"], true)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls).map_err(|e| e.to_string())?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let (limits, timeouts) = (&listener.limits, &listener.timeouts);
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits.max_concurrent_streams.into())
        // HTTP/3 needs a control stream and two QPACK streams from each side.
        .max_concurrent_uni_streams(3u32.into())
        .stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW))
        .receive_window(quinn::VarInt::from_u32(
            STREAM_WINDOW * limits.max_concurrent_streams.min(16),
        ))
        .max_idle_timeout(quinn::IdleTimeout::try_from(timeouts.idle).ok());
    server.transport_config(Arc::new(transport));
    Ok(server)
}

/// Bytes a client may have in flight on one HTTP/3 stream before it must wait for us.
const STREAM_WINDOW: u32 = 1 << 20;
