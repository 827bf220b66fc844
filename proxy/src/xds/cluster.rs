//! CDS and EDS: a `Cluster` as a `[[clusters]]` table, and a `ClusterLoadAssignment` as its
//! endpoints. An EDS cluster is complete (warm) only once its assignment arrived.

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, address, socket_address::PortSpecifier};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint::HostIdentifier};
use toml::{Table, Value};

use super::{Rejected, duration_text};
use crate::config::MAX_WEIGHT;

/// One cluster, mapped, with its endpoints or the EDS name they come from.
#[derive(Debug, Clone)]
pub struct MappedCluster {
    pub table: Table,
    pub endpoints: Endpoints,
    /// The transport socket's `UpstreamTlsContext`.
    pub tls: Option<super::tls::UpstreamTls>,
}

#[derive(Debug, Clone)]
pub enum Endpoints {
    Static(Vec<Value>),
    /// An ORIGINAL_DST cluster: each request goes where its connection was going.
    Original,
    /// The `ClusterLoadAssignment` name (`eds_cluster_config.service_name`, else the cluster's).
    Eds(String),
}

pub fn map(c: &Cluster) -> Result<MappedCluster, Rejected> {
    let at = format!("cluster {:?}", c.name);
    let no = |what: &str| Rejected(format!("{at}: {what} is not supported"));
    if c.name.is_empty() {
        return Err(Rejected("a cluster without a name".into()));
    }
    let mut t = Table::new();
    t.insert("name".into(), Value::String(c.name.clone()));
    let kind = match &c.cluster_discovery_type {
        None => cluster::DiscoveryType::Static,
        Some(cluster::ClusterDiscoveryType::Type(t)) => {
            cluster::DiscoveryType::try_from(*t).map_err(|_| no("an unknown discovery type"))?
        }
        Some(_) => return Err(no("a custom cluster_type")),
    };
    let endpoints = match kind {
        cluster::DiscoveryType::Eds => {
            let name = c
                .eds_cluster_config
                .as_ref()
                .map(|e| e.service_name.clone())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| c.name.clone());
            Endpoints::Eds(name)
        }
        cluster::DiscoveryType::Static | cluster::DiscoveryType::StrictDns | cluster::DiscoveryType::LogicalDns => {
            let la = c
                .load_assignment
                .as_ref()
                .ok_or_else(|| Rejected(format!("{at}: a {kind:?} cluster needs load_assignment")))?;
            Endpoints::Static(endpoints(la, &at)?)
        }
        cluster::DiscoveryType::OriginalDst => return original_dst(c, t, &at),
    };
    let lb = match cluster::LbPolicy::try_from(c.lb_policy) {
        Ok(cluster::LbPolicy::RoundRobin) => "round_robin",
        Ok(cluster::LbPolicy::LeastRequest) => "least_request",
        Ok(cluster::LbPolicy::Random) => "random",
        Ok(cluster::LbPolicy::RingHash) => "ring_hash",
        Ok(cluster::LbPolicy::Maglev) => "maglev",
        _ => return Err(no("this lb_policy")),
    };
    t.insert("lb".into(), Value::String(lb.into()));
    if matches!(lb, "ring_hash" | "maglev") {
        // Envoy takes the hash from the routes' hash_policy (set at assembly); without one,
        // the client's address keeps a client on one endpoint.
        let mut h = Table::new();
        h.insert("client_address".into(), Value::Boolean(true));
        t.insert("hash_on".into(), Value::Table(h));
    }
    if let Some(d) = &c.connect_timeout
        && let Some(text) = duration_text(d.seconds, d.nanos).filter(|_| d.seconds > 0 || d.nanos > 0)
    {
        t.insert("connect_timeout".into(), Value::String(text));
    }
    if !c.transport_socket_matches.is_empty() {
        return Err(no("transport_socket_matches (TLS chosen per endpoint)"));
    }
    let tls = super::tls::upstream(c.transport_socket.as_ref(), &at)?;
    let h2 = c.http2_protocol_options.is_some()
        || c.typed_extension_protocol_options
            .get("envoy.extensions.upstreams.http.v3.HttpProtocolOptions")
            .is_some_and(|any| http2_in_protocol_options(&any.value));
    if h2 {
        t.insert("protocol".into(), Value::String("http2".into()));
    }
    if let Some(cb) = &c.circuit_breakers {
        // Weft has one priority: the DEFAULT thresholds.
        if let Some(th) = cb.thresholds.iter().find(|t| t.priority == 0) {
            let mut b = Table::new();
            for (key, v) in [
                ("max_connections", th.max_connections),
                ("max_pending_requests", th.max_pending_requests),
                ("max_requests", th.max_requests),
                ("max_retries", th.max_retries),
            ] {
                if let Some(v) = v {
                    b.insert(key.into(), Value::Integer(i64::from(v.value)));
                }
            }
            if !b.is_empty() {
                t.insert("circuit_breaker".into(), Value::Table(b));
            }
        }
    }
    if let Some(od) = &c.outlier_detection {
        let mut o = Table::new();
        if let Some(n) = od.consecutive_5xx {
            o.insert("consecutive_failures".into(), Value::Integer(i64::from(n.value)));
        }
        if let Some(d) = od
            .base_ejection_time
            .as_ref()
            .and_then(|d| duration_text(d.seconds, d.nanos))
        {
            o.insert("base_ejection".into(), Value::String(d));
        }
        if let Some(d) = od
            .max_ejection_time
            .as_ref()
            .and_then(|d| duration_text(d.seconds, d.nanos))
        {
            o.insert("max_ejection".into(), Value::String(d));
        }
        if let Some(p) = od.max_ejection_percent {
            o.insert(
                "max_ejection_percent".into(),
                Value::Integer(i64::from(p.value.min(100))),
            );
        }
        t.insert("outlier_detection".into(), Value::Table(o));
    }
    if let Some(hc) = c.health_checks.first() {
        use envoy_types::pb::envoy::config::core::v3::health_check::HealthChecker;
        if c.health_checks.len() > 1 {
            return Err(no("more than one health check"));
        }
        let Some(HealthChecker::HttpHealthCheck(http)) = &hc.health_checker else {
            return Err(no("a health check other than HTTP"));
        };
        let mut h = Table::new();
        h.insert("path".into(), Value::String(http.path.clone()));
        for (key, d) in [("interval", &hc.interval), ("timeout", &hc.timeout)] {
            if let Some(text) = d.as_ref().and_then(|d| duration_text(d.seconds, d.nanos)) {
                h.insert(key.into(), Value::String(text));
            }
        }
        for (key, v) in [
            ("healthy_threshold", hc.healthy_threshold),
            ("unhealthy_threshold", hc.unhealthy_threshold),
        ] {
            if let Some(v) = v {
                h.insert(key.into(), Value::Integer(i64::from(v.value)));
            }
        }
        t.insert("health_check".into(), Value::Table(h));
    }
    Ok(MappedCluster {
        table: t,
        endpoints,
        tls,
    })
}

