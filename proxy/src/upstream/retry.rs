//! Retries: which failures are tried again, with what body, after how long, and whether
//! the cluster's retry budget allows it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use prometheus_client::metrics::counter::Counter;

use super::error::UpstreamError;
use super::metrics::UpstreamMetrics;
use crate::body::Body;
use crate::body::PooledBody;
use crate::config::RetryConfig;

/// The try number, sent upstream with every try of a cluster that retries.
pub static ATTEMPT: HeaderName = HeaderName::from_static("x-weft-attempt");
const ATTEMPTS: [&str; 10] = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];

const REASONS: [&str; 4] = ["connect_failure", "reset", "per_try_timeout", "status"];
const SKIPPED: [&str; 5] = ["budget", "max_retries", "method", "body_not_replayable", "deadline"];

pub struct RetryPolicy {
    pub attempts: u32,
    pub per_try_timeout: Option<Duration>,
    statuses: Box<[u16]>,
    non_idempotent: bool,
    backoff_base: Duration,
    backoff_max: Duration,
    budget_percent: f64,
    /// The per-second floor, as a GCRA (one atomic): the theoretical arrival time of the
    /// next retry, in nanoseconds since `health::since_start`.
    floor: Option<(AtomicU64, u64)>,
    max_replay_bytes: usize,
    retried: [Counter; 4],
    skipped: [Counter; 5],
}

impl RetryPolicy {
    pub fn new(config: &RetryConfig, cluster: &str, metrics: &UpstreamMetrics) -> Self {
        RetryPolicy {
            attempts: config.attempts,
            per_try_timeout: config.per_try_timeout,
            statuses: config.statuses.clone().into_boxed_slice(),
            non_idempotent: config.non_idempotent,
            backoff_base: config.backoff_base,
            backoff_max: config.backoff_max,
            budget_percent: config.budget_percent,
            floor: (config.min_retries_per_second > 0).then(|| {
                (
                    AtomicU64::new(0),
                    1_000_000_000 / u64::from(config.min_retries_per_second),
                )
            }),
            max_replay_bytes: config.max_replay_bytes,
            retried: REASONS.map(|r| metrics.retry(cluster, r)),
            skipped: SKIPPED.map(|r| metrics.retry_skipped(cluster, r)),
        }
    }

    /// The body for the first try, and a copy for retries when the request may be retried
    /// at all: an idempotent method (or `non_idempotent`), and a body that fits the replay
    /// buffer with its length known up front. A body read here is read whole.
    pub async fn prepare_body(
        &self,
        method: &Method,
        body: Body,
    ) -> Result<(Option<Body>, Option<Bytes>), UpstreamError> {
        if !self.allows(method) {
            return Ok((Some(body), None));
        }
        if body.is_end_stream() {
            return Ok((None, Some(Bytes::new())));
        }
        match body.size_hint().exact() {
            Some(len) if len <= self.max_replay_bytes as u64 => {}
            _ => return Ok((Some(body), None)),
        }
        match Limited::new(body, self.max_replay_bytes).collect().await {
            Ok(collected) => Ok((None, Some(collected.to_bytes()))),
            Err(e) => Err(match crate::body::ClientBodyFault::find(Some(&*e)) {
                Some(fault) => UpstreamError::ClientBody(fault),
                None => UpstreamError::BadRequest(format!("reading the request body: {e}")),
            }),
        }
    }

    /// Whether requests of this method may be retried.
    pub fn allows(&self, method: &Method) -> bool {
        method.is_idempotent() || self.non_idempotent
    }

