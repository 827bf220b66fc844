//! `xds-fleet`: one ADS server (`weft_conformance::ads`), a fleet of simulated ADS
//! subscribers and real `weft` proxies under load. It pushes route changes and measures how
//! long each subscriber takes to converge, the bytes each push costs the server and what an
//! applied update costs Weft. `bench/xds-fleet` builds and runs it; docs/xds.md ("A fleet")
//! says what each number means.
//!
//! A simulated subscriber is one ADS stream on its own connection, with its own node id,
//! subscribing as Weft does (CDS and LDS, then EDS and RDS for the names they reference)
//! and ACKing every response; it has converged on a push when it ACKs that version. A Weft
//! has converged when its responses carry the pushed version (the route configuration adds
//! `x-fleet-version`), or, with no load running, when `/api/xds` shows it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{HeaderValue, HeaderValueOption, Node};
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter};
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action, route_match,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use http_body_util::{BodyExt, Full};
use prost::Message;
use tokio::sync::mpsc;
use weft_conformance::ads::{self, Ads, CLUSTER, ENDPOINT, LISTENER, ROUTE, Resources, TYPES};
use weft_conformance::{Upstream, Weft};

const VERSION_HEADER: &str = "x-fleet-version";
/// A push not converged within this long counts as this long (and fails the run).
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(10);
const USAGE: &str = "usage: xds-fleet --weft PATH [--clients N (200)] [--proxies N (2)] [--pushes K (20)] \
[--clusters N (20)] [--connections N per proxy (8)] [--delta] [--weft-cpus LIST]";

struct Args {
    weft: PathBuf,
    clients: usize,
    proxies: usize,
    pushes: u64,
    clusters: usize,
    connections: usize,
    delta: bool,
    /// `taskset -c` list for the Weft processes.
    weft_cpus: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        weft: PathBuf::new(),
        clients: 200,
        proxies: 2,
        pushes: 20,
        clusters: 20,
        connections: 8,
        delta: false,
        weft_cpus: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|e| format!("{arg} {v}: {e}"));
        match arg.as_str() {
            "--weft" => args.weft = value()?.into(),
            "--clients" => args.clients = number(value()?)?,
            "--proxies" => args.proxies = number(value()?)?,
            "--pushes" => args.pushes = number(value()?)? as u64,
            "--clusters" => args.clusters = number(value()?)?,
            "--connections" => args.connections = number(value()?)?,
            "--delta" => args.delta = true,
            "--weft-cpus" => args.weft_cpus = Some(value()?),
            _ => return Err(format!("unknown argument {arg}")),
        }
    }
    if args.weft.as_os_str().is_empty() {
        return Err("--weft is required".into());
    }
    if args.pushes == 0 || args.connections == 0 {
        return Err("--pushes and --connections must be at least 1".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("xds-fleet: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // One single-threaded runtime per role, each on named threads: the CPU each role took is
    // read per thread from /proc/self/task.
    let rt = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .expect("runtime")
    };
    let roles = Roles {
        ads: rt("fleet-ads"),
        sim: rt("fleet-sim"),
        load: rt("fleet-load"),
        origin: rt("fleet-origin"),
    };
    let main = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match main.block_on(run(&args, &roles)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("xds-fleet: {e:#}");
            ExitCode::from(2)
        }
    }
}

struct Roles {
    ads: tokio::runtime::Runtime,
    sim: tokio::runtime::Runtime,
    load: tokio::runtime::Runtime,
    origin: tokio::runtime::Runtime,
}

/// What one subscriber (simulated or Weft) last showed of each type: the version and when.
#[derive(Default)]
struct Seen {
    /// Per type of [`TYPES`]: (version, nanoseconds since the run's epoch).
    types: [Mutex<(u64, u64)>; 4],
    /// From the subscriber's start to its first full config (nanoseconds; 0 before).
    ready_ns: AtomicU64,
    /// From the subscriber's start to its connection being up (TCP and HTTP/2 handshakes).
    connected_ns: AtomicU64,
}

impl Seen {
    fn record(&self, type_url: &str, version: u64, at: u64) {
        if let Some(i) = TYPES.iter().position(|t| *t == type_url) {
            let mut slot = self.types[i].lock().expect("seen lock");
            if version > slot.0 {
                *slot = (version, at);
            }
        }
    }

