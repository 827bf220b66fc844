//! Starting and stopping: bind the listeners, serve, reload on SIGHUP, and drain on
//! SIGTERM/SIGINT.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::{Config, ListenerConfig, Scheduler};
use crate::listen::live::{Live, Runtimes, Serving};
use crate::listen::transparent::OwnPorts;
use crate::listen::{Gate, Listener};
use crate::ready::{Bound, BoundListener, ReadyFile, sd_notify};
use crate::state::{ConfigSource, State};
use crate::worker;

/// Connections the admin listener holds open at once.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Serves `config` until SIGTERM or SIGINT, then lets in-flight requests finish for up to
/// the configured drain timeout. Once everything is bound, writes `ready_file` (when given)
/// and tells systemd (when it started Weft with `Type=notify`).
pub async fn run(config: Config, source: ConfigSource, ready_file: Option<&Path>) -> anyhow::Result<()> {
    // Read before anything starts, as the rest of the config: a missing `token_file` fails here.
    let access = crate::admin::Access::new(config.admin.as_ref()).map_err(anyhow::Error::msg)?;
    let state = State::new(&config, source).await?;
    if let ConfigSource::Provided(provider) = &state.source {
        provider.serving(&state);
    }
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (drained_tx, mut drained) = mpsc::channel::<()>(1);

    // Bind everything before serving anything: a port in use fails the start, not half of it.
    let mut listeners = Vec::new();
    let mut quic = Vec::new();
    for l in config.listeners.iter().map(|l| l.get_ref()) {
        let (listener, endpoint) = bind_listener(l, &state, config.runtime.drain_timeout).await?;
        if let Some(endpoint) = endpoint {
            quic.push((l.clone(), endpoint));
        }
        listeners.push(listener);
    }
    let admin = match &config.admin {
        Some(admin) => Some(
            tokio::net::TcpListener::bind(admin.address)
                .await
                .map_err(|e| anyhow::anyhow!("admin listener cannot bind {}: {e}", admin.address))?,
        ),
        None => None,
    };

    let mut bound = Bound {
        pid: std::process::id(),
        ..Bound::default()
    };
    for listener in &listeners {
        let http3 = quic.iter().find(|(l, _)| *l.name == *listener.name);
        bound.listeners.push(BoundListener {
            name: listener.name.to_string(),
            address: listener.socket.local_addr()?,
            http3: http3.map(|(_, endpoint)| endpoint.local_addr()).transpose()?,
        });
    }
    if let Some(socket) = &admin {
        bound.admin = Some(socket.local_addr()?);
    }
    // Listeners come and go with reloads (`listen::live`); each stops on its own signal.
    let runtimes = match config.runtime.scheduler {
        Scheduler::WorkStealing => Runtimes::Shared(tokio::runtime::Handle::current()),
        Scheduler::PerCore => Runtimes::PerCore(Vec::new()),
    };
    let own_ports = Arc::new(OwnPorts::from_pointee(Box::default()));
    let mut live = Live::new(
        runtimes,
        config.runtime.drain_timeout,
        own_ports.clone(),
        bound.admin.map(|a| a.port()),
        &state,
        &drained_tx,
    );
    let mut serving: HashMap<Arc<str>, Serving> = HashMap::new();
    for l in &bound.listeners {
        serving.insert(l.name.as_str().into(), live.started(&l.name, l.address));
    }
    // A sidecar listener refuses connections meant for any of these: the proxy itself.
    own_ports.store(Arc::new(live.ports()));
    for listener in &listeners {
        listener.set_own_ports(&own_ports);
    }

    // One gate per listener: its TCP and QUIC sides (and every worker) share the
    // connection caps.
    let mut gates: HashMap<Arc<str>, Arc<Gate>> = HashMap::new();
    for l in config.listeners.iter().map(|l| l.get_ref()) {
        let gate = Gate::new(
            &l.name,
            l.limits.max_connections,
            l.limits.max_connections_per_client,
            state.metrics.clone(),
        );
        gates.insert(l.name.as_str().into(), gate);
    }
    for listener in &listeners {
        tracing::info!(listener = %listener.name, address = %listener.socket.local_addr()?, "listening");
    }
    // Stops the per-core workers' runtimes once draining is over.
    let (exit_tx, exit) = watch::channel(false);
    match config.runtime.scheduler {
        Scheduler::WorkStealing => {
            for listener in listeners {
                let gate = gates[&*listener.name].clone();
                let serve = serving[&*listener.name].serve(listener, state.clone(), gate, drained_tx.clone());
                tokio::spawn(serve);
            }
            // Only the sockets' tasks may hold a listener open (`Live::commit` waits on them).
            drop(serving);
        }
        Scheduler::PerCore => {
            let serve = Serve {
                state: state.clone(),
                gates: gates.clone(),
                serving,
                drained: drained_tx.clone(),
                exit,
            };
            live.set_runtimes(Runtimes::PerCore(start_workers(listeners, serve)?));
        }
    }
    let live = Arc::new(live);
    state.set_live(live.clone());
    for (l, endpoint) in quic {
        tracing::info!(listener = %l.name, address = %endpoint.local_addr()?, "listening for HTTP/3 (UDP)");
        if let Ok(mut endpoints) = state.quic_endpoints.lock() {
            endpoints.insert(l.name.clone(), endpoint.clone());
        }
        // On the control thread's runtime, where its endpoint was made.
        let gate = gates[l.name.as_str()].clone();
        tokio::spawn(crate::listen::quic::serve(
            l,
            endpoint,
            gate,
            state.clone(),
            shutdown.clone(),
            drained_tx.clone(),
        ));
    }
    if let Some(socket) = admin {
        tracing::info!(address = %socket.local_addr()?, "admin listening");
        // Operators and scrapers, not the public: a few connections are plenty.
        let gate = Gate::new(
            "admin",
            ADMIN_MAX_CONNECTIONS,
            ADMIN_MAX_CONNECTIONS,
            state.metrics.clone(),
        );
        tokio::spawn(crate::admin::serve(
            socket,
            gate,
            state.clone(),
            access,
            shutdown.clone(),
        ));
    }
    if config.runtime.watch {
        crate::watch::spawn(state.clone(), shutdown.clone())?;
    }
    crate::watch::reload_on_sighup(state.clone(), shutdown.clone())?;
    // Before saying ready: a supervisor may send SIGTERM as soon as it reads READY=1 or the
    // ready file, and until a handler exists SIGTERM's default action kills the process
    // with no drain (cli::systemd_is_told_when_weft_is_ready_and_when_it_stops saw it).
    let stop = stop_signal()?;
    let _ready_file = ready_file.map(|path| ReadyFile::write(path, &bound)).transpose()?;
    if let Some(path) = ready_file {
        live.ready_file(path, bound);
    }
    sd_notify("READY=1");

    let signal = stop.await;
    sd_notify("STOPPING=1");
    tracing::info!(signal, drain_timeout = ?config.runtime.drain_timeout, "shutting down: draining in-flight requests");
    live.stop_all();
    let _ = shutdown_tx.send(true);
    drop(drained_tx);
    match tokio::time::timeout(config.runtime.drain_timeout, drained.recv()).await {
        Ok(_) => tracing::info!("drained; bye"),
        Err(_) => tracing::warn!("drain timeout reached with requests still in flight; closing them"),
    }
    let _ = exit_tx.send(true);
    state.observe.close(Duration::from_secs(2)).await;
    Ok(())
}

