//! The ADS stream, State of the World: CDS and LDS by wildcard, then EDS and RDS for the
//! names they reference. Every response is answered: an ACK carries its version and nonce,
//! a NACK the last accepted version, its nonce and `error_detail`. The node goes on the first
//! request of each stream. A broken stream is opened again after a jittered backoff with the
//! versions and names held, and the last good config keeps serving meanwhile.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{ListValue, Struct, Value as PbValue, value::Kind};
use envoy_types::pb::google::rpc::Status;
use prost::Message;
use serde_json::json;
use tokio::sync::mpsc;
use toml::Table;

use super::bootstrap::ApiType;
use super::snapshot::Snapshot;
use super::{Bootstrap, Rejected, XdsSource, cluster, listener, route};

pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ROUTE: &str = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration";
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
pub const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
/// Subscription order on a new stream: clusters before listeners, as Envoy does, so
/// routes find their clusters warm.
const ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];

/// More resources than this in one response is a NACK (a server gone wrong, or hostile).
pub const MAX_RESOURCES: usize = 10_000;
/// Largest response message accepted.
pub(super) const MAX_MESSAGE_BYTES: usize = 32 << 20;
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// What one type's subscription holds across streams.
#[derive(Debug, Default, Clone)]
struct Sub {
    /// The last version accepted ("" before any).
    version: String,
    /// The nonce of the last response seen on this stream.
    nonce: String,
    /// Names asked for (empty: wildcard, for LDS and CDS).
    names: BTreeSet<String>,
}

pub struct Client {
    bootstrap: Bootstrap,
    base: Table,
    source: Arc<XdsSource>,
    subs: BTreeMap<&'static str, Sub>,
    snapshot: Snapshot,
    /// The text last applied, to skip a reload when a response changes nothing served.
    applied: Option<String>,
    /// A response arrived on the current stream: the backoff starts again from its base.
    healthy: bool,
    /// Wasm components named by listeners, by hash.
    modules: super::wasm::Modules,
}

impl Client {
    /// `base` holds the TOML file's tables when `[xds]` came from one.
    /// `key`: the ed25519 key Wasm components must be signed by.
    pub fn new(
        bootstrap: Bootstrap,
        base: Table,
        source: Arc<XdsSource>,
        key: Option<ed25519_dalek::VerifyingKey>,
    ) -> Client {
        let subs = ORDER.iter().map(|t| (*t, Sub::default())).collect();
        let modules = super::wasm::Modules::new(source.base_dir().to_path_buf(), key);
        Client {
            modules,
            bootstrap,
            base,
            source,
            subs,
            snapshot: Snapshot::default(),
            applied: None,
            healthy: false,
        }
    }

    pub(super) fn source(&self) -> &XdsSource {
        &self.source
    }

    pub(super) fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub(super) fn mark_healthy(&mut self) {
        self.healthy = true;
    }

    /// Runs for the life of the process.
    pub async fn run(mut self) {
        let mut failures: u32 = 0;
        let mut endpoint = 0usize;
        let mut delta = super::delta::DeltaState::default();
        loop {
            let target = self.bootstrap.server.endpoints[endpoint % self.bootstrap.server.endpoints.len()].clone();
            self.source.status(|s| s["connection"] = json!("connecting"));
            let result = match self.bootstrap.api {
                ApiType::Sotw => self.stream(&target).await,
                ApiType::Delta => self.delta_stream(&target, &mut delta).await,
            };
            match result {
                Ok(()) => tracing::warn!(server = %target, "xDS stream closed by the server"),
                Err(e) => tracing::warn!(server = %target, error = %e, "xDS stream failed"),
            }
            if let Some(state) = self.source.state() {
                state.reload_metrics().xds_reconnect();
            }
            self.source.status(|s| {
                s["connection"] = json!("disconnected");
                s["reconnects"] = json!(s["reconnects"].as_u64().unwrap_or(0) + 1);
            });
            endpoint += 1;
            if std::mem::take(&mut self.healthy) {
                failures = 0;
            }
            failures = failures.saturating_add(1);
            // Full jitter: a fleet that lost its server does not come back in step.
            let cap = BACKOFF_BASE.saturating_mul(1 << failures.min(8)).min(BACKOFF_MAX);
            let wait = cap.mul_f64(fastrand::f64());
            tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
        }
    }

