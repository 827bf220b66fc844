//! Shared set-up: one host for the whole test binary, requests, contexts, clusters.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use weft::config::{Config, LimitsConfig, WasmConfig};
use weft::filter::{Filter, FilterError, FilterRequest, FilterResponse, RequestCtx, RequestDecision, ResponseDecision};
use weft::metrics::{Families, Metrics};
use weft::state::metrics::StageMetrics;
use weft::upstream::metrics::UpstreamMetrics;
use weft::upstream::{Cluster, Clusters};
use weft::wasm::WasmHost;

/// One engine per process, as in the proxy: its pooling allocator reserves address space
/// for a thousand instances, which a test per engine would multiply.
pub fn host() -> &'static (WasmHost, Arc<Metrics>) {
    static HOST: OnceLock<(WasmHost, Arc<Metrics>)> = OnceLock::new();
    HOST.get_or_init(|| {
        let (metrics, stages) = StageMetrics::register();
        let host = WasmHost::new(&WasmConfig::default(), stages.filter.clone()).expect("wasm host");
        (host, metrics)
    })
}

pub fn metrics() -> &'static Metrics {
    &host().1
}

pub fn limits(memory: usize, cpu: Duration, body: usize) -> LimitsConfig {
    LimitsConfig {
        memory: Some(memory),
        cpu,
        body,
        ..LimitsConfig::default()
    }
}

pub fn default_limits() -> LimitsConfig {
    LimitsConfig::default()
}

/// Clusters named `name` → `addr`, built by the proxy's own config code.
pub fn clusters(list: &[(&str, SocketAddr)]) -> Arc<Clusters> {
    let mut text = weft_conformance::Config::new();
    for (name, addr) in list {
        text = text.cluster(name, &[*addr]);
    }
    let config = Config::parse("test", &weft_conformance::fill(&text.to_string())).expect("valid cluster config");
    let metrics = Arc::new(UpstreamMetrics::unregistered());
    let mut clusters = Clusters::new();
    for c in &config.clusters {
        let cluster = Cluster::build_fixed(c, &config.source, &metrics).expect("cluster");
        clusters.insert(cluster.name.clone(), cluster);
    }
    Arc::new(clusters)
}

pub async fn load(name: &str, plugin: &str, config: &str) -> anyhow::Result<Arc<dyn Filter>> {
    load_with(name, plugin, config, &default_limits(), clusters(&[])).await
}

pub async fn load_with(
    name: &str,
    plugin: &str,
    config: &str,
    limits: &LimitsConfig,
    clusters: Arc<Clusters>,
) -> anyhow::Result<Arc<dyn Filter>> {
    host()
        .0
        .load_filter(name, Path::new(plugin), config, limits, clusters)
        .await
}

pub fn request(path: &str, headers: &[(&str, &str)]) -> FilterRequest {
    let mut builder = http::Request::builder().uri(path);
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    let head = builder.body(()).expect("request").into_parts().0;
    FilterRequest { head, body: None }
}

pub fn response(status: u16, headers: &[(&str, &str)]) -> FilterResponse {
    let mut builder = http::Response::builder().status(status);
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    FilterResponse {
        head: builder.body(()).expect("response").into_parts().0,
        body: None,
    }
}

pub fn ctx() -> RequestCtx {
    let addr: SocketAddr = "192.0.2.7:4242".parse().expect("addr");
    RequestCtx::new(addr, "public".into(), "api".into(), "http")
}

/// Runs the request phase on `req`.
pub async fn on_request(filter: &dyn Filter, req: &mut FilterRequest) -> Result<RequestDecision, FilterError> {
    filter.on_request(req, &mut ctx()).await
}

/// Runs the request phase on a fresh request to `path` with `headers`, returning the
/// request as the filter left it.
pub async fn run(
    filter: &dyn Filter,
    path: &str,
    headers: &[(&str, &str)],
) -> (Result<RequestDecision, FilterError>, FilterRequest) {
    let mut req = request(path, headers);
    let result = on_request(filter, &mut req).await;
    (result, req)
}

pub fn header<'a>(req: &'a FilterRequest, name: &str) -> Option<&'a str> {
    req.head.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Either phase's decision, as the helpers below look at it.
pub trait Decided {
    fn is_continue(&self) -> bool;
    /// The response of a `Respond`, or what the decision was instead.
    fn into_response(self) -> Result<http::Response<weft::body::Body>, String>;
}

impl Decided for RequestDecision {
    fn is_continue(&self) -> bool {
        matches!(self, RequestDecision::Continue)
    }

    fn into_response(self) -> Result<http::Response<weft::body::Body>, String> {
        match self {
            RequestDecision::Respond(resp) => Ok(resp),
            RequestDecision::Continue => Err("Continue".to_owned()),
            RequestDecision::Reroute(c) => Err(format!("Reroute({})", c.name)),
            _ => Err("another decision".to_owned()),
        }
    }
}

impl Decided for ResponseDecision {
    fn is_continue(&self) -> bool {
        matches!(self, ResponseDecision::Continue)
    }

    fn into_response(self) -> Result<http::Response<weft::body::Body>, String> {
        match self {
            ResponseDecision::Respond(resp) => Ok(resp),
            ResponseDecision::Continue => Err("Continue".to_owned()),
            _ => Err("another decision".to_owned()),
        }
    }
}

pub fn is_continue<D: Decided>(d: &Result<D, FilterError>) -> bool {
    matches!(d, Ok(d) if d.is_continue())
}

/// The status and body of a `Respond` decision.
pub async fn responded<D: Decided>(d: Result<D, FilterError>) -> (u16, String) {
    use http_body_util::BodyExt;
    match d.map(Decided::into_response) {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
        Ok(Err(other)) => panic!("expected a direct response, got {other}"),
        Err(e) => panic!("expected a direct response, got error {e}"),
    }
}

/// The value of a sample in the Prometheus exposition, e.g.
/// `weft_filter_events_total{filter="x",name="y"}`.
pub fn sample(series: &str) -> Option<f64> {
    metrics()
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}
