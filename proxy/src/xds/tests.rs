//! The mapping of each resource type onto Weft's tables, and the snapshot's assembly.

use envoy_types::pb::envoy::config::core::v3::{Address, HeaderValue, HeaderValueOption, SocketAddress, address};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use envoy_types::pb::envoy::config::route::v3::{
    RetryPolicy, Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action, route_match,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use toml::Value;

use super::cluster::{self, Endpoints, MappedCluster};
use super::listener::{Chain, ChainAction, MappedListener, RouteRef, Shape};
use super::route as xroute;
use super::snapshot::Snapshot;

fn to(cluster: &str) -> Option<route::Action> {
    Some(route::Action::Route(RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster.into())),
        ..RouteAction::default()
    }))
}

fn prefix(p: &str) -> Option<RouteMatch> {
    Some(RouteMatch {
        path_specifier: Some(route_match::PathSpecifier::Prefix(p.into())),
        ..RouteMatch::default()
    })
}

fn vhost(name: &str, domains: &[&str], routes: Vec<Route>) -> VirtualHost {
    VirtualHost {
        name: name.into(),
        domains: domains.iter().map(|d| (*d).into()).collect(),
        routes,
        ..VirtualHost::default()
    }
}

fn simple(cluster: &str) -> Route {
    Route {
        r#match: prefix("/"),
        action: to(cluster),
        ..Route::default()
    }
}

fn http_chain(routes: RouteRef) -> Chain {
    Chain {
        destination: None,
        destination_port: None,
        action: ChainAction::Http {
            routes,
            wasm: Vec::new(),
        },
    }
}

fn hosts(routes: &[toml::Table]) -> Vec<String> {
    routes
        .iter()
        .map(|r| {
            r.get("match")
                .and_then(|m| m.get("host"))
                .and_then(Value::as_str)
                .unwrap_or("*")
                .to_owned()
        })
        .collect()
}

#[test]
fn virtual_hosts_are_laid_out_as_envoy_picks_them() {
    let rc = RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![
            vhost("any", &["*"], vec![simple("d")]),
            vhost("wild", &["*.example.com", "*.b.example.com"], vec![simple("w")]),
            vhost("exact", &["api.example.com", "api.example.com:80"], vec![simple("e")]),
        ],
        ..RouteConfiguration::default()
    };
    let mapped = xroute::map(&rc).expect("maps");
    assert_eq!(
        hosts(&mapped.routes),
        ["api.example.com", "*.b.example.com", "*.example.com", "*"]
    );
    let bad = RouteConfiguration {
        virtual_hosts: vec![vhost("x", &["api.*"], vec![simple("d")])],
        ..RouteConfiguration::default()
    };
    assert!(
        xroute::map(&bad)
            .expect_err("NACK")
            .0
            .contains("only exact, *.suffix and *")
    );
}