    /// A channel to one endpoint of the ADS cluster, over TLS when the bootstrap says so.
    pub(super) async fn connect(&self, target: &str) -> anyhow::Result<tonic::transport::Channel> {
        let server = &self.bootstrap.server;
        let scheme = if server.tls.is_some() { "https" } else { "http" };
        let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{target}"))?
            .connect_timeout(server.connect_timeout)
            .http2_keep_alive_interval(Duration::from_secs(30));
        if let Some(tls) = &server.tls {
            use tonic::transport::{Certificate, ClientTlsConfig, Identity};
            let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
            let mut config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
            if let Some(sni) = &tls.sni {
                config = config.domain_name(sni.clone());
            }
            if let Some((chain, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(read(chain)?, read(key)?));
            }
            endpoint = endpoint.tls_config(config)?;
        }
        Ok(endpoint.connect().await?)
    }

    async fn stream(&mut self, target: &str) -> anyhow::Result<()> {
        let channel = self.connect(target).await?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
        let mut node = Some(self.node());
        for type_url in ORDER {
            let sub = self.subs.get_mut(type_url).map(|s| {
                s.nonce.clear();
                s.clone()
            });
            let Some(sub) = sub else { continue };
            // EDS, RDS and SDS are asked for only once something names their resources.
            if matches!(type_url, ENDPOINT | ROUTE | SECRET) && sub.names.is_empty() {
                continue;
            }
            tx.send(request(type_url, &sub, node.take(), None)).await?;
        }
        let mut responses = client
            .stream_aggregated_resources(tokio_stream_from(rx))
            .await?
            .into_inner();
        self.source.status(|s| s["connection"] = json!("connected"));
        tracing::info!(server = %target, "xDS stream open");
        while let Some(response) = responses.message().await? {
            self.healthy = true;
            for req in self.on_response(response).await {
                tx.send(req).await?;
            }
        }
        Ok(())
    }

    pub(super) fn node(&self) -> Node {
        let n = &self.bootstrap.node;
        let metadata = match pb_value(&n.metadata).kind {
            Some(Kind::StructValue(s)) => Some(s),
            _ => None,
        };
        #[allow(deprecated)]
        Node {
            id: n.id.clone(),
            cluster: n.cluster.clone(),
            metadata,
            user_agent_name: "weft".into(),
            user_agent_version_type: Some(
                envoy_types::pb::envoy::config::core::v3::node::UserAgentVersionType::UserAgentVersion(
                    env!("CARGO_PKG_VERSION").into(),
                ),
            ),
            ..Node::default()
        }
    }

