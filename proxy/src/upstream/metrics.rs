//! The upstream side's families: clusters and their endpoints. Counters are resolved when
//! a cluster or an endpoint is built; the request path only adds to them.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::{Families, LabelText, LatencyHistogram, Registrar, class_index};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterClassLabels {
    pub cluster: LabelText,
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterErrorLabels {
    pub cluster: LabelText,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub cluster: LabelText,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterReasonLabels {
    pub cluster: LabelText,
    pub reason: &'static str,
}

/// The families of the upstream side, one per process.
pub struct UpstreamMetrics {
    /// Responses received from a cluster by status class, and exchanges that got none.
    responses: Family<ClusterClassLabels, Counter>,
    errors: Family<ClusterErrorLabels, Counter>,
    /// Time from sending a request upstream to its response head, by cluster.
    duration: Family<ClusterLabels, LatencyHistogram>,
    requests: Family<EndpointLabels, Counter>,
    failures: Family<EndpointLabels, Counter>,
    ejections: Family<EndpointLabels, Counter>,
    healthy: Family<EndpointLabels, Gauge>,
    retries: Family<ClusterReasonLabels, Counter>,
    retries_skipped: Family<ClusterReasonLabels, Counter>,
    overloaded: Family<ClusterReasonLabels, Counter>,
}

impl Families for UpstreamMetrics {
    fn register(r: &mut Registrar) -> Self {
        UpstreamMetrics {
            responses: r.family(
                "upstream_responses",
                "Responses received from a cluster, by status class",
            ),
            errors: r.family(
                "upstream_errors",
                "Upstream exchanges that got no response (connect, timeout, exchange), by cluster",
            ),
            duration: r.family(
                "upstream_duration_seconds",
                "Time from sending a request upstream to its response head, by cluster",
            ),
            requests: r.family("upstream_requests", "Tries sent to an endpoint (a retry is another)"),
            failures: r.family(
                "upstream_failures",
                "Tries that failed at an endpoint (connect, reset, timeout, or a 5xx answer)",
            ),
            ejections: r.family("upstream_ejections", "Times outlier detection ejected an endpoint"),
            healthy: r.family(
                "upstream_endpoint_healthy",
                "1 while an endpoint takes traffic, 0 while ejected or failing its health check",
            ),
            retries: r.family("upstream_retries", "Retries sent, by what caused them"),
            retries_skipped: r.family(
                "upstream_retries_skipped",
                "Retries not sent (budget, max_retries, method, body_not_replayable, deadline)",
            ),
            overloaded: r.family(
                "upstream_overloaded",
                "Requests answered 503 at once by a cluster's circuit breaker, by limit",
            ),
        }
    }
}

impl UpstreamMetrics {
    /// An endpoint's series, resolved once when the endpoint is built.
    pub fn endpoint(&self, cluster: &str, endpoint: std::net::SocketAddr) -> EndpointCounters {
        self.endpoint_labelled(cluster, endpoint.to_string())
    }

    /// The series of endpoints counted together under one label (an original-destination
    /// cluster's: its destinations are client-chosen, so never a label each).
    pub fn endpoint_labelled(&self, cluster: &str, endpoint: String) -> EndpointCounters {
        let labels = EndpointLabels {
            cluster: cluster.into(),
            endpoint,
        };
        let healthy = self.healthy.get_or_create(&labels).clone();
        healthy.set(1);
        EndpointCounters {
            requests: self.requests.get_or_create(&labels).clone(),
            failures: self.failures.get_or_create(&labels).clone(),
            ejections: self.ejections.get_or_create(&labels).clone(),
            healthy,
        }
    }

    /// A cluster's counter for one reason of one family.
    fn by_reason(family: &Family<ClusterReasonLabels, Counter>, cluster: &str, reason: &'static str) -> Counter {
        family
            .get_or_create(&ClusterReasonLabels {
                cluster: cluster.into(),
                reason,
            })
            .clone()
    }

    pub fn retry(&self, cluster: &str, reason: &'static str) -> Counter {
        Self::by_reason(&self.retries, cluster, reason)
    }

    pub fn retry_skipped(&self, cluster: &str, reason: &'static str) -> Counter {
        Self::by_reason(&self.retries_skipped, cluster, reason)
    }

    pub fn overloaded(&self, cluster: &str, limit: &'static str) -> Counter {
        Self::by_reason(&self.overloaded, cluster, limit)
    }
}

/// The series of one endpoint.
#[derive(Clone)]
pub struct EndpointCounters {
    pub requests: Counter,
    pub failures: Counter,
    pub ejections: Counter,
    pub healthy: Gauge,
}

/// Per-cluster upstream counters and latency, resolved once when the config is built.
#[derive(Clone)]
pub struct ClusterCounters {
    by_class: [Counter; 5],
    /// connect, timeout, exchange.
    errors: [Counter; 3],
    duration: LatencyHistogram,
}

/// Why an upstream exchange got no response, as [`ClusterCounters::failed`] counts it.
#[derive(Clone, Copy)]
pub enum UpstreamFailure {
    Connect = 0,
    Timeout = 1,
    Exchange = 2,
}

impl ClusterCounters {
    pub fn new(metrics: &UpstreamMetrics, cluster: &str) -> Self {
        let class = |class| {
            metrics
                .responses
                .get_or_create(&ClusterClassLabels {
                    cluster: cluster.into(),
                    class,
                })
                .clone()
        };
        let error = |kind| {
            metrics
                .errors
                .get_or_create(&ClusterErrorLabels {
                    cluster: cluster.into(),
                    kind,
                })
                .clone()
        };
        ClusterCounters {
            by_class: [class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            errors: [error("connect"), error("timeout"), error("exchange")],
            duration: metrics
                .duration
                .get_or_create(&ClusterLabels {
                    cluster: cluster.into(),
                })
                .clone(),
        }
    }

    pub fn answered(&self, status: http::StatusCode, elapsed: Duration) {
        self.by_class[class_index(status)].inc();
        self.duration.observe(elapsed);
    }

    pub fn failed(&self, failure: UpstreamFailure) {
        self.errors[failure as usize].inc();
    }
}
