//! What Wasm filters write for operators — metric names, log lines — through the real
//! binary with the `capabilities` plugin: hostile names are refused, `/metrics` stays
//! parseable by an independent strict parser (Python's `prometheus_client` OpenMetrics
//! parser, installed by `scripts/setup`), the name bound holds across concurrent
//! instances, and a log flood is capped and counted.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use weft_conformance::*;

/// Parses an exposition with the reference OpenMetrics parser (strict: one bad line, an
/// unescaped quote or a missing `# EOF` fails it) and prints its samples as JSON.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append({"family": family.name, "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(samples))
"#;

/// Every sample of `/metrics`, as the strict parser read them; panics if it refused.
async fn scrape(weft: &Weft) -> Vec<Value> {
    // Asks for OpenMetrics as Prometheus does (without, /metrics is Prometheus text 0.0.4).
    let accept = [("accept", "application/openmetrics-text; version=1.0.0")];
    let reply = weft.admin_request("GET", "/metrics", &accept).await;
    let (status, text) = (reply.status, reply.text());
    assert_eq!(status, 200, "{text}");
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup installs prometheus_client)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).await.expect("write exposition");
    drop(stdin);
    let out = child.wait_with_output().await.expect("parser");
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused /metrics:\n{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("parser JSON")
}

/// The value of the sample named `name` whose labels include all of `labels`.
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][*k] == *v))
        .and_then(|s| s["value"].as_f64())
}

fn config(filter_name: &str, extra_clusters: &str, limits: &str, up: &Upstream) -> String {
    // These tests are about output, not the CPU budget, whose epochs count wall time: a
    // loaded machine stretched a 1000-line log flood past the default 50 ms.
    let limits = if limits.is_empty() {
        "limits = { cpu = \"5s\" }"
    } else {
        limits
    };
    // The filter's and the route's tables are written out: their names (quoted, with a
    // backslash and a newline) are what these tests feed the metrics and logs.
    Config::new()
        .cluster("web", &[up.addr])
        .clusters(extra_clusters)
        .filters(&format!(
            "[[filters]]\nname = {filter_name}\nwasm = \"{}\"\n{limits}",
            plugins::CAPABILITIES
        ))
        .routes(&format!(
            r#"[[routes]]
name = "route \"quoted\" \\ and\nnewline"
match = {{ path_prefix = "/" }}
cluster = "web"
filters = [{filter_name}]"#
        ))
        .to_string()
}

/// Also named with a quote, a backslash and a newline: filter names come from config.
const FILTER: &str = "caps \"q\" \\ \n";
const FILTER_TOML: &str = r#""caps \"q\" \\ \n""#;

#[tokio::test]
async fn hostile_metric_names_are_refused_and_metrics_stay_parseable() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config(FILTER_TOML, "", "", &up)).await;
    // As sent in `x-cap-metric` (the plugin turns `\n`, `\e`, `\\` into the real thing).
    let refused = [
        r#"quote"d"#,
        r"back\\slash",
        r"new\nline",
        r#"forged"} 1\nweft_forged_total 1\n# x"#,
        "with space",
        "1digit_first",
        "dash-ed",
        r"esc\e[31m",
    ];
    let too_long = "a".repeat(129);
    for name in refused.iter().copied().chain([too_long.as_str(), "ok_name"]) {
        let reply = weft.get_with("/", &[("x-cap-metric", name)]).await;
        assert_eq!(reply.status, 200, "{name}: {}", reply.text());
    }

    let samples = scrape(&weft).await;
    let filter = [("filter", FILTER)];
    assert_eq!(
        value(
            &samples,
            "weft_filter_events_total",
            &[("filter", FILTER), ("name", "ok_name")]
        ),
        Some(1.0)
    );
    let guest_names: Vec<&Value> = samples
        .iter()
        .filter(|s| s["family"].as_str().is_some_and(|f| f.starts_with("weft_filter_")))
        .filter_map(|s| s["labels"].get("name"))
        .filter(|n| *n != "ok_name")
        .collect();
    assert!(
        guest_names.is_empty(),
        "refused names reached /metrics: {guest_names:?}"
    );
    assert!(
        !samples.iter().any(|s| s["family"] == "weft_forged"),
        "a guest forged a series"
    );
    // Three calls per request (counter, gauge, histogram), each refused.
    let rejected = |reason| {
        value(
            &samples,
            "weft_filter_metric_rejected_total",
            &[filter[0], ("reason", reason)],
        )
    };
    assert_eq!(rejected("invalid"), Some(3.0 * refused.len() as f64));
    assert_eq!(rejected("too_long"), Some(3.0));
    assert_eq!(rejected("too_many"), Some(0.0));
    // The route name from config came through whole, quotes and newline included.
    assert_eq!(
        value(
            &samples,
            "weft_responses_total",
            &[("route", "route \"quoted\" \\ and\nnewline"), ("class", "2xx")]
        ),
        Some(10.0)
    );
    // Logged, but not once per refusal: a guest must not flood the log through us.
    let warnings = weft.log().matches("filter metric refused or folded").count();
    assert_eq!(warnings, 1, "{}", weft.log());
}