/// An ORIGINAL_DST cluster (Istio's `PassthroughCluster`, `InboundPassthroughCluster`) as a
/// `kind = "original_destination"` cluster. Such a cluster sends each request once to the
/// connection's original destination: a route's retry or hash policy for it is not kept.
fn original_dst(c: &Cluster, mut t: Table, at: &str) -> Result<MappedCluster, Rejected> {
    let no = |what: &str| Rejected(format!("{at}: {what} is not supported on an ORIGINAL_DST cluster"));
    if !matches!(
        cluster::LbPolicy::try_from(c.lb_policy),
        Ok(cluster::LbPolicy::ClusterProvided | cluster::LbPolicy::RoundRobin)
    ) {
        return Err(no("an lb_policy other than CLUSTER_PROVIDED"));
    }
    if let Some(cluster::LbConfig::OriginalDstLbConfig(o)) = &c.lb_config
        && (o.use_http_header || o.upstream_port_override.is_some())
    {
        return Err(no("original_dst_lb_config (use_http_header, upstream_port_override)"));
    }
    if !c.health_checks.is_empty() || c.outlier_detection.is_some() {
        return Err(no("a health check or outlier detection"));
    }
    if c.transport_socket.is_some() || !c.transport_socket_matches.is_empty() {
        return Err(no(
            "a transport socket on an ORIGINAL_DST cluster (TLS to original destinations is not mapped)",
        ));
    }
    t.insert("kind".into(), Value::String("original_destination".into()));
    if let Some(d) = &c.connect_timeout
        && let Some(text) = duration_text(d.seconds, d.nanos).filter(|_| d.seconds > 0 || d.nanos > 0)
    {
        t.insert("connect_timeout".into(), Value::String(text));
    }
    Ok(MappedCluster {
        table: t,
        endpoints: Endpoints::Original,
        tls: None,
    })
}

