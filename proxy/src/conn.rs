//! What is known of one downstream connection, computed once per connection rather than
//! per request, and read by every stage that serves its requests.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;

use crate::config::FrontDoor;
use crate::metrics::ListenerCounters;

mod server_blocks;

pub use server_blocks::ServerBlocks;

/// Facts of one downstream connection, computed once per connection rather than per request.
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub listener: Arc<str>,
    pub scheme: &'static str,
    pub trust_forwarded: bool,
    /// The verified client certificate's identity (mutual TLS).
    pub identity: Option<Arc<str>>,
    /// `x-forwarded-client-cert` to send upstream, when the listener forwards it.
    pub(crate) xfcc: Option<HeaderValue>,
    /// `Alt-Svc` advertising HTTP/3 on this listener's port.
    pub alt_svc: Option<HeaderValue>,
    pub(crate) xff: HeaderValue,
    pub(crate) forwarded: HeaderValue,
    /// The listener's front-door policy (limits, path normalisation).
    pub door: Arc<FrontDoor>,
    /// The listener's request gauge and byte counters.
    pub counters: Arc<ListenerCounters>,
    /// On TLS: the listener's server blocks and the one the client's SNI chose.
    pub server_block: Option<(Arc<ServerBlocks>, usize)>,
    /// On a transparent (sidecar) listener: the address the client dialled before the
    /// kernel redirected it here (`SO_ORIGINAL_DST`, or the local address under TPROXY).
    pub original_dst: Option<SocketAddr>,
    /// On a transparent listener: its direction and the answer counters of the
    /// connection's destination label.
    pub interception: Option<Box<Interception>>,
}

/// What an intercepted connection's requests are labelled and counted by.
pub struct Interception {
    /// `inbound`, `outbound` or `unspecified` (the listener's `direction`).
    pub direction: &'static str,
    /// `weft_intercepted_responses_total` of this listener, direction and destination, by
    /// status class.
    pub responses: [prometheus_client::metrics::counter::Counter; 5],
}

impl ConnInfo {
    /// Adds what TLS told about the client (`tls::client_facts`): its identity, and the
    /// XFCC element to forward.
    pub fn with_peer(mut self, identity: Option<Arc<str>>, xfcc: Option<HeaderValue>) -> ConnInfo {
        self.identity = identity;
        self.xfcc = xfcc;
        self
    }

    /// The server block the client's SNI chose among the listener's certificates.
    pub fn with_server_block(mut self, blocks: Option<Arc<ServerBlocks>>, sni: Option<&str>) -> ConnInfo {
        self.server_block = blocks.map(|b| {
            let chosen = b.chosen(sni);
            (b, chosen)
        });
        self
    }

    pub fn with_counters(mut self, counters: Arc<ListenerCounters>) -> ConnInfo {
        self.counters = counters;
        self
    }

    pub fn with_original_dst(mut self, original_dst: Option<SocketAddr>) -> ConnInfo {
        self.original_dst = original_dst;
        self
    }

    pub fn with_interception(mut self, interception: Option<Box<Interception>>) -> ConnInfo {
        self.interception = interception;
        self
    }

    /// Counts an answer to a request of an intercepted connection (nothing otherwise).
    pub fn count_answer(&self, status: http::StatusCode) {
        if let Some(i) = &self.interception {
            i.responses[crate::metrics::class_index(status)].inc();
        }
    }

    pub fn with_alt_svc(mut self, alt_svc: Option<HeaderValue>) -> ConnInfo {
        self.alt_svc = alt_svc;
        self
    }

    pub fn new(
        peer: SocketAddr,
        listener: Arc<str>,
        scheme: &'static str,
        trust_forwarded: bool,
        door: Arc<FrontDoor>,
    ) -> ConnInfo {
        let ip = peer.ip();
        // RFC 7239 §6: an IPv6 node is quoted and bracketed.
        let node = if ip.is_ipv6() {
            format!("\"[{ip}]\"")
        } else {
            ip.to_string()
        };
        let forwarded = format!("for={node};proto={scheme}");
        ConnInfo {
            peer,
            listener,
            scheme,
            trust_forwarded,
            identity: None,
            xfcc: None,
            alt_svc: None,
            xff: HeaderValue::try_from(ip.to_string()).unwrap_or(HeaderValue::from_static("unknown")),
            forwarded: HeaderValue::try_from(forwarded).unwrap_or(HeaderValue::from_static("for=unknown")),
            door,
            counters: Arc::default(),
            server_block: None,
            original_dst: None,
            interception: None,
        }
    }
}
