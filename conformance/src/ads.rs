//! A real ADS server (State of the World and Delta, over h2c or mutual TLS) and builders of
//! the resources it serves: the xDS conformance tests and the fleet bench drive the real
//! `weft` binary with it.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ConfigSource, SocketAddress, address, config_source, socket_address,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::google::protobuf::Any;
use futures_util::Stream;
use prost::Message;
use tokio::sync::{mpsc, watch};

use crate::Upstream;

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const TYPES: [&str; 4] = [CLUSTER, ENDPOINT, LISTENER, ROUTE];
/// SDS, asked for once a listener or cluster names a secret.
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// An Envoy v3 bootstrap (YAML) pointing Weft at the ADS server on `ads`: `node` is the
/// node as a YAML flow mapping (`{ id: …, cluster: … }`), `api_type` is `GRPC` (State of
/// the World) or `DELTA_GRPC`.
pub fn bootstrap(node: &str, api_type: &str, ads: std::net::SocketAddr) -> String {
    format!(
        "node: {node}\n\
         dynamic_resources:\n  ads_config: {{ api_type: {api_type}, transport_api_version: V3, grpc_services: [{{ envoy_grpc: {{ cluster_name: xds }} }}] }}\n  \
         lds_config: {{ ads: {{}} }}\n  cds_config: {{ ads: {{}} }}\n\
         static_resources:\n  clusters:\n  - name: xds\n    type: STATIC\n    connect_timeout: 1s\n    \
         load_assignment: {{ cluster_name: xds, endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {port} }} }} }} }}] }}] }}\n",
        ip = ads.ip(),
        port = ads.port()
    )
}

/// What the ADS server serves: one version of each type's resources.
#[derive(Clone, Default)]
pub struct Resources {
    pub version: u64,
    pub by_type: Vec<(&'static str, Vec<Any>)>,
}

/// An ADS server. State of the World: each type's resources when first asked, when a
/// request names other resources, and whenever they change (a push sends only the types it
/// changed, as a server with a version per type does). Delta: the resources a push changed
/// or removed. Records every request.
#[derive(Clone)]
pub struct Ads {
    pub resources: watch::Sender<Resources>,
    pub requests: Arc<Mutex<Vec<DiscoveryRequest>>>,
    pub delta_requests: Arc<Mutex<Vec<DeltaDiscoveryRequest>>>,
    /// Raw responses sent as they are on every open SotW stream (hostile tests).
    pub raw: tokio::sync::broadcast::Sender<DiscoveryResponse>,
    /// What the server sent on all its streams (the fleet bench's bytes per push).
    pub sent: Arc<Sent>,
}

/// Responses sent and their encoded size, over all streams.
#[derive(Default)]
pub struct Sent {
    pub responses: AtomicU64,
    pub bytes: AtomicU64,
}

impl Sent {
    fn count(&self, response: &impl Message) {
        self.responses.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(response.encoded_len() as u64, Ordering::Relaxed);
    }
}

/// The resources of `type_url` in `snapshot`.
fn of_type(snapshot: &Resources, type_url: &str) -> Vec<Any> {
    snapshot
        .by_type
        .iter()
        .find(|(t, _)| *t == type_url)
        .map(|(_, r)| r.clone())
        .unwrap_or_default()
}

pub type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, tonic::Status>> + Send>>;
pub type DeltaResponses = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Responses;
    type DeltaAggregatedResourcesStream = DeltaResponses;

