//! The ADS stream, Delta (incremental, `api_type: DELTA_GRPC`, istiod's default for Envoy):
//! responses carry only the resources that changed and the names removed. The first request
//! of each type on a stream names the versions held (`initial_resource_versions`), so a
//! reconnect resends only what changed. Mapping, warming, ACK/NACK bookkeeping and applying
//! are the State of the World stream's (`ads.rs`).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use serde_json::json;
use tokio::sync::mpsc;

use super::Rejected;
use super::ads::{CLUSTER, Client, ENDPOINT, LISTENER, MAX_RESOURCES, ROUTE, SECRET, put, remove};

/// Types in the order they are asked for, as in the State of the World.
const ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];

/// What Delta holds per type across streams: each resource's version.
#[derive(Debug, Default, Clone)]
pub struct DeltaState {
    versions: BTreeMap<&'static str, BTreeMap<String, String>>,
}

impl Client {
    pub(super) async fn delta_stream(&mut self, target: &str, held: &mut DeltaState) -> anyhow::Result<()> {
        let channel = self.connect(target).await?;
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(super::ads::MAX_MESSAGE_BYTES);
        let (tx, mut rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
        let mut node = Some(self.node());
        let names = self.watched();
        for type_url in ORDER {
            let subscribe: Vec<String> = match type_url {
                // Wildcard: the legacy empty list, which every server understands.
                LISTENER | CLUSTER => Vec::new(),
                _ => names.get(type_url).cloned().unwrap_or_default().into_iter().collect(),
            };
            if matches!(type_url, ENDPOINT | ROUTE | SECRET) && subscribe.is_empty() {
                continue;
            }
            let initial = held.versions.get(type_url).cloned().unwrap_or_default();
            tx.send(DeltaDiscoveryRequest {
                node: node.take(),
                type_url: type_url.to_owned(),
                resource_names_subscribe: subscribe,
                initial_resource_versions: initial.into_iter().collect(),
                ..DeltaDiscoveryRequest::default()
            })
            .await?;
        }
        let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let mut responses = client.delta_aggregated_resources(stream).await?.into_inner();
        self.source().status(|s| s["connection"] = json!("connected"));
        tracing::info!(server = %target, "xDS delta stream open");
        while let Some(response) = responses.message().await? {
            self.mark_healthy();
            for req in self.on_delta(response, held).await {
                tx.send(req).await?;
            }
        }
        Ok(())
    }

    async fn on_delta(&mut self, resp: DeltaDiscoveryResponse, held: &mut DeltaState) -> Vec<DeltaDiscoveryRequest> {
        let Some(type_url) = ORDER.iter().copied().find(|t| *t == resp.type_url) else {
            return vec![DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                error_detail: Some(super::ads::status(&format!(
                    "type {:?} was not asked for",
                    resp.type_url
                ))),
                ..DeltaDiscoveryRequest::default()
            }];
        };
        let started = std::time::Instant::now();
        let before = self.watched();
        let outcome = self.accept_delta(type_url, &resp).await;
        let version = if resp.system_version_info.is_empty() {
            resp.nonce.clone()
        } else {
            resp.system_version_info.clone()
        };
        if outcome.is_ok() {
            let versions = held.versions.entry(type_url).or_default();
            for r in &resp.resources {
                versions.insert(r.name.clone(), r.version.clone());
            }
            for name in &resp.removed_resources {
                versions.remove(name);
            }
        }
        self.answered(type_url, &version, &outcome, started);
        let mut out = vec![DeltaDiscoveryRequest {
            type_url: type_url.to_owned(),
            response_nonce: resp.nonce.clone(),
            error_detail: outcome.err().map(|r| super::ads::status(&r.0)),
            ..DeltaDiscoveryRequest::default()
        }];
        let after = self.watched();
        for t in [ROUTE, ENDPOINT, SECRET] {
            let (old, new) = (
                before.get(t).cloned().unwrap_or_default(),
                after.get(t).cloned().unwrap_or_default(),
            );
            if old != new {
                out.push(DeltaDiscoveryRequest {
                    type_url: t.to_owned(),
                    resource_names_subscribe: new.difference(&old).cloned().collect(),
                    resource_names_unsubscribe: old.difference(&new).cloned().collect(),
                    ..DeltaDiscoveryRequest::default()
                });
                if let Some(versions) = held.versions.get_mut(t) {
                    versions.retain(|name, _| new.contains(name));
                }
            }
        }
        out
    }

    async fn accept_delta(&mut self, type_url: &'static str, resp: &DeltaDiscoveryResponse) -> Result<(), Rejected> {
        if resp.resources.len() > MAX_RESOURCES {
            return Err(Rejected(format!(
                "{} resources in one response (at most {MAX_RESOURCES})",
                resp.resources.len()
            )));
        }
        let mut next = self.snapshot().clone();
        if type_url == SECRET {
            // The server answered for the secrets subscribed: one it did not send, it lacks.
            let asked = self.watched().remove(&SECRET).unwrap_or_default();
            next.sds_answered.extend(asked);
        }
        let mut seen = HashSet::new();
        for r in &resp.resources {
            let Some(any) = &r.resource else {
                return Err(Rejected(format!("resource {:?} has no body", r.name)));
            };
            let name = put(&mut next, type_url, any)?;
            if name != r.name {
                return Err(Rejected(format!("resource {:?} is named {name:?} inside", r.name)));
            }
            if !seen.insert(name.clone()) {
                return Err(Rejected(format!("resource {name:?} appears twice in one response")));
            }
        }
        for name in &resp.removed_resources {
            if seen.contains(name) {
                return Err(Rejected(format!("resource {name:?} is both updated and removed")));
            }
            remove(&mut next, type_url, name);
        }
        self.commit(next).await
    }

    /// The route configurations and assignments the snapshot names, by type.
    fn watched(&self) -> BTreeMap<&'static str, BTreeSet<String>> {
        let s = self.snapshot();
        BTreeMap::from([
            (ROUTE, s.rds_names()),
            (ENDPOINT, s.eds_names()),
            (SECRET, super::tls::sds_names(s)),
        ])
    }
}
