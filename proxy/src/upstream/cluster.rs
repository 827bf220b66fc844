//! Clusters: named groups of upstream endpoints, the balancer that picks one for each
//! try, and what guards them when configured (breaker, retries, outlier detection,
//! health checks). A cluster with none of those sends each request once to the endpoint
//! its balancer picks, as cheaply as a bare round robin.

use std::borrow::BorrowMut;
use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures_util::future::Either;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderName, Request, Response, Uri};
use prometheus_client::metrics::counter::Counter;
use rustls::pki_types::ServerName;

use super::balancer::{Balancer, InFlight, Latency, Member, hash};
use super::destination::{self, Destinations};
use super::error::{Broken, UpstreamError, error_chain};
use super::health::{self, EndpointHealth, Outlier};
use super::metrics::{ClusterCounters, EndpointCounters, UpstreamMetrics};
use super::pool::{ConnLimits, Connector, EndpointPool, PoolError, Replays};
use super::resolve::{self, Targets};
use super::retry::{self, RetryPolicy};
use super::slot::UpstreamSlot;
use super::wait::{self, SetBy, Wait};
use crate::body::Body;
use crate::body::PooledBody;
use crate::config::{ClusterConfig, ClusterKind, ConfigError, LbPolicy, Source, UpstreamProtocol};

/// The clusters of one config version, by name.
pub type Clusters = HashMap<Arc<str>, Arc<Cluster>>;

/// One upstream address and its connections.
pub struct Endpoint {
    pub addr: SocketAddr,
    authority: Authority,
    pub(super) pool: Arc<EndpointPool>,
    in_flight: InFlight,
    latency: Latency,
    pub(super) health: EndpointHealth,
    pub(super) counters: EndpointCounters,
}

/// The endpoints serving now and the balancer built over them.
pub(super) struct Hosts {
    pub endpoints: Box<[Arc<Endpoint>]>,
    balancer: Balancer,
}

/// Fixed endpoints are read in place; endpoints from DNS or a file are swapped whole.
enum HostsCell {
    Fixed(Hosts),
    Dynamic(ArcSwap<Hosts>),
}

/// A named group of endpoints and the pools of connections to them.
pub struct Cluster {
    pub name: Arc<str>,
    pub protocol: UpstreamProtocol,
    hosts: HostsCell,
    lb: LbPolicy,
    /// Least request weighs requests in flight by this decay's latency average.
    latency_decay: Option<Duration>,
    hash_on: Option<HashOn>,
    pub(super) connector: Connector,
    /// Breaker, retries, outlier detection, health: `None` when none is configured.
    guard: Option<Box<Guard>>,
    metrics: Arc<UpstreamMetrics>,
    /// Responses, failures and latency of this cluster's exchanges, whichever route,
    /// split or filter sent them here.
    pub counters: ClusterCounters,
    /// `kind = "original_destination"`: an endpoint per address intercepted clients dialled.
    destinations: Option<Destinations>,
}

/// What a hashing balancer keys a request by.
enum HashOn {
    Header(HeaderName),
    Cookie(Box<str>),
    ClientAddress,
}

/// The configured protections of a cluster.
struct Guard {
    max_requests: Option<u32>,
    max_retries: Option<u32>,
    active_requests: AtomicU32,
    active_retries: AtomicU32,
    retry: Option<RetryPolicy>,
    outlier: Option<Outlier>,
    /// Endpoints can be unavailable (outlier detection or health checks are on).
    checks_availability: bool,
    /// Which verdicts count: an endpoint carried over from a version with health checks or
    /// outlier detection may hold a stale one of a kind this version does not use.
    counts: health::Counts,
    panic_threshold: u8,
    /// 503s by limit: max_connections, max_pending_requests, max_requests.
    overloaded: [Counter; 3],
}

const LIMITS: [&str; 3] = ["max_connections", "max_pending_requests", "max_requests"];

