//! Plugins replaced while traffic flows: the new version takes over with no failed
//! request, a broken replacement is rejected and the old version keeps serving, and a
//! misbehaving filter hurts only the requests that run it.

use std::time::{Duration, Instant};

use weft_conformance::plugins::{HELLO_FILTER, INFINITE_LOOP, NOOP};
use weft_conformance::*;

fn config(up: &Upstream, plugin: &std::path::Path) -> String {
    Config::new()
        .cluster("web", &[up.addr])
        .wasm_filter("hot", plugin, "", "")
        .route("all", "path_prefix = \"/\"", "web", &["hot"], "")
        .to_string()
}

/// Replaces `path` atomically (write aside, rename), as a deploy tool would.
fn replace(path: &std::path::Path, with: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, with).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_swapped_under_load_fails_no_request() {
    let up = Upstream::echo("web").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("filter.wasm");
    std::fs::copy(HELLO_FILTER, &plugin).expect("copy");
    let weft = Weft::start(&config(&up, &plugin)).await;
    assert_eq!(
        get(&weft.url("/")).await.header("x-hello"),
        Some("world"),
        "the first version serves"
    );

    // Load: 4 clients in a loop until told to stop, recording every answer.
    let load = Load::start(weft.url("/load"), 4, "x-hello", Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // v2: a different component (noop: no header). The watcher reloads it.
    replace(&plugin, &std::fs::read(NOOP).expect("noop"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while get(&weft.url("/")).await.header("x-hello").is_some() {
        assert!(
            Instant::now() < deadline,
            "the new plugin was not picked up:\n{}",
            weft.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // v3: not a component. Rejected; v2 keeps serving.
    replace(&plugin, b"\0asm garbage");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !weft.log().contains("reload rejected") {
        assert!(
            Instant::now() < deadline,
            "the broken plugin was not reported:\n{}",
            weft.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (tally, failures) = load.stop().await;
    assert!(failures.is_empty(), "requests failed during the reloads: {failures:?}");
    let plain = tally.get(&None).copied().unwrap_or(0);
    let stamped = tally.values().sum::<u32>() - plain;
    assert!(
        stamped > 0 && plain > 0,
        "load saw both versions ({stamped} old, {plain} new)"
    );
    assert_eq!(
        get(&weft.url("/")).await.status,
        200,
        "v2 still serves after the rejected v3"
    );
    assert!(get(&weft.url("/")).await.header("x-hello").is_none());
    let (status, body) = weft.admin("POST", "/reload").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("filter \"hot\""),
        "the admin answer names the filter: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_stuck_in_a_loop_does_not_hold_up_other_requests() {
    let up = Upstream::echo("web").await;
    let config = Config::new()
        .top("[runtime]\nworkers = 2")
        .cluster("web", &[up.addr])
        .wasm_filter("spin", INFINITE_LOOP, "", "limits = { cpu = \"2s\" }")
        .route("loop", "path_prefix = \"/loop\"", "web", &["spin"], "")
        .route("rest", "path_prefix = \"/\"", "web", &[], "")
        .to_string();
    let weft = Weft::start(&config).await;
    let url = weft.url("/loop");
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn({
                let url = url.clone();
                async move { get(&url).await.status }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // While both loops spin (2 s each, one per worker), plain requests are answered: a
    // worker held for the loop's budget would make them wait the full 2 s. The bound is
    // loose so that a loaded test machine does not fail it.
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(get(&weft.url("/plain")).await.status, 200);
        assert!(
            started.elapsed() < Duration::from_millis(1000),
            "a plain request waited {:?}",
            started.elapsed()
        );
    }
    for s in stuck {
        assert_eq!(s.await.expect("task"), 500, "the looping filter fails its own request");
    }
}

/// A reload that compiles is not silent while it does (a large component takes seconds):
/// "plugin changed, compiling…" with the filter's name first, then the outcome with the
/// time it took, also when the compile fails; a reload whose plugin is unchanged compiles
/// nothing and says nothing of it.
#[tokio::test]
async fn a_changed_plugin_is_logged_while_it_compiles_with_its_outcome() {
    let up = Upstream::echo("web").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin = dir.path().join("filter.wasm");
    std::fs::copy(HELLO_FILTER, &plugin).expect("copy");
    let weft = Weft::start(&config(&up, &plugin)).await;
    let wait_for = |what: &'static str, count: usize| {
        let weft = &weft;
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while weft.log().matches(what).count() < count {
                assert!(Instant::now() < deadline, "no {what:?} (x{count}) in:\n{}", weft.log());
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    wait_for("plugin compiled", 1).await;
    let log = weft.log();
    let first = log.find("compiling plugin").expect("the first load says it compiles");
    assert!(
        log[first..]
            .lines()
            .next()
            .is_some_and(|l| l.contains("filter=\"hot\"")),
        "{log}"
    );

    // Unchanged: a reload reuses the compiled component.
    let (status, body) = weft.admin("POST", "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(!weft.log().contains("plugin changed"), "{}", weft.log());

    replace(&plugin, &std::fs::read(NOOP).expect("noop"));
    wait_for("plugin compiled", 2).await;
    let log = weft.log();
    let changed = log.find("plugin changed, compiling…").expect("announced");
    let compiled = log.rfind("plugin compiled").expect("outcome");
    assert!(changed < compiled, "announced before the outcome:\n{log}");
    for at in [changed, compiled] {
        let line = log[at..].lines().next().unwrap_or_default();
        assert!(line.contains("filter=\"hot\""), "{line}");
    }
    let outcome = log[compiled..].lines().next().unwrap_or_default();
    assert!(outcome.contains("ms="), "{outcome}");

    // A component header with nothing valid after it: the compiler refuses it.
    replace(&plugin, b"\0asm\x0d\0\x01\0garbage");
    wait_for("plugin failed to compile", 1).await;
    wait_for("plugin changed, compiling…", 2).await;
    let log = weft.log();
    let failed = log.rfind("plugin failed to compile").expect("outcome");
    let line = log[failed..].lines().next().unwrap_or_default();
    assert!(line.contains("filter=\"hot\"") && line.contains("ms="), "{line}");
}
