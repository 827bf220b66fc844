//! Traffic shifting: a header or cookie pins a request to a cluster; otherwise a weighted
//! random choice splits a route's traffic across clusters (canary releases).

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName};
use prometheus_client::metrics::counter::Counter;

use crate::cluster::Cluster;

pub struct Pin {
    pub on: PinOn,
    pub value: String,
    pub cluster: Arc<Cluster>,
}

pub enum PinOn {
    Header(HeaderName),
    Cookie(String),
}

impl Pin {
    fn holds(&self, headers: &HeaderMap) -> bool {
        match &self.on {
            PinOn::Header(name) => headers
                .get_all(name)
                .iter()
                .any(|v| v.as_bytes() == self.value.as_bytes()),
            PinOn::Cookie(name) => headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .any(|(k, v)| k == name && v.trim_matches('"') == self.value),
        }
    }
}

/// The first pin the request holds.
pub fn pinned<'a>(pins: &'a [Pin], headers: &HeaderMap) -> Option<&'a Cluster> {
    pins.iter().find(|p| p.holds(headers)).map(|p| &*p.cluster)
}

/// Clusters with cumulative weights; each choice counted.
pub struct Split {
    /// (cumulative weight, cluster, requests sent to it).
    choices: Vec<(u64, Arc<Cluster>, Counter)>,
    total: u64,
}

impl Split {
    pub fn new(weighted: Vec<(u32, Arc<Cluster>, Counter)>) -> Split {
        let mut total = 0;
        let choices = weighted
            .into_iter()
            .map(|(w, cluster, counter)| {
                total += u64::from(w);
                (total, cluster, counter)
            })
            .collect();
        Split { choices, total }
    }

    pub fn choose(&self) -> &Cluster {
        self.pick(fastrand::u64(0..self.total))
    }

    fn pick(&self, ticket: u64) -> &Cluster {
        // Config validation guarantees a positive total, so some entry's bound exceeds the ticket.
        let i = self.choices.partition_point(|(bound, _, _)| *bound <= ticket);
        let (_, cluster, counter) = &self.choices[i.min(self.choices.len() - 1)];
        counter.inc();
        cluster
    }
}