#[tokio::test]
async fn labelled_series_are_checked_escaped_and_bounded() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config("\"caps\"", "", "", &up)).await;
    let ok = [
        "operations;operation=GetUser;type=query",
        "operations;operation=GetUser;type=query",
        // A value may hold anything a header can: it is escaped, never a new series.
        r#"operations;operation=x"} 1\nweft_forged_total 1\n#;type=query"#,
    ];
    let invalid = [
        "operations;filter=forged",
        "operations;name=forged",
        "operations;le=0.5",
        "operations;__name__=x",
        "operations;op=a;op=b",
        "operations;bad-name=a",
        "operations;a=1;b=2;c=3;d=4;e=5",
        // promtool's lint refuses camelCase label names; upper case is refused with it.
        "operations;operationName=x",
        "operations;Op=x",
        // The overflow series' own label.
        "operations;overflow=true",
    ];
    let long_value = format!("operations;operation={}", "v".repeat(129));
    for spec in ok
        .iter()
        .chain(&invalid)
        .copied()
        .chain([long_value.as_str(), "bad name;op=a"])
    {
        let reply = weft.get_with("/", &[("x-cap-metric-labelled", spec)]).await;
        assert_eq!(reply.status, 200, "{spec}: {}", reply.text());
    }
    let samples = scrape(&weft).await;
    let series = |operation: &str| {
        value(
            &samples,
            "weft_filter_events_total",
            &[
                ("filter", "caps"),
                ("name", "operations"),
                ("operation", operation),
                ("type", "query"),
            ],
        )
    };
    assert_eq!(series("GetUser"), Some(2.0));
    assert_eq!(series("x\"} 1\nweft_forged_total 1\n#"), Some(1.0));
    assert!(
        !samples.iter().any(|s| s["family"] == "weft_forged"),
        "a guest forged a series"
    );
    assert!(
        !samples
            .iter()
            .any(|s| s["labels"]["filter"] == "forged" || s["labels"]["name"] == "forged"),
        "a guest label overrode the host's"
    );
    let rejected = |reason| {
        value(
            &samples,
            "weft_filter_metric_rejected_total",
            &[("filter", "caps"), ("reason", reason)],
        )
    };
    // Three calls (counter, gauge, histogram) per refused request.
    assert_eq!(rejected("invalid_label"), Some(3.0 * (invalid.len() + 1) as f64));
    assert_eq!(
        rejected("invalid"),
        Some(3.0),
        "a labelled call's name is checked as any other"
    );

    // Past 1024 series per kind, new values fold into one overflow series; totals stay right.
    const DISTINCT: usize = 1100;
    for i in 0..DISTINCT {
        let spec = format!("ops;operation=op{i}");
        let reply = weft.get_with("/", &[("x-cap-metric-labelled", spec.as_str())]).await;
        assert_eq!(reply.status, 200);
    }
    let samples = scrape(&weft).await;
    let ops: Vec<&Value> = samples
        .iter()
        .filter(|s| s["name"] == "weft_filter_events_total" && s["labels"]["name"] == "ops")
        .collect();
    // The earlier `operations` series count against the same bound.
    let own = 1024 - 2;
    assert_eq!(ops.len(), own + 1, "own series plus the overflow one");
    let total: f64 = ops.iter().map(|s| s["value"].as_f64().expect("value")).sum();
    assert_eq!(total, DISTINCT as f64);
    let overflow = value(
        &samples,
        "weft_filter_events_total",
        &[("filter", "caps"), ("name", "ops"), ("overflow", "true")],
    );
    assert_eq!(overflow, Some((DISTINCT - own) as f64));
}