    async fn stream_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DiscoveryRequest>>,
    ) -> Result<tonic::Response<Responses>, tonic::Status> {
        let mut incoming = request.into_inner();
        let (tx, mut rx) = mpsc::channel(16);
        let mut changes = self.resources.subscribe();
        let requests = self.requests.clone();
        let mut raw = self.raw.subscribe();
        let counter = self.sent.clone();
        tokio::spawn(async move {
            // Per type: the resources last sent and the names last asked for.
            let mut sent: HashMap<String, Vec<Any>> = HashMap::new();
            let mut asked: HashMap<String, Vec<String>> = HashMap::new();
            let mut nonce = 0u64;
            let mut subscribed: Vec<String> = Vec::new();
            loop {
                let mut send_types = Vec::new();
                tokio::select! {
                    req = incoming.message() => {
                        let Ok(Some(req)) = req else { return };
                        requests.lock().expect("requests lock").push(req.clone());
                        if !subscribed.contains(&req.type_url) {
                            subscribed.push(req.type_url.clone());
                        }
                        let names_changed = asked.insert(req.type_url.clone(), req.resource_names.clone())
                            .is_none_or(|before| before != req.resource_names);
                        let current = of_type(&changes.borrow(), &req.type_url);
                        if names_changed || sent.get(&req.type_url) != Some(&current) {
                            send_types.push(req.type_url.clone());
                        }
                    }
                    changed = changes.changed() => {
                        if changed.is_err() { return }
                        let snapshot = changes.borrow();
                        send_types.extend(
                            subscribed.iter().filter(|t| sent.get(*t) != Some(&of_type(&snapshot, t))).cloned(),
                        );
                    }
                    response = raw.recv() => {
                        let Ok(response) = response else { return };
                        if tx.send(Ok(response)).await.is_err() {
                            return;
                        }
                    }
                }
                let snapshot = changes.borrow().clone();
                for type_url in send_types {
                    let resources = of_type(&snapshot, &type_url);
                    nonce += 1;
                    sent.insert(type_url.clone(), resources.clone());
                    let response = DiscoveryResponse {
                        version_info: snapshot.version.to_string(),
                        resources,
                        type_url,
                        nonce: nonce.to_string(),
                        ..DiscoveryResponse::default()
                    };
                    counter.count(&response);
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let stream: Responses = Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        Ok(tonic::Response::new(stream))
    }

    async fn delta_aggregated_resources(
        &self,
        request: tonic::Request<tonic::Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<tonic::Response<DeltaResponses>, tonic::Status> {
        let mut incoming = request.into_inner();
        let (tx, mut rx) = mpsc::channel(16);
        let mut changes = self.resources.subscribe();
        let requests = self.delta_requests.clone();
        let counter = self.sent.clone();
        tokio::spawn(async move {
            // Per type: the name of each resource last sent, by its encoded body, so that a
            // push decodes only the resources it changed.
            let mut sent: HashMap<String, HashMap<Vec<u8>, String>> = HashMap::new();
            let mut nonce = 0u64;
            loop {
                // A type and whether to send all its resources (a new subscription) or
                // only those changed since the last response.
                let mut send_types: Vec<(String, bool)> = Vec::new();
                tokio::select! {
                    req = incoming.message() => {
                        let Ok(Some(req)) = req else { return };
                        requests.lock().expect("requests lock").push(req.clone());
                        if !sent.contains_key(&req.type_url) || !req.resource_names_subscribe.is_empty() {
                            send_types.push((req.type_url.clone(), true));
                        }
                    }
                    changed = changes.changed() => {
                        if changed.is_err() { return }
                        send_types.extend(sent.keys().map(|t| (t.clone(), false)));
                    }
                }
                let snapshot = changes.borrow().clone();
                for (type_url, all) in send_types {
                    let before = sent.remove(&type_url).unwrap_or_default();
                    let mut now: HashMap<Vec<u8>, String> = HashMap::new();
                    let mut resources = Vec::new();
                    for any in of_type(&snapshot, &type_url) {
                        let known = before.get(&any.value);
                        let name = known.cloned().unwrap_or_else(|| name_of(&any));
                        now.insert(any.value.clone(), name.clone());
                        if all || known.is_none() {
                            resources.push(Resource {
                                name,
                                version: snapshot.version.to_string(),
                                resource: Some(any),
                                ..Resource::default()
                            });
                        }
                    }
                    let names: std::collections::HashSet<&String> = now.values().collect();
                    let mut removed_resources: Vec<String> =
                        before.values().filter(|n| !names.contains(n)).cloned().collect();
                    removed_resources.sort();
                    resources.sort_by(|a, b| a.name.cmp(&b.name));
                    sent.insert(type_url.clone(), now);
                    if !all && resources.is_empty() && removed_resources.is_empty() {
                        continue;
                    }
                    nonce += 1;
                    let response = DeltaDiscoveryResponse {
                        system_version_info: snapshot.version.to_string(),
                        resources,
                        type_url,
                        removed_resources,
                        nonce: nonce.to_string(),
                        ..DeltaDiscoveryResponse::default()
                    };
                    counter.count(&response);
                    if tx.send(Ok(response)).await.is_err() {
                        return;
                    }
                }
            }
        });
        let stream: DeltaResponses = Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        Ok(tonic::Response::new(stream))
    }
}

/// A resource's name, read from its body.
pub fn name_of(any: &Any) -> String {
    let bytes = any.value.as_slice();
    match any.type_url.as_str() {
        LISTENER => Listener::decode(bytes).map(|r| r.name),
        ROUTE => RouteConfiguration::decode(bytes).map(|r| r.name),
        CLUSTER => Cluster::decode(bytes).map(|r| r.name),
        SECRET => Secret::decode(bytes).map(|r| r.name),
        _ => ClusterLoadAssignment::decode(bytes).map(|r| r.cluster_name),
    }
    .expect("a resource the test encoded")
}

impl Ads {
    pub fn new(resources: Resources) -> Ads {
        Ads {
            resources: watch::Sender::new(resources),
            requests: Arc::new(Mutex::new(Vec::new())),
            delta_requests: Arc::new(Mutex::new(Vec::new())),
            raw: tokio::sync::broadcast::channel(16).0,
            sent: Arc::new(Sent::default()),
        }
    }

    /// Serves on `port` until the returned sender is dropped or sent to.
    pub async fn serve(&self, port: u16) -> tokio::sync::oneshot::Sender<()> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind ADS");
        self.serve_h2c(Accept::Tcp(listener))
    }

    /// Serves on the Unix socket `path` (reachable from another network namespace through
    /// a relay there) until the returned sender is dropped or sent to.
    pub async fn serve_unix(&self, path: &std::path::Path) -> tokio::sync::oneshot::Sender<()> {
        let listener = tokio::net::UnixListener::bind(path).expect("bind ADS");
        self.serve_h2c(Accept::Unix(listener))
    }

    fn serve_h2c(&self, listener: Accept) -> tokio::sync::oneshot::Sender<()> {
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let service = AggregatedDiscoveryServiceServer::new(self.clone());
        tokio::spawn(async move {
            // Dropped when the server stops: every open stream is cut, as a restart cuts them.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let stream = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(stream) => stream,
                        Err(_) => return,
                    },
                    _ = &mut stopped => return,
                };
                let service = service.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let mut service = service.clone();
                        async move { tonic::codegen::Service::call(&mut service, req).await }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        stop
    }

    /// Serves over mutual TLS with the `weft cert` bundle in `certs`; counts the client
    /// certificates it saw.
    pub async fn serve_tls(&self, certs: &std::path::Path) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        let read = |name: &str| std::fs::read(certs.join(name)).expect("the weft cert bundle");
        let acceptor = crate::mtls_acceptor(&read("server.pem"), &read("server-key.pem"), &read("ca.pem"), &[b"h2"]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let clients = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = clients.clone();
        let service = AggregatedDiscoveryServiceServer::new(self.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (acceptor, service, seen) = (acceptor.clone(), service.clone(), seen.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    if tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()) {
                        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let mut service = service.clone();
                        async move { tonic::codegen::Service::call(&mut service, req).await }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        (port, clients)
    }

    pub fn push(&self, edit: impl FnOnce(&mut Resources)) {
        self.resources.send_modify(|r| {
            edit(r);
            r.version += 1;
        });
    }

    /// The requests of `type_url` so far.
    pub fn requests(&self, type_url: &str) -> Vec<DiscoveryRequest> {
        let all = self.requests.lock().expect("requests lock");
        all.iter().filter(|r| r.type_url == type_url).cloned().collect()
    }

    /// Waits for a request of `type_url` that passes `check`.
    pub async fn wait_request(&self, type_url: &str, check: impl Fn(&DiscoveryRequest) -> bool) -> DiscoveryRequest {
        for _ in 0..1000 {
            if let Some(r) = self.requests(type_url).into_iter().find(|r| check(r)) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no such {type_url} request; got {:#?}", self.requests(type_url));
    }
}

/// Where an h2c ADS server takes connections from.
enum Accept {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// A connection of either kind.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

impl Accept {
    async fn accept(&self) -> std::io::Result<Box<dyn Io>> {
        Ok(match self {
            Accept::Tcp(l) => Box::new(l.accept().await?.0),
            Accept::Unix(l) => Box::new(l.accept().await?.0),
        })
    }
}

pub fn any(type_url: &str, m: &impl Message) -> Any {
    Any {
        type_url: type_url.into(),
        value: m.encode_to_vec(),
    }
}

pub fn socket(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.into(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..SocketAddress::default()
        })),
    }
}

pub fn listener(name: &str, extra_filters: Vec<HttpFilter>) -> Any {
    let mut http_filters = extra_filters;
    http_filters.push(HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router".into(),
            value: Vec::new(),
        })),
        ..HttpFilter::default()
    });
    let hcm = HttpConnectionManager {
        stat_prefix: "http".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: "routes".into(),
            config_source: Some(ConfigSource {
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
                ..ConfigSource::default()
            }),
        })),
        http_filters,
        ..HttpConnectionManager::default()
    };
    let l = Listener {
        name: name.into(),
        address: Some(socket("127.0.0.1", 0)),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(filter::ConfigType::TypedConfig(any(
                    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    &hcm,
                ))),
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    };
    any(LISTENER, &l)
}