    fn get(&self, type_url: &str) -> (u64, u64) {
        let i = TYPES.iter().position(|t| *t == type_url).expect("a known type");
        *self.types[i].lock().expect("seen lock")
    }
}

/// Nanoseconds since `epoch`.
fn since(epoch: Instant) -> u64 {
    nanos(epoch.elapsed())
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

async fn run(args: &Args, roles: &Roles) -> anyhow::Result<bool> {
    let epoch = Instant::now();
    let (a, b) = roles
        .origin
        .spawn(async { (Upstream::echo("a").await, Upstream::echo("b").await) })
        .await?;
    let upstreams = [a.addr, b.addr];
    let ads = Ads::new(Resources {
        version: 1,
        by_type: vec![
            (CLUSTER, clusters(args.clusters)),
            (ENDPOINT, assignments(args.clusters, upstreams, 1)),
            (LISTENER, vec![ads::listener("main", Vec::new())]),
            (ROUTE, vec![routes(args.clusters, 1)]),
        ],
    });
    let port = weft_conformance::ReservedPort::new();
    let server = {
        let (ads, port) = (ads.clone(), port.port);
        roles.ads.spawn(async move { ads.serve(port).await }).await?
    };
    let server_addr: SocketAddr = ([127, 0, 0, 1], port.port).into();
    let mode = if args.delta { "Delta" } else { "SotW" };
    eprintln!(
        "xds-fleet: {mode}, {} simulated subscribers, {} Weft proxies, {} clusters, {} pushes",
        args.clients, args.proxies, args.clusters, args.pushes
    );

    // The fleet: every simulated subscriber and every Weft starts at once.
    let sims: Vec<Arc<Seen>> = (0..args.clients).map(|_| Arc::new(Seen::default())).collect();
    let sim_errors = Arc::new(AtomicUsize::new(0));
    for (id, seen) in sims.iter().enumerate() {
        let (seen, errors, delta) = (seen.clone(), sim_errors.clone(), args.delta);
        roles.sim.spawn(async move {
            let result = if delta {
                delta_subscriber(id, server_addr, &seen, epoch).await
            } else {
                sotw_subscriber(id, server_addr, &seen, epoch).await
            };
            if let Err(e) = result
                && errors.fetch_add(1, Ordering::Relaxed) < 3
            {
                eprintln!("xds-fleet: simulated subscriber {id}: {e:#}");
            }
        });
    }
    let dir = tempfile::tempdir()?;
    let starts = (0..args.proxies).map(|i| start_weft(args, i, server_addr, dir.path()));
    let wefts = futures_util::future::try_join_all(starts).await?;
    let wait_sims = async {
        let deadline = Instant::now() + Duration::from_secs(30);
        while sims.iter().any(|s| s.ready_ns.load(Ordering::Relaxed) == 0) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} of {} simulated subscribers got no full config within 30 s",
                sims.iter().filter(|s| s.ready_ns.load(Ordering::Relaxed) == 0).count(),
                sims.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    };
    wait_sims.await?;
    let sim_ready: Vec<Duration> = sims
        .iter()
        .map(|s| Duration::from_nanos(s.ready_ns.load(Ordering::Relaxed)))
        .collect();
    let sim_connected: Vec<Duration> = sims
        .iter()
        .map(|s| Duration::from_nanos(s.connected_ns.load(Ordering::Relaxed)))
        .collect();
    let weft_ready: Vec<Duration> = wefts.iter().map(|w| w.ready).collect();

    // Load on every Weft, then the pushes.
    let load = Load::start(&roles.load, &wefts, args.connections, epoch);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut under_load = Vec::new();
    for _ in 0..args.pushes {
        under_load.push(push_routes(&ads, args, &sims, Observe::Load(&load), epoch).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (requests, failures) = load.stop().await;

    // The same pushes with no load: what an applied update costs Weft and the server.
    let cpu_before: Vec<(u64, u64)> = wefts.iter().map(|w| proc_usage(w.weft.pid())).collect();
    let threads_before = thread_cpu();
    let mut idle = Vec::new();
    for _ in 0..args.pushes {
        idle.push(push_routes(&ads, args, &sims, Observe::Idle(&wefts), epoch).await);
    }
    let threads_after = thread_cpu();
    let cpu_after: Vec<(u64, u64)> = wefts.iter().map(|w| proc_usage(w.weft.pid())).collect();

    // One endpoint change in one cluster: where Delta and SotW differ most.
    let eds = push_endpoints(&ads, args, &sims, upstreams, epoch).await;

    // Streams that fail from here on fail because the server stops: not counted, not shown.
    let sim_errors = sim_errors.swap(usize::MAX / 2, Ordering::Relaxed);
    drop(server);
    let report = Report {
        args,
        mode,
        sim_ready,
        sim_connected,
        weft_ready,
        under_load,
        idle,
        eds,
        requests,
        failures,
        cpu_before,
        cpu_after,
        threads_before,
        threads_after,
        apply_ms: wefts_apply_ms(&wefts).await,
        sim_errors,
    };
    Ok(report.print())
}

/// The CDS resources: `a`, `b` and `c0…` (EDS clusters).
fn clusters(n: usize) -> Vec<Any> {
    let mut all = vec![ads::eds_cluster("a"), ads::eds_cluster("b")];
    all.extend((0..n).map(|i| ads::eds_cluster(&format!("c{i}"))));
    all
}

/// Endpoints: `a` and `b` on their upstreams, every `c…` on both; `c0` also on a third
/// address from `generation` 2 on (the EDS push).
fn assignments(n: usize, upstreams: [SocketAddr; 2], generation: u64) -> Vec<Any> {
    let mut all = vec![
        ads::assignment("a", &upstreams[..1]),
        ads::assignment("b", &upstreams[1..]),
    ];
    for i in 0..n {
        let mut at = upstreams.to_vec();
        if i == 0 && generation > 1 {
            at.push(SocketAddr::from(([127, 0, 0, 1], 1)));
        }
        all.push(ads::assignment(&format!("c{i}"), &at));
    }
    all
}

/// One route configuration: `/c<i>` to cluster `c<i>`, everything else to `a` (odd
/// versions) or `b` (even), and `x-fleet-version: <version>` on every response.
fn routes(n: usize, version: u64) -> Any {
    let to = |cluster: String| {
        Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(cluster)),
            ..RouteAction::default()
        }))
    };
    let prefix = |p: String| {
        Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(p)),
            ..RouteMatch::default()
        })
    };
    let mut all: Vec<Route> = (0..n)
        .map(|i| Route {
            name: format!("c{i}"),
            r#match: prefix(format!("/c{i}")),
            action: to(format!("c{i}")),
            ..Route::default()
        })
        .collect();
    all.push(Route {
        name: "default".into(),
        r#match: prefix("/".into()),
        action: to(if version % 2 == 1 { "a" } else { "b" }.into()),
        ..Route::default()
    });
    let rc = RouteConfiguration {
        name: "routes".into(),
        virtual_hosts: vec![VirtualHost {
            name: "all".into(),
            domains: vec!["*".into()],
            routes: all,
            ..VirtualHost::default()
        }],
        response_headers_to_add: vec![HeaderValueOption {
            header: Some(HeaderValue {
                key: VERSION_HEADER.into(),
                value: version.to_string(),
                ..HeaderValue::default()
            }),
            ..HeaderValueOption::default()
        }],
        ..RouteConfiguration::default()
    };
    ads::any(ROUTE, &rc)
}

