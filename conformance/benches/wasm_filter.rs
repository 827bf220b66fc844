//! The cost of the Wasm boundary: a no-op phase on a reused instance, the same with a
//! fresh instance per call, a filter doing real work, and loading (compile vs cache).
//! `cargo bench -p weft-conformance --bench wasm_filter`; numbers go in
//! `proxy/src/wasm/DESIGN.md`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use weft::cluster::Clusters;
use weft::config::{LimitsConfig, WasmConfig};
use weft::filter::{Filter, FilterRequest, RequestCtx};
use weft::metrics::Metrics;
use weft::wasm::{InstanceReuse, WasmHost};
use weft_conformance::plugins;

fn request() -> FilterRequest {
    let head = http::Request::builder()
        .uri("/api/items?page=2")
        .header("host", "example.com")
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| http::Request::new(()).into_parts().0);
    FilterRequest { head, body: None }
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
    let host = WasmHost::new(&WasmConfig::default(), Arc::new(Metrics::default())).unwrap_or_else(|e| panic!("{e:#}"));

    let mut group = c.benchmark_group("request_phase");
    for (name, plugin, config, reuse) in [
        ("noop/pooled", plugins::NOOP, "{}", InstanceReuse::Pooled),
        ("noop/fresh_instance", plugins::NOOP, "{}", InstanceReuse::Fresh),
        (
            "hello/pooled",
            plugins::HELLO_FILTER,
            r#"{"deny_prefix": "/private"}"#,
            InstanceReuse::Pooled,
        ),
    ] {
        let filter = load(&rt, &host, plugin, config, reuse);
        let mut req = request();
        let mut cx = ctx();
        group.bench_function(name, |b| {
            b.iter(|| {
                let decision = rt.block_on(filter.on_request(&mut req, &mut cx));
                assert!(decision.is_ok());
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
            let host =
                WasmHost::new(&WasmConfig::default(), Arc::new(Metrics::default())).unwrap_or_else(|e| panic!("{e:#}"));
            load(&rt, &host, plugins::HELLO_FILTER, "{}", InstanceReuse::Pooled)
        })
    });
    group.finish();
}

criterion_group!(benches, phases);
criterion_main!(benches);
