//! An original-destination cluster's endpoints: one per address that intercepted clients
//! dialled, made on first use, at most `max_destinations` at once. When the table is full,
//! destinations no request is using are let go (their idle connections close); when all
//! are in use, a request to one more is refused (503) rather than growing the proxy.
//! Their series share one label, `endpoint="original_destination"`: a client chooses the
//! addresses, so they are never a label each.

use std::net::SocketAddr;
use std::sync::Arc;

use dashmap::DashMap;

use super::cluster::Endpoint;
use super::metrics::EndpointCounters;

/// The label all of an original-destination cluster's endpoints count under.
pub const LABEL: &str = "original_destination";

pub(super) struct Destinations {
    endpoints: DashMap<SocketAddr, Arc<Endpoint>>,
    max: usize,
    pub counters: EndpointCounters,
}

impl Destinations {
    pub fn new(max: usize, counters: EndpointCounters) -> Destinations {
        Destinations {
            endpoints: DashMap::new(),
            max,
            counters,
        }
    }

    /// The endpoint for `dst`, made with `make` when new; `None` when the table is full of
    /// destinations in use.
    pub fn get(&self, dst: SocketAddr, make: impl FnOnce() -> Endpoint) -> Option<Arc<Endpoint>> {
        if let Some(found) = self.endpoints.get(&dst) {
            return Some(found.clone());
        }
        if self.endpoints.len() >= self.max {
            // Only the table holds these: no request is using them.
            self.endpoints.retain(|_, e| Arc::strong_count(e) > 1);
            if self.endpoints.len() >= self.max {
                return None;
            }
        }
        Some(self.endpoints.entry(dst).or_insert_with(|| Arc::new(make())).clone())
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }
}
