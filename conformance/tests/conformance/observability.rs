//! What an operator sees, through the real binary: metrics that move exactly with the
//! traffic a test sends (checked by `promtool` and scraped by a real Prometheus), the
//! admin API's JSON views with secrets masked and the token enforced, the audit trail of
//! reloads and admin calls, drain, and the status page in headless Chromium.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use weft::wasm::WIT_VERSION;
use weft_conformance::*;

const TOKEN: &str = "0bserve-0123456789abcdef-token";
const HMAC: &str = "hmac-s3cr3t-in-the-config";
const REDIS_PASSWORD: &str = "redis-pw-in-the-url";

/// `api` through the no-op Wasm filter to `web`, `bare` straight to `web`, `dead` to a
/// cluster whose endpoint refuses connections.
fn config(up: &Upstream, admin: &str) -> String {
    routes(up, admin, Config::new())
}

/// [`config`] after `before`'s filters and routes (which match first).
fn routes(up: &Upstream, admin: &str, before: Config) -> String {
    let dead = dead_addr();
    before
        .top("[runtime]\nwatch = false")
        .admin(admin)
        .cluster("web", &[up.addr])
        .cluster("down", &[dead])
        .wasm_filter("noop", plugins::NOOP, "", "")
        .route("api", "path_prefix = \"/api\"", "web", &["noop"], "")
        .route("dead", "path_prefix = \"/dead\"", "down", &[], "")
        .route("bare", "path_prefix = \"/\"", "web", &[], "")
        .to_string()
}

async fn traffic(weft: &Weft, path: &str, n: usize) -> Vec<u16> {
    let client = http1_client();
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let req = http::Request::get(weft.url(path))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        statuses.push(send(&client, req).await.status);
    }
    statuses
}