fn node(id: usize) -> Node {
    Node {
        id: format!(
            "sidecar~10.1.{}.{}~sim-{id}.fleet~fleet.svc.cluster.local",
            id / 250,
            id % 250
        ),
        cluster: "fleet".into(),
        ..Node::default()
    }
}

/// The EDS names a CDS response references.
fn eds_names(resources: &[Any]) -> BTreeSet<String> {
    resources
        .iter()
        .filter_map(|a| Cluster::decode(a.value.as_slice()).ok())
        .map(|c| match c.eds_cluster_config {
            Some(eds) if !eds.service_name.is_empty() => eds.service_name,
            _ => c.name,
        })
        .collect()
}

/// The RDS names an LDS response references.
fn rds_names(resources: &[Any]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for listener in resources
        .iter()
        .filter_map(|a| Listener::decode(a.value.as_slice()).ok())
    {
        for f in listener.filter_chains.iter().flat_map(|c| &c.filters) {
            let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
                continue;
            };
            if let Ok(hcm) = HttpConnectionManager::decode(any.value.as_slice())
                && let Some(http_connection_manager::RouteSpecifier::Rds(rds)) = hcm.route_specifier
            {
                names.insert(rds.route_config_name);
            }
        }
    }
    names
}

async fn channel(server: SocketAddr) -> anyhow::Result<tonic::transport::Channel> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{server}"))?
        .connect()
        .await?)
}

