//! The config the ADS stream last accepted, as the state reads it (`state::ConfigProvider`),
//! and what `/api/xds` shows of the stream.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

use serde_json::{Value, json};

use super::secret::Secrets;
use crate::config::{Config, ConfigError};
use crate::state::{ConfigProvider, State};

/// Shared by the ADS task (which writes) and the state (which reads on reload).
pub struct XdsSource {
    /// (origin, TOML text, the SDS secrets it names) of the config last accepted. The
    /// secrets are held here, never in the text.
    current: Mutex<Option<(String, String, Arc<Secrets>)>>,
    /// Relative paths in the TOML file's tables are relative to its folder.
    base_dir: PathBuf,
    state: OnceLock<Weak<State>>,
    status: Mutex<Value>,
}

impl XdsSource {
    pub fn new(base_dir: PathBuf) -> Arc<XdsSource> {
        Arc::new(XdsSource {
            current: Mutex::new(None),
            base_dir,
            state: OnceLock::new(),
            status: Mutex::new(json!({ "connection": "connecting", "types": {} })),
        })
    }

    /// Parses `text` as the candidate, with the bytes of the SDS secrets it names attached
    /// from `secrets`; the running one stays until `apply`.
    pub fn check(&self, origin: &str, text: &str, secrets: &Secrets) -> Result<Config, ConfigError> {
        let mut config = Config::parse_in(origin, text, &self.base_dir)?;
        config.attach_secrets(&|name, sha256, part| {
            secrets
                .get(name)
                .filter(|s| s.sha256 == sha256)
                .and_then(|s| s.part(part))
        })?;
        Ok(config)
    }

    /// Swaps the text in and, once Weft serves, reloads the state from it; on a rejected
    /// reload the previous text is put back and the error says why.
    pub async fn apply(&self, origin: String, text: String, secrets: Arc<Secrets>) -> Result<Option<u64>, ConfigError> {
        let previous = self.lock().replace((origin, text, secrets));
        let Some(state) = self.state.get().and_then(Weak::upgrade) else {
            return Ok(None);
        };
        match state.reload("xds").await {
            Ok(version) => Ok(Some(version)),
            Err(e) => {
                *self.lock() = previous;
                Err(e)
            }
        }
    }

    /// The folder relative paths are read from.
    pub fn base_dir(&self) -> &std::path::Path {
        &self.base_dir
    }

    /// True once a first config was accepted.
    pub fn has_config(&self) -> bool {
        self.lock().is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(String, String, Arc<Secrets>)>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Edits what `/api/xds` shows.
    pub fn status(&self, edit: impl FnOnce(&mut Value)) {
        edit(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    pub fn status_view(&self) -> Value {
        self.status.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The running state, once it serves.
    pub fn state(&self) -> Option<Arc<State>> {
        self.state.get().and_then(Weak::upgrade)
    }
}

impl ConfigProvider for XdsSource {
    fn load(&self) -> Result<Config, ConfigError> {
        let current = self.lock().clone();
        match current {
            Some((origin, text, secrets)) => self.check(&origin, &text, &secrets),
            None => Err(crate::config::Source {
                origin: "xds".into(),
                text: String::new(),
            }
            .error("no config accepted from the ADS server yet")),
        }
    }

    fn serving(&self, state: &Arc<State>) {
        let _ = self.state.set(Arc::downgrade(state));
    }

    fn status(&self) -> Option<Value> {
        Some(self.status_view())
    }
}
