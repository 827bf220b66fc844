//! What triggers reloads besides the admin API's `POST /reload`: the config file and the
//! plugin files, watched on disk, and SIGHUP.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::state::{ConfigSource, State};

/// Editors and `cp` write a file in several steps; one reload after the burst settles.
const SETTLE: Duration = Duration::from_millis(200);

/// Watches the files the running config depends on and reloads when one changes.
pub fn spawn(state: Arc<State>, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut files = watched_files(&state);
    // The watched directories hold other files too (an access log written beside the
    // config, say): their events stop here, by name, without waking the task below.
    let names = Arc::new(RwLock::new(file_names(&state, &files)));
    let wanted = names.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && (event.kind.is_create() || event.kind.is_modify() || event.kind.is_remove())
        {
            let wanted = wanted.read().unwrap_or_else(PoisonError::into_inner);
            if event
                .paths
                .iter()
                .any(|p| p.file_name().is_some_and(|n| wanted.contains(n)))
            {
                let _ = tx.send(event.paths);
            }
        }
    })?;
    // Armed before this returns, so before Weft says it is ready: a change made right after
    // readiness (a deploy script, a test) is never missed while the task is still queued.
    let mut dirs = HashSet::new();
    watch_dirs(&mut watcher, &files, &mut dirs);
    tokio::spawn(async move {
        loop {
            let paths = tokio::select! {
                paths = rx.recv() => match paths { Some(p) => p, None => return },
                _ = shutdown.changed() => return,
            };
            if !paths.iter().any(|p| files.contains(&absolute(p))) {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            while rx.try_recv().is_ok() {}
            // The result is logged and counted by `reload`; a rejected change keeps the old config.
            let _ = state.reload("watch").await;
            files = watched_files(&state);
            *names.write().unwrap_or_else(PoisonError::into_inner) = file_names(&state, &files);
            watch_dirs(&mut watcher, &files, &mut dirs);
        }
    });
    Ok(())
}

/// Reloads on every SIGHUP, the signal daemons conventionally reload on.
pub fn reload_on_sighup(state: Arc<State>, mut shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = hup.recv() => if got.is_none() { return },
                _ = shutdown.changed() => return,
            }
            // Logged, counted and audited by `reload`.
            let _ = state.reload("signal").await;
        }
    });
    Ok(())
}

fn watched_files(state: &State) -> HashSet<PathBuf> {
    let mut files: HashSet<PathBuf> = state.current().files.iter().map(|p| absolute(p)).collect();
    if let ConfigSource::File(path) = &state.source {
        files.insert(absolute(path));
    }
    files
}

/// The names an event may carry for a watched file: each file's own and, where it is a
/// link, the name it was configured by.
fn file_names(state: &State, files: &HashSet<PathBuf>) -> HashSet<OsString> {
    let current = state.current();
    let configured = current.files.iter().map(PathBuf::as_path).chain(match &state.source {
        ConfigSource::File(path) => Some(path.as_path()),
        _ => None,
    });
    files
        .iter()
        .map(PathBuf::as_path)
        .chain(configured)
        .filter_map(|p| p.file_name().map(OsString::from))
        .collect()
}

/// Directories rather than files: a file replaced by rename keeps being watched.
fn watch_dirs(watcher: &mut notify::RecommendedWatcher, files: &HashSet<PathBuf>, dirs: &mut HashSet<PathBuf>) {
    for dir in files.iter().filter_map(|f| f.parent()) {
        if dirs.insert(dir.to_path_buf())
            && let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch for changes");
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}