/// A receiver as the request stream tonic sends.
fn outgoing<T: Send + 'static>(mut rx: mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A State-of-the-World subscriber: CDS and LDS by wildcard, then EDS and RDS by the names
/// they reference; every response ACKed.
async fn sotw_subscriber(id: usize, server: SocketAddr, seen: &Seen, epoch: Instant) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut client = AggregatedDiscoveryServiceClient::new(channel(server).await?).max_decoding_message_size(32 << 20);
    seen.connected_ns.store(nanos(start.elapsed()), Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<DiscoveryRequest>(16);
    let request = |type_url: &str, names: &BTreeSet<String>, version: &str, nonce: &str| DiscoveryRequest {
        type_url: type_url.into(),
        resource_names: names.iter().cloned().collect(),
        version_info: version.into(),
        response_nonce: nonce.into(),
        ..DiscoveryRequest::default()
    };
    let none = BTreeSet::new();
    tx.send(DiscoveryRequest {
        node: Some(node(id)),
        ..request(CLUSTER, &none, "", "")
    })
    .await?;
    tx.send(request(LISTENER, &none, "", "")).await?;
    let mut responses = client.stream_aggregated_resources(outgoing(rx)).await?.into_inner();
    let (mut eds, mut rds) = (BTreeSet::new(), BTreeSet::new());
    let mut held = [false; 4];
    while let Some(response) = responses.message().await? {
        let DiscoveryResponse {
            version_info,
            resources,
            type_url,
            nonce,
            ..
        } = response;
        let names = match type_url.as_str() {
            CLUSTER => {
                let now = eds_names(&resources);
                if now != eds {
                    eds = now;
                    tx.send(request(ENDPOINT, &eds, "", "")).await?;
                }
                &none
            }
            LISTENER => {
                let now = rds_names(&resources);
                if now != rds {
                    rds = now;
                    tx.send(request(ROUTE, &rds, "", "")).await?;
                }
                &none
            }
            ENDPOINT => &eds,
            _ => &rds,
        };
        tx.send(request(&type_url, names, &version_info, &nonce)).await?;
        acked(seen, &mut held, &type_url, &version_info, start, epoch);
    }
    Ok(())
}

/// A Delta subscriber: the same subscriptions, names added as CDS and LDS bring them.
async fn delta_subscriber(id: usize, server: SocketAddr, seen: &Seen, epoch: Instant) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut client = AggregatedDiscoveryServiceClient::new(channel(server).await?).max_decoding_message_size(32 << 20);
    seen.connected_ns.store(nanos(start.elapsed()), Ordering::Relaxed);
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    let subscribe = |type_url: &str, names: Vec<String>| DeltaDiscoveryRequest {
        type_url: type_url.into(),
        resource_names_subscribe: names,
        ..DeltaDiscoveryRequest::default()
    };
    tx.send(DeltaDiscoveryRequest {
        node: Some(node(id)),
        ..subscribe(CLUSTER, Vec::new())
    })
    .await?;
    tx.send(subscribe(LISTENER, Vec::new())).await?;
    let mut responses = client.delta_aggregated_resources(outgoing(rx)).await?.into_inner();
    let (mut eds, mut rds) = (BTreeSet::new(), BTreeSet::new());
    let mut held = [false; 4];
    while let Some(response) = responses.message().await? {
        let DeltaDiscoveryResponse {
            system_version_info,
            resources,
            type_url,
            nonce,
            ..
        } = response;
        let bodies: Vec<Any> = resources.into_iter().filter_map(|r| r.resource).collect();
        let references = match type_url.as_str() {
            CLUSTER => Some((eds_names(&bodies), &mut eds, ENDPOINT)),
            LISTENER => Some((rds_names(&bodies), &mut rds, ROUTE)),
            _ => None,
        };
        if let Some((wanted, names, sub_type)) = references {
            let new: Vec<String> = wanted.difference(names).cloned().collect();
            if !new.is_empty() {
                names.extend(new.iter().cloned());
                tx.send(subscribe(sub_type, new)).await?;
            }
        }
        tx.send(DeltaDiscoveryRequest {
            type_url: type_url.clone(),
            response_nonce: nonce,
            ..DeltaDiscoveryRequest::default()
        })
        .await?;
        acked(seen, &mut held, &type_url, &system_version_info, start, epoch);
    }
    Ok(())
}

