//! Host side of `weft:filter/callout`: HTTP requests from a guest to a cluster of the
//! config version the filter was loaded with, through that cluster's connection pool —
//! or, for the test kit (`plugin::test_kit`), to answers given in advance
//! ([`CalloutTransport::Canned`]), which replace the network here and nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::HeaderMap;
use http::header::{HOST, HeaderValue};
use http_body_util::{BodyExt, Limited};

use super::http::Fields;
use crate::body::Body;
use crate::header_policy;
use crate::upstream::{UpstreamError, error_chain};
use crate::wasm::bindings::callout::Host;
use crate::wasm::bindings::callout::Pending;
use crate::wasm::bindings::{CalloutError, CalloutRequest, CalloutResponse};
use crate::wasm::state::{FilterShared, HostState};

/// The longest a guest may wait for one callout, whatever it asks for.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// Most requests in one `send-all`: enough to fan out to several services, few enough
/// that one guest call cannot open a flood of upstream connections.
const MAX_PARALLEL: usize = 16;

/// Where a filter's callouts go.
#[derive(Clone, Default)]
pub enum CalloutTransport {
    /// The clusters of the filter's config version, over the network: the proxy.
    #[default]
    Clusters,
    /// Answers by cluster name, given in advance: the test kit. No socket is opened.
    Canned(Arc<CannedCallouts>),
}

/// A canned answer to every callout to one cluster.
#[derive(Debug, Clone)]
pub enum CannedAnswer {
    Response {
        status: u16,
        headers: HeaderMap,
        body: Vec<u8>,
    },
    /// The exchange fails as a real one would: the guest gets `callout-error.<kind>`.
    Failure(CalloutFailure),
}

/// The network failures a canned answer can stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalloutFailure {
    Timeout,
    ConnectFailed,
    Unavailable,
}

/// One callout a guest made, as the host would have sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentCallout {
    pub cluster: String,
    pub method: String,
    pub path: String,
}

/// Canned answers by cluster name, and the callouts the guest made (in order).
#[derive(Debug, Default)]
pub struct CannedCallouts {
    answers: HashMap<String, CannedAnswer>,
    sent: Mutex<Vec<SentCallout>>,
}

impl CannedCallouts {
    pub fn new(answers: HashMap<String, CannedAnswer>) -> Self {
        CannedCallouts {
            answers,
            sent: Mutex::default(),
        }
    }

    /// The callouts made so far, in order.
    pub fn sent(&self) -> Vec<SentCallout> {
        self.sent.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Answers a request that passed the same checks a real one does; a cluster with no
    /// answer is unknown, as a cluster missing from the config is.
    fn answer(&self, cluster: &str, request: http::Request<Body>, limit: usize) -> Result<Answer, CalloutError> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(SentCallout {
                cluster: cluster.to_owned(),
                method: request.method().to_string(),
                path: request.uri().to_string(),
            });
        let Some(answer) = self.answers.get(cluster) else {
            let mut known: Vec<&str> = self.answers.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(CalloutError::UnknownCluster(format!(
                "no canned answer for cluster {cluster:?} (answered: {})",
                known.join(", ")
            )));
        };
        match answer {
            CannedAnswer::Response { body, .. } if body.len() > limit => Err(CalloutError::TooLarge),
            CannedAnswer::Response { status, headers, body } => Ok(Answer {
                status: *status,
                headers: headers.clone(),
                body: body.clone(),
            }),
            CannedAnswer::Failure(CalloutFailure::Timeout) => Err(CalloutError::Timeout),
            CannedAnswer::Failure(CalloutFailure::ConnectFailed) => Err(CalloutError::ConnectFailed(format!(
                "canned: cannot connect to cluster {cluster:?}"
            ))),
            CannedAnswer::Failure(CalloutFailure::Unavailable) => Err(CalloutError::Unavailable(format!(
                "canned: the exchange with cluster {cluster:?} failed"
            ))),
        }
    }
}

/// A callout's request with its headers taken out of the guest's `fields`.
struct Outgoing {
    cluster: String,
    method: String,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    timeout: Duration,
}

impl HostState {
    fn outgoing(&mut self, cluster: String, request: CalloutRequest, timeout_ms: u32) -> wasmtime::Result<Outgoing> {
        Ok(Outgoing {
            cluster,
            // The guest moved its `fields` to the host: they are already valid headers.
            headers: self.take_fields(request.headers)?,
            method: request.method,
            path: request.path,
            body: request.body,
            timeout: Duration::from_millis(u64::from(timeout_ms)).min(MAX_TIMEOUT),
        })
    }

    /// The guest's view of an outcome: the answer's headers become a `fields`.
    fn answer(
        &mut self,
        result: Result<Answer, CalloutError>,
    ) -> wasmtime::Result<Result<CalloutResponse, CalloutError>> {
        let answer = match result {
            Ok(answer) => answer,
            Err(e) => return Ok(Err(e)),
        };
        Ok(Ok(CalloutResponse {
            status: answer.status,
            headers: self.new_fields(Fields::Own(answer.headers))?,
            body: answer.body,
        }))
    }
}

/// A callout's answer before its headers become a guest `fields`.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

