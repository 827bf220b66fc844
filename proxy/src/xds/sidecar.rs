//! Istio's sidecar shape over LDS, mapped onto Weft's sidecar mode (docs/sidecar.md): a
//! listener with `use_original_dst` (Istio's `virtualOutbound`, 15001) or an `original_dst`
//! listener filter (`virtualInbound`, 15006) becomes a `transparent = "redirect"` listener;
//! a `bind_to_port: false` listener (`0.0.0.0_8080`, `10.96.0.5_80`) binds nothing and its
//! routes serve the connections a `use_original_dst` listener took for its address and
//! port (the routes match `destination` and `destination_port`); filter chains selected by
//! `filter_chain_match` (destination port and prefix) become routes with those matches; a
//! `tcp_proxy` to an ORIGINAL_DST cluster (`PassthroughCluster`) is passthrough. Anything
//! else of Istio's is a NACK naming it.

use envoy_types::pb::envoy::config::listener::v3::{FilterChain, FilterChainMatch, Listener, filter, listener_filter};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
use prost::Message;
use toml::{Table, Value};

use super::Rejected;
use super::listener::{Chain, ChainAction, HCM, MappedListener, Shape, http_connection_manager};

const TCP_PROXY: &str = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy";
const ORIGINAL_DST_FILTER: &str = "envoy.filters.listener.original_dst";

/// Network filters that only observe (Istio's telemetry): skipped, as Weft has its own.
const OBSERVERS: [&str; 3] = [
    "istio.stats",
    "istio.metadata_exchange",
    "envoy.filters.network.metadata_exchange",
];

/// Whether `l` has the sidecar shape; `None` for a plain listener that binds its address.
pub fn shape(l: &Listener, address: &str, at: &str) -> Result<Option<Shape>, Rejected> {
    let hands_off = l.use_original_dst.is_some_and(|v| v.value);
    let original_dst = l.listener_filters.iter().any(|f| {
        let typed = match &f.config_type {
            Some(listener_filter::ConfigType::TypedConfig(any)) => any.type_url.as_str(),
            _ => "",
        };
        f.name == ORIGINAL_DST_FILTER || typed.ends_with(".original_dst.v3.OriginalDst")
    });
    let binds = l.bind_to_port.is_none_or(|v| v.value);
    match (hands_off || original_dst, binds) {
        (true, true) => Ok(Some(Shape::Transparent { hands_off })),
        (true, false) => Err(Rejected(format!(
            "{at}: use_original_dst (or an original_dst listener filter) with bind_to_port: false is not supported"
        ))),
        (false, false) => {
            let addr = address
                .parse()
                .map_err(|_| Rejected(format!("{at}: address {address:?} is not an IP address and port")))?;
            Ok(Some(Shape::Handed(addr)))
        }
        (false, true) => Ok(None),
    }
}

pub fn map(l: &Listener, address: String, shape: Shape, at: &str) -> Result<MappedListener, Rejected> {
    let own_port = address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .unwrap_or(0);
    let mut chains = Vec::new();
    let all = l.filter_chains.iter().chain(l.default_filter_chain.iter());
    for (i, c) in all.enumerate() {
        let cat = if c.name.is_empty() {
            format!("{at}: filter chain {i}")
        } else {
            format!("{at}: filter chain {:?}", c.name)
        };
        let (destination, destination_port) = match &c.filter_chain_match {
            Some(m) => chain_match(m, &cat)?,
            None => (None, None),
        };
        if matches!(shape, Shape::Transparent { .. }) && destination_port == Some(own_port) {
            // Istio's blackhole chain for connections to the listener itself: Weft refuses
            // those (a loop) before any chain.
            continue;
        }
        if let Shape::Handed(_) = shape
            && (destination.is_some() || destination_port.is_some())
        {
            return Err(Rejected(format!(
                "{cat}: filter_chain_match on destination on a bind_to_port: false listener is not supported \
                 (its address says which connections it serves)"
            )));
        }
        let action = chain_action(c, &cat)?;
        chains.push(Chain {
            destination,
            destination_port,
            action,
        });
    }
    for (i, a) in chains.iter().enumerate() {
        let twice = chains[..i].iter().any(|b| {
            matches!(
                (&a.action, &b.action),
                (ChainAction::Http { .. }, ChainAction::Http { .. })
            ) && a.destination == b.destination
                && a.destination_port == b.destination_port
        });
        if twice {
            return Err(Rejected(format!(
                "{at}: two HTTP filter chains for the same destination match are not supported"
            )));
        }
    }
    if let Shape::Handed(addr) = shape {
        for c in &mut chains {
            c.destination = (!addr.ip().is_unspecified()).then(|| addr.ip().to_string());
            c.destination_port = Some(addr.port());
        }
    }
    // The most specific match first, as Envoy picks a chain.
    chains.sort_by_key(|c| (c.destination.is_none(), c.destination_port.is_none()));
    let table = match shape {
        Shape::Handed(_) => None,
        _ => {
            let mut t = Table::new();
            t.insert("name".into(), Value::String(l.name.clone()));
            t.insert("address".into(), Value::String(address));
            t.insert("transparent".into(), Value::String("redirect".into()));
            // Envoy's traffic_direction (1 INBOUND, 2 OUTBOUND) labels the listener's metrics.
            match l.traffic_direction {
                1 => drop(t.insert("direction".into(), Value::String("inbound".into()))),
                2 => drop(t.insert("direction".into(), Value::String("outbound".into()))),
                _ => {}
            }
            Some(t)
        }
    };
    Ok(MappedListener {
        table,
        chains,
        shape,
        tls: None,
    })
}

