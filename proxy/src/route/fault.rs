//! Fault injection for resilience testing, as Istio's `HTTPFaultInjection`: a delay before
//! the request goes upstream, or an abort in its place, each for a percentage of requests.

use std::time::Duration;

use http::{HeaderName, StatusCode};
use prometheus_client::metrics::counter::Counter;

pub struct Fault {
    /// Only requests with this header are considered.
    pub header: Option<HeaderName>,
    pub delay: Option<(Duration, Chance)>,
    pub abort: Option<(Abort, Chance)>,
    pub delayed: Counter,
    pub aborted: Counter,
}

#[derive(Clone, Copy)]
pub enum Abort {
    Status(StatusCode),
    /// The stream (HTTP/2) or connection (HTTP/1.1) is cut without an answer.
    Reset,
}

/// A percentage as parts per million, drawn against a uniform random number.
#[derive(Clone, Copy)]
pub struct Chance(u32);

impl Chance {
    pub fn percent(p: f64) -> Chance {
        Chance((p * 10_000.0).round().clamp(0.0, 1_000_000.0) as u32)
    }

    pub(super) fn hit(self) -> bool {
        self.0 > 0 && fastrand::u32(0..1_000_000) < self.0
    }
}

impl Fault {
    /// The delay to wait and the abort to give this request, if any (drawn independently).
    pub fn draw(&self, headers: &http::HeaderMap) -> (Option<Duration>, Option<Abort>) {
        if self.header.as_ref().is_some_and(|h| !headers.contains_key(h)) {
            return (None, None);
        }
        let delay = self.delay.filter(|(_, c)| c.hit()).map(|(d, _)| d);
        let abort = self.abort.filter(|(_, c)| c.hit()).map(|(a, _)| a);
        if delay.is_some() {
            self.delayed.inc();
        }
        if abort.is_some() {
            self.aborted.inc();
        }
        (delay, abort)
    }
}