/// Records an ACK; the first time every type is held, the time to ready.
fn acked(seen: &Seen, held: &mut [bool; 4], type_url: &str, version: &str, start: Instant, epoch: Instant) {
    seen.record(type_url, version.parse().unwrap_or(0), since(epoch));
    if let Some(i) = TYPES.iter().position(|t| *t == type_url) {
        held[i] = true;
    }
    if held.iter().all(|h| *h) && seen.ready_ns.load(Ordering::Relaxed) == 0 {
        let after = nanos(start.elapsed()).max(1);
        seen.ready_ns.store(after, Ordering::Relaxed);
    }
}

/// A running Weft of the fleet.
struct FleetWeft {
    weft: Weft,
    /// From the process start to its first answered request.
    ready: Duration,
    url: String,
}

async fn start_weft(args: &Args, i: usize, server: SocketAddr, dir: &std::path::Path) -> anyhow::Result<FleetWeft> {
    let bootstrap = dir.join(format!("bootstrap-{i}.yaml"));
    let api_type = if args.delta { "DELTA_GRPC" } else { "GRPC" };
    let node = format!(
        "{{ id: \"router~127.0.0.{n}~weft-{i}.fleet~fleet.svc.cluster.local\", cluster: fleet-gateway }}",
        n = i + 1
    );
    std::fs::write(&bootstrap, weft_conformance::ads::bootstrap(&node, api_type, server))?;
    let config = format!(
        "[runtime]\nworkers = 1\n\n[admin]\naddress = \"{{admin}}\"\n\n[xds]\nbootstrap = \"{}\"\n",
        bootstrap.display()
    );
    let command = match &args.weft_cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.args(["-c", cpus]).arg(&args.weft);
            c
        }
        None => Command::new(&args.weft),
    };
    let started = Instant::now();
    let weft = Weft::start_command(command, &config, &[]).await;
    let url = format!("http://{}/", weft.listener("main"));
    let client = weft_conformance::http1_client();
    let deadline = started + Duration::from_secs(30);
    loop {
        let req = http::Request::get(&url).body(Full::new(Bytes::new()))?;
        if let Ok(resp) = client.request(req).await
            && resp.status() == 200
        {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Weft {i} never answered 200:\n{}",
            weft.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(FleetWeft {
        ready: started.elapsed(),
        weft,
        url,
    })
}

/// Requests on every Weft, `connections` loops each on its own keep-alive connection; each
/// answer's `x-fleet-version` is what that Weft serves.
struct Load {
    seen: Vec<Arc<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl Load {
    fn start(rt: &tokio::runtime::Runtime, wefts: &[FleetWeft], connections: usize, epoch: Instant) -> Load {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen: Vec<Arc<Seen>> = wefts.iter().map(|_| Arc::new(Seen::default())).collect();
        let mut tasks = Vec::new();
        for (w, s) in wefts.iter().zip(&seen) {
            for _ in 0..connections {
                let (url, seen, stop) = (w.url.clone(), s.clone(), stop.clone());
                tasks.push(rt.spawn(async move {
                    let client = weft_conformance::http1_client();
                    let (mut done, mut failures) = (0u64, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        let req = http::Request::get(&url).body(Full::new(Bytes::new())).expect("request");
                        done += 1;
                        match client.request(req).await {
                            Ok(resp) if resp.status() == 200 => {
                                let version = resp
                                    .headers()
                                    .get(VERSION_HEADER)
                                    .and_then(|v| v.to_str().ok()?.parse().ok())
                                    .unwrap_or(0);
                                let at = since(epoch);
                                match resp.into_body().collect().await {
                                    Ok(_) => seen.record(ROUTE, version, at),
                                    Err(e) => failures.push(format!("body: {e}")),
                                }
                            }
                            Ok(resp) => failures.push(format!("status {}", resp.status())),
                            Err(e) => failures.push(format!("{e:?}")),
                        }
                    }
                    (done, failures)
                }));
            }
        }
        Load { seen, stop, tasks }
    }

    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut requests, mut failures) = (0, Vec::new());
        for task in self.tasks {
            if let Ok((n, f)) = task.await {
                requests += n;
                failures.extend(f);
            }
        }
        (requests, failures)
    }
}

