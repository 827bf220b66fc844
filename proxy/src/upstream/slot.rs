//! The endpoints a request was sent to, noted for whoever records the request.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the cluster notes the endpoint it picked for each try: part of a recorded
/// request's record, lent to `Cluster::send` for the exchange (no allocation, nothing
/// carried in the request's extensions).
#[derive(Default)]
pub struct UpstreamSlot {
    last: Mutex<Option<SocketAddr>>,
    tries: AtomicU32,
}

impl UpstreamSlot {
    pub fn set(&self, endpoint: SocketAddr) {
        self.tries.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut slot) = self.last.lock() {
            *slot = Some(endpoint);
        }
    }

    pub fn get(&self) -> Option<SocketAddr> {
        self.last.lock().ok().and_then(|slot| *slot)
    }

    /// How many tries were sent.
    pub fn tries(&self) -> u32 {
        self.tries.load(Ordering::Relaxed)
    }
}