/// What every per-core worker serves its listeners with.
#[derive(Clone)]
struct Serve {
    state: Arc<State>,
    gates: HashMap<Arc<str>, Arc<Gate>>,
    /// How each listener is served (its stop signal, `Live`).
    serving: HashMap<Arc<str>, Serving>,
    drained: mpsc::Sender<()>,
    /// Fires when the process is done draining: the worker's runtime then stops.
    exit: watch::Receiver<bool>,
}

/// Starts [`worker::count`] worker threads, each with its own single-threaded runtime and
/// its own socket per listener (the first worker takes the sockets bound at start, the
/// others bind theirs with `SO_REUSEPORT` on the same ports), so that the kernel spreads
/// connections over the workers and each connection stays on one thread. Returns each
/// worker's runtime, where listeners added later are served too.
fn start_workers(listeners: Vec<Listener>, serve: Serve) -> anyhow::Result<Vec<tokio::runtime::Handle>> {
    let n = worker::count();
    let mut per_worker: Vec<Vec<Listener>> = (0..n).map(|_| Vec::new()).collect();
    for listener in listeners {
        for sockets in per_worker.iter_mut().skip(1) {
            sockets.push(listener.another()?);
        }
        per_worker[0].push(listener);
    }
    let mut handles = Vec::with_capacity(n);
    for (i, listeners) in per_worker.into_iter().enumerate() {
        // Built here, so that a runtime that cannot start fails the start.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        handles.push(rt.handle().clone());
        let serve = serve.clone();
        std::thread::Builder::new()
            .name(format!("weft-worker-{i}"))
            .spawn(move || {
                worker::enter(i);
                rt.block_on(async move {
                    tokio::spawn(worker::deadlines::drive());
                    let Serve {
                        state,
                        gates,
                        serving,
                        drained,
                        mut exit,
                    } = serve;
                    for listener in listeners {
                        let gate = gates[&listener.name].clone();
                        let serve = serving[&listener.name].serve(listener, state.clone(), gate, drained.clone());
                        tokio::spawn(serve);
                    }
                    drop(serving);
                    drop(drained);
                    let _ = exit.wait_for(|done| *done).await;
                });
                // Connections still open after the drain timeout are cut here.
                rt.shutdown_timeout(Duration::from_secs(1));
            })?;
    }
    Ok(handles)
}