/// Routes: `/` to `cluster`, `/regex` matched by `regex`.
pub fn routes(cluster: &str, regex: &str) -> Any {
    let to = |c: &str| {
        Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c.into())),
            ..RouteAction::default()
        }))
    };
    let rc = RouteConfiguration {
        name: "routes".into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: vec![
                Route {
                    name: "re".into(),
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::SafeRegex(
                            envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                                regex: regex.into(),
                                ..Default::default()
                            },
                        )),
                        ..RouteMatch::default()
                    }),
                    action: to(cluster),
                    ..Route::default()
                },
                Route {
                    name: "all".into(),
                    r#match: Some(RouteMatch {
                        path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                        ..RouteMatch::default()
                    }),
                    action: to(cluster),
                    ..Route::default()
                },
            ],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    };
    any(ROUTE, &rc)
}

pub fn eds_cluster(name: &str) -> Any {
    let c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(cluster::DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(cluster::EdsClusterConfig {
            service_name: name.into(),
            ..Default::default()
        }),
        ..Cluster::default()
    };
    any(CLUSTER, &c)
}

/// `healthy` endpoints plus one marked UNHEALTHY (a dead address: any request sent there fails).
pub fn assignment(name: &str, healthy: &[std::net::SocketAddr]) -> Any {
    let ep = |a: std::net::SocketAddr, status: i32| LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(socket(&a.ip().to_string(), a.port())),
            ..Endpoint::default()
        })),
        health_status: status,
        ..LbEndpoint::default()
    };
    let mut lb_endpoints: Vec<LbEndpoint> = healthy.iter().map(|a| ep(*a, 1)).collect();
    lb_endpoints.push(ep(crate::dead_addr(), 2));
    let la = ClusterLoadAssignment {
        cluster_name: name.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints,
            ..LocalityLbEndpoints::default()
        }],
        ..ClusterLoadAssignment::default()
    };
    any(ENDPOINT, &la)
}