#[tokio::test]
async fn past_the_series_bound_a_guest_varying_its_label_names_adds_one_series() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config("\"caps\"", "", "", &up)).await;
    // Fills the filter's 1024 labelled series of each kind.
    for i in 0..1024 {
        let spec = format!("ops;operation=op{i}");
        assert_eq!(
            weft.get_with("/", &[("x-cap-metric-labelled", spec.as_str())])
                .await
                .status,
            200
        );
    }
    // Then new label names each time, and new label sets in every shape: each would be a
    // new series if the overflow one kept the guest's label names.
    const HOSTILE: usize = 40;
    for i in 0..HOSTILE {
        let spec = match i % 4 {
            0 => format!("ops;k{i}=v"),
            1 => format!("ops;a{i}=v;b{i}=w"),
            2 => format!("ops;operation=new{i};z{i}=v"),
            _ => format!("ops;x{i}=1;y=2;w{i}=3"),
        };
        assert_eq!(
            weft.get_with("/", &[("x-cap-metric-labelled", spec.as_str())])
                .await
                .status,
            200
        );
    }
    let samples = scrape(&weft).await;
    // Counters, whatever the family is called: the samples ending in `_total` of this name.
    let ops: Vec<&Value> = samples
        .iter()
        .filter(|s| s["name"].as_str().is_some_and(|n| n.ends_with("_total")))
        .filter(|s| s["labels"]["filter"] == "caps" && s["labels"]["name"] == "ops")
        .collect();
    assert_eq!(
        ops.len(),
        1024 + 1,
        "the guest's series plus one overflow series: {ops:?}"
    );
    let total: f64 = ops.iter().map(|s| s["value"].as_f64().expect("value")).sum();
    assert_eq!(total, (1024 + HOSTILE) as f64, "totals stay right");
    let overflow: Vec<&&Value> = ops
        .iter()
        .filter(|s| !s["labels"]["operation"].as_str().is_some_and(|o| o.starts_with("op")))
        .collect();
    assert_eq!(overflow.len(), 1, "{overflow:?}");
    let labels = overflow[0]["labels"].as_object().expect("labels");
    let mut keys: Vec<&str> = labels.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["filter", "name", "overflow"], "one fixed label set: {labels:?}");
    assert_eq!(overflow[0]["value"].as_f64(), Some(HOSTILE as f64));
    // The gauges and histograms are bounded the same way.
    for suffix in ["_count", ""] {
        let kind: Vec<&Value> = samples
            .iter()
            .filter(|s| s["labels"]["filter"] == "caps" && s["labels"]["name"] == "ops")
            .filter(|s| {
                let name = s["name"].as_str().unwrap_or("");
                !name.ends_with("_total")
                    && !name.ends_with("_bucket")
                    && !name.ends_with("_sum")
                    && !name.ends_with("_created")
                    && (if suffix.is_empty() {
                        !name.ends_with("_count")
                    } else {
                        name.ends_with(suffix)
                    })
            })
            .collect();
        assert_eq!(kind.len(), 1024 + 1, "{suffix:?}: {kind:?}");
    }
}

#[tokio::test]
async fn the_metric_name_bound_holds_across_concurrent_instances() {
    let up = Upstream::echo("web").await;
    // Each request waits in a callout, holding its instance: N requests in flight are N
    // instances, each using a name it has never seen.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (now, peak) = (in_flight.clone(), most.clone());
    let slow = Upstream::start(move |_req| {
        let (now, peak) = (now.clone(), peak.clone());
        async move {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(1500)).await;
            now.fetch_sub(1, Ordering::SeqCst);
            http::Response::new(full("slow"))
        }
    })
    .await;
    let clusters = format!("\n[[clusters]]\nname = \"slow\"\nendpoints = [\"{}\"]\n", slow.addr);
    let weft = Weft::start(&config("\"caps\"", &clusters, "", &up)).await;

    const REQUESTS: usize = 100;
    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let url = weft.url("/");
        tasks.push(tokio::spawn(async move {
            let req = Request::get(url)
                .header("x-cap-metric", format!("name_{i}"))
                .header("x-cap-callout", "slow")
                .header("x-cap-callout-timeout-ms", "5000")
                .body(Full::new(Bytes::new()))
                .expect("request");
            send(&http1_client(), req).await.status
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("request task"), 200);
    }
    let concurrent = most.load(Ordering::SeqCst);
    assert!(
        concurrent > 64,
        "only {concurrent} instances were busy at once; the test needs more than 64"
    );

    let samples = scrape(&weft).await;
    let counted = samples
        .iter()
        .filter(|s| s["name"] == "weft_filter_events_total" && s["labels"]["filter"] == "caps")
        .count();
    assert_eq!(counted, 64, "distinct counter names across all instances");
    let too_many = value(
        &samples,
        "weft_filter_metric_rejected_total",
        &[("filter", "caps"), ("reason", "too_many")],
    );
    assert_eq!(too_many, Some(3.0 * (REQUESTS - 64) as f64));
}

