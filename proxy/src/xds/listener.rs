//! LDS: a `Listener` with one HTTP connection manager as a `[[listeners]]` table and the
//! routes it serves (RDS over ADS, or inline).

use envoy_types::pb::envoy::config::core::v3::{address, socket_address::PortSpecifier};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier, http_filter,
};
use prost::Message;
use toml::{Table, Value};

use super::Rejected;
use super::route::{self, Routes};
use super::wasm::{self, WasmFilter};

pub(super) const HCM: &str =
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const ROUTER: &str = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";

#[derive(Debug, Clone)]
pub struct MappedListener {
    /// The `[[listeners]]` table; none for a listener that does not bind its port
    /// (`bind_to_port: false`: it serves what a virtual listener hands it).
    pub table: Option<Table>,
    /// What its filter chains do, most specific match first.
    pub chains: Vec<Chain>,
    /// How it takes part in a sidecar's handoff (`sidecar.rs`).
    pub shape: Shape,
    /// The filter chain's `DownstreamTlsContext` (a bound listener's one chain).
    pub tls: Option<super::tls::DownstreamTls>,
}

/// One filter chain: what it matches of the connection and what it does.
#[derive(Debug, Clone)]
pub struct Chain {
    /// `filter_chain_match.prefix_ranges` (an address or CIDR block) and `destination_port`.
    pub destination: Option<String>,
    pub destination_port: Option<u16>,
    pub action: ChainAction,
}

#[derive(Debug, Clone)]
pub enum ChainAction {
    /// An HTTP connection manager: its routes, and its Wasm HTTP filters, which every
    /// route runs first, in order.
    Http { routes: RouteRef, wasm: Vec<WasmFilter> },
    /// `tcp_proxy` to a cluster (which must be ORIGINAL_DST: passthrough).
    Tcp(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Binds its address and serves it.
    Bound,
    /// `use_original_dst` or an `original_dst` listener filter: a transparent listener.
    /// With `use_original_dst` (`hands_off`) it hands each connection to the
    /// `bind_to_port: false` listener of its original destination, if one exists.
    Transparent { hands_off: bool },
    /// `bind_to_port: false`: serves the connections virtual listeners hand it, for its
    /// address (`0.0.0.0` for any address) and port.
    Handed(std::net::SocketAddr),
}

impl MappedListener {
    /// Its HTTP chains' route configurations and Wasm filters.
    pub fn http(&self) -> impl Iterator<Item = (&RouteRef, &[WasmFilter])> {
        self.chains.iter().filter_map(|c| match &c.action {
            ChainAction::Http { routes, wasm } => Some((routes, wasm.as_slice())),
            ChainAction::Tcp(_) => None,
        })
    }
}

#[derive(Debug, Clone)]
pub enum RouteRef {
    /// A `RouteConfiguration` to ask RDS for.
    Rds(String),
    Inline(String, Routes),
}

impl RouteRef {
    pub fn name(&self) -> &str {
        match self {
            RouteRef::Rds(n) | RouteRef::Inline(n, _) => n,
        }
    }
}

pub fn map(l: &Listener) -> Result<MappedListener, Rejected> {
    let at = format!("listener {:?}", l.name);
    let no = |what: &str| Rejected(format!("{at}: {what} is not supported"));
    if l.name.is_empty() {
        return Err(Rejected("a listener without a name".into()));
    }
    let address = match l.address.as_ref().and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(sa)) => {
            let port = match sa.port_specifier {
                Some(PortSpecifier::PortValue(p)) => p,
                _ => return Err(no("an address without port_value")),
            };
            let text = if sa.address.contains(':') {
                format!("[{}]:{port}", sa.address)
            } else {
                format!("{}:{port}", sa.address)
            };
            text.parse::<std::net::SocketAddr>()
                .map_err(|_| Rejected(format!("{at}: address {text:?} is not an IP address and port")))?;
            text
        }
        _ => return Err(no("an address that is not a socket address")),
    };
    if let Some(shape) = super::sidecar::shape(l, &address, &at)? {
        return super::sidecar::map(l, address, shape, &at);
    }
    if l.filter_chains.len() != 1 || l.default_filter_chain.is_some() {
        return Err(no("more or less than one filter chain (filter_chain_match)"));
    }
    let chain = &l.filter_chains[0];
    if chain.filter_chain_match.is_some() {
        return Err(no("filter_chain_match"));
    }
    let tls = super::tls::downstream(chain.transport_socket.as_ref(), &at)?;
    let [f] = chain.filters.as_slice() else {
        return Err(no(
            "a filter chain with other network filters than one http_connection_manager",
        ));
    };
    let (routes, wasm) = http_connection_manager(f, &at)?;
    let mut t = Table::new();
    t.insert("name".into(), Value::String(l.name.clone()));
    t.insert("address".into(), Value::String(address));
    Ok(MappedListener {
        table: Some(t),
        chains: vec![Chain {
            destination: None,
            destination_port: None,
            action: ChainAction::Http { routes, wasm },
        }],
        shape: Shape::Bound,
        tls,
    })
}