/// Binds one listener's TCP socket and, with `http3`, its UDP socket on the same port
/// (`Alt-Svc` names one port for both). On port 0 the kernel picks the TCP port, and the
/// UDP one may be taken there: then both are tried again on another.
async fn bind_listener(
    l: &ListenerConfig,
    state: &State,
    drain: Duration,
) -> anyhow::Result<(Listener, Option<quinn::Endpoint>)> {
    const TRIES_ON_PORT_ZERO: usize = 16;
    let mut tries = if l.http3 && l.address.port() == 0 {
        TRIES_ON_PORT_ZERO
    } else {
        1
    };
    loop {
        let listener = Listener::bind(l, &state.metrics, worker::count() > 1, drain)?;
        if !l.http3 {
            return Ok((listener, None));
        }
        let server = state.current().quic.get(&l.name).cloned();
        let server = server.ok_or_else(|| anyhow::anyhow!("listener {:?}: no QUIC config", l.name))?;
        match crate::listen::quic::bind(l, listener.socket.local_addr()?, server) {
            Ok(endpoint) => return Ok((listener, Some(endpoint))),
            Err(e) if tries > 1 => {
                tracing::debug!(error = %e, "HTTP/3 port taken on a listener bound to port 0; binding both again");
                tries -= 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Installs the SIGTERM and SIGINT handlers now; the future resolves to the first signal.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        }
    })
}

/// The runtime `weft run` starts on. Per core: a single-threaded one for the control
/// thread (config loads, the admin API, health probes, the watcher, HTTP/3), [`run`]
/// starting one more per worker; work-stealing: one runtime with `workers` threads
/// serving everything. Sets [`worker::count`] for the pools built after it.
pub fn runtime(scheduler: Scheduler, workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match scheduler {
        Scheduler::PerCore => {
            worker::set_count(workers);
            tokio::runtime::Builder::new_current_thread()
        }
        Scheduler::WorkStealing => {
            worker::set_count(1);
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(workers.max(1));
            b
        }
    };
    Ok(builder
        .enable_all()
        .thread_keep_alive(Duration::from_secs(60))
        .build()?)
}