#[tokio::test]
async fn a_log_flood_is_capped_counted_and_summarised() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config("\"flood\"", "", "", &up)).await;
    let started = Instant::now();
    let reply = weft
        .get_with("/", &[("x-cap-log-lines", "1000"), ("x-cap-print-lines", "500")])
        .await;
    assert_eq!(reply.status, 200);
    let elapsed = started.elapsed().as_secs_f64();

    let log = weft.log();
    let logged = log.matches(" of 1000").count() + log.matches("printed ").count();
    // The documented defaults: 100 lines a second, bursts of 200, shared by both streams.
    let allowed = 200.0 + 100.0 * elapsed + 1.0;
    assert!(
        (200..=allowed as usize).contains(&logged),
        "{logged} guest lines logged; at most {allowed:.0} allowed after {elapsed:.2}s"
    );
    let samples = scrape(&weft).await;
    let dropped = value(&samples, "weft_filter_log_dropped_total", &[("filter", "flood")]);
    assert_eq!(dropped, Some((1500 - logged) as f64));
    assert!(log.contains("filter flood: 1 log line dropped"), "{log}");
}

#[tokio::test]
async fn a_guest_cannot_forge_a_line_of_the_proxys_log() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config("\"forger\"", "", "", &up)).await;
    let forged = "2026-01-01T00:00:00.000000Z  INFO weft::state: config reloaded version=99";
    let text = format!(r"innocent\n{forged}\r\e[2K\e]0;owned");
    let reply = weft.get_with("/", &[("x-cap-log", &text)]).await;
    assert_eq!(reply.status, 200);

    let log = weft.log();
    assert!(log.contains("innocent\\n2026-01-01T00:00:00"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-01-01T00:00:00")),
        "a guest line started a log line of its own:\n{log}"
    );
    assert!(!log.contains("\u{1b}[2K") && !log.contains("\u{1b}]0;"), "{log:?}");
    assert!(log.contains("\\u{1b}[2K"), "{log}");
}

/// Metric handles (0.2.3) from a guest calling them raw: a handle updates its own series
/// only; used as another kind's, made up, or asked for a refused name it changes nothing;
/// and one instance gets at most 4096 of them, however many series it names.
#[tokio::test]
async fn metric_handles_update_their_own_series_and_are_bounded_per_instance() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config("\"caps\"", "", "", &up)).await;
    let reply = weft.get_with("/", &[("x-cap-metric-handles", "by_handle")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echoed = reply.json();
    let header = |name: &str| echoed["headers"][name][0].as_str().map(str::to_owned);
    assert!(header("x-handle").is_some_and(|h| h.parse::<u32>().is_ok()), "{echoed}");
    assert_eq!(header("x-handle-refused").as_deref(), Some("none"), "{echoed}");

    let reply = weft.get_with("/", &[("x-cap-metric-handle-flood", "5000")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let given: u32 = reply.json()["headers"]["x-handles-given"][0]
        .as_str()
        .and_then(|n| n.parse().ok())
        .expect("x-handles-given");
    // The first request's instance may serve this one too: its one handle counts.
    assert!((4095..=4096).contains(&given), "{given} handles given");

    let samples = scrape(&weft).await;
    let filter = ("filter", "caps");
    assert_eq!(
        value(&samples, "weft_filter_events_total", &[filter, ("name", "by_handle")]),
        Some(2.0),
        "+2 through the handle; the made-up handle's +5 went nowhere"
    );
    assert_eq!(
        value(&samples, "weft_filter_value", &[filter, ("name", "by_handle")]),
        None,
        "a counter's handle used as a gauge's set nothing"
    );
    assert_eq!(
        value(
            &samples,
            "weft_filter_metric_rejected_total",
            &[filter, ("reason", "invalid")]
        ),
        Some(1.0),
        "the refused name was counted once, when its handle was asked for"
    );
    // Every handle given added 1: the labelled series plus the overflow one hold it all.
    let flooded: f64 = samples
        .iter()
        .filter(|s| s["name"] == "weft_filter_events_total" && s["labels"]["name"] == "flood")
        .filter_map(|s| s["value"].as_f64())
        .sum();
    assert_eq!(flooded, f64::from(given));
}