/// How a push's convergence on the Wefts is seen.
enum Observe<'a> {
    /// By the version their answers carry under load.
    Load(&'a Load),
    /// No load running: only whether `/api/xds` shows the version once the simulated
    /// subscribers have it (no convergence time for the Wefts).
    Idle(&'a [FleetWeft]),
}

/// One push: its bytes and responses, and how long each subscriber took to converge.
struct Push {
    version: u64,
    bytes: u64,
    responses: u64,
    sims: Vec<Duration>,
    wefts: Vec<Duration>,
    timed_out: usize,
}

async fn push_routes(ads: &Ads, args: &Args, sims: &[Arc<Seen>], observe: Observe<'_>, epoch: Instant) -> Push {
    let (bytes, responses) = sent(ads);
    let pushed_at = since(epoch);
    ads.push(|r| {
        let version = r.version + 1;
        ads::set(r, ROUTE, vec![routes(args.clusters, version)]);
    });
    let version = ads.resources.borrow().version;
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    let mut wefts: Vec<Option<u64>> = match observe {
        Observe::Load(load) => vec![None; load.seen.len()],
        Observe::Idle(w) => vec![None; w.len()],
    };
    loop {
        match observe {
            Observe::Load(load) => {
                for (slot, seen) in wefts.iter_mut().zip(&load.seen) {
                    let (v, at) = seen.get(ROUTE);
                    if v >= version {
                        *slot = Some(at);
                    }
                }
            }
            // Polling would cost Weft the CPU this phase measures: it is checked once the
            // simulated subscribers converged.
            Observe::Idle(all) => {
                if sims.iter().all(|s| s.get(ROUTE).0 >= version) {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    for (slot, w) in wefts.iter_mut().zip(all) {
                        if admin_version(&w.weft, "rds").await >= version {
                            *slot = Some(0);
                        }
                    }
                }
            }
        }
        let sims_done = sims.iter().all(|s| s.get(ROUTE).0 >= version);
        if (sims_done && wefts.iter().all(Option::is_some)) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    converged(ads, version, pushed_at, sims, ROUTE, wefts, (bytes, responses))
}

async fn push_endpoints(
    ads: &Ads,
    args: &Args,
    sims: &[Arc<Seen>],
    upstreams: [SocketAddr; 2],
    epoch: Instant,
) -> Push {
    let before = sent(ads);
    let pushed_at = since(epoch);
    ads.push(|r| ads::set(r, ENDPOINT, assignments(args.clusters, upstreams, 2)));
    let version = ads.resources.borrow().version;
    let deadline = Instant::now() + CONVERGE_TIMEOUT;
    while sims.iter().any(|s| s.get(ENDPOINT).0 < version) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The Wefts' EDS ACKs are sent by now too, or the bytes are a little short.
    tokio::time::sleep(Duration::from_millis(200)).await;
    converged(ads, version, pushed_at, sims, ENDPOINT, Vec::new(), before)
}

fn sent(ads: &Ads) -> (u64, u64) {
    (
        ads.sent.bytes.load(Ordering::Relaxed),
        ads.sent.responses.load(Ordering::Relaxed),
    )
}

fn converged(
    ads: &Ads,
    version: u64,
    pushed_at: u64,
    sims: &[Arc<Seen>],
    type_url: &str,
    wefts: Vec<Option<u64>>,
    before: (u64, u64),
) -> Push {
    let took = |at: u64| Duration::from_nanos(at.saturating_sub(pushed_at));
    let mut timed_out = 0;
    let mut sim_times = Vec::new();
    for s in sims {
        let (v, at) = s.get(type_url);
        if v >= version {
            sim_times.push(took(at));
        } else {
            timed_out += 1;
            sim_times.push(CONVERGE_TIMEOUT);
        }
    }
    let weft_times = wefts
        .into_iter()
        .map(|at| {
            at.map(took).unwrap_or_else(|| {
                timed_out += 1;
                CONVERGE_TIMEOUT
            })
        })
        .collect();
    let (bytes, responses) = sent(ads);
    Push {
        version,
        bytes: bytes - before.0,
        responses: responses - before.1,
        sims: sim_times,
        wefts: weft_times,
        timed_out,
    }
}

/// The version `/api/xds` shows for `kind` (0 when none).
async fn admin_version(weft: &Weft, kind: &str) -> u64 {
    let (_, body) = weft.admin("GET", "/api/xds").await;
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["types"][kind]["version"].as_str()?.parse().ok())
        .unwrap_or(0)
}

/// Each Weft's own `apply_ms` of its last RDS update.
async fn wefts_apply_ms(wefts: &[FleetWeft]) -> Vec<f64> {
    let mut all = Vec::new();
    for w in wefts {
        let (_, body) = w.weft.admin("GET", "/api/xds").await;
        let view: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        all.push(view["types"]["rds"]["apply_ms"].as_f64().unwrap_or(f64::NAN));
    }
    all
}

/// A process's CPU time (nanoseconds, all its threads) and resident memory (KiB).
fn proc_usage(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let cpu = threads(&format!("/proc/{pid}/task")).iter().map(|(_, ns)| ns).sum();
    (cpu, rss)
}

/// The CPU time of each thread under `tasks` (`/proc/PID/task`): its name and nanoseconds
/// on CPU (`schedstat`'s first field, exact where `stat`'s ticks are 10 ms).
fn threads(tasks: &str) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(tasks) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            let ns = schedstat
                .split_whitespace()
                .next()
                .and_then(|f| f.parse().ok())
                .unwrap_or(0);
            (name.trim().to_owned(), ns)
        })
        .collect()
}

