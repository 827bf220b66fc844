//! What a filter costs per language (Rust, Python, JavaScript): the component's size, its
//! compile time, a fresh instance (instantiate + `init` + one no-op call), a no-op request
//! phase and the hello filter's whole request (both phases) on a reused instance, and the
//! memory one more live instance holds.
//!
//! `scripts/setup` first (it builds the Python and JavaScript components), then
//! `cargo bench -p weft-conformance --bench polyglot`; the numbers go in
//! `docs/languages.md`. Compile time and memory are measured once each and printed (a
//! criterion run of a 10-second compile would take minutes); the rest are criterion's.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use weft::config::{LimitsConfig, WasmConfig};
use weft::filter::metrics::FilterMetrics;
use weft::filter::{Filter, FilterRequest, FilterResponse, RequestCtx, RequestDecision, ResponseDecision};
use weft::metrics::Families;
use weft::upstream::Clusters;
use weft::wasm::{InstanceReuse, WasmHost};
use weft_conformance::plugins;
use weft_conformance::polyglot::Lang;

const HELLO_CONFIG: &str = r#"{"deny_prefix": "/private"}"#;

struct Language {
    name: &'static str,
    noop: PathBuf,
    hello: PathBuf,
}

fn languages() -> [Language; 3] {
    [
        Language {
            name: "rust",
            noop: plugins::NOOP.into(),
            hello: plugins::HELLO_FILTER.into(),
        },
        Language {
            name: "python",
            noop: Lang::Python.noop(),
            hello: Lang::Python.hello(),
        },
        Language {
            name: "js",
            noop: Lang::Js.noop(),
            hello: Lang::Js.hello(),
        },
    ]
}

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

fn response() -> FilterResponse {
    let mut head = http::Response::new(()).into_parts().0;
    head.headers
        .insert("content-type", http::HeaderValue::from_static("text/plain"));
    FilterResponse { head, body: None }
}

fn ctx() -> RequestCtx {
    RequestCtx::new(
        SocketAddr::from(([127, 0, 0, 1], 40000)),
        "public".into(),
        "api".into(),
        "http",
    )
}

fn host() -> WasmHost {
    WasmHost::new(&WasmConfig::default(), Arc::new(FilterMetrics::unregistered())).unwrap_or_else(|e| panic!("{e:#}"))
}

fn load(
    rt: &tokio::runtime::Runtime,
    host: &WasmHost,
    plugin: &Path,
    config: &str,
    reuse: InstanceReuse,
) -> Arc<dyn Filter> {
    let clusters = Arc::new(Clusters::new());
    let limits = LimitsConfig::default();
    rt.block_on(host.load_filter_with("bench", plugin, config, &limits, clusters, reuse))
        .unwrap_or_else(|e| panic!("loading {}: {e:#}", plugin.display()))
}

/// This process's resident memory, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Size, compile time and memory per instance, printed once per language.
fn once(rt: &tokio::runtime::Runtime) {
    for lang in languages() {
        let size = std::fs::metadata(&lang.hello).map_or(0, |m| m.len());
        let host = host();
        let started = Instant::now();
        // Compile, link, instantiate and `init` one instance.
        let _first = load(rt, &host, &lang.hello, HELLO_CONFIG, InstanceReuse::Pooled);
        let compile = started.elapsed();
        // Memory per instance: fresh instances of the hello filter kept alive at once,
        // each having served one request (so its touched pages are counted).
        const LIVE: usize = 16;
        let before = rss();
        let filters: Vec<_> = (0..LIVE)
            .map(|_| {
                let f = load(rt, &host, &lang.hello, HELLO_CONFIG, InstanceReuse::Pooled);
                let decision = rt.block_on(f.on_request(&mut request(), &mut ctx()));
                assert!(matches!(decision, Ok(RequestDecision::Continue)), "{}", lang.name);
                f
            })
            .collect();
        let per_instance = rss().saturating_sub(before) / LIVE;
        drop(filters);
        println!(
            "polyglot {}: component {:.1} MiB, load (compile + first instance) {:.2} s, {:.2} MiB resident per instance",
            lang.name,
            size as f64 / f64::from(1 << 20),
            compile.as_secs_f64(),
            per_instance as f64 / f64::from(1 << 20),
        );
    }
}

fn costs(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    once(&rt);
    let host = host();
    for lang in languages() {
        let mut group = c.benchmark_group(format!("polyglot_{}", lang.name));
        group.sample_size(20);
        for (name, plugin, reuse) in [
            ("noop_request/pooled", &lang.noop, InstanceReuse::Pooled),
            ("noop_request/fresh_instance", &lang.noop, InstanceReuse::Fresh),
        ] {
            let filter = load(&rt, &host, plugin, "{}", reuse);
            let (mut req, mut cx) = (request(), ctx());
            group.bench_function(name, |b| {
                b.iter(|| {
                    let decision = rt.block_on(filter.on_request(&mut req, &mut cx));
                    assert!(
                        matches!(decision, Ok(RequestDecision::Continue)),
                        "{name}: {:?}",
                        decision.err()
                    );
                })
            });
        }
        let hello = load(&rt, &host, &lang.hello, HELLO_CONFIG, InstanceReuse::Pooled);
        group.bench_function("hello_request_and_response/pooled", |b| {
            b.iter(|| {
                rt.block_on(async {
                    let (mut req, mut cx) = (request(), ctx());
                    let decision = hello.on_request(&mut req, &mut cx).await;
                    assert!(matches!(decision, Ok(RequestDecision::Continue)), "hello");
                    let mut resp = response();
                    let decision = hello.on_response(&mut resp, &mut cx).await;
                    assert!(matches!(decision, Ok(ResponseDecision::Continue)), "hello");
                    assert_eq!(
                        resp.head.headers.get("x-hello").map(|v| v.as_bytes()),
                        Some(&b"world"[..])
                    );
                })
            })
        });
        group.finish();
    }
}

criterion_group!(benches, costs);
criterion_main!(benches);
