//! Host side of `weft:filter/callout`: HTTP requests from a guest to a cluster of the
//! config version the filter was loaded with, through that cluster's connection pool.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::{CONTENT_LENGTH, HOST, HeaderValue, TRANSFER_ENCODING};
use http_body_util::{BodyExt, Limited};

use super::bindings::callout::Host;
use super::bindings::{CalloutError, CalloutRequest, CalloutResponse};
use super::http::Fields;
use super::state::{FilterShared, HostState};
use crate::body::Body;
use crate::cluster::{UpstreamError, error_chain};

/// The longest a guest may wait for one callout, whatever it asks for.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// A callout's answer before its headers become a guest `fields`.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Takes the filter's shared state by `Arc` rather than the store data by reference:
/// the data is `Send` but not `Sync`, and this future is held across `await`s.
async fn callout(
    shared: Arc<FilterShared>,
    cluster: &str,
    method: &str,
    path: &str,
    headers: HeaderMap,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, CalloutError> {
    let Some(target) = shared.clusters.get(cluster) else {
        let mut known: Vec<&str> = shared.clusters.keys().map(|k| &**k).collect();
        known.sort_unstable();
        return Err(CalloutError::UnknownCluster(format!(
            "unknown cluster {cluster:?} (defined: {})",
            known.join(", ")
        )));
    };
    let limit = shared.body_limit;
    if body.len() > limit {
        return Err(CalloutError::TooLarge);
    }
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(Body::full(body))
        .map_err(|e| CalloutError::InvalidRequest(format!("{method} {path}: {e}")))?;
    *request.headers_mut() = headers;
    // A guest may pass a request's own headers on: their framing described another body.
    request.headers_mut().remove(CONTENT_LENGTH);
    request.headers_mut().remove(TRANSFER_ENCODING);
    // The cluster's client does not set Host (the proxy forwards the client's).
    if !request.headers().contains_key(HOST) {
        let host = HeaderValue::from_str(cluster).unwrap_or(HeaderValue::from_static("weft"));
        request.headers_mut().insert(HOST, host);
    }

    let deadline = tokio::time::Instant::now() + timeout;
    let response = target.send(request, timeout).await.map_err(|e| match e {
        UpstreamError::Timeout { .. } => CalloutError::Timeout,
        UpstreamError::Connect { .. } => CalloutError::ConnectFailed(e.to_string()),
        UpstreamError::BadRequest(why) => CalloutError::InvalidRequest(why),
        other => CalloutError::Unavailable(error_chain(&other)),
    })?;
    let (head, body) = response.into_parts();
    let collected = tokio::time::timeout_at(deadline, Limited::new(body, limit).collect())
        .await
        .map_err(|_| CalloutError::Timeout)?
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                CalloutError::TooLarge
            } else {
                CalloutError::Unavailable(format!("reading the response body from cluster {cluster:?}: {e}"))
            }
        })?;
    Ok(Answer {
        status: head.status.as_u16(),
        headers: head.headers,
        body: collected.to_bytes().to_vec(),
    })
}

impl Host for HostState {
    async fn send(
        &mut self,
        cluster: String,
        request: CalloutRequest,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<CalloutResponse, CalloutError>> {
        let timeout = Duration::from_millis(u64::from(timeout_ms)).min(MAX_TIMEOUT);
        // The guest moved its `fields` to the host: they are already valid headers.
        let headers = self.take_fields(request.headers)?;
        let started = Instant::now();
        let result = callout(
            self.shared.clone(),
            &cluster,
            &request.method,
            &request.path,
            headers,
            request.body,
            timeout,
        )
        .await;
        // Waiting on the network is not the guest's CPU time.
        self.budget.waited += started.elapsed();
        Ok(match result {
            Ok(answer) => Ok(CalloutResponse {
                status: answer.status,
                headers: self.new_fields(Fields::Own(answer.headers))?,
                body: answer.body,
            }),
            Err(e) => {
                tracing::debug!(filter = %self.shared.name, cluster, error = ?e, "callout failed");
                Err(e)
            }
        })
    }
}
