//! Host side of `weft:filter/callout`: HTTP requests from a guest to a cluster of the
//! config version the filter was loaded with, through that cluster's connection pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HOST, HeaderName, HeaderValue};
use http_body_util::{BodyExt, Limited};

use super::bindings::callout::Host;
use super::bindings::{CalloutRequest, CalloutResponse};
use super::state::{FilterShared, HostState};
use crate::body::Body;
use crate::cluster::error_chain;

/// The longest a guest may wait for one callout, whatever it asks for.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// Takes the filter's shared state by `Arc` rather than the store data by reference:
/// the data is `Send` but not `Sync`, and this future is held across `await`s.
async fn callout(
    shared: Arc<FilterShared>,
    cluster: &str,
    req: CalloutRequest,
    timeout: Duration,
) -> Result<CalloutResponse, String> {
    let Some(target) = shared.clusters.get(cluster) else {
        let mut known: Vec<&str> = shared.clusters.keys().map(|k| &**k).collect();
        known.sort_unstable();
        return Err(format!("unknown cluster {cluster:?} (defined: {})", known.join(", ")));
    };
    let limit = shared.body_limit;
    if req.body.len() > limit {
        return Err(format!(
            "callout body of {} bytes is over the filter's limit of {limit}",
            req.body.len()
        ));
    }
    let mut builder = http::Request::builder()
        .method(req.method.as_str())
        .uri(req.path.as_str());
    for (name, value) in &req.headers {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
        let value = HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
        builder = builder.header(name, value);
    }
    let mut request = builder
        .body(Body::full(req.body))
        .map_err(|e| format!("invalid callout request: {e}"))?;
    // The cluster's client does not set Host (the proxy forwards the client's).
    if !request.headers().contains_key(HOST) {
        let host = HeaderValue::from_str(cluster).unwrap_or(HeaderValue::from_static("weft"));
        request.headers_mut().insert(HOST, host);
    }

    let deadline = tokio::time::Instant::now() + timeout;
    let response = target.send(request, timeout).await.map_err(|e| error_chain(&e))?;
    let (head, body) = response.into_parts();
    let collected = tokio::time::timeout_at(deadline, Limited::new(body, limit).collect())
        .await
        .map_err(|_| format!("the response body from cluster {cluster:?} did not arrive within {timeout:?}"))?
        .map_err(|e| format!("reading the response body from cluster {cluster:?}: {e}"))?;
    let headers = head
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Ok(CalloutResponse {
        status: head.status.as_u16(),
        headers,
        body: collected.to_bytes().to_vec(),
    })
}

impl Host for HostState {
    async fn send(
        &mut self,
        cluster: String,
        request: CalloutRequest,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<CalloutResponse, String>> {
        let timeout = Duration::from_millis(u64::from(timeout_ms)).min(MAX_TIMEOUT);
        let started = Instant::now();
        let result = callout(self.shared.clone(), &cluster, request, timeout).await;
        // Waiting on the network is not the guest's CPU time.
        self.budget.waited += started.elapsed();
        if let Err(e) = &result {
            tracing::debug!(filter = %self.shared.name, cluster, error = %e, "callout failed");
        }
        Ok(result)
    }
}
