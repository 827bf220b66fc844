//! Python and JavaScript filters through the real `weft` binary: the examples answer as
//! the Rust one does, the SDKs reach every host interface, each misbehaviour is contained
//! exactly as for Rust (`wasm_e2e.rs`, `wasm/sandbox.rs`), and a swap between languages
//! under load fails no request.
//!
//! The components are built by the SDKs' build scripts (see `weft_conformance::polyglot`);
//! the first run installs componentize-py and componentize-js (`scripts/setup` does it).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use weft_conformance::polyglot::{Lang, cache_dir};
use weft_conformance::*;

/// One route through `filter` (a `[[filters]]` table named `f`) to the echo upstream
/// `web`; a second echo upstream is the cluster `side`, for callouts.
fn config(web: &Upstream, side: &Upstream, filter: &str) -> String {
    wasm_cache(Config::new())
        .cluster("web", &[web.addr])
        .cluster("side", &[side.addr])
        .filters(filter)
        .route("all", "path_prefix = \"/\"", "web", &["f"], "")
        .to_string()
}

/// `config` with the shared component cache (`[wasm] cache_dir`).
fn wasm_cache(config: Config) -> Config {
    config.top(&format!("[wasm]\ncache_dir = \"{}\"", cache_dir().display()))
}

async fn counter(weft: &Weft, series: &str) -> f64 {
    let (_, text) = weft.admin("GET", "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The same checks as `wasm_e2e::the_example_filter_denies_stamps_and_counts`.
async fn the_example_denies_stamps_and_counts(lang: Lang) {
    let (web, side) = (Upstream::echo("web").await, Upstream::echo("side").await);
    let filter = format!(
        "[[filters]]\nname = \"f\"\nwasm = \"{}\"\n\
         config = {{ header_name = \"x-hello\", header_value = \"world\", deny_prefix = \"/private\" }}\n",
        lang.hello().display()
    );
    let weft = Weft::start(&config(&web, &side, &filter)).await;

    let denied = get(&weft.url("/private/x")).await;
    assert_eq!((denied.status, denied.text().as_str()), (403, "forbidden\n"));
    assert_eq!(web.hits(), 0, "a denied request never reaches the upstream");

    let ok = get(&weft.url("/public")).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-hello"), Some("world"));
    assert_eq!(ok.json()["uri"], "/public");
    assert_eq!(
        counter(&weft, r#"weft_filter_events_total{filter="f",name="requests"}"#).await,
        2.0
    );
    assert_eq!(
        counter(&weft, r#"weft_filter_events_total{filter="f",name="denied"}"#).await,
        1.0
    );
    // The default memory limit follows the interpreter's heap, not Rust's 16 MiB.
    let log = weft.log();
    let memory: usize = log
        .lines()
        .find(|l| l.contains("loaded wasm filter"))
        .map(without_colours)
        .and_then(|l| l.split(" memory=").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no memory in the load line:\n{log}"));
    assert!(memory > 16 << 20, "default memory limit {memory}");
}

#[tokio::test]
async fn the_python_example_denies_stamps_and_counts() {
    the_example_denies_stamps_and_counts(Lang::Python).await;
}

#[tokio::test]
async fn the_js_example_denies_stamps_and_counts() {
    the_example_denies_stamps_and_counts(Lang::Js).await;
}

/// A bad config is refused with the SDK's message naming the key, as `serde` does for
/// a Rust filter.
async fn a_config_error_names_the_key(lang: Lang) {
    let config = wasm_cache(Config::new())
        .cluster("web", &["127.0.0.1:9".parse().expect("addr")])
        .wasm_filter("f", lang.hello(), "header_nam = \"x\"", "")
        .route("all", "", "web", &["f"], "");
    let (ok, output) = weft_check(&config.to_string(), &[]);
    assert!(!ok, "{output}");
    assert!(
        output.contains("init refused the config") && output.contains("unknown key `header_nam`"),
        "{output}"
    );
}

#[tokio::test]
async fn a_python_config_error_names_the_key() {
    a_config_error_names_the_key(Lang::Python).await;
}

#[tokio::test]
async fn a_js_config_error_names_the_key() {
    a_config_error_names_the_key(Lang::Js).await;
}

fn probe(lang: Lang, extra: &str) -> String {
    format!(
        "[[filters]]\nname = \"f\"\nwasm = \"{}\"\nconfig = {{ greeting = \"hello from {}\" }}\n{extra}\n",
        lang.probe().display(),
        lang.name()
    )
}

/// The CPU budget is wall time between yields: a test machine busy with builds can stretch
/// an interpreter's first run of a code path past the default 50 ms. The tests that are
/// not about the budget keep it out of their way.
const ROOMY_CPU: &str = r#"limits = { cpu = "1s" }"#;

/// Config, kv, callouts, logs and metrics, each through the SDK.
async fn the_sdk_reaches_every_host_interface(lang: Lang) {
    let (web, side) = (Upstream::echo("web").await, Upstream::echo("side").await);
    let weft = Weft::start(&config(&web, &side, &probe(lang, ROOMY_CPU))).await;

    let greet = get(&weft.url("/greet")).await;
    assert_eq!(greet.status, 200);
    assert_eq!(
        greet.text(),
        format!("hello from {}", lang.name()),
        "the config was read"
    );

    let first = weft.get_with("/kv", &[("x-probe", "one")]).await;
    assert_eq!((first.status, first.header("x-hits")), (200, Some("1")));
    assert_eq!(first.text(), "one", "kv.set then kv.get");
    let second = weft.get_with("/kv", &[("x-probe", "two")]).await;
    assert_eq!((second.header("x-hits"), second.text().as_str()), (Some("2"), "two"));

    let called = get(&weft.url("/callout")).await;
    assert_eq!((called.status, called.header("x-callout-status")), (200, Some("200")));
    let answer = called.json();
    assert_eq!(
        (answer["upstream"].as_str(), answer["uri"].as_str()),
        (Some("side"), Some("/side"))
    );
    assert_eq!(
        seen_header(&answer, "x-probe"),
        Some(lang.name()),
        "the callout's headers"
    );
    assert_eq!(side.hits(), 1);

    let passed = weft.get_with("/log", &[("x-probe", "hi")]).await;
    assert_eq!((passed.status, passed.header("x-lang")), (200, Some(lang.name())));
    assert_eq!(passed.json()["uri"], "/log", "the request went upstream");
    let said = format!("probe-{} says hi", if lang == Lang::Python { "py" } else { "js" });
    let deadline = Instant::now() + Duration::from_secs(5);
    while !weft.log().contains(&said) {
        assert!(Instant::now() < deadline, "not logged:\n{}", weft.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        counter(&weft, r#"weft_filter_events_total{filter="f",name="logged"}"#).await,
        1.0
    );
}

#[tokio::test]
async fn the_python_sdk_reaches_every_host_interface() {
    the_sdk_reaches_every_host_interface(Lang::Python).await;
}

#[tokio::test]
async fn the_js_sdk_reaches_every_host_interface() {
    the_sdk_reaches_every_host_interface(Lang::Js).await;
}

/// An infinite loop, an allocation past the memory limit and an uncaught exception each
/// fail their own request with a 500 (counted as `cpu`, `memory`, `trap`), and the filter
/// keeps serving; with `on_error = "open"` the request goes on without it.
async fn misbehaviour_is_contained_as_for_rust(lang: Lang) {
    let (web, side) = (Upstream::echo("web").await, Upstream::echo("side").await);
    // Room for an interpreter to allocate up to its memory limit on a loaded machine
    // (epochs count wall time: at 500 ms the allocation hit the CPU limit first).
    let weft = Weft::start(&config(&web, &side, &probe(lang, r#"limits = { cpu = "2s" }"#))).await;
    let errors = |kind: &str| format!(r#"weft_filter_errors_total{{filter="f",kind="{kind}"}}"#);

    let started = Instant::now();
    assert_eq!(get(&weft.url("/loop")).await.status, 500);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the loop was stopped after {:?}",
        started.elapsed()
    );
    assert_eq!(counter(&weft, &errors("cpu")).await, 1.0, "{}", weft.log());
    assert_eq!(get(&weft.url("/fine")).await.status, 200, "the filter keeps serving");

    assert_eq!(get(&weft.url("/alloc")).await.status, 500);
    assert_eq!(counter(&weft, &errors("memory")).await, 1.0, "{}", weft.log());
    assert_eq!(get(&weft.url("/fine")).await.status, 200);

    assert_eq!(get(&weft.url("/raise")).await.status, 500);
    assert_eq!(counter(&weft, &errors("trap")).await, 1.0, "{}", weft.log());
    let said = format!(
        "probe-{} was asked to raise",
        if lang == Lang::Python { "py" } else { "js" }
    );
    assert!(
        weft.log().contains(&said),
        "the exception is in the log:\n{}",
        weft.log()
    );
    let fine = get(&weft.url("/fine")).await;
    assert_eq!((fine.status, fine.header("x-lang")), (200, Some(lang.name())));

    let open = Weft::start(&config(
        &web,
        &side,
        &probe(lang, "on_error = \"open\"\nlimits = { cpu = \"500ms\" }"),
    ))
    .await;
    for path in ["/loop", "/alloc", "/raise"] {
        assert_eq!(get(&open.url(path)).await.status, 200, "fail-open on {path}");
    }
}

/// CPython can reach for files, the environment and the network: the host gives it no
/// directories and no variables, and componentize-py's CPython has no `socket` module
/// (the host would refuse every address anyway).
#[tokio::test]
async fn a_python_filter_cannot_reach_files_the_environment_or_the_network() {
    let (web, side) = (Upstream::echo("web").await, Upstream::echo("side").await);
    let weft = Weft::start(&config(&web, &side, &probe(Lang::Python, ROOMY_CPU))).await;
    let reply = weft.get_with("/escape", &[("x-probe", &side.addr.to_string())]).await;
    assert_eq!(reply.status, 200, "{}", weft.log());
    let attempts = reply.text();
    assert_eq!(attempts.split(' ').count(), 6, "{attempts}");
    eprintln!("escape attempts: {attempts}");
    assert!(!attempts.contains("LEAK"), "{attempts}");
    assert_eq!(side.connections(), 0, "no connection reached the upstream");
}

#[tokio::test]
async fn python_misbehaviour_is_contained_as_for_rust() {
    misbehaviour_is_contained_as_for_rust(Lang::Python).await;
}

#[tokio::test]
async fn js_misbehaviour_is_contained_as_for_rust() {
    misbehaviour_is_contained_as_for_rust(Lang::Js).await;
}

/// SpiderMonkey (componentize-js 0.23) keeps about 1 KiB of every call that its GC never
/// returns, so a reused JavaScript instance grows until it runs out of memory (at 16 MiB,
/// after about 3 500 requests). The host retires an instance past three quarters of its
/// limit: the requests that would have failed get a fresh instance.
#[tokio::test]
async fn a_js_instance_that_grows_with_every_call_is_retired_before_it_fails_a_request() {
    let (web, side) = (Upstream::echo("web").await, Upstream::echo("side").await);
    let limits = r#"limits = { memory = 16777216, cpu = "1s" }"#;
    let weft = Weft::start(&config(&web, &side, &probe(Lang::Js, limits))).await;
    let client = http1_client();
    for i in 0..6000 {
        let req = http::Request::get(weft.url("/fine"))
            .body(Full::new(Bytes::new()))
            .expect("req");
        let reply = send(&client, req).await;
        assert_eq!(reply.status, 200, "request {i}:\n{}", weft.log());
    }
    assert_eq!(
        counter(&weft, r#"weft_filter_errors_total{filter="f",kind="memory"}"#).await,
        0.0
    );
}

/// Replaces `path` atomically (write aside, rename), as a deploy tool would.
fn replace(path: &std::path::Path, with: &std::path::Path) {
    let aside = path.with_extension("new");
    std::fs::copy(with, &aside).expect("copy");
    std::fs::rename(&aside, path).expect("rename");
}

/// As `hot_reload::a_plugin_swapped_under_load_fails_no_request`, from Python to
/// JavaScript and back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_filter_swapped_for_js_and_back_under_load_fails_no_request() {
    let (web, side) = (Upstream::echo("web").await, Upstream::echo("side").await);
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("filter.wasm");
    let (python, js) = (Lang::Python.probe(), Lang::Js.probe());
    std::fs::copy(&python, &plugin).expect("copy");
    let filter = format!(
        "[[filters]]\nname = \"f\"\nwasm = \"{}\"\nconfig = {{ greeting = \"hi\" }}\n{ROOMY_CPU}\n",
        plugin.display()
    );
    let weft = Weft::start(&config(&web, &side, &filter)).await;
    assert_eq!(get(&weft.url("/")).await.header("x-lang"), Some("python"));

    let load = Load::start(weft.url("/load"), 4, "x-lang", Duration::from_secs(120));

    for (to, lang) in [(&js, "js"), (&python, "python")] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        replace(&plugin, to);
        let deadline = Instant::now() + Duration::from_secs(90);
        while get(&weft.url("/")).await.header("x-lang") != Some(lang) {
            assert!(
                Instant::now() < deadline,
                "the {lang} plugin was not picked up:\n{}",
                weft.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut tally, failures) = load.stop().await;
    let python = tally.remove(&Some("python".to_owned())).unwrap_or(0);
    let js = tally.remove(&Some("js".to_owned())).unwrap_or(0);
    assert!(
        failures.is_empty() && tally.is_empty(),
        "requests failed during the reloads: {failures:?}, other x-lang: {tally:?}\n{}",
        weft.log()
    );
    assert!(
        python > 0 && js > 0,
        "load saw both languages ({python} python, {js} js)"
    );
}
