//! [`RedisKv`]: the `weft:filter/kv` store in Redis, so several proxies share counters
//! (global rate limits). The guest sees the same interface as with [`LocalKv`].
//!
//! The connection is a redis-rs `ConnectionManager` created lazily: the proxy starts
//! while Redis is down, and the manager reconnects in the background when it comes back.
//! Every operation is bounded by `timeout`, so a dead or slow Redis costs a request at
//! most that long; the error goes to the guest (which decides: fail open or closed), is
//! counted in `weft_kv_errors_total{backend="redis"}` and logged at most once a second.
//!
//! Each filter's keys are prefixed `<len(name)>:<name>:`, so filters cannot read or
//! overwrite each other's keys. Per-filter quotas (`limits.kv_keys`, `limits.kv_bytes`)
//! are not applied here: Redis bounds its memory with `maxmemory` and evicts by its
//! `maxmemory-policy` across all keys, so size it (and pick `volatile-ttl`) for the
//! filters sharing it.
//!
//! [`LocalKv`]: super::LocalKv

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::metrics::counter::Counter;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, FromRedisValue};

use prometheus_client::metrics::counter::Counter as EvictionCounter;

use super::metrics::{KvLabels, KvMetrics};
use super::{KvError, KvFuture, KvQuota, KvSpace, KvStore};
use crate::config::redact::urls as redact_urls;

/// Allows one log line per interval and counts the ones it held back, so a Redis outage
/// under load produces a line a second instead of one per request.
struct LogGate {
    start: Instant,
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

const LOG_EVERY: Duration = Duration::from_secs(1);

impl LogGate {
    fn new() -> Self {
        LogGate {
            start: Instant::now(),
            // "Never logged": the first error logs at once.
            last_ms: AtomicU64::new(u64::MAX),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(suppressed since the last line)` when this call may log.
    fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == u64::MAX || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        // The CAS makes exactly one of the racing callers the logger.
        if due
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

/// A KV store in Redis, shared by every proxy pointed at the same server.
pub struct RedisKv {
    conn: ConnectionManager,
    timeout: Duration,
    errors: Counter,
    log: LogGate,
}

impl RedisKv {
    /// A store for `url` (no connection yet: it is made on first use and remade after
    /// failures). Needs a Tokio runtime (the manager spawns its reconnect task).
    pub fn new(url: &str, timeout: Duration, metrics: &KvMetrics) -> anyhow::Result<Arc<Self>> {
        let client = Client::open(url).map_err(|e| {
            anyhow::anyhow!(
                "invalid Redis URL {:?}: {}",
                redact_urls(url),
                redact_urls(&e.to_string())
            )
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnect attempts are short and few: operations fail fast while Redis is
            // down (each one triggers a new attempt), instead of queueing behind retries.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .context("cannot create the Redis connection manager")?;
        let errors = metrics.errors.get_or_create(&KvLabels { backend: "redis" }).clone();
        Ok(Arc::new(RedisKv {
            conn,
            timeout,
            errors,
            log: LogGate::new(),
        }))
    }

    /// Runs `cmd` (a command or a MULTI pipeline) within the timeout; failures become
    /// the guest's error message, counted and (rate-limited) logged.
    async fn run<T: FromRedisValue>(&self, op: &'static str, key: &str, query: Query) -> Result<T, KvError> {
        let mut conn = self.conn.clone();
        let fut = async {
            match &query {
                Query::Cmd(cmd) => cmd.query_async::<T>(&mut conn).await,
                Query::Pipe(pipe) => pipe.query_async::<T>(&mut conn).await,
            }
        };
        let error = match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => classify(op, &e),
            Err(_) => KvError::Timeout,
        };
        if error.is_store_failure() {
            self.errors.inc();
            if let Some(suppressed) = self.log.allow() {
                tracing::warn!(op, key, error = %error, suppressed, "kv backend failed (fail-open/closed is the filter's choice)");
            }
        }
        Err(error)
    }
}

/// A Redis error as the guest's typed error: a command Redis refused for the value it
/// found is the guest's to handle (`INCRBY` on text), anything else means the store is
/// unavailable.
fn classify(op: &str, e: &redis::RedisError) -> KvError {
    let text = e.to_string();
    // Redis answers `ERR increment or decrement would overflow` and `ERR value is not an
    // integer or out of range`.
    if text.contains("would overflow") {
        return KvError::Overflow;
    }
    if text.contains("not an integer") {
        return KvError::NotAnInteger;
    }
    KvError::Unavailable(format!("redis {op}: {text}"))
}

enum Query {
    Cmd(redis::Cmd),
    Pipe(redis::Pipeline),
}

fn millis(ttl: Duration) -> u64 {
    // Redis refuses PX 0; the guest API already rounds up to 1 ms.
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisKv {
    fn get_key<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(self.run("GET", key, Query::Cmd(redis::cmd("GET").arg(key).clone())))
    }

    fn set_key<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> KvFuture<'a, ()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(millis(ttl));
        }
        Box::pin(self.run("SET", key, Query::Cmd(cmd)))
    }

    fn delete_key<'a>(&'a self, key: &'a str) -> KvFuture<'a, bool> {
        Box::pin(async move {
            let removed: i64 = self
                .run("DEL", key, Query::Cmd(redis::cmd("DEL").arg(key).clone()))
                .await?;
            Ok(removed > 0)
        })
    }

    fn incr_key<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> KvFuture<'a, i64> {
        let Some(ttl) = ttl else {
            return Box::pin(self.run(
                "INCRBY",
                key,
                Query::Cmd(redis::cmd("INCRBY").arg(key).arg(delta).clone()),
            ));
        };
        // TTL-on-create in one atomic round trip: `SET key 0 PX ttl NX` creates the key
        // with its expiry only when it is missing, and `INCRBY` keeps an existing TTL.
        // MULTI/EXEC rather than a Lua script: no script cache to reload after a Redis
        // restart (EVALSHA's NOSCRIPT round trip), and it works where EVAL is disabled.
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(key)
            .arg(0)
            .arg("PX")
            .arg(millis(ttl))
            .arg("NX")
            .ignore()
            .cmd("INCRBY")
            .arg(key)
            .arg(delta);
        Box::pin(async move {
            let (value,): (i64,) = self.run("INCRBY", key, Query::Pipe(pipe)).await?;
            Ok(value)
        })
    }
}

impl KvStore for RedisKv {
    fn space(self: Arc<Self>, filter: &str, _quota: KvQuota, _evictions: EvictionCounter) -> Arc<dyn KvSpace> {
        // Length-prefixed, so no filter name and key pair can spell another filter's key.
        Arc::new(RedisSpace {
            prefix: format!("{}:{filter}:", filter.len()),
            kv: self,
        })
    }
}

/// One filter's keys in Redis.
struct RedisSpace {
    kv: Arc<RedisKv>,
    prefix: String,
}

impl RedisSpace {
    fn key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.prefix.len() + key.len());
        full.push_str(&self.prefix);
        full.push_str(key);
        full
    }
}

impl KvSpace for RedisSpace {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(async move { self.kv.get_key(&self.key(key)).await })
    }

    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> KvFuture<'a, ()> {
        Box::pin(async move { self.kv.set_key(&self.key(key), value, ttl).await })
    }

    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, bool> {
        Box::pin(async move { self.kv.delete_key(&self.key(key)).await })
    }

    fn incr<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> KvFuture<'a, i64> {
        Box::pin(async move { self.kv.incr_key(&self.key(key), delta, ttl).await })
    }
}
