//! `[[filters]] limits`: the sandbox and resource limits of one Wasm filter.

use std::time::Duration;

use serde::Deserialize;

use super::duration;

/// Sandbox limits of a Wasm filter. Every field has a default; [`LimitsConfig::check`]
/// refuses values that would disable a limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Linear memory cap, in bytes. Unset: [`DEFAULT_MEMORY`], or more for a component
    /// that starts with a large heap (an interpreter; see `wasm::engine::default_memory`).
    #[serde(default)]
    pub memory: Option<usize>,
    /// CPU time a filter may use in one phase of one request (default 50 ms).
    #[serde(default = "defaults::cpu", deserialize_with = "duration")]
    pub cpu: Duration,
    /// Largest body the filter may ask to see buffered, in bytes (default 1 MiB).
    #[serde(default = "defaults::body")]
    pub body: usize,
    /// Log lines a second the filter may write (the `log` interface, stdout and stderr
    /// together, across all its instances); lines over it are dropped and counted.
    #[serde(default = "defaults::log_rate")]
    pub log_rate: u32,
    /// Lines the filter may write at once, above `log_rate`, after a quiet spell.
    #[serde(default = "defaults::log_burst")]
    pub log_burst: u32,
    /// Keys the filter may hold in the local KV store (default 100 000). When full, a
    /// write evicts the filter's own keys, nearest expiry first; never another filter's.
    #[serde(default = "defaults::kv_keys")]
    pub kv_keys: usize,
    /// Bytes (keys plus values) the filter may hold in the local KV store (default 64 MiB).
    #[serde(default = "defaults::kv_bytes")]
    pub kv_bytes: usize,
    /// Instances of this filter running at once (default 256): requests past it wait.
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    /// Requests that may wait for an instance (default 1024; 0: none wait). Past it, or
    /// after `queue_timeout`, the request is answered 503 with `Retry-After`.
    #[serde(default = "defaults::max_queue")]
    pub max_queue: usize,
    /// Longest a request waits for an instance (default 1 s).
    #[serde(default = "defaults::queue_timeout", deserialize_with = "duration")]
    pub queue_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            memory: None,
            cpu: defaults::cpu(),
            body: defaults::body(),
            log_rate: defaults::log_rate(),
            log_burst: defaults::log_burst(),
            kv_keys: defaults::kv_keys(),
            kv_bytes: defaults::kv_bytes(),
            max_concurrency: defaults::max_concurrency(),
            max_queue: defaults::max_queue(),
            queue_timeout: defaults::queue_timeout(),
        }
    }
}

impl LimitsConfig {
    /// What is wrong with these limits, if anything (the caller names the filter).
    pub fn check(&self) -> Result<(), String> {
        let zero = [
            ("memory", self.memory == Some(0)),
            ("cpu", self.cpu.is_zero()),
            ("kv_keys", self.kv_keys == 0),
            ("kv_bytes", self.kv_bytes == 0),
            ("max_concurrency", self.max_concurrency == 0),
            ("queue_timeout", self.queue_timeout.is_zero()),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(format!("limits.{name} must be more than zero"));
        }
        // tokio's semaphore holds at most `usize::MAX >> 3` permits.
        if self.max_concurrency > MAX_CONCURRENCY {
            return Err(format!(
                "limits.max_concurrency of {} is over the maximum of {MAX_CONCURRENCY}",
                self.max_concurrency
            ));
        }
        Ok(())
    }
}

/// The largest `limits.max_concurrency`: far above what the engine's instance pool holds.
pub const MAX_CONCURRENCY: usize = 1 << 20;

/// `limits.memory` of a filter that does not set it and starts small (every Rust filter).
pub const DEFAULT_MEMORY: usize = 16 << 20;

mod defaults {
    use std::time::Duration;
    pub fn cpu() -> Duration {
        Duration::from_millis(50)
    }
    pub fn body() -> usize {
        1 << 20
    }
    pub fn log_rate() -> u32 {
        100
    }
    pub fn log_burst() -> u32 {
        200
    }
    pub fn kv_keys() -> usize {
        100_000
    }
    pub fn kv_bytes() -> usize {
        64 << 20
    }
    /// A quarter of the engine's default pool of 1000 instances: one filter stuck in slow
    /// calls leaves room for the others.
    pub fn max_concurrency() -> usize {
        256
    }
    pub fn max_queue() -> usize {
        1024
    }
    pub fn queue_timeout() -> Duration {
        Duration::from_secs(1)
    }
}