    /// Handles one response; returns the ACK or NACK, then any new EDS/RDS subscription.
    async fn on_response(&mut self, resp: DiscoveryResponse) -> Vec<DiscoveryRequest> {
        let type_url: &'static str = match ORDER.iter().find(|t| **t == resp.type_url) {
            Some(t) => t,
            None => {
                let nack = DiscoveryRequest {
                    type_url: resp.type_url.clone(),
                    response_nonce: resp.nonce.clone(),
                    error_detail: Some(status(&format!("type {:?} was not asked for", resp.type_url))),
                    ..DiscoveryRequest::default()
                };
                return vec![nack];
            }
        };
        let started = std::time::Instant::now();
        let before = (
            self.snapshot.rds_names(),
            self.snapshot.eds_names(),
            super::tls::sds_names(&self.snapshot),
        );
        let outcome = self.accept(type_url, &resp).await;
        let mut out = Vec::new();
        let sub = self.subs.entry(type_url).or_default();
        sub.nonce = resp.nonce.clone();
        if outcome.is_ok() {
            sub.version = resp.version_info.clone();
        }
        self.answered(type_url, &resp.version_info, &outcome, started);
        let sub = self.subs.get(type_url).cloned().unwrap_or_default();
        out.push(request(type_url, &sub, None, outcome.err().as_ref()));
        // New names to watch: asked for after the ACK that introduced them.
        let after = (
            self.snapshot.rds_names(),
            self.snapshot.eds_names(),
            super::tls::sds_names(&self.snapshot),
        );
        for (type_url, old, new) in [
            (ROUTE, &before.0, &after.0),
            (ENDPOINT, &before.1, &after.1),
            (SECRET, &before.2, &after.2),
        ] {
            if old != new {
                let sub = self.subs.entry(type_url).or_default();
                sub.names = new.clone();
                out.push(request(type_url, sub, None, None));
            }
        }
        out
    }

    /// Records an answered response: logs, `/api/xds`, metrics, the audit trail.
    pub(super) fn answered(
        &self,
        type_url: &str,
        version: &str,
        outcome: &Result<(), Rejected>,
        started: std::time::Instant,
    ) {
        let short = short_type(type_url);
        match outcome {
            Ok(()) => {
                tracing::info!(r#type = short, version, "xDS update accepted");
                self.source.status(|s| {
                    let t = &mut s["types"][short];
                    t["version"] = json!(version);
                    t["updated_at"] = json!(crate::audit::now_rfc3339());
                    t["accepted"] = json!(t["accepted"].as_u64().unwrap_or(0) + 1);
                    t["apply_ms"] = json!(started.elapsed().as_secs_f64() * 1000.0);
                });
            }
            Err(why) => {
                tracing::warn!(r#type = short, version, reason = %why, "xDS update NACKed; the running config stays");
                self.source.status(|s| {
                    let t = &mut s["types"][short];
                    t["last_nack"] = json!({
                        "version": version,
                        "reason": why.0,
                        "time": crate::audit::now_rfc3339(),
                    });
                    t["rejected"] = json!(t["rejected"].as_u64().unwrap_or(0) + 1);
                });
            }
        }
        if let Some(state) = self.source.state() {
            let outcome_label = if outcome.is_ok() { "accepted" } else { "rejected" };
            state
                .reload_metrics()
                .xds_update(short, outcome_label, started.elapsed());
            let mut record = json!({
                "event": "xds",
                "type": short,
                "version": version,
                "outcome": outcome_label,
            });
            if let Err(why) = outcome {
                record["reason"] = json!(why.0);
            }
            state.audit.record(record);
        }
    }

    /// Validates the response whole and, when the snapshot is warm, applies it.
    async fn accept(&mut self, type_url: &'static str, resp: &DiscoveryResponse) -> Result<(), Rejected> {
        if resp.resources.len() > MAX_RESOURCES {
            return Err(Rejected(format!(
                "{} resources in one response (at most {MAX_RESOURCES})",
                resp.resources.len()
            )));
        }
        let mut next = self.snapshot.clone();
        // State of the World: a listener or cluster response is the whole set.
        match type_url {
            LISTENER => next.listeners.clear(),
            CLUSTER => next.clusters.clear(),
            // The server answered for every secret asked: one it did not send, it lacks.
            SECRET => next
                .sds_answered
                .extend(self.subs.get(SECRET).map(|s| s.names.clone()).unwrap_or_default()),
            _ => {}
        }
        let mut seen = HashSet::new();
        for any in &resp.resources {
            let name = put(&mut next, type_url, any)?;
            if !seen.insert(name.clone()) {
                return Err(Rejected(format!("resource {name:?} appears twice in one response")));
            }
        }
        self.commit(next).await
    }

    /// Makes `next` the snapshot held and, once it is warm, the config served.
    pub(super) async fn commit(&mut self, mut next: Snapshot) -> Result<(), Rejected> {
        // Route configurations and assignments no longer named are dropped.
        let (rds, eds) = (next.rds_names(), next.eds_names());
        next.routes.retain(|name, _| rds.contains(name));
        next.assignments.retain(|name, _| eds.contains(name));
        let sds = super::tls::sds_names(&next);
        next.secrets.retain(|name, _| sds.contains(name));
        next.sds_answered.retain(|name| sds.contains(name));
        // Wasm components are fetched (or found by hash) before anything is assembled; a
        // filter whose cluster waits for its endpoints keeps the snapshot warming.
        let mut wasm = Vec::new();
        for f in next.wasm_filters()? {
            match self.modules.resolve(&f, &next).await? {
                Some(path) => wasm.push((f, path)),
                None => {
                    self.snapshot = next;
                    return Ok(());
                }
            }
        }
        match next.assemble(&self.base, self.bootstrap.admin, &wasm)? {
            None => {
                // Warming: held until the resources it names arrive.
                self.snapshot = next;
                Ok(())
            }
            Some(text) if self.applied.as_ref() == Some(&text) => {
                // Same text, same secrets (the text names each by its hash).
                self.snapshot = next;
                Ok(())
            }
            Some(text) => {
                let origin = format!("<config from xDS, bootstrap {}>", self.bootstrap.origin);
                let secrets = Arc::new(super::tls::held(&next));
                let served = super::secret::view(&secrets);
                self.source
                    .check(&origin, &text, &secrets)
                    .map_err(|e| Rejected(format!("the resulting config is invalid: {e}")))?;
                self.source
                    .apply(origin, text.clone(), secrets)
                    .await
                    .map_err(|e| Rejected(format!("the resulting config was refused: {e}")))?;
                self.applied = Some(text);
                self.source.status(|s| s["secrets"] = served);
                self.modules.keep(wasm.iter().map(|(f, _)| f));
                self.snapshot = next;
                Ok(())
            }
        }
    }
}

/// Maps one resource into `next`; its name.
pub(super) fn put(
    next: &mut Snapshot,
    type_url: &str,
    any: &envoy_types::pb::google::protobuf::Any,
) -> Result<String, Rejected> {
    if any.type_url != type_url {
        return Err(Rejected(format!(
            "a resource of type {:?} in a {type_url} response",
            any.type_url
        )));
    }
    let bytes = any.value.as_slice();
    let bad = |e: prost::DecodeError| Rejected(format!("a resource does not decode: {e}"));
    Ok(match type_url {
        LISTENER => {
            let l = Listener::decode(bytes).map_err(bad)?;
            next.listeners.insert(l.name.clone(), listener::map(&l)?);
            l.name
        }
        CLUSTER => {
            let c = Cluster::decode(bytes).map_err(bad)?;
            next.clusters.insert(c.name.clone(), cluster::map(&c)?);
            c.name
        }
        SECRET => {
            let secret = super::secret::map(bytes)?;
            let name = secret.name.clone();
            next.secrets.insert(name.clone(), Arc::new(secret));
            name
        }
        ROUTE => {
            let rc = RouteConfiguration::decode(bytes).map_err(bad)?;
            next.routes.insert(rc.name.clone(), route::map(&rc)?);
            rc.name
        }
        _ => {
            let la = ClusterLoadAssignment::decode(bytes).map_err(bad)?;
            let at = format!("cluster_load_assignment {:?}", la.cluster_name);
            next.assignments
                .insert(la.cluster_name.clone(), cluster::endpoints(&la, &at)?);
            la.cluster_name
        }
    })
}

/// Forgets one resource a Delta response removed.
pub(super) fn remove(next: &mut Snapshot, type_url: &str, name: &str) {
    match type_url {
        LISTENER => drop(next.listeners.remove(name)),
        CLUSTER => drop(next.clusters.remove(name)),
        ROUTE => drop(next.routes.remove(name)),
        SECRET => drop(next.secrets.remove(name)),
        _ => drop(next.assignments.remove(name)),
    }
}

fn request(type_url: &str, sub: &Sub, node: Option<Node>, nack: Option<&Rejected>) -> DiscoveryRequest {
    DiscoveryRequest {
        version_info: sub.version.clone(),
        node,
        resource_names: sub.names.iter().cloned().collect(),
        type_url: type_url.to_owned(),
        response_nonce: sub.nonce.clone(),
        error_detail: nack.map(|r| status(&r.0)),
        ..DiscoveryRequest::default()
    }
}

pub(super) fn status(message: &str) -> Status {
    Status {
        // INVALID_ARGUMENT, as Envoy sends.
        code: 3,
        message: message.to_owned(),
        details: Vec::new(),
    }
}

pub fn short_type(type_url: &str) -> &'static str {
    match type_url {
        LISTENER => "lds",
        ROUTE => "rds",
        CLUSTER => "cds",
        SECRET => "sds",
        _ => "eds",
    }
}

fn pb_value(v: &serde_json::Value) -> PbValue {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(pb_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), pb_value(v))).collect(),
        }),
    };
    PbValue { kind: Some(kind) }
}

/// An mpsc receiver as the request stream tonic wants.
fn tokio_stream_from(
    mut rx: mpsc::Receiver<DiscoveryRequest>,
) -> impl futures_util::Stream<Item = DiscoveryRequest> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