    /// Why this try's outcome may be retried, if it may. A timeout is retried only when
    /// it was the try's own (`per_try`), not the whole request's.
    pub fn retryable(
        &self,
        result: &Result<Response<PooledBody>, UpstreamError>,
        per_try: bool,
    ) -> Option<&'static str> {
        match result {
            Ok(resp) => self.statuses.contains(&resp.status().as_u16()).then_some("status"),
            Err(UpstreamError::Connect { .. }) => Some("connect_failure"),
            Err(UpstreamError::Exchange { .. }) => Some("reset"),
            Err(UpstreamError::Timeout { .. }) if per_try => Some("per_try_timeout"),
            Err(_) => None,
        }
    }

    /// Retries in flight may be `budget_percent` of the requests in flight (Envoy's retry
    /// budget); past that, up to `min_retries_per_second` more a second, bursting to one
    /// second's worth (linkerd2-proxy's floor).
    pub fn budget_allows(&self, retries: u32, requests: u32, now: Duration) -> bool {
        let budget = (f64::from(requests) * self.budget_percent / 100.0) as u32;
        if retries < budget {
            return true;
        }
        let Some((next, interval)) = &self.floor else {
            return false;
        };
        let now = now.as_nanos() as u64;
        let mut tat = next.load(Ordering::Relaxed);
        loop {
            let after = tat.max(now) + interval;
            // A second's worth of retries may be taken at once, no more.
            if after > now + 1_000_000_000 {
                return false;
            }
            match next.compare_exchange_weak(tat, after, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }

    /// Exponential backoff with full jitter: a random wait up to `base · 2^(n-1)`,
    /// capped at `backoff_max`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self
            .backoff_base
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(self.backoff_max);
        Duration::from_micros(fastrand::u64(..=cap.as_micros() as u64))
    }

    pub fn retried(&self, reason: &'static str) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.retried[i].inc();
        }
    }

    pub fn skipped(&self, reason: &'static str) {
        if let Some(i) = SKIPPED.iter().position(|r| *r == reason) {
            self.skipped[i].inc();
        }
    }
}

/// One try's request: the head again, its body, and the try number.
pub fn request(head: &http::request::Parts, body: Body, attempt: u32) -> Request<Body> {
    let mut req = Request::new(body);
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
    if let Some(upload) = head.extensions.get::<std::sync::Arc<crate::body::Upload>>() {
        req.extensions_mut().insert(upload.clone());
    }
    number(req.headers_mut(), attempt);
    req
}

/// Says which try a request is (`x-weft-attempt: N`).
pub fn number(headers: &mut http::HeaderMap, attempt: u32) {
    let n = ATTEMPTS[(attempt.max(1) as usize - 1).min(ATTEMPTS.len() - 1)];
    headers.insert(ATTEMPT.clone(), HeaderValue::from_static(n));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(percent: f64, per_second: u32) -> RetryPolicy {
        let config: RetryConfig = toml::from_str(&format!(
            "budget_percent = {percent}\nmin_retries_per_second = {per_second}\nbackoff_base = \"10ms\"\nbackoff_max = \"80ms\""
        ))
        .expect("valid retry config");
        RetryPolicy::new(
            &config,
            "c",
            &<UpstreamMetrics as crate::metrics::Families>::unregistered(),
        )
    }

    #[test]
    fn the_budget_is_a_share_of_requests_with_a_floor_per_second() {
        let p = policy(20.0, 0);
        assert!(p.budget_allows(19, 100, Duration::ZERO));
        assert!(!p.budget_allows(20, 100, Duration::ZERO));
        assert!(
            !p.budget_allows(0, 1, Duration::ZERO),
            "no floor: a lone request is not retried"
        );

        let p = policy(20.0, 4);
        let at = |ms| Duration::from_millis(ms);
        // A second's worth (4) at once, then one each 250 ms.
        let burst = (0..10).filter(|_| p.budget_allows(20, 100, at(5000))).count();
        assert_eq!(burst, 4);
        assert!(!p.budget_allows(20, 100, at(5100)));
        assert!(p.budget_allows(20, 100, at(5250)));
        assert!(!p.budget_allows(20, 100, at(5260)));
        // Within the share, the floor is not spent.
        assert!(p.budget_allows(0, 100, at(5260)));
    }

    #[test]
    fn backoff_grows_and_stays_under_its_cap() {
        let p = policy(20.0, 3);
        for attempt in 1..20 {
            let cap = Duration::from_millis(10 * (1 << (attempt - 1).min(3)));
            for _ in 0..50 {
                assert!(p.backoff(attempt) <= cap.min(Duration::from_millis(80)));
            }
        }
    }
}
