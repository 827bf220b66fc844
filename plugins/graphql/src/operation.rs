//! The operation a request ran, once its document validated: the per-operation metrics'
//! labels, as Apollo Router names them (`graphql.operation.name`, `.type`). Only a valid
//! document's operation is named, never the client's `operationName` alone; the host
//! folds series past its bound into one `overflow="true"` series, and a safelist bounds
//! names outright.
//!
//! The labels are built once per operation, in the form the host's `*-labelled` calls
//! take (owned pairs), and shared (`Rc`) with the forward cache: a repeat of a forwarded
//! operation records its two labelled metrics without building a label, where the SDK's
//! `&[(&str, &str)]` calls copy every label into owned strings on each call (issue 22).
//! Its two series per request go through metric handles (`weft:filter` 0.2.3) once the
//! operation repeats: a repeat carries no label across the boundary at all, and an
//! operation seen once (not cached: its labels are made for that request) takes no handle.

use std::cell::{Cell, OnceCell};

use weft_sdk::bindings::weft::filter::metrics as host;
use weft_sdk::metrics::Series;

pub struct OperationLabels {
    kind: &'static str,
    /// `[("operation", name), ("type", kind)]`; the name is `""` for an anonymous one.
    labels: Vec<(String, String)>,
    /// This instance's handles to the two series every request of the operation updates
    /// (the labels live in the instance's forward cache, as the handles must).
    requests: OnceCell<Series>,
    seconds: OnceCell<Series>,
    /// Requests counted with these labels: handles are made from the second on.
    counted: Cell<u32>,
}

impl OperationLabels {
    pub fn new(name: String, kind: &'static str) -> Self {
        OperationLabels {
            kind,
            labels: vec![("operation".to_owned(), name), ("type".to_owned(), kind.to_owned())],
            requests: OnceCell::new(),
            seconds: OnceCell::new(),
            counted: Cell::new(0),
        }
    }

    /// `query`, `mutation` or `subscription`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// `""` for an anonymous operation.
    pub fn name(&self) -> &str {
        &self.labels[0].1
    }

    /// `operation_requests{operation, type}`.
    pub fn count(&self) {
        self.counted.set(self.counted.get().saturating_add(1));
        match self.repeated() {
            true => self
                .requests
                .get_or_init(|| Series::counter("operation_requests", &self.pairs()))
                .add(1),
            false => host::counter_add_labelled("operation_requests", &self.labels, 1),
        }
    }

    /// `operation_seconds{operation, type}`.
    pub fn observe(&self, seconds: f64) {
        match self.repeated() {
            true => self
                .seconds
                .get_or_init(|| Series::histogram("operation_seconds", &self.pairs()))
                .observe(seconds),
            false => host::histogram_observe_labelled("operation_seconds", &self.labels, seconds),
        }
    }

    fn repeated(&self) -> bool {
        self.counted.get() > 1
    }

    fn pairs(&self) -> [(&str, &str); 2] {
        [
            (&self.labels[0].0, &self.labels[0].1),
            (&self.labels[1].0, &self.labels[1].1),
        ]
    }

    /// `operation_errors{operation, type, code}`.
    pub fn count_error(&self, code: &str) {
        let mut labels = self.labels.clone();
        labels.push(("code".to_owned(), code.to_owned()));
        host::counter_add_labelled("operation_errors", &labels, 1);
    }
}

/// The `operations_<type>` counter's name.
pub fn operations_counter(kind: &str) -> &'static str {
    match kind {
        "mutation" => "operations_mutation",
        "subscription" => "operations_subscription",
        _ => "operations_query",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_name_then_the_type() {
        let op = OperationLabels::new("Me".to_owned(), "query");
        assert_eq!(op.name(), "Me");
        assert_eq!(op.kind(), "query");
        assert_eq!(
            op.labels,
            [
                ("operation".to_owned(), "Me".to_owned()),
                ("type".to_owned(), "query".to_owned())
            ]
        );
        assert_eq!(operations_counter("mutation"), "operations_mutation");
        assert_eq!(operations_counter("subscription"), "operations_subscription");
        assert_eq!(operations_counter("query"), "operations_query");
    }
}
