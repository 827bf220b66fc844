//! Traffic shifting: a header or cookie pins a request to a cluster; otherwise a weighted
//! random choice splits a route's traffic across clusters (canary releases).

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderName};
use prometheus_client::metrics::counter::Counter;

use crate::header_policy::HeaderEdits;
use crate::upstream::Cluster;

pub struct Pin {
    pub on: PinOn,
    pub value: String,
    pub cluster: Arc<Cluster>,
    /// Requests this pin sent to its cluster.
    pub chosen: Counter,
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
    let pin = pins.iter().find(|p| p.holds(headers))?;
    pin.chosen.inc();
    Some(&pin.cluster)
}

/// One entry of a split: its cluster, and the header edits its requests and responses get.
pub struct Backend {
    pub cluster: Arc<Cluster>,
    pub weight: u32,
    /// Requests sent to it.
    pub chosen: Counter,
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
}

/// Clusters with cumulative weights; each choice counted.
pub struct Split {
    /// (cumulative weight, backend).
    choices: Vec<(u64, Backend)>,
    total: u64,
}

impl Split {
    pub fn new(backends: Vec<Backend>) -> Split {
        let mut total = 0;
        let choices = backends
            .into_iter()
            .map(|b| {
                total += u64::from(b.weight);
                (total, b)
            })
            .collect();
        Split { choices, total }
    }

    pub fn choose(&self) -> &Backend {
        self.pick(fastrand::u64(0..self.total))
    }

    fn pick(&self, ticket: u64) -> &Backend {
        // Config validation guarantees a positive total, so some entry's bound exceeds the ticket.
        let i = self.choices.partition_point(|(bound, _)| *bound <= ticket);
        let (_, backend) = &self.choices[i.min(self.choices.len() - 1)];
        backend.chosen.inc();
        backend
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cluster(name: &str) -> Arc<Cluster> {
        let text = format!(
            "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\n[[clusters]]\nname = \"{name}\"\nendpoints = [\"127.0.0.1:1\"]\n"
        );
        let config = Config::parse("test", &text).expect("config");
        Cluster::build_fixed(
            &config.clusters[0],
            &config.source,
            &Arc::new(<crate::upstream::metrics::UpstreamMetrics as crate::metrics::Families>::unregistered()),
        )
        .expect("cluster")
    }

    #[test]
    fn tickets_fall_in_their_weights_range() {
        let (a, b, c) = (cluster("a"), cluster("b"), cluster("c"));
        let backend = |weight, cluster| Backend {
            cluster,
            weight,
            chosen: Counter::default(),
            request_headers: None,
            response_headers: None,
        };
        let split = Split::new(vec![backend(3, a), backend(0, b), backend(2, c)]);
        let names: Vec<_> = (0..5).map(|t| split.pick(t).cluster.name.to_string()).collect();
        assert_eq!(names, ["a", "a", "a", "c", "c"], "a zero weight is never chosen");
        assert_eq!(split.choices[0].1.chosen.get(), 3);
        assert_eq!(split.choices[1].1.chosen.get(), 0);
    }

    #[test]
    fn cookie_pins_match_whole_names_and_values() {
        let pin = Pin {
            on: PinOn::Cookie("track".to_owned()),
            value: "beta".to_owned(),
            cluster: cluster("b"),
            chosen: Counter::default(),
        };
        let holds = |cookie: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::COOKIE, cookie.parse().expect("value"));
            pin.holds(&headers)
        };
        assert!(holds("track=beta"));
        assert!(holds("a=1; track=beta; b=2"));
        assert!(holds("track=\"beta\""));
        assert!(!holds("xtrack=beta"));
        assert!(!holds("track=betamax"));
        assert!(!holds("track"));
    }
}
