//! How an upstream exchange fails: the error `respond` turns into 502, 503 or 504,
//! shared by the cluster and its retries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Why an upstream exchange failed; `respond` turns it into 502, 503 or 504.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: SocketAddr, reason: String },
    #[error("exchange with {endpoint} failed: {reason}")]
    Exchange {
        endpoint: SocketAddr,
        reason: String,
        cause: Broken,
    },
    #[error("no response head from {endpoint} within {timeout:?}")]
    Timeout { endpoint: SocketAddr, timeout: Duration },
    /// The client's own deadline (a gRPC call's `grpc-timeout`) passed: its doing, not the
    /// endpoint's failure.
    #[error("the client's deadline of {deadline:?} passed before {endpoint} answered")]
    Deadline { endpoint: SocketAddr, deadline: Duration },
    #[error("the request cannot be sent upstream: {0}")]
    BadRequest(String),
    /// The exchange failed because the client's body did (too large, too slow, malformed).
    #[error("the client's request body failed: {0}")]
    ClientBody(crate::body::ClientBodyFault),
    /// The cluster's circuit breaker is open; names the limit.
    #[error("cluster {cluster:?} is at its {limit} limit")]
    Overloaded { cluster: Arc<str>, limit: &'static str },
}

/// How an exchange broke: what the client is told (503 or 502) depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Reset or closed before a response head: the upstream is unavailable.
    Reset,
    /// A response that is not valid HTTP.
    Malformed,
}

/// An error and its sources on one line, for logs and error bodies.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}