pub fn base(a: &Upstream, b: &Upstream) -> Resources {
    Resources {
        version: 1,
        by_type: vec![
            (CLUSTER, vec![eds_cluster("a"), eds_cluster("b")]),
            (ENDPOINT, vec![assignment("a", &[a.addr]), assignment("b", &[b.addr])]),
            (LISTENER, vec![listener("main", Vec::new())]),
            (ROUTE, vec![routes("a", "/re+gex")]),
        ],
    }
}

pub fn set(r: &mut Resources, type_url: &str, resources: Vec<Any>) {
    if let Some(entry) = r.by_type.iter_mut().find(|(t, _)| *t == type_url) {
        entry.1 = resources;
    }
}

/// An HTTP connection manager as a network filter: the router, routes from RDS `rds`.
pub fn hcm_filter(rds: &str) -> Filter {
    let router = HttpFilter {
        name: "envoy.filters.http.router".into(),
        config_type: Some(http_filter::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router".into(),
            value: Vec::new(),
        })),
        ..HttpFilter::default()
    };
    let hcm = HttpConnectionManager {
        stat_prefix: "http".into(),
        route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
            route_config_name: rds.into(),
            config_source: Some(ConfigSource {
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
                ..ConfigSource::default()
            }),
        })),
        http_filters: vec![router],
        ..HttpConnectionManager::default()
    };
    Filter {
        name: "envoy.filters.network.http_connection_manager".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            &hcm,
        ))),
    }
}