#[test]
fn rewrites_retries_and_header_edits_map_onto_the_route_and_cluster() {
    let action = RouteAction {
        cluster_specifier: Some(route_action::ClusterSpecifier::Cluster("c".into())),
        regex_rewrite: Some(RegexMatchAndSubstitute {
            pattern: Some(envoy_types::pb::envoy::r#type::matcher::v3::RegexMatcher {
                regex: "^/v1/(.*)$".into(),
                ..Default::default()
            }),
            substitution: "/\\1".into(),
        }),
        host_rewrite_specifier: Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(
            "up.internal".into(),
        )),
        retry_policy: Some(RetryPolicy {
            retry_on: "connect-failure,retriable-status-codes".into(),
            num_retries: Some(envoy_types::pb::google::protobuf::UInt32Value { value: 2 }),
            retriable_status_codes: vec![503],
            ..RetryPolicy::default()
        }),
        ..RouteAction::default()
    };
    let header = |k: &str, v: &str, action: i32| HeaderValueOption {
        header: Some(HeaderValue {
            key: k.into(),
            value: v.into(),
            ..HeaderValue::default()
        }),
        append_action: action,
        ..HeaderValueOption::default()
    };
    let r = Route {
        r#match: prefix("/v1"),
        action: Some(route::Action::Route(action)),
        request_headers_to_add: vec![header("X-Set", "1", 2), header("x-add", "2", 0)],
        response_headers_to_remove: vec!["server".into()],
        ..Route::default()
    };
    let rc = RouteConfiguration {
        virtual_hosts: vec![vhost("v", &["*"], vec![r])],
        ..RouteConfiguration::default()
    };
    let mapped = xroute::map(&rc).expect("maps");
    let t = &mapped.routes[0];
    assert_eq!(t["rewrite"]["regex"].as_str(), Some("^/v1/(.*)$"));
    assert_eq!(
        t["rewrite"]["substitution"].as_str(),
        Some("/${1}"),
        "RE2's \\1 is the regex crate's ${{1}}"
    );
    assert_eq!(t["host_rewrite"].as_str(), Some("up.internal"));
    assert_eq!(t["request_headers"]["set"]["x-set"].as_str(), Some("1"));
    assert_eq!(t["request_headers"]["add"]["x-add"].as_str(), Some("2"));
    assert_eq!(t["response_headers"]["remove"][0].as_str(), Some("server"));
    let retry = &mapped.retries["c"];
    assert_eq!(retry["attempts"].as_integer(), Some(3));
    assert_eq!(retry["statuses"].as_array().map(Vec::len), Some(1));
}

fn endpoint(port: u32, status: i32, priority: u32) -> LocalityLbEndpoints {
    LocalityLbEndpoints {
        priority,
        lb_endpoints: vec![LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "10.0.0.1".into(),
                        port_specifier: Some(
                            envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier::PortValue(port),
                        ),
                        ..SocketAddress::default()
                    })),
                }),
                ..Endpoint::default()
            })),
            health_status: status,
            ..LbEndpoint::default()
        }],
        ..LocalityLbEndpoints::default()
    }
}

#[test]
fn endpoints_skip_unhealthy_and_draining_and_take_the_lowest_usable_priority() {
    // 1 HEALTHY, 2 UNHEALTHY, 3 DRAINING, 0 UNKNOWN (usable).
    let la = ClusterLoadAssignment {
        cluster_name: "c".into(),
        endpoints: vec![
            endpoint(1, 2, 0),
            endpoint(2, 3, 0),
            endpoint(3, 1, 1),
            endpoint(4, 0, 1),
            endpoint(5, 1, 2),
        ],
        ..ClusterLoadAssignment::default()
    };
    let list = cluster::endpoints(&la, "c").expect("maps");
    let addresses: Vec<&str> = list.iter().filter_map(|e| e["address"].as_str()).collect();
    assert_eq!(addresses, ["10.0.0.1:3", "10.0.0.1:4"]);
}

#[test]
fn a_route_to_a_cluster_without_usable_endpoints_answers_503_unless_validate_clusters() {
    let rc = RouteConfiguration {
        name: "r".into(),
        virtual_hosts: vec![vhost("v", &["*"], vec![simple("gone")])],
        ..RouteConfiguration::default()
    };
    let mut snapshot = Snapshot::default();
    let mut listener = toml::Table::new();
    listener.insert("name".into(), Value::String("l".into()));
    listener.insert("address".into(), Value::String("127.0.0.1:0".into()));
    snapshot.listeners.insert(
        "l".into(),
        MappedListener {
            table: Some(listener),
            chains: vec![http_chain(RouteRef::Inline(
                "r".into(),
                xroute::map(&rc).expect("maps"),
            ))],
            shape: Shape::Bound,
            tls: None,
        },
    );
    let mut c = toml::Table::new();
    c.insert("name".into(), Value::String("gone".into()));
    snapshot.clusters.insert(
        "gone".into(),
        MappedCluster {
            table: c,
            endpoints: Endpoints::Static(Vec::new()),
            tls: None,
        },
    );
    let text = snapshot
        .assemble(&toml::Table::new(), None, &[])
        .expect("ok")
        .expect("warm");
    let config = crate::config::Config::parse("xds", &text).expect("valid");
    let route = config.routes[0].get_ref();
    assert_eq!(route.direct_response.as_ref().map(|d| d.get_ref().status), Some(503));
    assert!(config.clusters.is_empty());

    let strict = RouteConfiguration {
        validate_clusters: Some(envoy_types::pb::google::protobuf::BoolValue { value: true }),
        virtual_hosts: vec![vhost("v", &["*"], vec![simple("unknown")])],
        ..RouteConfiguration::default()
    };
    if let Some(l) = snapshot.listeners.get_mut("l") {
        l.chains = vec![http_chain(RouteRef::Inline(
            "r".into(),
            xroute::map(&strict).expect("maps"),
        ))];
    }
    let nack = snapshot.assemble(&toml::Table::new(), None, &[]).expect_err("NACK");
    assert!(nack.0.contains("validate_clusters"), "{nack}");
}