/// A network filter that must be an HTTP connection manager: the routes it serves (RDS
/// over ADS, or inline) and its Wasm filters.
pub(super) fn http_connection_manager(
    f: &envoy_types::pb::envoy::config::listener::v3::Filter,
    at: &str,
) -> Result<(RouteRef, Vec<WasmFilter>), Rejected> {
    let no = |what: &str| Rejected(format!("{at}: {what} is not supported"));
    let any = match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) if any.type_url == HCM => any,
        _ => {
            return Err(Rejected(format!(
                "{at}: network filter {:?} is not an http_connection_manager",
                f.name
            )));
        }
    };
    let hcm = HttpConnectionManager::decode(any.value.as_slice())
        .map_err(|e| Rejected(format!("{at}: http_connection_manager does not decode: {e}")))?;
    let wasm = http_filters(&hcm, at)?;
    let routes = match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => {
            use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
            let ads = rds
                .config_source
                .as_ref()
                .is_none_or(|s| matches!(s.config_source_specifier, Some(ConfigSourceSpecifier::Ads(_))));
            if !ads {
                return Err(no("rds from a config_source other than ads"));
            }
            RouteRef::Rds(rds.route_config_name.clone())
        }
        Some(RouteSpecifier::RouteConfig(rc)) => RouteRef::Inline(rc.name.clone(), route::map(rc)?),
        _ => return Err(no("scoped routes")),
    };
    Ok((routes, wasm))
}

/// The router must be there (and last); a Wasm filter is read; another filter is skipped
/// when `is_optional`, otherwise the listener is refused with its name.
fn http_filters(hcm: &HttpConnectionManager, at: &str) -> Result<Vec<WasmFilter>, Rejected> {
    let mut router = false;
    let mut out: Vec<WasmFilter> = Vec::new();
    for f in &hcm.http_filters {
        let type_url = match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => any.type_url.as_str(),
            _ => "",
        };
        if type_url == ROUTER || f.name == "envoy.filters.http.router" {
            router = true;
        } else if type_url == wasm::WASM {
            let Some(http_filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                continue;
            };
            let w = wasm::map(&f.name, any, at)?;
            if out.iter().any(|o| o.name == w.name) {
                return Err(Rejected(format!("{at}: two Wasm filters named {:?}", w.name)));
            }
            out.push(w);
        } else if f.is_optional {
            tracing::info!(filter = %f.name, "xDS: optional HTTP filter skipped (Weft does not run it)");
        } else {
            return Err(Rejected(format!(
                "{at}: HTTP filter {:?} ({type_url}) is not supported (mark it is_optional to skip it)",
                f.name
            )));
        }
    }
    if !router {
        return Err(Rejected(format!(
            "{at}: the HTTP connection manager has no router filter"
        )));
    }
    Ok(out)
}