/// `explicit_http_config.http2_protocol_options` in an `HttpProtocolOptions`.
fn http2_in_protocol_options(bytes: &[u8]) -> bool {
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
        HttpProtocolOptions, http_protocol_options::UpstreamProtocolOptions,
        http_protocol_options::explicit_http_config::ProtocolConfig,
    };
    use prost::Message;
    let Ok(options) = HttpProtocolOptions::decode(bytes) else {
        return false;
    };
    matches!(
        options.upstream_protocol_options,
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(ref e))
            if matches!(e.protocol_config, Some(ProtocolConfig::Http2ProtocolOptions(_)))
    )
}

/// The endpoints to send to: the lowest priority with any endpoint that may take traffic
/// (Weft has no spill-over between priorities), never UNHEALTHY, DRAINING or TIMEOUT ones.
pub fn endpoints(la: &ClusterLoadAssignment, at: &str) -> Result<Vec<Value>, Rejected> {
    let mut best: Option<(u32, Vec<Value>)> = None;
    for locality in &la.endpoints {
        let mut here = Vec::new();
        for lb in &locality.lb_endpoints {
            let status = HealthStatus::try_from(lb.health_status).unwrap_or(HealthStatus::Unknown);
            if matches!(
                status,
                HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout
            ) {
                continue;
            }
            let Some(HostIdentifier::Endpoint(ep)) = &lb.host_identifier else {
                return Err(Rejected(format!(
                    "{at}: an endpoint by name (endpoint_name) is not supported"
                )));
            };
            let address = match ep.address.as_ref().and_then(|a| a.address.as_ref()) {
                Some(address::Address::SocketAddress(sa)) => {
                    let port = match sa.port_specifier {
                        Some(PortSpecifier::PortValue(p)) => p,
                        _ => return Err(Rejected(format!("{at}: an endpoint without port_value"))),
                    };
                    if sa.address.contains(':') {
                        format!("[{}]:{port}", sa.address)
                    } else {
                        format!("{}:{port}", sa.address)
                    }
                }
                _ => return Err(Rejected(format!("{at}: an endpoint that is not a socket address"))),
            };
            let weight = lb.load_balancing_weight.map_or(1, |w| w.value);
            if weight == 0 || weight > MAX_WEIGHT {
                return Err(Rejected(format!(
                    "{at}: endpoint {address}: load_balancing_weight {weight} is outside 1..={MAX_WEIGHT}"
                )));
            }
            let mut e = Table::new();
            e.insert("address".into(), Value::String(address));
            e.insert("weight".into(), Value::Integer(i64::from(weight)));
            here.push(Value::Table(e));
        }
        if here.is_empty() {
            continue;
        }
        match &mut best {
            Some((p, list)) if *p == locality.priority => list.extend(here),
            Some((p, _)) if *p < locality.priority => {}
            _ => best = Some((locality.priority, here)),
        }
    }
    Ok(best.map(|(_, list)| list).unwrap_or_default())
}