/// CPU nanoseconds of this process's threads, summed by thread name (`fleet-ads`…).
fn thread_cpu() -> Vec<(String, u64)> {
    let mut by_name: Vec<(String, u64)> = Vec::new();
    for (name, ns) in threads("/proc/self/task") {
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 += ns,
            None => by_name.push((name, ns)),
        }
    }
    by_name
}

fn ns_of(all: &[(String, u64)], name: &str) -> u64 {
    all.iter().find(|(n, _)| n == name).map_or(0, |(_, ns)| *ns)
}

/// The `q` quantile (nearest rank) of `values`.
fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

fn spread(values: &[Duration]) -> String {
    format!(
        "{} / {} / {}",
        ms(quantile(values, 0.5)),
        ms(quantile(values, 0.99)),
        ms(quantile(values, 1.0))
    )
}

struct Report<'a> {
    args: &'a Args,
    mode: &'a str,
    sim_ready: Vec<Duration>,
    sim_connected: Vec<Duration>,
    weft_ready: Vec<Duration>,
    under_load: Vec<Push>,
    idle: Vec<Push>,
    eds: Push,
    requests: u64,
    failures: Vec<String>,
    cpu_before: Vec<(u64, u64)>,
    cpu_after: Vec<(u64, u64)>,
    threads_before: Vec<(String, u64)>,
    threads_after: Vec<(String, u64)>,
    apply_ms: Vec<f64>,
    sim_errors: usize,
}

