//! Whether an endpoint takes traffic: passive outlier detection (failures in a row eject
//! it for a growing while) and active HTTP health checks (probes on an interval). Both
//! only flip atomics the balancer reads; neither ever empties a cluster on its own (the
//! panic threshold in `cluster.rs`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use http::HeaderValue;
use http::uri::PathAndQuery;

use super::cluster::{Cluster, Endpoint};
use super::metrics::EndpointCounters;
use crate::config::{HealthCheckConfig, OutlierConfig};

/// Time since the first call: a clock that fits in one atomic.
pub fn since_start() -> Duration {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// Milliseconds since the first call, for ejections (never 0, which means "not ejected").
pub fn now_ms() -> u64 {
    since_start().as_millis() as u64 + 1
}

/// Which kinds of verdict a config version uses.
#[derive(Clone, Copy)]
pub struct Counts {
    pub checks: bool,
    pub ejections: bool,
}

/// One endpoint's health, read by every pick and written by failures and probes.
pub struct EndpointHealth {
    /// The active health check's verdict (true until a check says otherwise).
    checked_healthy: AtomicBool,
    /// Passed (positive) or failed (negative) probes in a row.
    probe_streak: std::sync::atomic::AtomicI32,
    /// Failed tries in a row (outlier detection).
    failures: AtomicU32,
    /// `now_ms()` until which the endpoint is ejected; 0 when it is not.
    ejected_until: AtomicU64,
    /// Ejections so far: the next one lasts this many times longer.
    ejections: AtomicU32,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        EndpointHealth {
            checked_healthy: AtomicBool::new(true),
            probe_streak: Default::default(),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }
}

impl EndpointHealth {
    /// Whether the endpoint takes traffic at `now`, by the verdicts that `counts`. An
    /// ejection that has run out is ended here, by the first pick that sees it.
    pub fn available(
        &self,
        now: u64,
        counts: Counts,
        counters: &EndpointCounters,
        cluster: &str,
        addr: SocketAddr,
    ) -> bool {
        let checked = counts.checks;
        let until = self.ejected_until.load(Ordering::Relaxed);
        if until != 0 && counts.ejections {
            if now < until {
                return false;
            }
            if self
                .ejected_until
                .compare_exchange(until, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.failures.store(0, Ordering::Relaxed);
                let healthy = !checked || self.checked_healthy.load(Ordering::Relaxed);
                counters.healthy.set(i64::from(healthy));
                tracing::info!(cluster, endpoint = %addr, "endpoint readmitted after its ejection");
            }
        }
        !checked || self.checked_healthy.load(Ordering::Relaxed)
    }

    /// `ejected`, `unhealthy` (failing its health check) or `healthy`, by the verdicts
    /// that `counts`, as the admin API shows it; reading does not end an ejection.
    pub fn state(&self, now: u64, counts: Counts) -> &'static str {
        if counts.ejections && self.is_ejected(now) {
            "ejected"
        } else if counts.checks && !self.checked_healthy.load(Ordering::Relaxed) {
            "unhealthy"
        } else {
            "healthy"
        }
    }

    fn is_ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now < until
    }

    /// A try that succeeded ends the run of failures.
    pub fn success(&self) {
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
    }
}

/// Outlier detection's settings.
pub struct Outlier {
    consecutive: u32,
    base: Duration,
    max: Duration,
    max_percent: u8,
}

impl Outlier {
    pub fn new(config: &OutlierConfig) -> Self {
        Outlier {
            consecutive: config.consecutive_failures,
            base: config.base_ejection,
            max: config.max_ejection,
            max_percent: config.max_ejection_percent,
        }
    }

    /// A failed try at `endpoint`; ejects it when that makes enough in a row and the
    /// cluster has room for another ejection.
    pub fn failure(&self, endpoint: &Endpoint, all: &[Arc<Endpoint>], cluster: &str) {
        let health = &endpoint.health;
        let run = health.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if run < self.consecutive {
            return;
        }
        let now = now_ms();
        if health.is_ejected(now) {
            return;
        }
        let ejected = all.iter().filter(|e| e.health.is_ejected(now)).count();
        let room = (all.len() * usize::from(self.max_percent) / 100).max(usize::from(self.max_percent > 0));
        if ejected >= room {
            return;
        }
        health.failures.store(0, Ordering::Relaxed);
        let times = health.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = self.base.saturating_mul(times).min(self.max);
        let until = now + length.as_millis() as u64;
        if health
            .ejected_until
            .compare_exchange(0, until, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        endpoint.counters.ejections.inc();
        endpoint.counters.healthy.set(0);
        tracing::warn!(
            cluster,
            endpoint = %endpoint.addr,
            failures = run,
            ejection = ?length,
            "endpoint ejected by outlier detection"
        );
    }
}

/// Probes every endpoint of the cluster each `interval` until the cluster is dropped
/// (its config version replaced and its last request done).
pub async fn probe_forever(cluster: Weak<Cluster>, check: HealthCheckConfig) {
    let Ok(path) = PathAndQuery::try_from(check.path.as_str()) else {
        return;
    };
    loop {
        let Some(live) = cluster.upgrade() else { return };
        let endpoints = live.endpoints_now();
        let probes = endpoints.iter().map(|endpoint| {
            let live = &live;
            let path = &path;
            let check = &check;
            async move {
                let host =
                    HeaderValue::from_str(&endpoint.addr.to_string()).unwrap_or(HeaderValue::from_static("weft"));
                let verdict = endpoint
                    .pool
                    .probe(&live.connector, path, &host, check.timeout)
                    .await
                    .and_then(|status| {
                        let passes = if check.statuses.is_empty() {
                            status.is_success()
                        } else {
                            check.statuses.contains(&status.as_u16())
                        };
                        if passes {
                            Ok(())
                        } else {
                            Err(format!("status {status}"))
                        }
                    });
                record(endpoint, &live.name, check, verdict);
            }
        });
        futures_util::future::join_all(probes).await;
        drop((live, endpoints));
        tokio::time::sleep(check.interval).await;
    }
}

/// One probe's verdict, applied with the thresholds.
fn record(endpoint: &Endpoint, cluster: &str, check: &HealthCheckConfig, verdict: Result<(), String>) {
    let health = &endpoint.health;
    let streak = health.probe_streak.load(Ordering::Relaxed);
    let streak = match &verdict {
        Ok(()) => streak.max(0).saturating_add(1),
        Err(_) => streak.min(0).saturating_sub(1),
    };
    health.probe_streak.store(streak, Ordering::Relaxed);
    let healthy = health.checked_healthy.load(Ordering::Relaxed);
    if healthy && streak <= -(check.unhealthy_threshold as i32) {
        health.checked_healthy.store(false, Ordering::Relaxed);
        endpoint.counters.healthy.set(0);
        let reason = verdict.err().unwrap_or_default();
        tracing::warn!(cluster, endpoint = %endpoint.addr, reason, "endpoint failed its health check");
    } else if !healthy && streak >= check.healthy_threshold as i32 {
        health.checked_healthy.store(true, Ordering::Relaxed);
        let ejected = health.is_ejected(now_ms());
        endpoint.counters.healthy.set(i64::from(!ejected));
        tracing::info!(cluster, endpoint = %endpoint.addr, "endpoint passed its health check again");
    }
}
