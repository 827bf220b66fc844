//! `[kv]`: the checks of the shared store's settings that need more than serde.

use redis::IntoConnectionInfo;

use super::redact::urls as redact_urls;

/// Checks a `redis://` URL the way the Redis KV store will use it (for config validation).
/// Errors show the URL with its userinfo masked: they reach logs and the admin API.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    let shown = redact_urls(url);
    if !url.starts_with("redis://") {
        return Err(format!(
            "kv.url {shown:?} must start with redis:// (TLS and unix sockets are not supported)"
        ));
    }
    url.into_connection_info().map(|_| ()).map_err(|e| {
        format!(
            "kv.url {shown:?} is not a valid Redis URL: {}",
            redact_urls(&e.to_string())
        )
    })
}
