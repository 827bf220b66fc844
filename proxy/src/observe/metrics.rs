//! The access log's and the trace exporter's drop counters.

use prometheus_client::metrics::counter::Counter;

use crate::metrics::{Families, Registrar};

/// What `observe` counts: records and spans it dropped because their writer was behind.
pub struct ObserveMetrics {
    pub access_log_dropped: Counter,
    pub trace_spans_dropped: Counter,
}

impl Families for ObserveMetrics {
    fn register(r: &mut Registrar) -> Self {
        ObserveMetrics {
            access_log_dropped: r.family(
                "access_log_dropped",
                "Access-log records dropped because the writer was behind",
            ),
            trace_spans_dropped: r.family(
                "trace_spans_dropped",
                "Trace spans dropped because the export queue was full",
            ),
        }
    }
}
