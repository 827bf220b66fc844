//! The route stage's families: responses and latency per route, and what routes decided
//! (`route/shift.rs`, `route/fault.rs`, `route/mirror.rs`). Resolved per route when the
//! config is built, so the request path only increments.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::{Families, LabelText, LatencyHistogram, Registrar, class_index};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: LabelText,
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnlyLabels {
    pub route: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteClusterLabels {
    pub route: LabelText,
    pub cluster: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteKindLabels {
    pub route: LabelText,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteClusterKindLabels {
    pub route: LabelText,
    pub cluster: LabelText,
    pub kind: &'static str,
}

/// The families of the route stage, one per process.
pub struct RouteMetrics {
    /// Downstream responses by route and status class.
    responses: Family<RouteLabels, Counter>,
    /// Time from a request's head to its response's head, by route.
    duration: Family<RouteOnlyLabels, LatencyHistogram>,
    /// Requests a route's split or pin sent to each cluster.
    shifted: Family<RouteClusterLabels, Counter>,
    /// Faults injected by a route, by kind (`delay`, `abort`).
    faults: Family<RouteKindLabels, Counter>,
    /// Shadow copies of a route's requests, by mirror cluster and outcome (`sent`:
    /// answered; `failed`; `dropped`: not sent, the body too large or too many in flight).
    mirrored: Family<RouteClusterKindLabels, Counter>,
}

impl Families for RouteMetrics {
    fn register(r: &mut Registrar) -> Self {
        RouteMetrics {
            responses: r.family("responses", "Responses sent downstream"),
            duration: r.family(
                "request_duration_seconds",
                "Time from a request's head to its response's head, by route",
            ),
            shifted: r.family("route_shifted", "Requests a route's split or pin sent to each cluster"),
            faults: r.family("route_faults", "Faults injected by a route, by kind"),
            mirrored: r.family(
                "route_mirrored",
                "Shadow copies of a route's requests, by mirror cluster and outcome",
            ),
        }
    }
}

impl RouteMetrics {
    pub fn shifted(&self, route: &str, cluster: &str) -> Counter {
        self.shifted
            .get_or_create(&RouteClusterLabels {
                route: route.into(),
                cluster: cluster.into(),
            })
            .clone()
    }

    pub fn mirrored(&self, route: &str, cluster: &str, outcome: &'static str) -> Counter {
        self.mirrored
            .get_or_create(&RouteClusterKindLabels {
                route: route.into(),
                cluster: cluster.into(),
                kind: outcome,
            })
            .clone()
    }

    pub fn fault(&self, route: &str, kind: &'static str) -> Counter {
        self.faults
            .get_or_create(&RouteKindLabels {
                route: route.into(),
                kind,
            })
            .clone()
    }
}

/// Per-route response counters and latency, resolved once when the route is built.
#[derive(Clone)]
pub struct RouteCounters {
    by_class: [Counter; 5],
    duration: LatencyHistogram,
}

impl RouteCounters {
    pub fn new(metrics: &RouteMetrics, route: &str) -> Self {
        let make = |class| {
            metrics
                .responses
                .get_or_create(&RouteLabels {
                    route: route.into(),
                    class,
                })
                .clone()
        };
        RouteCounters {
            by_class: [make("1xx"), make("2xx"), make("3xx"), make("4xx"), make("5xx")],
            duration: metrics
                .duration
                .get_or_create(&RouteOnlyLabels { route: route.into() })
                .clone(),
        }
    }

    pub fn record(&self, status: http::StatusCode, elapsed: Duration) {
        self.by_class[class_index(status)].inc();
        self.duration.observe(elapsed);
    }
}
