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
use super::listener::{MappedListener, RouteRef};
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
            table: listener,
            routes: RouteRef::Inline("r".into(), xroute::map(&rc).expect("maps")),
            wasm: Vec::new(),
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
        l.routes = RouteRef::Inline("r".into(), xroute::map(&strict).expect("maps"));
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
