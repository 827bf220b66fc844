//! The endpoint a request was sent to, noted for whoever records the request.

use std::net::SocketAddr;
use std::sync::Mutex;

/// Where the cluster notes the endpoint it picked for an attempt (a request extension,
/// present only when the request is being recorded).
#[derive(Default)]
pub struct UpstreamSlot(Mutex<Option<SocketAddr>>);

impl UpstreamSlot {
    pub fn set(&self, endpoint: SocketAddr) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(endpoint);
        }
    }

    pub fn get(&self) -> Option<SocketAddr> {
        self.0.lock().ok().and_then(|slot| *slot)
    }
}