impl Cluster {
    /// `https` when the cluster is reached over TLS, else `http` (a trace's `url.full`).
    pub fn scheme(&self) -> &'static str {
        if self.connector.tls.is_some() { "https" } else { "http" }
    }

    /// Builds a cluster: resolves its names (without blocking the runtime), reads its
    /// endpoints file, and starts the tasks that keep them and their health current. The
    /// tasks end when the cluster is dropped with its config version. Endpoints that
    /// `previous` (the running version's cluster of the same name) also had are kept, with
    /// their pools and health.
    pub async fn build(
        spanned: &toml::Spanned<ClusterConfig>,
        src: &Source,
        metrics: &Arc<UpstreamMetrics>,
        previous: Option<&Cluster>,
    ) -> Result<Arc<Cluster>, ConfigError> {
        let config = spanned.get_ref();
        let name: Arc<str> = config.name.as_str().into();
        let fail = |e: String| src.error_at(spanned.span(), format!("cluster {:?}: {e}", config.name));
        let targets = Targets::from_config(config, src)?;
        // An original-destination cluster has no endpoints of its own to resolve.
        let resolved = if config.kind == ClusterKind::OriginalDestination {
            Vec::new()
        } else {
            targets.resolve().await.map_err(|(span, e)| match span {
                Some(span) => src.error_at(span, format!("cluster {:?}: {e}", config.name)),
                None => fail(e),
            })?
        };

        let http2 = config.protocol == UpstreamProtocol::Http2;
        let tls = match &config.tls {
            None => None,
            Some(tls) => {
                let client_config = crate::tls::client_config(tls, http2).map_err(fail)?;
                let name = match &tls.server_name {
                    Some(name) => Some(
                        ServerName::try_from(name.clone()).map_err(|e| fail(format!("server_name {name:?}: {e}")))?,
                    ),
                    None => None,
                };
                Some((tokio_rustls::TlsConnector::from(Arc::new(client_config)), name))
            }
        };
        let breaker = config.circuit_breaker.as_ref().map(|b| b.get_ref().clone());
        let limits = breaker
            .as_ref()
            .filter(|b| b.max_connections.is_some() || b.max_pending_requests.is_some())
            .map(|b| Arc::new(ConnLimits::new(b.max_connections, b.max_pending_requests)));
        let guard = (breaker.is_some()
            || config.retry.is_some()
            || config.outlier_detection.is_some()
            || config.health_check.is_some())
        .then(|| {
            let b = breaker.clone().unwrap_or_default();
            Box::new(Guard {
                max_requests: b.max_requests,
                max_retries: b.max_retries,
                active_requests: AtomicU32::new(0),
                active_retries: AtomicU32::new(0),
                retry: config
                    .retry
                    .as_ref()
                    .map(|r| RetryPolicy::new(r.get_ref(), &name, metrics)),
                outlier: config.outlier_detection.as_ref().map(|o| Outlier::new(o.get_ref())),
                checks_availability: config.outlier_detection.is_some() || config.health_check.is_some(),
                counts: health::Counts {
                    checks: config.health_check.is_some(),
                    ejections: config.outlier_detection.is_some(),
                },
                panic_threshold: config.panic_threshold,
                overloaded: LIMITS.map(|limit| metrics.overloaded(&name, limit)),
            })
        });
        let hash_on = config.hash_on.as_ref().map(|h| {
            let h = h.get_ref();
            match (&h.header, &h.cookie) {
                // Checked to be a header name when the config was parsed.
                (Some(header), _) => {
                    HeaderName::from_bytes(header.as_bytes()).map_or(HashOn::ClientAddress, HashOn::Header)
                }
                (None, Some(cookie)) => HashOn::Cookie(cookie.as_str().into()),
                (None, None) => HashOn::ClientAddress,
            }
        });

        // Endpoints (pools, health) carry over a reload only when they would connect the
        // same way.
        let same_pools = previous.filter(|p| {
            p.protocol == config.protocol
                && p.connector.tls.is_none()
                && p.connector.mark == config.mark
                && config.tls.is_none()
                && p.pool_settings() == (config.max_idle_per_endpoint.max(1), config.idle_timeout)
        });
        let mut cluster = Cluster {
            name,
            protocol: config.protocol,
            hosts: HostsCell::Fixed(Hosts {
                endpoints: Box::new([]),
                balancer: Balancer::build(LbPolicy::RoundRobin, &[]),
            }),
            lb: config.lb(),
            latency_decay: config.latency_ewma,
            hash_on,
            connector: Connector {
                connect_timeout: config.connect_timeout,
                http2,
                tls,
                limits,
                max_idle: config.max_idle_per_endpoint,
                idle_timeout: config.idle_timeout,
                mark: config.mark,
            },
            guard,
            metrics: metrics.clone(),
            counters: ClusterCounters::new(metrics, &config.name),
            destinations: (config.kind == ClusterKind::OriginalDestination).then(|| {
                Destinations::new(
                    config.max_destinations,
                    metrics.endpoint_labelled(&config.name, destination::LABEL.to_owned()),
                )
            }),
        };
        let kept = same_pools.map(|p| p.endpoints_now()).unwrap_or_default();
        let hosts = cluster.hosts_for(&resolved, &kept);
        cluster.hosts = if targets.is_dynamic() {
            HostsCell::Dynamic(ArcSwap::from_pointee(hosts))
        } else {
            HostsCell::Fixed(hosts)
        };
        let cluster = Arc::new(cluster);
        if tokio::runtime::Handle::try_current().is_ok() {
            if targets.is_dynamic() {
                tokio::spawn(resolve::refresh(Arc::downgrade(&cluster), targets, resolved));
            }
            if let Some(check) = &config.health_check {
                tokio::spawn(health::probe_forever(Arc::downgrade(&cluster), check.get_ref().clone()));
            }
        }
        Ok(cluster)
    }

    /// [`Cluster::build`] for a cluster of addresses only (no names, no endpoints file),
    /// which has nothing to wait for: for tests and tools outside a runtime.
    pub fn build_fixed(
        spanned: &toml::Spanned<ClusterConfig>,
        src: &Source,
        metrics: &Arc<UpstreamMetrics>,
    ) -> Result<Arc<Cluster>, ConfigError> {
        let build = std::pin::pin!(Cluster::build(spanned, src, metrics, None));
        match build.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => Err(src.error_at(
                spanned.span(),
                "this cluster's endpoints need resolving; build it on a runtime",
            )),
        }
    }

    fn pool_settings(&self) -> (usize, Duration) {
        (self.connector.max_idle.max(1), self.connector.idle_timeout)
    }

    /// Endpoints for `targets`, keeping those `previous` already had — their pools, their
    /// health and their counters (the same series: same cluster, same address) — and a
    /// balancer over them. `previous` is this cluster's endpoints, or those of the running
    /// version's cluster of the same name when its pools fit this one.
    pub(super) fn hosts_for(&self, targets: &[(SocketAddr, u32)], previous: &[Arc<Endpoint>]) -> Hosts {
        let endpoints: Box<[Arc<Endpoint>]> = targets
            .iter()
            .map(|(addr, _)| match previous.iter().find(|e| e.addr == *addr) {
                Some(kept) => kept.clone(),
                None => Arc::new(self.endpoint(*addr)),
            })
            .collect();
        let members: Vec<Member> = targets
            .iter()
            .map(|(addr, weight)| Member {
                weight: *weight,
                key: hash(addr),
            })
            .collect();
        Hosts {
            endpoints,
            balancer: Balancer::build(self.lb, &members),
        }
    }

    fn endpoint(&self, addr: SocketAddr) -> Endpoint {
        self.endpoint_counted(addr, self.metrics.endpoint(&self.name, addr))
    }

    fn endpoint_counted(&self, addr: SocketAddr, counters: super::metrics::EndpointCounters) -> Endpoint {
        let authority = Authority::try_from(addr.to_string()).unwrap_or_else(|_| Authority::from_static("upstream"));
        Endpoint {
            addr,
            authority,
            pool: EndpointPool::new(addr, self.connector.max_idle, self.connector.idle_timeout),
            in_flight: InFlight::default(),
            latency: Latency::default(),
            health: EndpointHealth::default(),
            counters,
        }
    }

    /// Whether this cluster forwards to the address the client dialled
    /// (`kind = "original_destination"`): then requests go through [`Cluster::send_to`].
    pub fn is_original_destination(&self) -> bool {
        self.destinations.is_some()
    }

    /// Destinations holding a pool now (an original-destination cluster; 0 otherwise).
    pub fn destinations_now(&self) -> usize {
        self.destinations.as_ref().map_or(0, Destinations::len)
    }

    /// Sends `req` once to `dst`, the original destination of the client's connection
    /// (`None` when the connection was not intercepted: refused), on that destination's
    /// pool. The connection's listener has already refused destinations that are the
    /// proxy itself. `noted`, when the request is recorded, learns the endpoint.
    pub async fn send_to(
        &self,
        dst: Option<SocketAddr>,
        req: Request<Body>,
        wait: impl Into<Wait>,
        noted: Option<&UpstreamSlot>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let (Some(destinations), Some(dst)) = (&self.destinations, dst) else {
            return Err(UpstreamError::BadRequest(format!(
                "cluster {:?} forwards to the original destination, and this connection has none (not intercepted)",
                self.name
            )));
        };
        let endpoint = destinations
            .get(dst, || self.endpoint_counted(dst, destinations.counters.clone()))
            .ok_or_else(|| self.overloaded("max_destinations"))?;
        self.attempt(
            Picked::Snapshot(endpoint),
            req,
            wait.into(),
            Replays::new(1, None),
            noted,
        )
        .await
    }

    /// Where a connection passed through whole goes (a TLS route's, by SNI): the address
    /// of the endpoint the balancer picks, with the cluster's `mark` and connect timeout.
    /// `None` when the cluster has no endpoint now (or forwards to original destinations).
    pub fn pick_for_passthrough(&self) -> Option<(SocketAddr, Option<u32>, Duration)> {
        if self.destinations.is_some() {
            return None;
        }
        let key = fastrand::u64(..);
        let addr = match &self.hosts {
            HostsCell::Fixed(hosts) if !hosts.endpoints.is_empty() => self.pick(hosts, key, None).addr,
            HostsCell::Dynamic(cell) => {
                let hosts = cell.load();
                if hosts.endpoints.is_empty() {
                    return None;
                }
                self.pick(&hosts, key, None).addr
            }
            HostsCell::Fixed(_) => return None,
        };
        Some((addr, self.connector.mark, self.connector.connect_timeout))
    }

    /// Replaces the endpoints (DNS or the endpoints file changed).
    pub(super) fn set_hosts(&self, hosts: Hosts) {
        if let HostsCell::Dynamic(cell) = &self.hosts {
            cell.store(Arc::new(hosts));
        }
    }

    pub(super) fn endpoints_now(&self) -> Vec<Arc<Endpoint>> {
        match &self.hosts {
            HostsCell::Fixed(h) => h.endpoints.to_vec(),
            HostsCell::Dynamic(h) => h.load().endpoints.to_vec(),
        }
    }

    /// Sends `req` to an endpoint and waits at most `wait` for the response head (all
    /// tries together; a bare `Duration` is a route's timeout). `client` is the downstream
    /// address, for `hash_on.client_address`. `noted`, when the request is recorded,
    /// learns the endpoint of each try (the access log names the last one).
    ///
    /// Not an `async fn`: without a guard the endpoint is picked here and the one try's
    /// future is returned as it is, so a request's future carries no wrapper around it
    /// (a wrapper is a larger future, copied as the request's future moves).
    pub fn send<'a>(
        &'a self,
        req: Request<Body>,
        wait: impl Into<Wait>,
        client: Option<IpAddr>,
        noted: Option<&'a UpstreamSlot>,
    ) -> impl Future<Output = Result<Response<PooledBody>, UpstreamError>> + Send + 'a {
        let wait = wait.into();
        let key = self.key(&req, client);
        if self.destinations.is_some() {
            // Mirrors and callouts have no connection whose destination this could be.
            let refused = UpstreamError::BadRequest(format!(
                "cluster {:?} forwards only a route's requests to their original destination",
                self.name
            ));
            return Either::Right(Either::Left(std::future::ready(Err(refused))));
        }
        match &self.guard {
            None => {
                let endpoint = match &self.hosts {
                    HostsCell::Fixed(hosts) => Picked::Fixed(self.pick(hosts, key, None)),
                    HostsCell::Dynamic(cell) => Picked::Snapshot(self.pick(&cell.load(), key, None).clone()),
                };
                // The pool may send it again once, uncounted: this cluster counts no tries.
                Either::Left(self.attempt(endpoint, req, wait, Replays::new(1, None), noted))
            }
            // Boxed: retries and their state are the uncommon case.
            Some(guard) => Either::Right(Either::Right(Box::pin(self.send_guarded(guard, req, wait, key, noted)))),
        }
    }

    /// The request's hash for a hashing balancer: its header, cookie or client address,
    /// or a random one when the request has none (spread like `random`).
    fn key(&self, req: &Request<Body>, client: Option<IpAddr>) -> u64 {
        let Some(on) = &self.hash_on else { return 0 };
        let found = match on {
            HashOn::Header(name) => req.headers().get(name).map(|v| hash(v.as_bytes())),
            HashOn::Cookie(name) => cookie(req.headers(), name).map(hash),
            HashOn::ClientAddress => client.map(hash),
        };
        found.unwrap_or_else(|| fastrand::u64(..))
    }

    /// The balancer's choice, or with health on, the next available one it prefers. When
    /// fewer endpoints than the panic threshold are available, health is ignored.
    fn pick<'h>(&self, hosts: &'h Hosts, key: u64, avoid: Option<SocketAddr>) -> &'h Arc<Endpoint> {
        let endpoints = &hosts.endpoints;
        let n = endpoints.len();
        let first = hosts.balancer.pick(n, key, |i| self.load(&endpoints[i]));
        let Some(guard) = self.guard.as_deref().filter(|g| g.checks_availability) else {
            return &endpoints[first];
        };
        let now = health::now_ms();
        let usable = |e: &Endpoint| {
            e.health.available(now, guard.counts, &e.counters, &self.name, e.addr) && Some(e.addr) != avoid
        };
        if usable(&endpoints[first]) {
            return &endpoints[first];
        }
        let available = endpoints
            .iter()
            .filter(|e| e.health.available(now, guard.counts, &e.counters, &self.name, e.addr))
            .count();
        if available * 100 < usize::from(guard.panic_threshold) * n || available == 0 {
            return &endpoints[first];
        }
        for attempt in 1..=(2 * n as u32) {
            let i = hosts.balancer.fallback(n, key, attempt);
            if usable(&endpoints[i]) {
                return &endpoints[i];
            }
        }
        endpoints
            .iter()
            .find(|e| usable(e))
            .or_else(|| {
                endpoints
                    .iter()
                    .find(|e| e.health.available(now, guard.counts, &e.counters, &self.name, e.addr))
            })
            .unwrap_or(&endpoints[first])
    }

    /// An endpoint's load for least request: requests in flight, or with a latency
    /// average, its expected wait (in-flight requests and this one, times the average).
    fn load(&self, endpoint: &Endpoint) -> u64 {
        let in_flight = u64::from(endpoint.in_flight.get());
        match self.latency_decay {
            None => in_flight,
            Some(_) => (in_flight + 1).saturating_mul(endpoint.latency.nanos()),
        }
    }

    /// One try at one endpoint (more, when `replays` lets the pool send it again). Owned
    /// `Replays` when nobody counts them, borrowed when the retry loop does: either way
    /// the try's future is this one, with no wrapper.
    async fn attempt<R: BorrowMut<Replays> + Send>(
        &self,
        endpoint: Picked<'_>,
        mut req: Request<Body>,
        wait: Wait,
        mut replays: R,
        noted: Option<&UpstreamSlot>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        if self.connector.http2 {
            // HTTP/2 carries the target as :scheme and :authority. The authority is the
            // request's host, and never a Host header beside it that could disagree (RFC
            // 9113 §8.3.1): `forward` moved it into the URI already; a request made
            // elsewhere (a mirror's, a callout's) may still carry it as Host, which then
            // says what its maker meant.
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            let host = req
                .headers_mut()
                .remove(http::header::HOST)
                .and_then(|h| Authority::try_from(h.as_bytes()).ok());
            let authority = host
                .or_else(|| req.uri().authority().cloned())
                .unwrap_or_else(|| endpoint.authority.clone());
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(if self.connector.tls.is_some() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            });
            parts.authority = Some(authority);
            parts.path_and_query = Some(path);
            *req.uri_mut() = Uri::from_parts(parts).map_err(|e| UpstreamError::BadRequest(e.to_string()))?;
        } else if req.uri().authority().is_some() {
            // HTTP/1.1 to an origin: origin-form (the Host header names the host).
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            *req.uri_mut() = Uri::from(path);
        }

        if let Some(noted) = noted {
            noted.set(endpoint.addr);
        }
        endpoint.counters.requests.inc();
        let _in_flight = (self.lb == LbPolicy::LeastRequest).then(|| endpoint.in_flight.enter());
        let started = self.latency_decay.map(|_| health::since_start());
        // A body still arriving from the client: its wait is the client's, not counted.
        // The upload is followed only on a wait the route set; a client's deadline runs
        // from the start of the call, as gRPC defines it.
        let upload = req.extensions().get::<Arc<crate::body::Upload>>().cloned();
        let followed = match wait.set_by {
            SetBy::Route => upload.as_deref(),
            SetBy::Client => None,
        };
        // Boxed: the exchange's state (the request, hyper's send, a replay's copy) is the
        // largest part of a request's future. Unboxed, every layer above — the timeout,
        // this try, `proxy::send`, `proxy::handle`, hyper's slot for the service future —
        // would hold it again and copy it as each future moves into the next (memcpy was
        // 16 % of a request's instructions). One allocation instead.
        let exchange = Box::pin(endpoint.pool.send(&self.connector, req, replays.borrow_mut()));
        let result = match wait::within(wait.limit, followed, exchange).await {
            None => Err(match wait.set_by {
                SetBy::Route => UpstreamError::Timeout {
                    endpoint: endpoint.addr,
                    timeout: wait.limit,
                },
                SetBy::Client => UpstreamError::Deadline {
                    endpoint: endpoint.addr,
                    deadline: wait.limit,
                },
            }),
            Some(Ok(resp)) => Ok(resp),
            Some(Err(PoolError::Connect(reason))) => Err(UpstreamError::Connect {
                endpoint: endpoint.addr,
                reason,
            }),
            Some(Err(PoolError::Overloaded(limit))) => Err(self.overloaded(limit)),
            // The client's body failing broke the exchange, however the connection tells
            // it (over HTTP/2 the upstream's stream is reset and hyper says only that).
            Some(Err(PoolError::Exchange(e))) => match crate::body::ClientBodyFault::find(Some(&e))
                .or_else(|| upload.as_deref().and_then(crate::body::Upload::fault))
            {
                Some(fault) => Err(UpstreamError::ClientBody(fault)),
                None => Err(UpstreamError::Exchange {
                    endpoint: endpoint.addr,
                    reason: error_chain(&e),
                    cause: if e.is_parse() { Broken::Malformed } else { Broken::Reset },
                }),
            },
        };
        if failed(&result) {
            endpoint.counters.failures.inc();
        }
        if let (Some(decay), Some(started)) = (self.latency_decay, started) {
            let now = health::since_start();
            endpoint.latency.observe(now.saturating_sub(started), now, decay);
        }
        result
    }

    /// The breaker's answer for `limit`, counted.
    fn overloaded(&self, limit: &'static str) -> UpstreamError {
        if let Some(guard) = &self.guard
            && let Some(i) = LIMITS.iter().position(|l| *l == limit)
        {
            guard.overloaded[i].inc();
        }
        UpstreamError::Overloaded {
            cluster: self.name.clone(),
            limit,
        }
    }

    /// A request to a cluster with a breaker, retries or health: admitted under
    /// `max_requests`, then tried until a try succeeds, fails for good, or the tries,
    /// the retry budget or the time run out.
    async fn send_guarded(
        &self,
        guard: &Guard,
        req: Request<Body>,
        wait: Wait,
        key: u64,
        noted: Option<&UpstreamSlot>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let _active =
            Entered::new(&guard.active_requests, guard.max_requests).ok_or_else(|| self.overloaded("max_requests"))?;
        let hosts = self.hosts_now();
        let Some(policy) = &guard.retry else {
            let endpoint = self.pick(&hosts, key, None);
            let result = self
                .attempt(Picked::Fixed(endpoint), req, wait, Replays::new(1, None), noted)
                .await;
            self.observe(guard, endpoint, &result);
            return result;
        };

        let (head, body) = req.into_parts();
        // A client's deadline runs from the start of the call; the route's from the end of
        // the request, which a body read whole for retries has reached.
        let started = Instant::now();
        let (mut once, replay) = policy.prepare_body(&head.method, body).await?;
        let deadline = match wait.set_by {
            SetBy::Route => Instant::now() + wait.limit,
            SetBy::Client => started + wait.limit,
        };
        let mut previous = None;
        let mut attempt = 1;
        // Held from a retry's decision until the next decision: the retry is in flight.
        let mut retrying: Option<Entered<'_>> = None;
        loop {
            let body = match (once.take(), &replay) {
                (Some(body), _) => body,
                (None, Some(bytes)) => Body::full(bytes.clone()),
                (None, None) => Body::empty(),
            };
            let req = retry::request(&head, body, attempt);
            let endpoint = self.pick(&hosts, key, previous);
            let left = deadline.saturating_duration_since(Instant::now());
            let try_timeout = policy.per_try_timeout.map_or(left, |t| t.min(left));
            // The pool's send again on a fresh connection is a try too: it may have
            // reached the upstream.
            let mut replays = Replays::new(u32::from(attempt < policy.attempts), Some(attempt));
            let try_wait = if try_timeout < left {
                Wait::from(try_timeout)
            } else {
                wait.with_limit(try_timeout)
            };
            let result = self
                .attempt(Picked::Fixed(endpoint), req, try_wait, &mut replays, noted)
                .await;
            attempt += replays.used;
            self.observe(guard, endpoint, &result);

            let Some(reason) = policy.retryable(&result, try_timeout < left) else {
                return result;
            };
            let skipped = if attempt >= policy.attempts {
                Some("attempts")
            } else if !policy.allows(&head.method) {
                Some("method")
            } else if replay.is_none() {
                Some("body_not_replayable")
            } else if deadline <= Instant::now() {
                Some("deadline")
            } else {
                None
            };
            if let Some(skipped) = skipped {
                if skipped != "attempts" {
                    policy.skipped(skipped);
                }
                return result;
            }
            // This request's previous retry, if any, is over: its place is given back first.
            drop(retrying.take());
            let allowed = policy.budget_allows(
                guard.active_retries.load(Ordering::Relaxed),
                guard.active_requests.load(Ordering::Relaxed),
                health::since_start(),
            );
            if !allowed {
                policy.skipped("budget");
                return result;
            }
            let Some(entered) = Entered::new(&guard.active_retries, guard.max_retries) else {
                policy.skipped("max_retries");
                return result;
            };
            retrying.replace(entered);
            policy.retried(reason);
            tracing::info!(
                cluster = %self.name,
                endpoint = %endpoint.addr,
                attempt = attempt + 1,
                reason,
                "retrying"
            );
            drop(result);
            previous = Some(endpoint.addr);
            let pause = policy
                .backoff(attempt)
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// The endpoints serving now, with their health when the cluster checks it (health
    /// checks or outlier detection; `None` otherwise), for the admin API.
    pub fn endpoint_states(&self) -> Vec<(SocketAddr, Option<&'static str>)> {
        let hosts = self.hosts_now();
        let now = health::now_ms();
        let counts = self
            .guard
            .as_ref()
            .map(|g| g.counts)
            .filter(|c| c.checks || c.ejections);
        hosts
            .endpoints
            .iter()
            .map(|e| (e.addr, counts.map(|c| e.health.state(now, c))))
            .collect()
    }

    /// The endpoints for one request, held for all its tries: fixed ones in place, a
    /// snapshot of changing ones.
    fn hosts_now(&self) -> HostsRef<'_> {
        match &self.hosts {
            HostsCell::Fixed(hosts) => HostsRef::Fixed(hosts),
            HostsCell::Dynamic(cell) => HostsRef::Dynamic(cell.load_full()),
        }
    }

    /// Outlier detection's view of one try.
    fn observe(&self, guard: &Guard, endpoint: &Endpoint, result: &Result<Response<PooledBody>, UpstreamError>) {
        let Some(outlier) = &guard.outlier else { return };
        if matches!(
            result,
            Err(UpstreamError::ClientBody(_)
                | UpstreamError::Deadline { .. }
                | UpstreamError::BadRequest(_)
                | UpstreamError::Overloaded { .. })
        ) {
            return;
        }
        if failed(result) {
            let hosts = self.endpoints_now();
            outlier.failure(endpoint, &hosts, &self.name);
        } else {
            endpoint.health.success();
        }
    }
}

