//! Istio's ingress gateway config (docs/xds.md, "Istio's gateway config"): the listener,
//! route configuration and clusters a real Istio ingress gateway held, recorded from its
//! config dump (`xds/istio-gateway/README.md` names the source and how it was converted),
//! served by the real ADS server to the real `weft` binary under the gateway's `router~…`
//! node id. Weft accepts each resource or NACKs it for a reason docs/xds.md lists; with the
//! remedies the doc gives, the gateway's route answers from a real upstream.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use weft_conformance::ads::{self, Ads, CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources};
use weft_conformance::{ReservedPort, Upstream, Weft, get};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/xds/istio-gateway");
/// The recorded gateway's node, as its bootstrap named it.
const NODE: &str =
    "router~10.130.0.29~istio-ingressgateway-74ddf8dd9f-6p8p2.istio-system~istio-system.svc.cluster.local";
/// The cluster the recorded route sends `/dani` to.
const HELLO: &str = "outbound|8080||hello-openshift.vanilla-playground.svc.cluster.local";

/// One recorded response (`lds`, `rds`, `cds`): istiod's resources as the dump held them.
fn recorded(kind: &str) -> Vec<Any> {
    let bytes = std::fs::read(format!("{FIXTURE}/{kind}.pb")).expect("fixture");
    DiscoveryResponse::decode(bytes.as_slice())
        .expect("a DiscoveryResponse")
        .resources
}

/// The recorded listener, bound to 127.0.0.1 on a port the kernel picks instead of
/// 0.0.0.0:8080 (the one change made to it), after `edit`.
fn gateway_listener(edit: impl Fn(&mut HttpConnectionManager)) -> Any {
    let [any] = recorded("lds").try_into().expect("one listener");
    let mut l = Listener::decode(any.value.as_slice()).expect("listener");
    l.address = Some(ads::socket("127.0.0.1", 0));
    for f in l.filter_chains.iter_mut().flat_map(|c| &mut c.filters) {
        if let Some(filter::ConfigType::TypedConfig(any)) = &mut f.config_type {
            let mut hcm = HttpConnectionManager::decode(any.value.as_slice()).expect("hcm");
            edit(&mut hcm);
            any.value = hcm.encode_to_vec();
        }
    }
    ads::any(LISTENER, &l)
}

fn clusters() -> Vec<Cluster> {
    recorded("cds")
        .iter()
        .map(|a| Cluster::decode(a.value.as_slice()).expect("cluster"))
        .collect()
}

/// Endpoints for every EDS cluster (the dump has none): the route's cluster on `hello`,
/// every other on `other`.
fn endpoints(clusters: &[Cluster], hello: &Upstream, other: &Upstream) -> Vec<Any> {
    clusters
        .iter()
        .filter_map(|c| c.eds_cluster_config.as_ref().map(|e| e.service_name.clone()))
        .map(|name| {
            let at = if name == HELLO { hello.addr } else { other.addr };
            ads::assignment(&name, &[at])
        })
        .collect()
}

/// The reasons docs/xds.md gives for what Weft NACKs of the recorded gateway: under
/// "Istio's gateway config", each item of the list after "What Weft NACKs of it" starts with
/// the texts its NACKs carry, in backticks and separated by commas.
fn documented() -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/xds.md")).expect("docs/xds.md");
    let section = doc
        .split("\n## ")
        .find(|s| s.starts_with("Istio's gateway config"))
        .expect("docs/xds.md has a section \"Istio's gateway config\"");
    let list = section
        .split_once("What Weft NACKs of it")
        .expect("the section says what Weft NACKs of it")
        .1;
    let mut items: Vec<String> = Vec::new();
    for line in list.lines().skip_while(|l| !l.starts_with("- ")) {
        if let Some(item) = line.strip_prefix("- ") {
            items.push(item.to_owned());
        } else if let (Some(last), Some(more)) = (items.last_mut(), line.strip_prefix("  ")) {
            last.push(' ');
            last.push_str(more);
        } else {
            break;
        }
    }
    let reasons: Vec<String> = items.iter().flat_map(|item| leading_quotes(item)).collect();
    assert!(!reasons.is_empty(), "no reasons listed in docs/xds.md");
    reasons
}