/// A chain's match as a destination (an address or CIDR block) and port; what Weft
/// detects itself (plaintext, HTTP) is accepted, anything else is refused by name.
fn chain_match(m: &FilterChainMatch, at: &str) -> Result<(Option<String>, Option<u16>), Rejected> {
    let no = |what: &str| Rejected(format!("{at}: filter_chain_match {what} is not supported"));
    if !m.server_names.is_empty() {
        return Err(no("server_names (TLS is not routed by SNI)"));
    }
    match m.transport_protocol.as_str() {
        "" | "raw_buffer" => {}
        "tls" => {
            return Err(no(
                "transport_protocol tls (a sidecar listener's chains are not chosen by TLS)",
            ));
        }
        other => return Err(no(&format!("transport_protocol {other:?}"))),
    }
    if let Some(p) = m
        .application_protocols
        .iter()
        .find(|p| !matches!(p.as_str(), "http/1.0" | "http/1.1" | "h2c"))
    {
        return Err(no(&format!("application_protocols {p:?}")));
    }
    if !m.source_prefix_ranges.is_empty()
        || !m.direct_source_prefix_ranges.is_empty()
        || !m.source_ports.is_empty()
        || m.source_type != 0
    {
        return Err(no("on the source (source_prefix_ranges, source_ports, source_type)"));
    }
    if !m.address_suffix.is_empty() || m.suffix_len.is_some() {
        return Err(no("address_suffix"));
    }
    let destination = match m.prefix_ranges.as_slice() {
        [] => None,
        [r] => {
            let len = r
                .prefix_len
                .map_or(if r.address_prefix.contains(':') { 128 } else { 32 }, |l| l.value);
            Some(format!("{}/{len}", r.address_prefix))
        }
        _ => return Err(no("with more than one prefix_ranges entry")),
    };
    let port = m
        .destination_port
        .map(|p| u16::try_from(p.value).map_err(|_| no(&format!("destination_port {}", p.value))))
        .transpose()?;
    Ok((destination, port))
}

/// A chain's one terminal network filter: an HTTP connection manager or a `tcp_proxy`.
fn chain_action(c: &FilterChain, at: &str) -> Result<ChainAction, Rejected> {
    if c.transport_socket.is_some() {
        return Err(Rejected(format!(
            "{at}: DownstreamTlsContext on a sidecar listener's filter chain is not supported (mTLS per inbound chain is not mapped)"
        )));
    }
    let mut action = None;
    for f in &c.filters {
        if OBSERVERS.contains(&f.name.as_str()) {
            tracing::debug!(filter = %f.name, "xDS: telemetry network filter skipped (Weft has its own)");
            continue;
        }
        if action.is_some() {
            return Err(Rejected(format!(
                "{at}: network filter {:?} after the terminal one is not supported",
                f.name
            )));
        }
        let any = match &f.config_type {
            Some(filter::ConfigType::TypedConfig(any)) => Some(any),
            _ => None,
        };
        let type_url = any.map_or("", |a| a.type_url.as_str());
        action = Some(if type_url == HCM {
            let (routes, wasm) = http_connection_manager(f, at)?;
            ChainAction::Http { routes, wasm }
        } else if let Some(any) = any.filter(|a| a.type_url == TCP_PROXY) {
            let tcp = TcpProxy::decode(any.value.as_slice())
                .map_err(|e| Rejected(format!("{at}: tcp_proxy does not decode: {e}")))?;
            match tcp.cluster_specifier {
                Some(tcp_proxy::ClusterSpecifier::Cluster(c)) => ChainAction::Tcp(c),
                _ => return Err(Rejected(format!("{at}: tcp_proxy weighted_clusters is not supported"))),
            }
        } else {
            return Err(Rejected(format!(
                "{at}: network filter {:?} ({type_url}) is not supported (Weft runs http_connection_manager, \
                 and tcp_proxy to an ORIGINAL_DST cluster)",
                f.name
            )));
        });
    }
    action.ok_or_else(|| {
        Rejected(format!(
            "{at}: a filter chain without http_connection_manager or tcp_proxy"
        ))
    })
}