/// A `tcp_proxy` network filter to `cluster`.
pub fn tcp_proxy_filter(cluster: &str) -> Filter {
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
    let tcp = TcpProxy {
        stat_prefix: cluster.into(),
        cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
        ..TcpProxy::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(
            "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            &tcp,
        ))),
    }
}

/// A listener on `host:port` whose one filter chain serves the route configuration `rds`.
pub fn listener_at(name: &str, host: &str, port: u16, rds: &str) -> Listener {
    Listener {
        name: name.into(),
        address: Some(socket(host, port)),
        filter_chains: vec![FilterChain {
            filters: vec![hcm_filter(rds)],
            ..FilterChain::default()
        }],
        ..Listener::default()
    }
}

/// A route configuration `name` sending every path of every host to `cluster`.
pub fn route_config(name: &str, cluster: &str) -> Any {
    let rc = RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: format!("{name}-all"),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "all".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                    ..RouteMatch::default()
                }),
                action: Some(route::Action::Route(RouteAction {
                    cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
                    ..RouteAction::default()
                })),
                ..Route::default()
            }],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    };
    any(ROUTE, &rc)
}

/// A STATIC cluster with one endpoint.
pub fn static_cluster(name: &str, endpoint: std::net::SocketAddr) -> Any {
    let c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::Static as i32,
        )),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(&endpoint.ip().to_string(), endpoint.port())),
                        ..Endpoint::default()
                    })),
                    ..LbEndpoint::default()
                }],
                ..LocalityLbEndpoints::default()
            }],
            ..ClusterLoadAssignment::default()
        }),
        ..Cluster::default()
    };
    any(CLUSTER, &c)
}

/// An ORIGINAL_DST cluster, as Istio's `PassthroughCluster`.
pub fn original_dst_cluster(name: &str) -> Any {
    let c = Cluster {
        name: name.into(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: cluster::LbPolicy::ClusterProvided as i32,
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration { seconds: 10, nanos: 0 }),
        ..Cluster::default()
    };
    any(CLUSTER, &c)
}

/// Istio's `virtualOutbound`: `use_original_dst` on `port`, a chain for connections to
/// the listener itself (Istio's blackhole) and one passing the rest to `passthrough`.
pub fn virtual_outbound(port: u16, passthrough: &str) -> Listener {
    use envoy_types::pb::envoy::config::listener::v3::FilterChainMatch;
    Listener {
        name: "virtualOutbound".into(),
        address: Some(socket("0.0.0.0", port)),
        use_original_dst: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        filter_chains: vec![
            FilterChain {
                name: "virtualOutbound-blackhole".into(),
                filter_chain_match: Some(FilterChainMatch {
                    destination_port: Some(envoy_types::pb::google::protobuf::UInt32Value { value: u32::from(port) }),
                    ..FilterChainMatch::default()
                }),
                filters: vec![tcp_proxy_filter("BlackHoleCluster")],
                ..FilterChain::default()
            },
            FilterChain {
                name: "virtualOutbound-catchall-tcp".into(),
                filters: vec![tcp_proxy_filter(passthrough)],
                ..FilterChain::default()
            },
        ],
        ..Listener::default()
    }
}

