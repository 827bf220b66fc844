//! The KV store's family: failed operations by backend.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::{Families, Registrar};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KvLabels {
    pub backend: &'static str,
}

/// The families of the filters' shared KV store, one per process.
pub struct KvMetrics {
    /// Failed operations of the filters' shared KV store, by backend.
    pub errors: Family<KvLabels, Counter>,
}

impl Families for KvMetrics {
    fn register(r: &mut Registrar) -> Self {
        KvMetrics {
            errors: r.family("kv_errors", "Failed KV store operations by backend"),
        }
    }
}