impl Report<'_> {
    /// Prints the tables; true when the run meets the bar: p99 convergence under load within
    /// 1 s over every subscriber and push, and no failed request.
    fn print(&self) -> bool {
        let k = self.args.pushes;
        println!(
            "\n### xDS fleet, {}: {} simulated subscribers + {} Weft, {} clusters, {} route pushes\n",
            self.mode,
            self.args.clients,
            self.args.proxies,
            self.args.clusters + 2,
            k
        );
        println!("Per push under load (convergence in ms, p50 / p99 / max over the subscribers):\n");
        println!("| push | version | bytes sent | responses | simulated | Weft |");
        println!("|---:|---:|---:|---:|---|---|");
        for (i, p) in self.under_load.iter().enumerate() {
            println!(
                "| {} | {} | {} | {} | {} | {} |",
                i + 1,
                p.version,
                p.bytes,
                p.responses,
                spread(&p.sims),
                spread(&p.wefts)
            );
        }
        let pool = |pushes: &[Push], f: fn(&Push) -> &Vec<Duration>| -> Vec<Duration> {
            pushes.iter().flat_map(|p| f(p).iter().copied()).collect()
        };
        let load_sims = pool(&self.under_load, |p| &p.sims);
        let load_wefts = pool(&self.under_load, |p| &p.wefts);
        let load_all: Vec<Duration> = load_sims.iter().chain(&load_wefts).copied().collect();
        let idle_sims = pool(&self.idle, |p| &p.sims);
        let route_bytes: Vec<u64> = self.under_load.iter().chain(&self.idle).map(|p| p.bytes).collect();
        let mean_bytes = route_bytes.iter().sum::<u64>() / route_bytes.len().max(1) as u64;
        let streams = (self.args.clients + self.args.proxies) as u64;
        let timed_out: usize = self.under_load.iter().chain(&self.idle).map(|p| p.timed_out).sum();
        let ns_ms = |ns: u64| ns as f64 / 1e6;
        let thread_ms = |name: &str| {
            ns_ms(ns_of(&self.threads_after, name).saturating_sub(ns_of(&self.threads_before, name))) / k as f64
        };
        println!("\nSummary:\n");
        println!("| measure | value |");
        println!("|---|---|");
        println!(
            "| time to ready, simulated (stream open → full config ACKed), p50 / p99 / max ms | {} |",
            spread(&self.sim_ready)
        );
        println!(
            "| … of which connecting (TCP and HTTP/2 handshakes), p50 / p99 / max ms | {} |",
            spread(&self.sim_connected)
        );
        println!(
            "| time to ready, Weft (process start → first 200), ms | {} |",
            self.weft_ready.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", ")
        );
        println!(
            "| convergence under load, all {} subscribers × {k} pushes, p50 / p99 / max ms | {} |",
            streams,
            spread(&load_all)
        );
        println!("| … simulated only | {} |", spread(&load_sims));
        println!(
            "| … Weft only (first answer with the new version) | {} |",
            spread(&load_wefts)
        );
        println!(
            "| convergence without load, simulated, p50 / p99 / max ms | {} |",
            spread(&idle_sims)
        );
        println!(
            "| bytes per route push (all streams) / per stream | {mean_bytes} / {} |",
            mean_bytes / streams.max(1)
        );
        println!(
            "| bytes per EDS push (one cluster's endpoints changed) / per stream | {} / {} |",
            self.eds.bytes,
            self.eds.bytes / streams.max(1)
        );
        println!(
            "| EDS push convergence, simulated, p50 / p99 / max ms | {} |",
            spread(&self.eds.sims)
        );
        for (i, (before, after)) in self.cpu_before.iter().zip(&self.cpu_after).enumerate() {
            println!(
                "| Weft {} CPU per applied update (no load) | {:.1} ms |",
                i + 1,
                ns_ms(after.0.saturating_sub(before.0)) / k as f64
            );
            println!(
                "| Weft {} RSS before → after {k} updates (KiB) | {} → {} ({:+.1} KiB per update) |",
                i + 1,
                before.1,
                after.1,
                (after.1 as f64 - before.1 as f64) / k as f64
            );
        }
        println!(
            "| Weft apply_ms of the last update (its own: map, validate, build, swap) | {} |",
            self.apply_ms
                .iter()
                .map(|m| format!("{m:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "| ADS server CPU per push (encode and send to {streams} streams) | {:.1} ms |",
            thread_ms("fleet-ads")
        );
        println!(
            "| simulated subscribers' CPU per push (decode and ACK, all of them) | {:.1} ms |",
            thread_ms("fleet-sim")
        );
        println!(
            "| requests under load / failed | {} / {} |",
            self.requests,
            self.failures.len()
        );
        for f in self.failures.iter().take(5) {
            println!("failed: {f}");
        }
        let p99 = quantile(&load_all, 0.99);
        let pass = self.failures.is_empty() && timed_out == 0 && self.sim_errors == 0 && p99 <= Duration::from_secs(1);
        println!(
            "\n{}: p99 convergence under load {} ms (bar: 1000), {} failed requests, {timed_out} pushes not converged within {} s, {} subscriber streams failed",
            if pass { "PASS" } else { "FAIL" },
            ms(p99),
            self.failures.len(),
            CONVERGE_TIMEOUT.as_secs(),
            self.sim_errors
        );
        pass
    }
}