/// An Istio outbound listener that binds nothing (`bind_to_port: false`), serving the
/// route configuration `rds` for connections to `host:port` handed over by the virtual
/// listener; non-HTTP goes to `passthrough`.
pub fn handed_listener(host: &str, port: u16, rds: &str, passthrough: &str) -> Listener {
    use envoy_types::pb::envoy::config::listener::v3::FilterChainMatch;
    Listener {
        name: format!("{host}_{port}"),
        address: Some(socket(host, port)),
        bind_to_port: Some(envoy_types::pb::google::protobuf::BoolValue { value: false }),
        filter_chains: vec![FilterChain {
            filter_chain_match: Some(FilterChainMatch {
                transport_protocol: "raw_buffer".into(),
                application_protocols: vec!["http/1.1".into(), "h2c".into()],
                ..FilterChainMatch::default()
            }),
            filters: vec![hcm_filter(rds)],
            ..FilterChain::default()
        }],
        default_filter_chain: Some(FilterChain {
            filters: vec![tcp_proxy_filter(passthrough)],
            ..FilterChain::default()
        }),
        ..Listener::default()
    }
}

/// SDS: secrets and the TLS contexts that name them, in the shapes Istio sends.
pub mod sds {
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::{
        AggregatedConfigSource, ConfigSource, DataSource, TransportSocket, config_source, data_source, transport_socket,
    };
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
        SubjectAltNameMatcher, TlsCertificate, UpstreamTlsContext, common_tls_context, secret,
    };
    use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
    use envoy_types::pb::google::protobuf::{Any, BoolValue};
    use prost::Message;

    use super::{CLUSTER, LISTENER, SECRET, any};

    fn inline(pem: &str) -> Option<DataSource> {
        Some(DataSource {
            specifier: Some(data_source::Specifier::InlineString(pem.into())),
            ..DataSource::default()
        })
    }

    /// A `tls_certificate` secret with inline PEM.
    pub fn certificate(name: &str, cert_pem: &str, key_pem: &str) -> Any {
        any(
            SECRET,
            &Secret {
                name: name.into(),
                r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                    certificate_chain: inline(cert_pem),
                    private_key: inline(key_pem),
                    ..TlsCertificate::default()
                })),
            },
        )
    }

    /// A `validation_context` secret: a CA bundle (Istio's `ROOTCA`).
    pub fn validation(name: &str, ca_pem: &str) -> Any {
        any(
            SECRET,
            &Secret {
                name: name.into(),
                r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
                    trusted_ca: inline(ca_pem),
                    ..CertificateValidationContext::default()
                })),
            },
        )
    }

    fn by_ads(name: &str) -> SdsSecretConfig {
        SdsSecretConfig {
            name: name.into(),
            sds_config: Some(ConfigSource {
                config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
                ..ConfigSource::default()
            }),
        }
    }

    fn socket(type_url: &str, m: &impl Message) -> TransportSocket {
        TransportSocket {
            name: "envoy.transport_sockets.tls".into(),
            config_type: Some(transport_socket::ConfigType::TypedConfig(any(type_url, m))),
        }
    }

    /// A listener's TLS: the certificate secret `cert`; with `client_ca`, mutual TLS.
    pub fn downstream(cert: &str, client_ca: Option<&str>, alpn: &[&str]) -> TransportSocket {
        let validation =
            client_ca.map(|ca| common_tls_context::ValidationContextType::ValidationContextSdsSecretConfig(by_ads(ca)));
        downstream_with(Vec::new(), vec![by_ads(cert)], validation, alpn)
    }

    /// A listener's TLS with its certificate inline and mutual TLS as Istio's inbound side
    /// writes it: a combined validation context (the CA secret `client_ca`, and a prefix
    /// clients' names must start with, the trust domain). Istio still writes the deprecated
    /// `match_subject_alt_names`.
    #[allow(deprecated)]
    pub fn downstream_inline(cert_pem: &str, key_pem: &str, client_ca: &str, name_prefix: &str) -> TransportSocket {
        let inline_cert = TlsCertificate {
            certificate_chain: inline(cert_pem),
            private_key: inline(key_pem),
            ..TlsCertificate::default()
        };
        let validation = common_tls_context::ValidationContextType::CombinedValidationContext(
            common_tls_context::CombinedCertificateValidationContext {
                default_validation_context: Some(CertificateValidationContext {
                    match_subject_alt_names: vec![StringMatcher {
                        match_pattern: Some(string_matcher::MatchPattern::Prefix(name_prefix.into())),
                        ..StringMatcher::default()
                    }],
                    ..CertificateValidationContext::default()
                }),
                validation_context_sds_secret_config: Some(by_ads(client_ca)),
                ..Default::default()
            },
        );
        downstream_with(vec![inline_cert], Vec::new(), Some(validation), &[])
    }

    fn downstream_with(
        tls_certificates: Vec<TlsCertificate>,
        sds: Vec<SdsSecretConfig>,
        validation: Option<common_tls_context::ValidationContextType>,
        alpn: &[&str],
    ) -> TransportSocket {
        let ctx = DownstreamTlsContext {
            require_client_certificate: validation.as_ref().map(|_| BoolValue { value: true }),
            common_tls_context: Some(CommonTlsContext {
                tls_certificates,
                tls_certificate_sds_secret_configs: sds,
                validation_context_type: validation,
                alpn_protocols: alpn.iter().map(|p| (*p).to_owned()).collect(),
                ..CommonTlsContext::default()
            }),
            ..DownstreamTlsContext::default()
        };
        socket(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            &ctx,
        )
    }

    /// A cluster's TLS as Istio writes an mTLS cluster: `sni`, the client certificate
    /// secret `cert`, and a combined validation context (the CA secret `ca`, URI SANs).
    pub fn upstream(sni: &str, cert: Option<&str>, ca: &str, spiffe_ids: &[&str]) -> TransportSocket {
        let sans = spiffe_ids
            .iter()
            .map(|id| SubjectAltNameMatcher {
                san_type: 3, // URI
                matcher: Some(StringMatcher {
                    match_pattern: Some(string_matcher::MatchPattern::Exact((*id).into())),
                    ..StringMatcher::default()
                }),
                ..SubjectAltNameMatcher::default()
            })
            .collect();
        let ctx = UpstreamTlsContext {
            common_tls_context: Some(CommonTlsContext {
                tls_certificate_sds_secret_configs: cert.map(by_ads).into_iter().collect(),
                validation_context_type: Some(common_tls_context::ValidationContextType::CombinedValidationContext(
                    common_tls_context::CombinedCertificateValidationContext {
                        default_validation_context: Some(CertificateValidationContext {
                            match_typed_subject_alt_names: sans,
                            ..CertificateValidationContext::default()
                        }),
                        validation_context_sds_secret_config: Some(by_ads(ca)),
                        ..Default::default()
                    },
                )),
                ..CommonTlsContext::default()
            }),
            sni: sni.into(),
            ..UpstreamTlsContext::default()
        };
        socket(
            "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            &ctx,
        )
    }

    /// `listener` (an encoded Listener) with `ts` on its filter chain.
    pub fn with_listener_tls(listener: Any, ts: TransportSocket) -> Any {
        let mut l = Listener::decode(listener.value.as_slice()).expect("a listener the test encoded");
        l.filter_chains[0].transport_socket = Some(ts);
        any(LISTENER, &l)
    }

    /// `cluster` (an encoded Cluster) with `ts` as its transport socket.
    pub fn with_cluster_tls(cluster: Any, ts: TransportSocket) -> Any {
        let mut c = Cluster::decode(cluster.value.as_slice()).expect("a cluster the test encoded");
        c.transport_socket = Some(ts);
        any(CLUSTER, &c)
    }
}