#[test]
fn a_route_hash_policy_becomes_its_hashing_clusters_hash_on() {
    use route_action::hash_policy::{Header, PolicySpecifier};
    let hashed = |header: &str| {
        let mut r = simple("c");
        if let Some(route::Action::Route(a)) = &mut r.action {
            a.hash_policy = vec![route_action::HashPolicy {
                policy_specifier: Some(PolicySpecifier::Header(Header {
                    header_name: header.into(),
                    ..Header::default()
                })),
                ..route_action::HashPolicy::default()
            }];
        }
        r
    };
    let rc = RouteConfiguration {
        virtual_hosts: vec![vhost("v", &["*"], vec![hashed("X-User"), hashed("x-user")])],
        ..RouteConfiguration::default()
    };
    let mapped = xroute::map(&rc).expect("maps");
    assert_eq!(mapped.hash_on["c"]["header"].as_str(), Some("x-user"));
    let clash = RouteConfiguration {
        virtual_hosts: vec![vhost("v", &["*"], vec![hashed("x-user"), hashed("x-tenant")])],
        ..RouteConfiguration::default()
    };
    let nack = xroute::map(&clash).expect_err("NACK");
    assert!(nack.0.contains("different hash policies"), "{nack}");
}

mod listeners {
    //! Per-listener route configurations and Istio's sidecar shape, from `Listener` protos.

