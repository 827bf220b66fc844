use super::*;

const YAML: &str = r#"
node:
  id: router~10.0.0.1~gw-1.default~default.svc.cluster.local
  cluster: gateway
  metadata: { ISTIO_VERSION: "1.24" }
  locality: { zone: a }
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 9901 } }
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{ envoy_grpc: { cluster_name: xds } }]
  lds_config: { ads: {}, resource_api_version: V3 }
  cds_config: { ads: {} }
static_resources:
  clusters:
  - name: xds
    type: STRICT_DNS
    connect_timeout: 0.25s
    typed_extension_protocol_options: {}
    load_assignment:
      cluster_name: xds
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: localhost, port_value: 18000 } } }
layered_runtime: {}
"#;

#[test]
fn a_yaml_bootstrap_names_the_node_admin_and_ads_server() {
    let b = Bootstrap::parse("b.yaml", YAML).expect("valid");
    assert_eq!(b.node.id, "router~10.0.0.1~gw-1.default~default.svc.cluster.local");
    assert_eq!(b.node.cluster, "gateway");
    assert_eq!(b.node.metadata["ISTIO_VERSION"], "1.24");
    assert_eq!(b.admin, Some("127.0.0.1:9901".parse().expect("valid")));
    assert_eq!(b.api, ApiType::Sotw);
    assert_eq!(b.server.endpoints, ["localhost:18000"]);
    assert_eq!(b.server.connect_timeout, Duration::from_millis(250));
    assert_eq!(b.ignored, ["node.locality", "layered_runtime"]);
}

#[test]
fn a_json_bootstrap_with_delta() {
    let json = r#"{"node":{"id":"n"},"dynamic_resources":{"ads_config":{"api_type":"DELTA_GRPC",
      "grpc_services":[{"envoy_grpc":{"cluster_name":"c"}}]},"lds_config":{"ads":{}},"cds_config":{"ads":{}}},
      "static_resources":{"clusters":[{"name":"other"},{"name":"c","load_assignment":{"endpoints":[{"lb_endpoints":
      [{"endpoint":{"address":{"socket_address":{"address":"127.0.0.1","port_value":"7000"}}}}]}]}}]}}"#;
    let b = Bootstrap::parse("b.json", json).expect("valid");
    assert_eq!(b.api, ApiType::Delta);
    assert_eq!(b.server.endpoints, ["127.0.0.1:7000"]);
    assert_eq!(b.ignored, ["static_resources.clusters[0] (other)"]);
}

fn error(text: &str) -> String {
    Bootstrap::parse("b.yaml", text).expect_err("an error").to_string()
}

#[test]
fn wrong_fields_are_errors_at_their_path() {
    let rest = YAML.replace("api_type: GRPC", "api_type: REST");
    assert_eq!(
        error(&rest),
        "b.yaml: dynamic_resources.ads_config.api_type: REST: write GRPC or DELTA_GRPC"
    );
    let port = YAML.replace("port_value: 18000", "port_value: 70000");
    assert!(error(&port).contains(
        "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: 70000 is not a port"
    ));
    let other = YAML.replace("cluster_name: xds }", "cluster_name: nowhere }");
    assert!(error(&other).contains("static_resources.clusters: no cluster named \"nowhere\""));
    let no_id = YAML.replace("id: router", "idx: router");
    assert!(error(&no_id).contains("node.id: missing or empty"));
    let tls = YAML.replace("layered_runtime: {}", "").replace(
        "    type: STRICT_DNS",
        "    type: STRICT_DNS\n    transport_socket: { typed_config: {} }",
    );
    assert!(error(&tls).contains("static_resources.clusters[0].transport_socket.typed_config.@type: write"));
    let rest_lds = YAML.replace(
        "lds_config: { ads: {}, resource_api_version: V3 }",
        "lds_config: { path: /x }",
    );
    assert!(error(&rest_lds).contains("dynamic_resources.lds_config.ads: missing"));
    assert!(error("node: [").contains("invalid YAML"));
    assert!(error("{\"node\": 1}").contains("node: expected an object, found a number"));
}
