//! The cost of the Wasm boundary, per phase (WIT 0.2): a no-op request phase on a reused
//! instance, the same with a fresh instance per call, a filter doing real work, `jwt-auth`
//! with a reused RS256 token with and without its token cache; a no-op and a header-setting
//! response phase; whole requests (both phases, as the chain runs them, phases a filter did
//! not declare skipped) through `rate-limit` and the jwt → rate-limit → hello chain; and
//! loading (compile vs cache).
//! `cargo bench -p weft-conformance --bench wasm_filter`; numbers go in
//! `proxy/src/wasm/DESIGN.md`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use weft::config::{LimitsConfig, WasmConfig};
use weft::filter::metrics::FilterMetrics;
use weft::filter::{Filter, FilterRequest, FilterResponse, RequestCtx, RequestDecision, ResponseDecision};
use weft::metrics::Families;
use weft::upstream::Clusters;
use weft::wasm::{InstanceReuse, WasmHost};
use weft_conformance::plugins;

/// An RS256 token valid until 2100 (`exp` 4102444800), signed by the private half of
/// [`JWT_PUBLIC_PEM`] (made once with PyJWT; the private key was not kept).
const JWT_TOKEN: &str = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJiZW5jaC11c2VyIiwiaXNzIjoiaHR0cHM6Ly9pZHAuYmVuY2giLCJhdWQiOiJhcGkiLCJleHAiOjQxMDI0NDQ4MDAsInNjb3BlIjoicmVhZCB3cml0ZSJ9.fxw-pa5_smNbYapxDBJGoamSC_jEeBtofrFdVYWlQFI-A7nD3FoYdivpwSF2_-Hoe5zxgI3C3d2X-dNfxndyJPD9anaoH2aRltnqmzoIdzizmGxOc3HVbAQOzdEvwV75zNSP5U_ZDDaMmCW0wtL9WMX04lCZFIJmYm_7Frpi-gJ4_f6HHxDTrYFx3m-MqrCJ8YjLk8aGNC9RMHlpBxjgMKEsqgqSwlwvz_PaH7rr_ODcEik3Wjeo-gYVLm9-fHqJF1k-LeqzLPdhMpD_NoTshJ_Fdue4Vfs6tJuU_a387oR5DbJOpYBdHznMjkm1K-sMDFMQK3dNzqVAZrxJ8dNfWA";
const JWT_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----\\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAowMJxj9CSyy/N2ixfc5D\\n\
GKQ2Mw1s7lvLEa09H6WKQlv+OOdcSjozlZx0F9N9C527ds8rnNaP9cAvY6fjCk66\\n\
UuyPxwDMHd7t+9RAE+MrXxerfE6HrFcUe1Pcvbt8/yM7mE3kDRkC8GYZqi4eeHhd\\n\
FMp8jBqccDyxntW3yI5xX4NJc5tCWHFbCUV6v+eg0uxI+RNkcto145ba/uf2H919\\n\
xrWng+D5f7oWm4TOWg7WYyKpkibzngQXNUnQwjeCP8iG5DFZimPjHRvjC5lOaJHS\\n\
jQzMa7HxGjEmDqivTXNG5EKq4Vxtkqzgp01xMT0tEsC4jQiS8Ca56fiHnusQvual\\n\
AQIDAQAB\\n\
-----END PUBLIC KEY-----\\n";

/// jwt-auth's config (JSON) with this `cache` table.
fn jwt_config(cache: &str) -> String {
    format!(
        r#"{{"keys": [{{"alg": "RS256", "pem": "{JWT_PUBLIC_PEM}"}}], "issuer": "https://idp.bench",
            "audience": "api", "claims_to_headers": {{"sub": "x-user"}}, "cache": {cache}}}"#
    )
}

fn request(token: bool) -> FilterRequest {
    let mut builder = http::Request::builder()
        .uri("/api/items?page=2")
        .header("host", "example.com")
        .header("user-agent", "bench")
        .header("accept", "*/*");
    if token {
        builder = builder.header("authorization", format!("Bearer {JWT_TOKEN}"));
    }
    let head = builder
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| http::Request::new(()).into_parts().0);
    FilterRequest { head, body: None }
}

fn response() -> FilterResponse {
    let mut head = http::Response::new(()).into_parts().0;
    head.headers
        .insert("content-type", http::HeaderValue::from_static("text/plain"));
    FilterResponse { head, body: None }
}

fn ctx() -> RequestCtx {
    let addr = SocketAddr::from(([127, 0, 0, 1], 40000));
    RequestCtx::new(addr, "public".into(), "api".into(), "http")
}

fn load(
    rt: &tokio::runtime::Runtime,
    host: &WasmHost,
    plugin: &str,
    config: &str,
    reuse: InstanceReuse,
) -> Arc<dyn Filter> {
    let limits = LimitsConfig::default();
    let clusters = Arc::new(Clusters::new());
    rt.block_on(host.load_filter_with("bench", Path::new(plugin), config, &limits, clusters, reuse))
        .unwrap_or_else(|e| panic!("loading {plugin}: {e:#}"))
}