    use envoy_types::pb::envoy::config::cluster::v3::{Cluster, cluster};
    use envoy_types::pb::envoy::config::core::v3::{
        AggregatedConfigSource, ConfigSource, TransportSocket, config_source, socket_address,
    };
    use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, FilterChainMatch, Listener, filter};
    use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
    use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
        HttpConnectionManager, HttpFilter, Rds, http_connection_manager, http_filter,
    };
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{TcpProxy, tcp_proxy};
    use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
    use prost::Message;

    use super::super::snapshot::Snapshot;
    use super::super::{cluster as xcluster, listener, route as xroute};
    use super::{Address, SocketAddress, address, simple, vhost};

    fn socket(host: &str, port: u32) -> Option<Address> {
        Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: host.into(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
                ..SocketAddress::default()
            })),
        })
    }

    fn hcm(rds: &str) -> Filter {
        let hcm = HttpConnectionManager {
            route_specifier: Some(http_connection_manager::RouteSpecifier::Rds(Rds {
                route_config_name: rds.into(),
                config_source: Some(ConfigSource {
                    config_source_specifier: Some(config_source::ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
                    ..ConfigSource::default()
                }),
            })),
            http_filters: vec![HttpFilter {
                name: "envoy.filters.http.router".into(),
                config_type: Some(http_filter::ConfigType::TypedConfig(Any {
                    type_url: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router".into(),
                    value: Vec::new(),
                })),
                ..HttpFilter::default()
            }],
            ..HttpConnectionManager::default()
        };
        Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(filter::ConfigType::TypedConfig(Any {
                type_url: listener::HCM.into(),
                value: hcm.encode_to_vec(),
            })),
        }
    }

    fn tcp(cluster: &str) -> Filter {
        let t = TcpProxy {
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
            ..TcpProxy::default()
        };
        Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: Some(filter::ConfigType::TypedConfig(Any {
                type_url: "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy".into(),
                value: t.encode_to_vec(),
            })),
        }
    }

    fn chain(m: Option<FilterChainMatch>, filters: Vec<Filter>) -> FilterChain {
        FilterChain {
            filter_chain_match: m,
            filters,
            ..FilterChain::default()
        }
    }

    fn bound(name: &str, port: u32, rds: &str) -> Listener {
        Listener {
            name: name.into(),
            address: socket("127.0.0.1", port),
            filter_chains: vec![chain(None, vec![hcm(rds)])],
            ..Listener::default()
        }
    }

    fn virtual_outbound() -> Listener {
        Listener {
            name: "virtualOutbound".into(),
            address: socket("0.0.0.0", 15001),
            use_original_dst: Some(BoolValue { value: true }),
            traffic_direction: 2, // OUTBOUND
            filter_chains: vec![
                chain(
                    Some(FilterChainMatch {
                        destination_port: Some(UInt32Value { value: 15001 }),
                        ..FilterChainMatch::default()
                    }),
                    vec![tcp("BlackHoleCluster")],
                ),
                chain(None, vec![tcp("PassthroughCluster")]),
            ],
            ..Listener::default()
        }
    }

    fn handed(host: &str, port: u32, rds: &str) -> Listener {
        Listener {
            name: format!("{host}_{port}"),
            address: socket(host, port),
            bind_to_port: Some(BoolValue { value: false }),
            filter_chains: vec![chain(
                Some(FilterChainMatch {
                    transport_protocol: "raw_buffer".into(),
                    application_protocols: vec!["http/1.1".into(), "h2c".into()],
                    ..FilterChainMatch::default()
                }),
                vec![hcm(rds)],
            )],
            default_filter_chain: Some(chain(None, vec![tcp("PassthroughCluster")])),
            ..Listener::default()
        }
    }

    fn routes(name: &str, domain: &str, cluster: &str) -> RouteConfiguration {
        RouteConfiguration {
            name: name.into(),
            virtual_hosts: vec![vhost("v", &[domain], vec![simple(cluster)])],
            ..RouteConfiguration::default()
        }
    }

    fn static_cluster(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            load_assignment: Some(super::ClusterLoadAssignment {
                cluster_name: name.into(),
                endpoints: vec![super::endpoint(80, 0, 0)],
                ..Default::default()
            }),
            ..Cluster::default()
        }
    }

    fn original_dst(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
                cluster::DiscoveryType::OriginalDst as i32,
            )),
            lb_policy: cluster::LbPolicy::ClusterProvided as i32,
            ..Cluster::default()
        }
    }

    fn snapshot(listeners: &[Listener], rcs: &[RouteConfiguration], clusters: &[Cluster]) -> Snapshot {
        let mut s = Snapshot::default();
        for l in listeners {
            s.listeners
                .insert(l.name.clone(), listener::map(l).expect("the listener maps"));
        }
        for rc in rcs {
            s.routes
                .insert(rc.name.clone(), xroute::map(rc).expect("the routes map"));
        }
        for c in clusters {
            s.clusters
                .insert(c.name.clone(), xcluster::map(c).expect("the cluster maps"));
        }
        s
    }

    /// The assembled config, checked as Weft checks a TOML file.
    fn assembled(s: &Snapshot) -> crate::config::Config {
        let text = s
            .assemble(&toml::Table::new(), None, &[])
            .expect("assembles")
            .expect("warm");
        crate::config::Config::parse("xds", &text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn each_route_configuration_serves_only_the_listeners_naming_it() {
        let s = snapshot(
            &[bound("one", 1, "a"), bound("two", 2, "b"), bound("three", 3, "a")],
            &[routes("a", "shop.example", "ca"), routes("b", "shop.example", "cb")],
            &[static_cluster("ca"), static_cluster("cb")],
        );
        let config = assembled(&s);
        let by_cluster: Vec<(String, Vec<String>)> = config
            .routes
            .iter()
            .map(|r| {
                let r = r.get_ref();
                let cluster = r.cluster.as_ref().map(|c| c.get_ref().clone()).unwrap_or_default();
                (cluster, r.matches.listeners.clone())
            })
            .collect();
        assert_eq!(
            by_cluster,
            [
                ("ca".to_owned(), vec!["one".to_owned(), "three".to_owned()]),
                ("cb".to_owned(), vec!["two".to_owned()]),
            ]
        );
        // One route configuration for every listener: its routes name none (no check per route).
        let shared = snapshot(
            &[bound("one", 1, "a"), bound("three", 3, "a")],
            &[routes("a", "shop.example", "ca")],
            &[static_cluster("ca")],
        );
        let config = assembled(&shared);
        assert!(config.routes.iter().all(|r| r.get_ref().matches.listeners.is_empty()));
        // Waiting for a route configuration one listener names: warming.
        let mut waiting = s.clone();
        waiting.routes.remove("b");
        assert!(waiting.assemble(&toml::Table::new(), None, &[]).expect("ok").is_none());
    }

    #[test]
    fn istios_sidecar_shape_becomes_a_transparent_listener_with_routes_by_destination() {
        let s = snapshot(
            &[
                virtual_outbound(),
                handed("0.0.0.0", 8080, "8080"),
                handed("10.96.0.5", 8080, "exact"),
            ],
            &[routes("8080", "*", "orders"), routes("exact", "*", "payments")],
            &[
                original_dst("PassthroughCluster"),
                static_cluster("orders"),
                static_cluster("payments"),
            ],
        );
        let config = assembled(&s);
        let listeners: Vec<_> = config.listeners.iter().map(|l| l.get_ref()).collect();
        assert_eq!(listeners.len(), 1, "bind_to_port: false listeners bind nothing");
        assert_eq!(listeners[0].name, "virtualOutbound");
        assert_eq!(listeners[0].transparent, Some(crate::config::Transparent::Redirect));
        assert_eq!(listeners[0].direction, Some(crate::config::Direction::Outbound));
        let passthrough = config
            .clusters
            .iter()
            .find(|c| c.get_ref().name == "PassthroughCluster")
            .expect("the passthrough cluster");
        assert_eq!(
            passthrough.get_ref().kind,
            crate::config::ClusterKind::OriginalDestination
        );
        let routes: Vec<(String, Option<String>, Option<u16>, String)> = config
            .routes
            .iter()
            .map(|r| {
                let r = r.get_ref();
                assert_eq!(r.matches.listeners, ["virtualOutbound"]);
                let to = match (&r.cluster, &r.direct_response) {
                    (Some(c), _) => c.get_ref().clone(),
                    (None, Some(d)) => d.get_ref().status.to_string(),
                    _ => String::new(),
                };
                (
                    r.name.clone().unwrap_or_default(),
                    r.matches.destination.clone(),
                    r.matches.destination_port,
                    to,
                )
            })
            .collect();
        let want = [
            ("10.96.0.5_8080/v/0/*", Some("10.96.0.5"), Some(8080), "payments"),
            ("10.96.0.5_8080/no-route", Some("10.96.0.5"), Some(8080), "404"),
            ("0.0.0.0_8080/v/0/*", None, Some(8080), "orders"),
            ("0.0.0.0_8080/no-route", None, Some(8080), "404"),
            ("virtualOutbound/passthrough", None, None, "PassthroughCluster"),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(n, d, p, c)| ((*n).to_owned(), d.map(str::to_owned), *p, (*c).to_owned()))
            .collect();
        assert_eq!(routes, want);
    }

    #[test]
    fn what_of_istio_weft_cannot_honour_is_nacked_by_name() {
        let tls_chain = {
            let mut l = virtual_outbound();
            l.filter_chains[1].filter_chain_match = Some(FilterChainMatch {
                transport_protocol: "tls".into(),
                ..FilterChainMatch::default()
            });
            l
        };
        let downstream_tls = {
            let mut l = handed("0.0.0.0", 8080, "r");
            l.filter_chains[0].transport_socket = Some(TransportSocket::default());
            l
        };
        let rbac = {
            let mut l = virtual_outbound();
            l.filter_chains[1].filters.insert(
                0,
                Filter {
                    name: "envoy.filters.network.rbac".into(),
                    config_type: None,
                },
            );
            l
        };
        let sni = {
            let mut l = virtual_outbound();
            l.filter_chains[1].filter_chain_match = Some(FilterChainMatch {
                server_names: vec!["x.example".into()],
                ..FilterChainMatch::default()
            });
            l
        };
        let source = {
            let mut l = virtual_outbound();
            l.filter_chains[1].filter_chain_match = Some(FilterChainMatch {
                source_ports: vec![1],
                ..FilterChainMatch::default()
            });
            l
        };
        for (l, reason) in [
            (tls_chain, "transport_protocol tls"),
            (downstream_tls, "DownstreamTlsContext"),
            (rbac, "network filter \"envoy.filters.network.rbac\""),
            (sni, "server_names"),
            (source, "source_ports"),
        ] {
            let nack = listener::map(&l).expect_err(reason);
            assert!(nack.0.contains(reason), "{reason}: {nack}");
        }
        // A tcp_proxy to a cluster that is not ORIGINAL_DST: Weft only passes through.
        let s = snapshot(&[virtual_outbound()], &[], &[static_cluster("PassthroughCluster")]);
        let nack = s.assemble(&toml::Table::new(), None, &[]).expect_err("NACK");
        assert!(nack.0.contains("not ORIGINAL_DST"), "{nack}");
        let mut header = original_dst("PassthroughCluster");
        header.lb_config = Some(cluster::LbConfig::OriginalDstLbConfig(cluster::OriginalDstLbConfig {
            use_http_header: true,
            ..Default::default()
        }));
        let nack = xcluster::map(&header).expect_err("NACK");
        assert!(nack.0.contains("use_http_header"), "{nack}");
    }

    #[test]
    fn an_inbound_listener_chooses_its_filter_chain_by_destination_port() {
        use envoy_types::pb::envoy::config::listener::v3::ListenerFilter;
        // Istio's virtualInbound: the original_dst listener filter, a chain per port, the
        // rest passed through to InboundPassthroughCluster.
        let port = |p: u32| {
            Some(FilterChainMatch {
                destination_port: Some(UInt32Value { value: p }),
                transport_protocol: "raw_buffer".into(),
                ..FilterChainMatch::default()
            })
        };
        let inbound = Listener {
            name: "virtualInbound".into(),
            address: socket("0.0.0.0", 15006),
            listener_filters: vec![ListenerFilter {
                name: "envoy.filters.listener.original_dst".into(),
                ..ListenerFilter::default()
            }],
            filter_chains: vec![
                chain(None, vec![tcp("InboundPassthroughCluster")]),
                chain(port(8080), vec![hcm("inbound|8080")]),
            ],
            ..Listener::default()
        };
        let s = snapshot(
            &[inbound],
            &[routes("inbound|8080", "*", "app")],
            &[original_dst("InboundPassthroughCluster"), static_cluster("app")],
        );
        let mapped = &s.listeners["virtualInbound"];
        assert_eq!(mapped.shape, listener::Shape::Transparent { hands_off: false });
        let config = assembled(&s);
        assert_eq!(
            config.listeners[0].get_ref().transparent,
            Some(crate::config::Transparent::Redirect)
        );
        let routes: Vec<(Option<u16>, String)> = config
            .routes
            .iter()
            .map(|r| {
                let r = r.get_ref();
                assert_eq!(r.matches.listeners, ["virtualInbound"]);
                (
                    r.matches.destination_port,
                    r.cluster.as_ref().map(|c| c.get_ref().clone()).unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            routes,
            [
                (Some(8080), "app".to_owned()),
                (None, "InboundPassthroughCluster".to_owned())
            ],
            "the port's chain first, the passthrough last"
        );
    }
}