/// Takes the filter's shared state by `Arc` rather than the store data by reference:
/// the data is `Send` but not `Sync`, and this future is held across `await`s.
async fn callout(shared: Arc<FilterShared>, out: Outgoing) -> Result<Answer, CalloutError> {
    let Outgoing {
        cluster,
        method,
        path,
        headers,
        body,
        timeout,
    } = out;
    let result = exchange(&shared, &cluster, &method, &path, headers, body, timeout).await;
    if let Err(e) = &result {
        tracing::debug!(filter = %shared.name, cluster, error = ?e, "callout failed");
    }
    result
}

async fn exchange(
    shared: &FilterShared,
    cluster: &str,
    method: &str,
    path: &str,
    headers: HeaderMap,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer, CalloutError> {
    let limit = shared.body_limit;
    let target = match &shared.callouts {
        CalloutTransport::Clusters => match shared.clusters.get(cluster) {
            Some(target) => target,
            None => {
                let mut known: Vec<&str> = shared.clusters.keys().map(|k| &**k).collect();
                known.sort_unstable();
                return Err(CalloutError::UnknownCluster(format!(
                    "unknown cluster {cluster:?} (defined: {})",
                    known.join(", ")
                )));
            }
        },
        CalloutTransport::Canned(canned) => {
            return canned.answer(cluster, request(cluster, method, path, headers, body, limit)?, limit);
        }
    };
    let request = request(cluster, method, path, headers, body, limit)?;

    let deadline = tokio::time::Instant::now() + timeout;
    let response = target.send(request, timeout, None, None).await.map_err(|e| match e {
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

/// The request a callout sends, checked as the network needs it whichever transport
/// carries it.
fn request(
    cluster: &str,
    method: &str,
    path: &str,
    headers: HeaderMap,
    body: Vec<u8>,
    limit: usize,
) -> Result<http::Request<Body>, CalloutError> {
    if body.len() > limit {
        return Err(CalloutError::TooLarge);
    }
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .body(Body::full(body))
        .map_err(|e| CalloutError::InvalidRequest(format!("{method} {path}: {e}")))?;
    *request.headers_mut() = headers;
    // A guest may pass a request's own headers on (its `fields` refuse the rest): their
    // framing, hop and authority described another message, so the one header policy's
    // names go and the callout names its own cluster as Host (the cluster's client does
    // not set one: the proxy forwards the client's).
    header_policy::strip_refused(request.headers_mut());
    let host = HeaderValue::from_str(cluster).unwrap_or(HeaderValue::from_static("weft"));
    request.headers_mut().insert(HOST, host);
    Ok(request)
}

impl Host for HostState {
    async fn send(
        &mut self,
        cluster: String,
        request: CalloutRequest,
        timeout_ms: u32,
    ) -> wasmtime::Result<Result<CalloutResponse, CalloutError>> {
        let out = self.outgoing(cluster, request, timeout_ms)?;
        let started = Instant::now();
        let result = callout(self.shared.clone(), out).await;
        // Waiting on the network is not the guest's CPU time.
        self.budget.waited += started.elapsed();
        self.answer(result)
    }

    async fn send_all(
        &mut self,
        requests: Vec<Pending>,
    ) -> wasmtime::Result<Vec<Result<CalloutResponse, CalloutError>>> {
        let mut outgoing = Vec::with_capacity(requests.len().min(MAX_PARALLEL));
        let mut refused = 0;
        for (i, p) in requests.into_iter().enumerate() {
            let out = self.outgoing(p.cluster, p.request, p.timeout_ms)?;
            if i < MAX_PARALLEL {
                outgoing.push(out);
            } else {
                refused += 1;
            }
        }
        let started = Instant::now();
        let results =
            futures_util::future::join_all(outgoing.into_iter().map(|out| callout(self.shared.clone(), out))).await;
        self.budget.waited += started.elapsed();
        let mut answers = Vec::with_capacity(results.len() + refused);
        for result in results {
            answers.push(self.answer(result)?);
        }
        answers.extend((0..refused).map(|_| {
            Err(CalloutError::InvalidRequest(format!(
                "at most {MAX_PARALLEL} requests in one send-all"
            )))
        }));
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    /// A guest may hand a request's own headers to a callout (its `fields` refuse only
    /// what is set through them): none of the names the proxy keeps to itself goes out,
    /// and the Host is the callout's cluster.
    #[test]
    fn a_callout_sends_none_of_the_refused_headers_it_was_handed() {
        let mut handed = HeaderMap::new();
        for name in &crate::header_policy::REFUSED {
            handed.insert(name.clone(), HeaderValue::from_static("client's"));
        }
        handed.insert("x-keep", HeaderValue::from_static("1"));
        let request = request("auth", "POST", "/check", handed, b"{}".to_vec(), 1024).expect("valid");
        let headers = request.headers();
        assert_eq!(headers.get(HOST).map(|h| h.as_bytes()), Some(&b"auth"[..]));
        assert_eq!(headers.get("x-keep").map(|h| h.as_bytes()), Some(&b"1"[..]));
        assert_eq!(headers.len(), 2, "{headers:?}");
    }
}