fn phases(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let host = WasmHost::new(&WasmConfig::default(), Arc::new(FilterMetrics::unregistered()))
        .unwrap_or_else(|e| panic!("{e:#}"));

    let mut group = c.benchmark_group("request_phase");
    let jwt_cached = jwt_config(r#"{"max_entries": 1024}"#);
    let jwt_uncached = jwt_config(r#"{"max_entries": 0}"#);
    for (name, plugin, config, reuse, token) in [
        ("noop/pooled", plugins::NOOP, "{}", InstanceReuse::Pooled, false),
        ("noop/fresh_instance", plugins::NOOP, "{}", InstanceReuse::Fresh, false),
        (
            "hello/pooled",
            plugins::HELLO_FILTER,
            r#"{"deny_prefix": "/private"}"#,
            InstanceReuse::Pooled,
            false,
        ),
        // The same token on every request: verified once, then a cache hit.
        (
            "jwt_rs256/cached",
            plugins::JWT_AUTH,
            jwt_cached.as_str(),
            InstanceReuse::Pooled,
            true,
        ),
        (
            "jwt_rs256/no_cache",
            plugins::JWT_AUTH,
            jwt_uncached.as_str(),
            InstanceReuse::Pooled,
            true,
        ),
    ] {
        let filter = load(&rt, &host, plugin, config, reuse);
        let mut req = request(token);
        let mut cx = ctx();
        match rt.block_on(filter.on_request(&mut req, &mut cx)) {
            Ok(RequestDecision::Continue) => {}
            Ok(RequestDecision::Respond(r)) => panic!("{name}: answered {} {:?}", r.status(), r.headers()),
            Ok(_) => panic!("{name}: rerouted"),
            Err(e) => panic!("{name}: {e}"),
        }
        group.bench_function(name, |b| {
            b.iter(|| {
                let decision = rt.block_on(filter.on_request(&mut req, &mut cx));
                if let Err(e) = &decision {
                    panic!("{name}: {e}");
                }
                assert!(matches!(decision, Ok(RequestDecision::Continue)), "{name}");
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("response_phase");
    for (name, plugin, config) in [
        ("noop/pooled", plugins::NOOP, "{}"),
        ("hello/pooled", plugins::HELLO_FILTER, "{}"),
    ] {
        let filter = load(&rt, &host, plugin, config, InstanceReuse::Pooled);
        let mut resp = response();
        let mut cx = ctx();
        group.bench_function(name, |b| {
            b.iter(|| {
                let decision = rt.block_on(filter.on_response(&mut resp, &mut cx));
                assert!(matches!(decision, Ok(ResponseDecision::Continue)), "{name}");
            })
        });
    }
    group.finish();

    // A whole request as the chain runs it: request phases in order, response phases in
    // reverse, skipping what a filter did not declare, with a fresh context each time.
    let mut group = c.benchmark_group("request_and_response");
    let rate_limit = r#"{"limits": [{"key": ["header:x-user"], "rate": 1000000000, "per": "1s"}]}"#;
    let chains: [(&str, Vec<(&str, &str)>); 5] = [
        ("noop", vec![(plugins::NOOP, "{}")]),
        ("noop_request_only", vec![(plugins::NOOP, r#"{"phases": "request"}"#)]),
        ("rate_limit", vec![(plugins::RATE_LIMIT, rate_limit)]),
        ("jwt_rs256_cached", vec![(plugins::JWT_AUTH, jwt_cached.as_str())]),
        (
            "chain_jwt_rate_limit_hello",
            vec![
                (plugins::JWT_AUTH, jwt_cached.as_str()),
                (plugins::RATE_LIMIT, rate_limit),
                (plugins::HELLO_FILTER, "{}"),
            ],
        ),
    ];
    for (name, chain) in chains {
        let filters: Vec<Arc<dyn Filter>> = chain
            .iter()
            .map(|(plugin, config)| load(&rt, &host, plugin, config, InstanceReuse::Pooled))
            .collect();
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut req = request(true);
                    req.head
                        .headers
                        .insert("x-user", http::HeaderValue::from_static("bench-user"));
                    let mut cx = ctx();
                    for f in filters.iter().filter(|f| f.has_request_phase()) {
                        let decision = f.on_request(&mut req, &mut cx).await;
                        assert!(matches!(decision, Ok(RequestDecision::Continue)), "{name}");
                    }
                    let mut resp = response();
                    for f in filters.iter().rev().filter(|f| f.has_response_phase()) {
                        let decision = f.on_response(&mut resp, &mut cx).await;
                        assert!(matches!(decision, Ok(ResponseDecision::Continue)), "{name}");
                    }
                })
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("load");
    group.sample_size(10);
    group.bench_function("cached", |b| {
        b.iter(|| load(&rt, &host, plugins::HELLO_FILTER, "{}", InstanceReuse::Pooled))
    });
    group.bench_function("compile/new_host", |b| {
        b.iter(|| {
            let host = WasmHost::new(&WasmConfig::default(), Arc::new(FilterMetrics::unregistered()))
                .unwrap_or_else(|e| panic!("{e:#}"));
            load(&rt, &host, plugins::HELLO_FILTER, "{}", InstanceReuse::Pooled)
        })
    });
    group.finish();
}

criterion_group!(benches, phases);
criterion_main!(benches);