/// The endpoint of one try: in place when the endpoints are fixed, held when they can change.
enum Picked<'a> {
    Fixed(&'a Arc<Endpoint>),
    Snapshot(Arc<Endpoint>),
}

impl std::ops::Deref for Picked<'_> {
    type Target = Endpoint;
    fn deref(&self) -> &Endpoint {
        match self {
            Picked::Fixed(e) => e,
            Picked::Snapshot(e) => e,
        }
    }
}

enum HostsRef<'a> {
    Fixed(&'a Hosts),
    Dynamic(Arc<Hosts>),
}

impl std::ops::Deref for HostsRef<'_> {
    type Target = Hosts;
    fn deref(&self) -> &Hosts {
        match self {
            HostsRef::Fixed(h) => h,
            HostsRef::Dynamic(h) => h,
        }
    }
}

/// Whether a try counts as an endpoint's failure: no answer, or a 5xx one. What the
/// client caused (its body failing, its deadline passing) is not.
fn failed(result: &Result<Response<PooledBody>, UpstreamError>) -> bool {
    match result {
        Ok(resp) => resp.status().is_server_error(),
        Err(UpstreamError::Connect { .. } | UpstreamError::Exchange { .. } | UpstreamError::Timeout { .. }) => true,
        Err(_) => false,
    }
}

/// A place under a concurrency limit, given back when dropped.
struct Entered<'a>(&'a AtomicU32);

impl<'a> Entered<'a> {
    fn new(count: &'a AtomicU32, max: Option<u32>) -> Option<Entered<'a>> {
        let now = count.fetch_add(1, Ordering::AcqRel) + 1;
        let entered = Entered(count);
        max.is_none_or(|max| now <= max).then_some(entered)
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get_all(http::header::COOKIE).iter().find_map(|v| {
        v.as_bytes().split(|b| *b == b';').find_map(|pair| {
            let pair = pair.trim_ascii();
            let (n, value) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
            (n == name.as_bytes()).then(|| &value[1..])
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = http::HeaderMap::new();
        headers.append(
            http::header::COOKIE,
            http::HeaderValue::from_static("a=1; session=abc; b=2"),
        );
        headers.append(http::header::COOKIE, http::HeaderValue::from_static("other=x"));
        assert_eq!(cookie(&headers, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(&headers, "other"), Some(&b"x"[..]));
        assert_eq!(cookie(&headers, "sess"), None);
    }
}
