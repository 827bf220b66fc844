//! Starting and stopping: bind the listeners, serve, reload on SIGHUP, and drain on
//! SIGTERM/SIGINT.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::listen::{Gate, Listener};
use crate::state::{ConfigSource, State};

/// Connections the admin listener holds open at once.
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Serves `config` until SIGTERM or SIGINT, then lets in-flight requests finish for up to
/// the configured drain timeout.
pub async fn run(config: Config, source: ConfigSource) -> anyhow::Result<()> {
    let state = State::new(&config, source).await?;
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (drained_tx, mut drained) = mpsc::channel::<()>(1);

    // Bind everything before serving anything: a port in use fails the start, not half of it.
    let mut listeners = Vec::new();
    for l in &config.listeners {
        listeners.push(Listener::bind(l.get_ref(), &state.metrics).await?);
    }
    let admin = match &config.admin {
        Some(admin) => Some(
            tokio::net::TcpListener::bind(admin.address)
                .await
                .map_err(|e| anyhow::anyhow!("admin listener cannot bind {}: {e}", admin.address))?,
        ),
        None => None,
    };

    let mut quic = Vec::new();
    for l in config.listeners.iter().map(|l| l.get_ref()).filter(|l| l.http3) {
        let server = state.current().quic.get(&l.name).cloned();
        let server = server.ok_or_else(|| anyhow::anyhow!("listener {:?}: no QUIC config", l.name))?;
        quic.push((l.clone(), crate::listen::quic::bind(l, server)?));
    }

    // One gate per listener: its TCP and QUIC sides share the connection caps.
    let mut gates = std::collections::HashMap::new();
    for l in config.listeners.iter().map(|l| l.get_ref()) {
        let gate = Gate::new(
            &l.name,
            l.limits.max_connections,
            l.limits.max_connections_per_client,
            state.metrics.clone(),
        );
        gates.insert(l.name.clone(), gate);
    }
    for listener in listeners {
        tracing::info!(listener = %listener.name, address = %listener.socket.local_addr()?, "listening");
        let gate = gates[&*listener.name].clone();
        tokio::spawn(listener.serve(state.clone(), gate, shutdown.clone(), drained_tx.clone()));
    }
    for (l, endpoint) in quic {
        tracing::info!(listener = %l.name, address = %l.address, "listening for HTTP/3 (UDP)");
        if let Ok(mut endpoints) = state.quic_endpoints.lock() {
            endpoints.insert(l.name.clone(), endpoint.clone());
        }
        let gate = gates[&l.name].clone();
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
        tokio::spawn(crate::admin::serve(socket, gate, state.clone(), shutdown.clone()));
    }
    if config.runtime.watch {
        crate::control::spawn(state.clone(), shutdown.clone())?;
    }
    crate::control::reload_on_sighup(state.clone(), shutdown.clone())?;

    let signal = wait_for_signal().await?;
    tracing::info!(signal, drain_timeout = ?config.runtime.drain_timeout, "shutting down: draining in-flight requests");
    let _ = shutdown_tx.send(true);
    drop(drained_tx);
    match tokio::time::timeout(config.runtime.drain_timeout, drained.recv()).await {
        Ok(_) => tracing::info!("drained; bye"),
        Err(_) => tracing::warn!("drain timeout reached with requests still in flight; closing them"),
    }
    state.observe.close(Duration::from_secs(2)).await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// A tokio runtime with the configured number of workers. One worker gets tokio's
/// current-thread scheduler: no work-stealing queues or cross-thread wakeups on the request
/// path, which is what a proxy pinned to one core wants.
pub fn tokio_runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n.max(1));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    Ok(builder
        .enable_all()
        .thread_keep_alive(Duration::from_secs(60))
        .build()?)
}