#[tokio::test]
async fn counters_and_histograms_move_exactly_with_the_traffic() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config(&up, "")).await;
    assert_eq!(traffic(&weft, "/api/x", 7).await, vec![200; 7]);
    assert_eq!(traffic(&weft, "/other", 3).await, vec![200; 3]);
    assert_eq!(traffic(&weft, "/dead", 2).await, vec![503; 2]);

    let exact = [
        (r#"weft_responses_total{route="api",class="2xx"}"#, 7.0),
        (r#"weft_request_duration_seconds_count{route="api"}"#, 7.0),
        (r#"weft_request_duration_seconds_bucket{le="+Inf",route="api"}"#, 7.0),
        (r#"weft_request_duration_seconds_count{route="bare"}"#, 3.0),
        (r#"weft_responses_total{route="dead",class="5xx"}"#, 2.0),
        (r#"weft_request_duration_seconds_count{route="dead"}"#, 2.0),
        (r#"weft_upstream_responses_total{cluster="web",class="2xx"}"#, 10.0),
        (r#"weft_upstream_duration_seconds_count{cluster="web"}"#, 10.0),
        (r#"weft_upstream_errors_total{cluster="down",kind="connect"}"#, 2.0),
        (r#"weft_upstream_duration_seconds_count{cluster="down"}"#, 0.0),
        (
            r#"weft_filter_duration_seconds_count{filter="noop",phase="request"}"#,
            7.0,
        ),
        (
            r#"weft_filter_duration_seconds_count{filter="noop",phase="response"}"#,
            7.0,
        ),
        (r#"weft_requests_in_flight{listener="main"}"#, 0.0),
        (r#"weft_filter_queue_wait_seconds_count{filter="noop"}"#, 0.0),
        ("weft_config_version", 1.0),
    ];
    let text = weft.admin("GET", "/metrics").await.1;
    for (series, expected) in exact {
        assert_eq!(weft.metric(series).await, expected, "{series}\n{text}");
    }
    // One request at a time: one instance did all the calls and is back in the pool.
    assert_eq!(
        weft.metric(r#"weft_filter_instances{filter="noop",state="live"}"#)
            .await,
        1.0,
        "{text}"
    );
    assert_eq!(
        weft.metric(r#"weft_filter_instances{filter="noop",state="idle"}"#)
            .await,
        1.0,
        "{text}"
    );
    // Requests and responses crossed the socket: at least the request lines went in.
    let received = weft.metric(r#"weft_received_bytes_total{listener="main"}"#).await;
    let sent = weft.metric(r#"weft_sent_bytes_total{listener="main"}"#).await;
    assert!(
        received >= 12.0 * "GET /api/x HTTP/1.1\r\n".len() as f64,
        "{received}\n{text}"
    );
    assert!(sent >= 12.0 * "HTTP/1.1 200 OK\r\n".len() as f64, "{sent}\n{text}");

    // The plugin's info series carries the hash of the file that was loaded.
    let sha = Command::new("sha256sum")
        .arg(plugins::NOOP)
        .output()
        .expect("sha256sum");
    let sha = String::from_utf8_lossy(&sha.stdout)
        .split(' ')
        .next()
        .unwrap_or("")
        .to_owned();
    assert_eq!(sha.len(), 64);
    assert!(
        text.contains(&format!(
            r#"weft_plugin_info{{filter="noop",sha256="{sha}",wit="{WIT_VERSION}"}} 1"#
        )),
        "{text}"
    );

    // Bucket counts are cumulative and end at the count.
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("weft_upstream_duration_seconds_bucket{") && l.contains(r#"cluster="web""#))
        .map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("value"))
        .collect();
    assert_eq!(buckets.len(), 20, "{text}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&10.0));

    // The scraper's own requests are not counted as traffic.
    assert_eq!(traffic(&weft, "/api/y", 1).await, vec![200]);
    assert_eq!(
        weft.metric(r#"weft_responses_total{route="api",class="2xx"}"#).await,
        8.0
    );
}

#[tokio::test]
async fn the_exposition_passes_promtool_and_the_reference_parsers() {
    let up = Upstream::echo("web").await;
    // A filter using every kind of metric, plain and labelled: its families are linted too.
    let caps = Config::new().wasm_filter("caps", plugins::CAPABILITIES, "", "").route(
        "caps",
        "path_prefix = \"/caps\"",
        "web",
        &["caps"],
        "",
    );
    let weft = Weft::start(&routes(&up, "", caps)).await;
    traffic(&weft, "/api/x", 3).await;
    traffic(&weft, "/dead", 1).await;
    for (header, value) in [
        ("x-cap-metric", "requests"),
        ("x-cap-metric-labelled", "operations;operation=GetUser;type=query"),
        // The same series with its labels in another order: one series, not a duplicate.
        ("x-cap-metric-labelled", "operations;type=query;operation=GetUser"),
        // promtool's lint refuses camelCase label names: refused at the boundary.
        ("x-cap-metric-labelled", "operations;operationName=GetUser"),
    ] {
        let req = http::Request::get(weft.url("/caps"))
            .header(header, value)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        assert_eq!(send(&http1_client(), req).await.status, 200, "{header}: {value}");
    }

    // No Accept: the Prometheus text format, which promtool checks (lint included).
    let plain = weft.admin_request("GET", "/metrics", &[]).await;
    assert_eq!(
        plain.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = plain.text();
    assert!(!text.contains("# EOF"), "{text}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/setup installs Debian's prometheus)");
    std::io::Write::write_all(&mut promtool.stdin.take().expect("stdin"), text.as_bytes()).expect("write");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    python_parse(&text, "prometheus_client.parser");
    // Every kind the filter used is there, plain and labelled, under the families the
    // docs name (no type in the name: promtool's lint refuses `_counter`, `_gauge`…).
    for family in [
        "weft_filter_events_total{",
        "weft_filter_value{",
        "weft_filter_observations_count{",
    ] {
        for name in ["requests", "operations"] {
            let series = format!("name=\"{name}\"");
            assert!(
                text.lines()
                    .any(|l| l.starts_with(family) && l.contains("filter=\"caps\"") && l.contains(&series)),
                "no {family}{series}}} in:\n{text}"
            );
        }
    }
    let get_user: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("weft_filter_events_total{") && l.contains("operation=\"GetUser\""))
        .collect();
    assert_eq!(get_user.len(), 1, "one series whatever the label order:\n{text}");
    assert!(get_user[0].ends_with(" 2"), "{text}");

    // Prometheus' own Accept header: OpenMetrics, which the strict reference parser takes.
    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let om = weft.admin_request("GET", "/metrics", &[("accept", accept)]).await;
    assert!(
        om.header("content-type")
            .is_some_and(|t| t.starts_with("application/openmetrics-text; version=1.0.0")),
        "{:?}",
        om.headers
    );
    assert!(om.text().ends_with("# EOF\n"));
    python_parse(&om.text(), "prometheus_client.openmetrics.parser");
}

/// Parses an exposition with Python's `prometheus_client` parser `module`; panics if it refuses.
fn python_parse(text: &str, module: &str) {
    let script = format!(
        "import sys\nfrom {module} import text_string_to_metric_families\nn = sum(len(f.samples) for f in text_string_to_metric_families(sys.stdin.read()))\nassert n > 0\n"
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), text.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("parser");
    assert!(
        out.status.success(),
        "{module} refused the exposition:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_real_prometheus_scrapes_weft_and_answers_a_p99_query() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config(&up, "")).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: weft\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"{}\"]\n",
        weft.admin
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("write");
    let log_path = dir.path().join("prometheus.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("prometheus (scripts/setup installs Debian's prometheus)"),
    );
    // Bound on port 0: its own log says where (no port picked in advance).
    let deadline = Instant::now() + Duration::from_secs(30);
    let web = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(port) = announced_port(&text, "msg=\"Listening on\" address=127.0.0.1:") {
            break std::net::SocketAddr::from(([127, 0, 0, 1], port));
        }
        let exited = prometheus.0.try_wait().ok().flatten();
        assert!(
            exited.is_none() && Instant::now() < deadline,
            "prometheus did not listen:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let query = |q: String| {
        let url = format!("http://{web}/api/v1/query?query={}", encode(&q));
        async move {
            let client = http1_client();
            let req = http::Request::get(url)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .expect("request");
            match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
                Ok(Ok(resp)) => {
                    let body = http_body_util::BodyExt::collect(resp.into_body())
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)
                }
                _ => Value::Null,
            }
        }
    };
    let scalar = |v: &Value| -> Option<f64> { v["data"]["result"][0]["value"][1].as_str()?.parse().ok() };

    // Traffic for a few scrapes, then the p99 of the route over them.
    let p99 = r#"histogram_quantile(0.99, sum by (le) (rate(weft_request_duration_seconds_bucket{route="api"}[1m])))"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut sent = 0;
    let answer = loop {
        assert!(
            Instant::now() < deadline,
            "no p99 from Prometheus within 60s:\n{}",
            std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default()
        );
        sent += traffic(&weft, "/api/q", 20).await.len();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let v = query(p99.to_owned()).await;
        if let Some(x) = scalar(&v).filter(|x| x.is_finite()) {
            break x;
        }
    };
    assert!(answer > 0.0 && answer <= 30.0, "p99 {answer}s");

    // After the traffic stops, a scrape shows exactly what was sent.
    let total = r#"weft_responses_total{route="api",class="2xx"}"#.to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = query(total.clone()).await;
        if scalar(&v) == Some(sent as f64) {
            break;
        }
        assert!(Instant::now() < deadline, "Prometheus has {v} for {sent} requests");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Percent-encodes a PromQL query for a URL.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn secret_config(up: &Upstream) -> String {
    let kv = format!("[kv]\nbackend = \"redis\"\nurl = \"redis://weft:{REDIS_PASSWORD}@127.0.0.1:1\"");
    // A secret-named key in a filter's config: a header carrying an API key upstream.
    let keyed = Config::new().top(&kv).native_filter(
        "keyed",
        "headers",
        &format!("request_set = {{ x-api-key = \"{HMAC}\" }}"),
    );
    routes(up, &format!("token = \"{TOKEN}\"\naudit_log = \"audit.log\""), keyed)
}

#[tokio::test]
async fn every_admin_endpoint_answers_with_the_token_and_401_without() {
    let up = Upstream::echo("web").await;
    let text = secret_config(&up);
    let weft = Weft::start(&text).await;
    traffic(&weft, "/api/x", 2).await;
    let auth = format!("Bearer {TOKEN}");
    let endpoints = [
        ("GET", "/api/server"),
        ("GET", "/api/config"),
        ("GET", "/api/routes"),
        ("GET", "/api/clusters"),
        ("GET", "/api/plugins"),
        ("GET", "/api/reloads"),
        ("POST", "/api/drain"),
    ];
    for (method, path) in endpoints {
        let refused = weft.admin_request(method, path, &[("x-weft-admin", "1")]).await;
        assert_eq!(refused.status, 401, "{method} {path}: {}", refused.text());
        let wrong = weft
            .admin_request(method, path, &[("authorization", &format!("Bearer {TOKEN}x"))])
            .await;
        assert_eq!(wrong.status, 401, "{method} {path}: {}", wrong.text());
    }
    assert_eq!(
        weft.admin_request("GET", "/ready", &[("authorization", &auth)])
            .await
            .status,
        200
    );

    let api = |path: &'static str| {
        let auth = auth.clone();
        let weft = &weft;
        async move {
            let reply = weft.admin_request("GET", path, &[("authorization", &auth)]).await;
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
            assert_eq!(reply.header("content-type"), Some("application/json"));
            reply.json()
        }
    };
    let server = api("/api/server").await;
    assert_eq!(server["config_version"], 1);
    assert_eq!(server["wit"], WIT_VERSION);
    assert_eq!(server["draining"], false);
    assert!(server["uptime_seconds"].as_u64().is_some(), "{server}");

    let config = api("/api/config").await;
    let dump = config["text"].as_str().expect("text");
    for secret in [TOKEN, HMAC, REDIS_PASSWORD] {
        assert!(!dump.contains(secret), "the config dump holds a secret:\n{dump}");
    }
    assert!(dump.contains("x-api-key = \"*"), "{dump}");
    assert!(dump.contains("redis://*"), "{dump}");
    assert!(dump.contains("name = \"noop\""), "the rest is shown: {dump}");

    let routes = api("/api/routes").await;
    let names: Vec<&str> = routes["routes"]
        .as_array()
        .expect("routes")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["api", "dead", "bare"]);
    assert_eq!(routes["routes"][0]["cluster"], "web");
    assert_eq!(routes["routes"][0]["filters"], serde_json::json!(["noop"]));
    assert_eq!(routes["routes"][0]["match"]["path_prefix"], "/api");

    let clusters = api("/api/clusters").await;
    assert_eq!(clusters["clusters"][0]["name"], "web");
    assert_eq!(clusters["clusters"][0]["endpoints"][0]["address"], up.addr.to_string());

    let plugins = api("/api/plugins").await;
    let loaded: Vec<&str> = plugins["plugins"]
        .as_array()
        .expect("plugins")
        .iter()
        .filter_map(|p| p["filter"].as_str())
        .collect();
    assert_eq!(loaded, ["noop"], "native filters are no plugins");
    for p in plugins["plugins"].as_array().expect("plugins") {
        assert_eq!(p["sha256"].as_str().map(str::len), Some(64), "{p}");
        assert_eq!(p["wit"], WIT_VERSION, "the plugins are built with this tree's SDK");
        assert!(p["loaded_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{p}");
    }

    let reloads = api("/api/reloads").await;
    assert_eq!(reloads["reloads"][0]["event"], "start");

    // The status page is static and needs no token; its data does.
    let page = weft.admin_request("GET", "/status", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<title>Weft status</title>"));
    assert!(
        !page.text().contains("https://"),
        "the page loads nothing from elsewhere"
    );

    // Drain: /ready turns 503 so a load balancer moves away; traffic is still served.
    let drained = weft
        .admin_request("POST", "/api/drain", &[("authorization", &auth)])
        .await;
    assert_eq!(drained.status, 200, "{}", drained.text());
    let ready = weft.admin_request("GET", "/ready", &[("authorization", &auth)]).await;
    assert_eq!((ready.status, ready.text().as_str()), (503, "draining\n"));
    assert_eq!(traffic(&weft, "/api/x", 1).await, vec![200]);
    assert_eq!(api("/api/server").await["draining"], true);
}

#[tokio::test]
async fn without_a_token_a_post_needs_the_proof_header() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config(&up, "")).await;
    let form = weft.admin_request("POST", "/api/drain", &[]).await;
    assert_eq!(form.status, 403, "{}", form.text());
    assert_eq!(
        weft.admin("GET", "/ready").await.0,
        200,
        "the refused drain did nothing"
    );
    assert_eq!(weft.admin("POST", "/api/drain").await.0, 200);
    assert_eq!(weft.admin("GET", "/ready").await.0, 503);
}

fn audit(weft: &Weft) -> Vec<Value> {
    std::fs::read_to_string(weft.dir.path().join("audit.log"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line is not JSON ({e}): {l}")))
        .collect()
}

#[tokio::test]
async fn the_audit_log_records_accepted_and_rejected_reloads_and_admin_calls() {
    let up = Upstream::echo("web").await;
    let good = secret_config(&up);
    let weft = Weft::start(&good).await;
    let auth = format!("Bearer {TOKEN}");
    let start = audit(&weft);
    assert_eq!(start.len(), 1, "{start:?}");
    assert_eq!(start[0]["event"], "start");
    assert_eq!(start[0]["new_version"], 1);
    assert_eq!(start[0]["plugins"][0]["filter"], "noop");

    // Accepted, through the admin API, with the no-op plugin swapped for another file.
    let swapped = good.replace(plugins::NOOP, plugins::HELLO_FILTER);
    weft.write_config(&swapped);
    let reply = weft.admin_request("POST", "/reload", &[("authorization", &auth)]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Rejected, through SIGHUP: a route names an unknown cluster.
    weft.write_config(&swapped.replace("cluster = \"down\"", "cluster = \"nowhere\""));
    let hup = Command::new("kill")
        .args(["-HUP", &weft.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while audit(&weft).len() < 4 {
        assert!(Instant::now() < deadline, "{:?}", audit(&weft));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A refused admin call is recorded; a scrape is not.
    assert_eq!(weft.admin_request("POST", "/reload", &[]).await.status, 401);
    assert_eq!(
        weft.admin_request("GET", "/metrics", &[("authorization", &auth)])
            .await
            .status,
        200
    );

    let records = audit(&weft);
    let text = format!("{records:#?}");
    for secret in [TOKEN, HMAC, REDIS_PASSWORD] {
        assert!(!text.contains(secret), "the audit log holds a secret:\n{text}");
    }
    assert_eq!(records.len(), 5, "{text}");
    let accepted = &records[1];
    assert_eq!(accepted["event"], "reload", "{text}");
    assert_eq!(accepted["trigger"], "admin");
    assert_eq!(accepted["outcome"], "ok");
    assert_eq!(
        (accepted["old_version"].as_u64(), accepted["new_version"].as_u64()),
        (Some(1), Some(2))
    );
    let swapped_plugin = &accepted["plugins"][0];
    assert_eq!(swapped_plugin["filter"], "noop");
    assert_eq!(swapped_plugin["changed"], true);
    assert_ne!(swapped_plugin["sha256"], swapped_plugin["previous_sha256"]);
    assert_eq!(swapped_plugin["previous_sha256"], start[0]["plugins"][0]["sha256"]);

    let call = &records[2];
    assert_eq!(
        (
            call["event"].as_str(),
            call["method"].as_str(),
            call["path"].as_str(),
            call["status"].as_u64()
        ),
        (Some("admin"), Some("POST"), Some("/reload"), Some(200)),
        "{text}"
    );
    assert!(call["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")));

    let rejected = &records[3];
    assert_eq!(rejected["trigger"], "signal", "{text}");
    assert_eq!(rejected["outcome"], "rejected");
    assert_eq!(rejected["old_version"], 2);
    assert!(rejected["new_version"].is_null());
    assert!(
        rejected["reason"]
            .as_str()
            .is_some_and(|r| r.contains("unknown cluster \"nowhere\"")),
        "{text}"
    );
    assert_eq!(records[4]["status"], 401);
    for r in &records {
        assert!(r["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
    }

    // The old config kept serving, and the admin API shows both reloads.
    assert_eq!(
        weft.admin_request("GET", "/version", &[("authorization", &auth)])
            .await
            .text(),
        "2\n"
    );
    let recent = weft
        .admin_request("GET", "/api/reloads", &[("authorization", &auth)])
        .await
        .json();
    let outcomes: Vec<&str> = recent["reloads"]
        .as_array()
        .expect("reloads")
        .iter()
        .filter_map(|r| r["outcome"].as_str())
        .collect();
    assert_eq!(outcomes, ["ok", "ok", "rejected"]);
}

/// A WebDriver session on headless Chromium through `chromedriver`, spoken over plain
/// HTTP (the W3C WebDriver protocol is JSON over HTTP).
struct Browser {
    driver: std::net::SocketAddr,
    session: String,
    _chromedriver: Killed,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let mut chromedriver = Killed(
            Command::new("chromedriver")
                .arg("--port=0")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver (scripts/setup installs Debian's chromium-driver)"),
        );
        // Bound on port 0; it prints the port once it listens. Its output is read to the
        // end, so a later line never meets a closed pipe.
        let stdout = chromedriver.0.stdout.take().expect("stdout");
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = announced_port(&line, "started successfully on port ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = tokio::time::timeout(Duration::from_secs(20), rx)
            .await
            .expect("chromedriver did not say it listens within 20 s")
            .expect("chromedriver exited without listening");
        let driver = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let profile = tempfile::tempdir().expect("profile");
        // The flags the brief asks for: no network beyond loopback, no first-run work.
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--no-first-run".to_owned(),
            "--window-size=900,1300".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
        }}});
        let created = webdriver(driver, "POST", "/session", Some(caps)).await;
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_owned();
        Browser {
            driver,
            session,
            _chromedriver: chromedriver,
            _profile: profile,
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let reply = webdriver(self.driver, method, &format!("/session/{}{path}", self.session), body).await;
        reply["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call("POST", "/url", Some(serde_json::json!({ "url": url }))).await;
    }

    /// Runs `script` in the page and returns what it returns.
    async fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({ "script": script, "args": [] })),
        )
        .await
    }
}

async fn webdriver(driver: std::net::SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let req = http::Request::builder()
        .method(method)
        .uri(format!("http://{driver}{path}"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .expect("request");
    let reply = tokio::time::timeout(Duration::from_secs(60), send(&http1_client(), req))
        .await
        .expect("WebDriver answered within 60s");
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("WebDriver said ({e}): {}", reply.text()))
}

/// The route `api` row's cells, as the page shows them now.
/// A route name that is markup (and a label value that needs escaping).
const XSS: &str = r#"<img src=x onerror="document.title='pwned'">"#;

const API_ROW: &str = r#"const row = document.querySelector('#routes tr[data-route="api"]');
if (!row) return null;
const text = (c) => row.querySelector('.' + c).textContent;
return { total: Number(text('total')), rate: text('rate'), success: text('success'), p50: text('p50'), p99: text('p99') };"#;

#[tokio::test]
async fn the_status_page_shows_live_numbers_in_headless_chromium() {
    let up = Upstream::echo("web").await;
    // A filter that traps on /trap and fails open, and one that records metrics of its own.
    // The CPU budget is generous: the budget is wall time less yields, and a loaded test
    // machine must not turn a first call into a limit hit the page would then show.
    let filters = Config::new()
        .wasm_filter(
            "trap",
            plugins::TRAP,
            "",
            "on_error = \"open\"\nlimits = { cpu = \"10s\" }",
        )
        .wasm_filter("cap", plugins::CAPABILITIES, "", "limits = { cpu = \"10s\" }")
        .route("skip", "path_exact = \"/trap\"", "web", &["trap"], "")
        .route("cap", "path_prefix = \"/cap\"", "web", &["cap"], "");
    // A route name written to run script in the page: it must show as text.
    let hostile = format!(
        "{}\n[[routes]]\nname = '''{XSS}'''\nmatch = {{ path_exact = \"/never\" }}\ncluster = \"web\"\n",
        routes(&up, "", filters)
    );
    let weft = Weft::start(&hostile).await;
    assert_eq!(
        traffic(&weft, "/trap", 1).await,
        [200],
        "the trap is skipped (fail-open)"
    );
    let client = http1_client();
    for header in ["x-cap-metric", "x-cap-metric-labelled"] {
        let value = match header {
            "x-cap-metric" => "hits".to_owned(),
            _ => format!("tagged;who={XSS}"),
        };
        let req = http::Request::get(weft.url("/cap/x"))
            .header(header, value)
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        assert_eq!(send(&client, req).await.status, 200);
    }
    // Traffic before the page opens: its first poll has something to show a rate of.
    assert!(traffic(&weft, "/api/early", 20).await.iter().all(|s| *s == 200));

    // Traffic flows the whole time the page is open.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = weft.url("/api/live");
    let flowing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = http1_client();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let req = http::Request::get(&url)
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .expect("request");
                assert_eq!(send(&client, req).await.status, 200);
                n += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            n
        })
    };

    let browser = Browser::start().await;
    browser.open(&format!("http://{}/status", weft.admin)).await;
    // The page polls every second: wait for its first numbers, then for them to move.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let row = browser.eval(API_ROW).await;
        if row["total"].as_u64().is_some_and(|t| t > 0) {
            break row;
        }
        assert!(Instant::now() < deadline, "the page shows no traffic: {row}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The first poll has no previous sample: the page shows the average since start
    // rather than a blank (a screenshot taken right after load shows numbers).
    let rates = browser
        .eval("return [...document.querySelectorAll('#routes td.rate, #clusters td.rate, #filters td.rate')].map(td => td.textContent)")
        .await;
    let rates = rates.as_array().expect("rates");
    assert!(
        !rates.is_empty()
            && rates
                .iter()
                .all(|r| r.as_str().is_some_and(|r| r.parse::<f64>().is_ok())),
        "a rate is missing on the first poll: {rates:?}"
    );
    assert!(
        first["rate"]
            .as_str()
            .and_then(|r| r.parse::<f64>().ok())
            .is_some_and(|r| r > 0.0),
        "{first}"
    );
    let live = loop {
        let row = browser.eval(API_ROW).await;
        let moved = row["total"].as_u64() > first["total"].as_u64();
        let rated = row["rate"]
            .as_str()
            .and_then(|r| r.parse::<f64>().ok())
            .is_some_and(|r| r > 0.0);
        if moved && rated && row["p99"].as_str().is_some_and(|p| p.ends_with('s')) {
            break row;
        }
        assert!(
            Instant::now() < deadline,
            "the numbers did not move: {first} then {row}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(live["success"], "100.0%", "{live}");

    // Sparklines of req/s, success and p99, drawn inline from the polls (two by now).
    let sparks = browser
        .eval(r#"const row = document.querySelector('#routes tr[data-route="api"]');
return [...row.querySelectorAll('td.trend svg.spark')].map(svg => [svg.getAttribute('class'), svg.querySelector('path').getAttribute('d'), svg.querySelector('title').textContent]);"#)
        .await;
    let sparks = sparks.as_array().expect("sparklines");
    assert_eq!(sparks.len(), 3, "{sparks:?}");
    for (spark, what) in sparks.iter().zip(["rate", "success", "p99"]) {
        assert_eq!(spark[0], format!("spark spark-{what}"));
        let d = spark[1].as_str().unwrap_or("");
        assert!(
            d.starts_with('M') && d.contains('L'),
            "a line of at least two points: {spark}"
        );
    }
    let clusters = browser
        .eval(r#"return document.querySelectorAll('#clusters tr[data-cluster="web"] svg.spark').length"#)
        .await;
    assert_eq!(clusters, 3);

    // The filters at work: calls per phase, latency, errors by kind, instances, skips.
    const FILTER_ROW: &str = r#"const out = {};
for (const row of document.querySelectorAll('#filters tbody tr')) {
  const text = (c) => row.querySelector('.' + c).textContent;
  out[row.dataset.filter] = Object.fromEntries(['request-calls', 'response-calls', 'rate', 'p50', 'p99', 'errors', 'traps', 'cpu', 'memory', 'instances', 'skipped'].map(c => [c, text(c)]));
}
const metrics = [...document.querySelectorAll('#filter-metrics tbody tr')].map(r => [...r.cells].map(c => c.textContent));
return { filters: out, metrics };"#;
    let filters = loop {
        let seen = browser.eval(FILTER_ROW).await;
        let noop = &seen["filters"]["noop"];
        if noop["request-calls"]
            .as_str()
            .and_then(|c| c.parse::<u64>().ok())
            .is_some_and(|c| c > 0)
            && seen["filters"]["trap"]["skipped"] == "1"
        {
            break seen;
        }
        assert!(Instant::now() < deadline, "no filter numbers: {seen}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let noop = &filters["filters"]["noop"];
    for quantile in ["p50", "p99"] {
        let text = noop[quantile].as_str().unwrap_or("");
        assert!(text.ends_with(" µs") || text.ends_with(" ms"), "{quantile} {filters}");
    }
    assert!(
        noop["response-calls"]
            .as_str()
            .and_then(|c| c.parse::<u64>().ok())
            .is_some_and(|c| c > 0)
    );
    assert!(
        noop["instances"].as_str().is_some_and(|i| i.contains(" / ")),
        "{filters}"
    );
    assert_eq!(noop["errors"], "0");
    let trap = &filters["filters"]["trap"];
    assert_eq!(
        (
            &trap["errors"],
            &trap["traps"],
            &trap["cpu"],
            &trap["memory"],
            &trap["skipped"]
        ),
        (
            &Value::from("1"),
            &Value::from("1"),
            &Value::from("0"),
            &Value::from("0"),
            &Value::from("1")
        ),
        "{filters}"
    );
    let metrics = filters["metrics"].as_array().expect("metric rows");
    let has = |row: &[&str]| {
        metrics
            .iter()
            .any(|m| m.as_array().is_some_and(|m| m.iter().zip(row).all(|(a, b)| a == b)))
    };
    assert!(has(&["cap", "hits", "", "counter", "1"]), "{metrics:?}");
    assert!(has(&["cap", "hits", "", "gauge", "7"]), "{metrics:?}");
    assert!(
        has(&["cap", "hits", "", "histogram", "1 observed, sum 0.5"]),
        "{metrics:?}"
    );
    assert!(
        has(&["cap", "tagged", &format!("who={XSS}"), "counter", "1"]),
        "a guest's label value is shown as text: {metrics:?}"
    );
    for quantile in ["p50", "p99"] {
        let text = live[quantile].as_str().unwrap_or("");
        assert!(text.ends_with(" µs") || text.ends_with(" ms"), "{quantile} {text:?}");
    }

    let names = browser
        .eval("return [document.title, [...document.querySelectorAll('#routes tbody tr td:first-child')].map(td => td.textContent), document.querySelectorAll('img').length]")
        .await;
    assert_eq!(names[0], "Weft status", "script from a route name ran: {names}");
    assert!(
        names[1].as_array().is_some_and(|n| n.iter().any(|n| n == XSS)),
        "the route name is shown as text: {names}"
    );
    assert_eq!(names[2], 0, "markup from a route name was rendered: {names}");
    let source = browser.call("GET", "/source", None).await;
    let source = source.as_str().expect("page source");
    assert!(source.contains(r#"<tr data-cluster="web"><td>web</td>"#), "{source}");
    assert!(
        source.contains(&format!("<td>{}</td>", up.addr)),
        "the endpoint is listed:\n{source}"
    );
    assert!(
        source.contains(r#"<tr data-filter="noop">"#),
        "the plugin is listed:\n{source}"
    );
    assert!(
        source.contains(r#"<tr data-outcome="ok">"#),
        "the start is listed:\n{source}"
    );
    assert!(
        source.contains(r#"<span id="state" class="ok">live</span>"#),
        "{source}"
    );

    // A screenshot for the README, while the traffic still flows.
    use base64::Engine;
    let png = browser.call("GET", "/screenshot", None).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().expect("base64 PNG"))
        .expect("PNG");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/status-page.png");
    std::fs::write(&shot, png).expect("write screenshot");
    browser.call("DELETE", "", None).await;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(flowing.await.expect("traffic") > 0);
}

/// The series in an exposition: every sample line, without its value.
fn series(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' ').map(|(s, _)| s.to_owned()))
        .collect()
}

#[tokio::test]
async fn what_clients_send_never_becomes_a_label() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config(&up, "")).await;
    let hostile = [
        "%22%7D%201%0Aweft_fake%202",
        "%3Cscript%3E",
        "..%2f..%2fetc",
        "%E2%80%AE",
    ];
    // Every series a fixed label set allows (a refusal's reason included) exists first.
    traffic(&weft, "/dead", 1).await;
    for path in hostile {
        traffic(&weft, &format!("/api/warm/{path}"), 1).await;
    }
    let warm = weft.metric(r#"weft_responses_total{route="api",class="2xx"}"#).await;
    let before = series(&weft.admin("GET", "/metrics").await.1);

    // Hundreds of distinct paths, hosts, methods, queries, forwarded addresses and
    // hostile bytes: none may add a series (a scraper's memory is the target).
    let client = http1_client();
    let mut answered = 0;
    for i in 0..300 {
        let path = format!("/api/{i}/{}?q={i}&route=evil{i}", hostile[i % hostile.len()]);
        let method = ["GET", "POST", "PUT", "DELETE", "PATCH", "X-CUSTOM"][i % 6];
        let req = http::Request::builder()
            .method(method)
            .uri(weft.url(&path))
            .header("host", format!("tenant-{i}.example"))
            .header("x-forwarded-for", format!("10.0.{}.{}", i / 256, i % 256))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        // The front door refuses what it must (an encoded newline): 400, no route.
        match send(&client, req).await.status {
            200 => answered += 1,
            400 => {}
            other => panic!("{method} {path}: {other}"),
        }
    }
    assert!(answered >= 100, "{answered}");
    let text = weft.admin("GET", "/metrics").await.1;
    let after = series(&text);
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(added.is_empty(), "client input added series: {added:#?}");
    assert_eq!(
        weft.metric(r#"weft_responses_total{route="api",class="2xx"}"#).await,
        warm + answered as f64
    );
    assert!(!text.contains("weft_fake") && !text.contains("tenant-") && !text.contains("10.0."));
}

#[tokio::test]
async fn a_file_change_is_audited_as_a_watch_reload() {
    let up = Upstream::echo("web").await;
    let text = config(&up, "audit_log = \"audit.log\"").replace("watch = false", "watch = true");
    let weft = Weft::start(&text).await;
    // The watcher starts after the listeners: give it a moment, as hot_reload does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    weft.write_config(&text.replace("path_prefix = \"/dead\"", "path_prefix = \"/gone\""));
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        if let Some(r) = audit(&weft).into_iter().find(|r| r["event"] == "reload") {
            break r;
        }
        assert!(Instant::now() < deadline, "no reload audited:\n{}", weft.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(record["trigger"], "watch", "{record}");
    assert_eq!(record["outcome"], "ok", "{record}");
    assert_eq!(record["new_version"], 2, "{record}");
    assert_eq!(
        record["plugins"][0]["changed"], false,
        "the plugin file did not change: {record}"
    );
    assert_eq!(
        weft.metric(r#"weft_reloads_total{what="watch",outcome="ok"}"#).await,
        1.0
    );
    assert_eq!(weft.metric("weft_config_version").await, 2.0);
}

#[tokio::test]
async fn tls_handshakes_are_counted_by_outcome() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use weft::tls::devcert::{Authority, Usage};

    let up = Upstream::echo("web").await;
    let pki = tempfile::tempdir().expect("tempdir");
    let ca = Authority::new("observability test CA").expect("ca");
    let issued = ca
        .issue("localhost", &["localhost"], &[], Usage::Server)
        .expect("issue");
    let (ca_path, cert, key) = (
        pki.path().join("ca.pem"),
        pki.path().join("cert.pem"),
        pki.path().join("key.pem"),
    );
    std::fs::write(&ca_path, &ca.cert_pem).expect("write");
    std::fs::write(&cert, &issued.cert_pem).expect("write");
    std::fs::write(&key, &issued.key_pem).expect("write");
    let text = Config::new()
        .top("[runtime]\nwatch = false")
        .listener(&format!(
            "[listeners.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]",
            cert.display(),
            key.display()
        ))
        .cluster("web", &[up.addr])
        .route("all", "path_prefix = \"/\"", "web", &[], "")
        .to_string();
    let weft = Weft::start(&text).await;

    // Two clean handshakes with curl, trusting the test CA (run without blocking the
    // runtime the upstream serves on).
    for _ in 0..2 {
        let out = tokio::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca_path)
            .arg("--resolve")
            .arg(format!("localhost:{}:127.0.0.1", weft.addr.port()))
            .arg(format!("https://localhost:{}/x", weft.addr.port()))
            .output()
            .await
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    // The harness's readiness probe (connect, then close) already failed one.
    let series = |outcome: &str| format!(r#"weft_tls_handshakes_total{{listener="main",outcome="{outcome}"}}"#);
    let failed = weft.metric(&series("failed")).await;
    assert!(failed <= 1.0, "{failed}");
    // One client speaking cleartext HTTP to the TLS port: the handshake fails.
    let mut plain = tokio::net::TcpStream::connect(weft.addr).await.expect("connect");
    plain
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .expect("write");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut rest)).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    while weft.metric(&series("failed")).await < failed + 1.0 {
        assert!(Instant::now() < deadline, "{}", weft.admin("GET", "/metrics").await.1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(weft.metric(&series("ok")).await, 2.0);
    assert_eq!(weft.metric(&series("failed")).await, failed + 1.0);
    assert_eq!(weft.metric(&series("timeout")).await, 0.0);
}

#[tokio::test]
async fn a_flood_of_bad_tokens_cannot_fill_the_audit_log() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&secret_config(&up)).await;
    let wrong = format!("Bearer {TOKEN}-guess");
    const FLOOD: u64 = 400;
    for _ in 0..FLOOD {
        let reply = weft
            .admin_request("GET", "/api/config", &[("authorization", &wrong)])
            .await;
        assert_eq!(reply.status, 401);
    }
    // A token's worth of time, then one more: its record counts the ones left out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        weft.admin_request("POST", "/reload", &[("authorization", &wrong)])
            .await
            .status,
        401
    );
    let refused: Vec<Value> = audit(&weft).into_iter().filter(|r| r["status"] == 401).collect();
    let last = refused.last().expect("refusals recorded");
    assert_eq!(last["path"], "/reload");
    // Where the gaps fall depends on how fast the flood came (a loaded machine sends it
    // slower than the bucket refills at times); that they are all counted does not.
    assert!(
        refused.iter().any(|r| r["suppressed_before"].as_u64().is_some()),
        "the gaps are counted: {last}"
    );
    // Every refusal is a record or counted in the next record's gap.
    let suppressed: u64 = refused.iter().filter_map(|r| r["suppressed_before"].as_u64()).sum();
    assert_eq!(refused.len() as u64 + suppressed, FLOOD + 1);
    assert!(refused.len() < 200, "{} refusals written", refused.len());
}

#[tokio::test]
async fn with_a_token_the_status_page_asks_for_it_and_then_shows_the_data() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&secret_config(&up)).await;
    assert_eq!(traffic(&weft, "/api/x", 3).await, vec![200; 3]);
    let browser = Browser::start().await;
    browser.open(&format!("http://{}/status", weft.admin)).await;
    let state = r#"return { auth: getComputedStyle(document.getElementById('auth')).display,
        error: document.getElementById('error').textContent,
        rows: document.querySelectorAll('#routes tbody tr').length }"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = browser.eval(state).await;
        if now["auth"] == "block" {
            assert_eq!(now["rows"], 0, "data shown without the token: {now}");
            assert!(now["error"].as_str().is_some_and(|e| e.contains("token")), "{now}");
            break;
        }
        assert!(Instant::now() < deadline, "the page did not ask for the token: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let submit = format!(
        "document.getElementById('token').value = '{TOKEN}'; document.getElementById('auth-form').requestSubmit(); return true"
    );
    browser.eval(&submit).await;
    loop {
        let row = browser.eval(API_ROW).await;
        if row["total"].as_u64() == Some(3) {
            break;
        }
        assert!(Instant::now() < deadline, "no data with the token: {row}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = browser.eval(state).await;
    assert_eq!(now["auth"], "none", "{now}");
    browser.call("DELETE", "", None).await;
}