/// The backticked texts an item starts with: `` `a`, `b`: … `` gives `a` and `b`.
fn leading_quotes(item: &str) -> Vec<String> {
    let mut quotes = Vec::new();
    let mut rest = item.trim_start();
    while let Some((quote, tail)) = rest.strip_prefix('`').and_then(|r| r.split_once('`')) {
        quotes.push(quote.to_owned());
        match tail.strip_prefix(',') {
            Some(more) => rest = more.trim_start(),
            None => break,
        }
    }
    quotes
}

/// `weft run --xds-bootstrap` with the gateway's node id, not waiting for a ready file: a
/// config that is NACKed is never complete, so nothing is bound.
fn spawn_gateway(ads_port: u16, dir: &std::path::Path) -> Child {
    let bootstrap = dir.join("bootstrap.yaml");
    std::fs::write(&bootstrap, bootstrap_yaml(ads_port)).expect("bootstrap");
    Command::new(weft_conformance::weft_bin())
        .args(["run", "--xds-bootstrap"])
        .arg(&bootstrap)
        .arg("--ready-file")
        .arg(dir.join("ready.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start weft")
}

fn bootstrap_yaml(ads_port: u16) -> String {
    let node = format!(
        "{{ id: {NODE}, cluster: istio-ingressgateway.istio-system, metadata: {{ ISTIO_VERSION: 1.20.8, \
         CLUSTER_ID: Kubernetes, NAMESPACE: istio-system, MESH_ID: cluster.local }} }}"
    );
    ads::bootstrap(&node, "GRPC", std::net::SocketAddr::from(([127, 0, 0, 1], ads_port)))
}

/// Pushes `resources` of `type_url` (which must differ from those served: the server sends
/// only what changed) and waits for Weft's answer: `None` for an ACK, the NACK's reason.
async fn verdict(ads: &Ads, type_url: &'static str, resources: Vec<Any>) -> Option<String> {
    let before = ads.requests(type_url).len();
    ads.push(|r| ads::set(r, type_url, resources));
    answer(ads, type_url, before).await
}

/// The first answer to a response of `type_url` after its `before`th request.
async fn answer(ads: &Ads, type_url: &str, before: usize) -> Option<String> {
    for _ in 0..1000 {
        if let Some(r) = ads
            .requests(type_url)
            .iter()
            .skip(before)
            .find(|r| !r.response_nonce.is_empty())
        {
            return r.error_detail.as_ref().map(|e| e.message.clone());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no answer to a {type_url} response: {:#?}", ads.requests(type_url));
}

fn documented_reason<'a>(reasons: &'a [String], nack: &str) -> Option<&'a String> {
    reasons.iter().find(|r| nack.contains(r.as_str()))
}

#[tokio::test]
async fn an_istio_gateways_recorded_config_is_nacked_only_for_reasons_the_docs_list() {
    let hello = Upstream::echo("hello-openshift").await;
    let other = Upstream::echo("other").await;
    let recorded_clusters = clusters();
    let ads = Ads::new(Resources {
        version: 1,
        by_type: vec![
            (CLUSTER, recorded("cds")),
            (ENDPOINT, endpoints(&recorded_clusters, &hello, &other)),
            (LISTENER, vec![gateway_listener(|_| {})]),
            (ROUTE, recorded("rds")),
        ],
    });
    let port = ReservedPort::new();
    let _server = ads.serve(port.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut weft = KillOnDrop(spawn_gateway(port.port, dir.path()));

    // Every resource on its own, so each gets its own verdict (a response is whole or nothing).
    let mut verdicts: BTreeMap<String, Option<String>> = BTreeMap::new();
    let whole_cds = answer(&ads, CLUSTER, 0).await;
    verdicts.insert("CDS, all 17 clusters in one response".into(), whole_cds);
    for (any, c) in recorded("cds").into_iter().zip(&recorded_clusters) {
        verdicts.insert(format!("CDS {}", c.name), verdict(&ads, CLUSTER, vec![any]).await);
    }
    // The listener: its NACK names one HTTP filter; marked optional (the remedy the docs
    // give), the next push names the next, until it is ACKed or refused for another reason.
    let mut optional: Vec<String> = Vec::new();
    let mut nack = answer(&ads, LISTENER, 0).await;
    loop {
        let filter = nack
            .as_deref()
            .and_then(|n| n.split_once("HTTP filter \""))
            .and_then(|(_, rest)| rest.split('"').next())
            .map(str::to_owned);
        match filter {
            Some(name) if !optional.contains(&name) => {
                verdicts.insert(format!("LDS 0.0.0.0_8080, HTTP filter {name}"), nack);
                optional.push(name);
                let marked = optional.clone();
                let listener = gateway_listener(|hcm| {
                    for f in &mut hcm.http_filters {
                        f.is_optional |= marked.contains(&f.name);
                    }
                });
                nack = verdict(&ads, LISTENER, vec![listener]).await;
            }
            _ => {
                verdicts.insert(format!("LDS 0.0.0.0_8080 with {optional:?} optional"), nack);
                break;
            }
        }
    }
    // RDS is asked for once a listener naming it is accepted.
    verdicts.insert("RDS http.8080".into(), answer(&ads, ROUTE, 0).await);
    let mut report = String::new();
    for (resource, nack) in &verdicts {
        match nack {
            None => report.push_str(&format!("ACK   {resource}\n")),
            Some(reason) => report.push_str(&format!("NACK  {resource}: {reason}\n")),
        }
    }
    println!("the recorded Istio gateway, resource by resource:\n{report}");
    let reasons = documented();
    let nacks: Vec<&String> = verdicts.values().flatten().collect();
    let undocumented: Vec<&&String> = nacks
        .iter()
        .filter(|n| documented_reason(&reasons, n).is_none())
        .collect();
    assert!(
        undocumented.is_empty(),
        "NACKed for reasons docs/xds.md does not list: {undocumented:#?}\n\n{report}"
    );
    let seen: Vec<&String> = nacks.iter().filter_map(|n| documented_reason(&reasons, n)).collect();
    let stale: Vec<&String> = reasons.iter().filter(|r| !seen.contains(r)).collect();
    assert!(
        stale.is_empty(),
        "docs/xds.md lists reasons the recorded gateway no longer gets: {stale:?}\n\n{report}"
    );
    assert!(weft.0.try_wait().expect("wait").is_none(), "Weft keeps running");
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn an_istio_gateway_with_the_documented_remedies_serves_its_route() {
    let hello = Upstream::echo("hello-openshift").await;
    let other = Upstream::echo("other").await;
    let mut cds = clusters();
    remedy_clusters(&mut cds);
    let ads = Ads::new(Resources {
        version: 1,
        by_type: vec![
            (CLUSTER, cds.iter().map(|c| ads::any(CLUSTER, c)).collect()),
            (ENDPOINT, endpoints(&cds, &hello, &other)),
            (
                LISTENER,
                vec![gateway_listener(|hcm| {
                    for f in &mut hcm.http_filters {
                        f.is_optional |= f.name != "envoy.filters.http.router";
                    }
                })],
            ),
            (ROUTE, recorded("rds")),
        ],
    });
    let port = ReservedPort::new();
    let _server = ads.serve(port.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = dir.path().join("bootstrap.yaml");
    std::fs::write(&bootstrap, bootstrap_yaml(port.port)).expect("bootstrap");
    let weft = Weft::start(&format!(
        "[admin]\naddress = \"{{admin}}\"\n\n[xds]\nbootstrap = \"{}\"\n",
        bootstrap.display()
    ))
    .await;
    for type_url in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
        assert_eq!(answer(&ads, type_url, 0).await, None, "{type_url} is ACKed");
    }
    let at = weft.listener("0.0.0.0_8080");
    let reply = get(&format!("http://{at}/dani")).await;
    assert_eq!(reply.status, 200, "{}\n{}", reply.text(), weft.log());
    assert_eq!(reply.json()["upstream"], "hello-openshift");
    assert_eq!(hello.hits(), 1);
    // The gateway's one virtual host has no other route.
    assert_eq!(get(&format!("http://{at}/dani/more")).await.status, 404);
    assert_eq!(other.hits(), 0);
}

/// The remedies docs/xds.md gives for the clusters: no auto-mTLS `transport_socket_matches`,
/// and the clusters Weft cannot take left out: the one with TLS to its endpoints
/// (`outbound|8188||istiod…`) and Envoy's BlackHoleCluster (STATIC, no endpoints).
fn remedy_clusters(cds: &mut Vec<Cluster>) {
    cds.retain(|c| c.transport_socket.is_none() && (c.load_assignment.is_some() || c.eds_cluster_config.is_some()));
    for c in cds.iter_mut() {
        c.transport_socket_matches.clear();
    }
}
