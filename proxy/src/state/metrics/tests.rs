//! The exposition of every family, byte for byte: moving a family to the stage that owns
//! it must not change a name, a help text, a label, or the order scrapers see.

use std::time::Duration;

use super::*;
use crate::filter::metrics::{FilterOnlyLabels, GuestLabels, RejectLabels};
use crate::metrics::*;
use crate::route::metrics::RouteCounters;
use crate::upstream::metrics::{ClusterCounters, UpstreamFailure};

/// Registers every family and touches one series of each with fixed labels and values.
fn every_family() -> Arc<Metrics> {
    let (m, stages) = StageMetrics::register();
    let ok = http::StatusCode::OK;
    let ms = Duration::from_millis(3);

    RouteCounters::new(&stages.route, "r").record(ok, ms);
    stages.filter.filter_error("f", "trap");
    stages.reloads.reload("config", "ok");
    let guest = GuestLabels {
        filter: "f".into(),
        name: "n".into(),
        labels: Box::new([("k".into(), "v".into())]),
    };
    stages.filter.guest_counters.get_or_create(&guest).inc_by(2);
    stages.filter.guest_gauges.get_or_create(&guest).set(-4);
    stages.filter.guest_histograms.get_or_create(&guest).observe(0.5);
    stages
        .kv
        .errors
        .get_or_create(&crate::kv::metrics::KvLabels { backend: "redis" })
        .inc();
    m.connections_open("l").set(5);
    m.connection_rejected("l", "max_connections");
    m.connection_closed("l", "idle");
    m.downstream_refused("l", "header_too_large");
    stages
        .filter
        .filter_metric_rejected
        .get_or_create(&RejectLabels {
            filter: "f".into(),
            reason: "invalid",
        })
        .inc();
    stages
        .filter
        .filter_log_dropped
        .get_or_create(&FilterOnlyLabels { filter: "f".into() })
        .inc();
    stages.filter.kv_evictions("f").inc();
    stages.filter.filter_rejected("f", "queue_full").inc();
    stages.filter.filter_skipped("f");
    let cluster = ClusterCounters::new(&stages.upstream, "c");
    cluster.answered(http::StatusCode::BAD_GATEWAY, ms);
    cluster.failed(UpstreamFailure::Timeout);
    let listener = m.listener("l");
    listener.in_flight.set(1);
    listener.received.inc_by(100);
    listener.sent.inc_by(200);
    m.tls_handshake("l", "ok");
    let stats = stages.filter.filter_stats("f");
    stats.request.observe(ms);
    stats.response.observe(ms);
    stats.live.set(2);
    stats.idle.set(1);
    stats.queue_wait.observe(ms);
    stages.reloads.serving(7, &[("f", "abc", "0.2.0")]);
    let endpoint = stages.upstream.endpoint("c", "127.0.0.1:80".parse().expect("address"));
    endpoint.requests.inc();
    endpoint.failures.inc();
    endpoint.ejections.inc();
    stages.upstream.retry("c", "status").inc();
    stages.upstream.retry_skipped("c", "budget").inc();
    stages.upstream.overloaded("c", "max_requests").inc();
    stages.route.shifted("r", "c").inc();
    stages.route.fault("r", "abort").inc();
    stages.route.mirrored("r", "c", "sent").inc();
    stages.observe.access_log_dropped.inc();
    stages.observe.trace_spans_dropped.inc();
    stages.reloads.xds_update("rds", "rejected", ms);
    stages.reloads.xds_reconnect();
    let at = crate::metrics::Interception {
        listener: "l",
        direction: "outbound",
        destination: crate::metrics::Destination::Port(3306),
    };
    m.connection_intercepted(at, "opaque");
    m.intercepted_responses(crate::metrics::Interception {
        destination: crate::metrics::Destination::Other,
        ..at
    })[1]
        .inc();
    m.passthrough_bytes(at).0.inc_by(10);
    m
}

/// The exposition with the series of each family in sorted order: prometheus-client keeps
/// a family's series in a hash map, so their order changes from run to run. Families,
/// metadata and every sample line are compared as they are.
fn canonical(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut samples: Vec<&str> = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            samples.sort_unstable();
            for sample in samples.drain(..) {
                out.push_str(sample);
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
        } else {
            samples.push(line);
        }
    }
    samples.sort_unstable();
    for sample in samples {
        out.push_str(sample);
        out.push('\n');
    }
    out
}

#[test]
fn the_exposition_of_every_family_is_unchanged() {
    let text = canonical(&every_family().encode());
    let golden = include_str!("golden.txt");
    if text != golden && std::env::var_os("WEFT_BLESS").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/state/metrics/golden.txt");
        std::fs::write(path, &text).expect("write the golden exposition");
        return;
    }
    assert_eq!(text, golden, "the exposition changed; WEFT_BLESS=1 rewrites golden.txt");
}

#[test]
fn the_prometheus_text_of_every_family_is_unchanged() {
    let text = canonical(&to_prometheus_text(&every_family().encode()));
    assert_eq!(text, canonical(&to_prometheus_text(include_str!("golden.txt"))));
}
