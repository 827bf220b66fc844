//! The one place where a failed request becomes an HTTP answer and a log line.

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{Body, ClientBodyFault, text};
use crate::filter::{FilterError, Overload};
use crate::front::Refusal;
use crate::grpc::Code;
use crate::upstream::{Broken, UpstreamError};

/// Which message's body: the client's request (its fault: 400) or the upstream's
/// response (502).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Request,
    Response,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Request => "request",
            Side::Response => "response",
        })
    }
}

/// Everything that can stop a request before the upstream's response reaches the client.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("refused at the front door: {0}")]
    Refused(Refusal),
    #[error("{0}")]
    ClientBody(ClientBodyFault),
    #[error("no route matches {method} {host}{path}")]
    NoRoute {
        method: http::Method,
        host: String,
        path: String,
    },
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("filter {filter:?} failed: {error}")]
    Filter { filter: String, error: FilterError },
    /// The filter is at its concurrency limit: the client may retry shortly.
    #[error("filter {filter:?} is overloaded: {reason}")]
    FilterOverloaded { filter: String, reason: Overload },
    #[error("request body larger than the {limit} bytes a filter may buffer")]
    RequestBodyTooLarge { limit: usize },
    #[error("response body larger than the {limit} bytes a filter may buffer")]
    ResponseBodyTooLarge { limit: usize },
    #[error("reading the {side} body failed: {reason}")]
    Body { side: Side, reason: String },
    #[error(transparent)]
    Rewrite(#[from] crate::route::RewriteRefused),
    #[error("fault injected: {status}")]
    FaultAbort { status: StatusCode },
    #[error("the route has no cluster to send to")]
    NoCluster,
}

impl ProxyError {
    /// The error for a failed filter that the chain does not skip.
    pub fn filter(filter: &str, error: FilterError) -> Self {
        match error {
            FilterError::Overloaded(reason) => ProxyError::FilterOverloaded {
                filter: filter.to_owned(),
                reason,
            },
            error => ProxyError::Filter {
                filter: filter.to_owned(),
                error,
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Refused(refusal) => refusal.status(),
            ProxyError::ClientBody(fault) | ProxyError::Upstream(UpstreamError::ClientBody(fault)) => fault.status(),
            ProxyError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ProxyError::Upstream(UpstreamError::Timeout { .. } | UpstreamError::Deadline { .. }) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            // No connection, or reset before an answer: the upstream is unavailable, as
            // Envoy (UF, UC, URX) and the Gateway API say; 502 is for a malformed answer.
            ProxyError::Upstream(
                UpstreamError::Overloaded { .. }
                | UpstreamError::Connect { .. }
                | UpstreamError::Exchange {
                    cause: Broken::Reset, ..
                },
            ) => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Upstream(UpstreamError::BadRequest(_)) => StatusCode::BAD_REQUEST,
            ProxyError::Upstream(_) | ProxyError::ResponseBodyTooLarge { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::RequestBodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::FilterOverloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Body {
                side: Side::Request, ..
            }
            | ProxyError::Rewrite(_) => StatusCode::BAD_REQUEST,
            ProxyError::Body { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::FaultAbort { status } => *status,
            ProxyError::Filter { .. } | ProxyError::NoCluster => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the client reads. Short, and never the internals of a failed filter: those go
    /// to the log, where the operator looks.
    fn public_text(&self) -> &'static str {
        match self {
            ProxyError::Refused(refusal) => refusal.public_text(),
            ProxyError::ClientBody(fault) | ProxyError::Upstream(UpstreamError::ClientBody(fault)) => match fault {
                ClientBodyFault::TooLarge { .. } => "request body too large\n",
                ClientBodyFault::Idle { .. } => "request body timed out\n",
                ClientBodyFault::Malformed => "malformed request body\n",
            },
            ProxyError::NoRoute { .. } => "no route for this request\n",
            ProxyError::Upstream(UpstreamError::Timeout { .. } | UpstreamError::Deadline { .. }) => {
                "upstream timed out\n"
            }
            ProxyError::Upstream(UpstreamError::Connect { .. }) => "upstream unreachable\n",
            ProxyError::Upstream(UpstreamError::BadRequest(_)) => "bad request\n",
            ProxyError::Upstream(UpstreamError::Exchange { .. }) => "upstream connection failed\n",
            ProxyError::Upstream(UpstreamError::Overloaded { .. }) => "upstream overloaded\n",
            ProxyError::RequestBodyTooLarge { .. } => "request body too large\n",
            ProxyError::FilterOverloaded { .. } => "overloaded, retry later\n",
            ProxyError::ResponseBodyTooLarge { .. } => "upstream response too large\n",
            ProxyError::Body {
                side: Side::Request, ..
            } => "request body could not be read\n",
            ProxyError::Body { .. } => "upstream response could not be read\n",
            ProxyError::Rewrite(_) => "bad request path\n",
            ProxyError::FaultAbort { .. } => "fault injected\n",
            ProxyError::Filter { .. } | ProxyError::NoCluster => "internal error\n",
        }
    }
}

impl ProxyError {
    /// The `weft_downstream_refused_total` reason when the client is to blame for a
    /// failure found after the front door (its body).
    pub fn client_fault(&self) -> Option<&'static str> {
        match self {
            ProxyError::ClientBody(fault) | ProxyError::Upstream(UpstreamError::ClientBody(fault)) => {
                Some(match fault {
                    ClientBodyFault::TooLarge { .. } => "body_too_large",
                    ClientBodyFault::Idle { .. } => "body_timeout",
                    ClientBodyFault::Malformed => "bad_body",
                })
            }
            _ => None,
        }
    }
}

/// Names the cluster limit that answered 503 at once.
pub static OVERLOADED: header::HeaderName = header::HeaderName::from_static("x-weft-overloaded");
impl ProxyError {
    /// The status a gRPC client gets for this error, after the HTTP-to-gRPC mapping of
    /// gRPC's `doc/http-grpc-status-mapping.md` where no more precise status applies.
    pub fn grpc_code(&self) -> Code {
        match self {
            ProxyError::Upstream(UpstreamError::Timeout { .. } | UpstreamError::Deadline { .. }) => {
                Code::DeadlineExceeded
            }
            ProxyError::Upstream(UpstreamError::Connect { .. } | UpstreamError::Exchange { .. }) => Code::Unavailable,
            ProxyError::FilterOverloaded { .. }
            | ProxyError::RequestBodyTooLarge { .. }
            | ProxyError::ResponseBodyTooLarge { .. } => Code::ResourceExhausted,
            ProxyError::ClientBody(ClientBodyFault::Idle { .. })
            | ProxyError::Upstream(UpstreamError::ClientBody(ClientBodyFault::Idle { .. })) => Code::DeadlineExceeded,
            other => match other.status().as_u16() {
                400 => Code::Internal,
                401 => Code::Unauthenticated,
                403 => Code::PermissionDenied,
                404 => Code::Unimplemented,
                408 | 504 => Code::DeadlineExceeded,
                413 | 414 | 431 => Code::ResourceExhausted,
                429 | 502 | 503 => Code::Unavailable,
                500 => Code::Internal,
                _ => Code::Unknown,
            },
        }
    }
}

/// How the client expects to be told: an HTTP status, or (a gRPC call) HTTP 200 with a
/// `grpc-status` in a trailers-only response, which gRPC clients read and HTTP-level
/// statuses they do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Http,
    Grpc,
}

/// Logs why the request failed and builds the answer.
pub fn error_response(err: &ProxyError, route: &str, dialect: Dialect) -> Response<Body> {
    let status = err.status();
    if status.is_server_error() {
        tracing::warn!(route, status = status.as_u16(), error = %err, "request failed");
    } else {
        tracing::debug!(route, status = status.as_u16(), error = %err, "request refused");
    }
    if dialect == Dialect::Grpc {
        return grpc_status(err.grpc_code(), err.public_text().trim_end());
    }
    let mut resp = text(status, err.public_text());
    if let ProxyError::Upstream(UpstreamError::Overloaded { limit, .. }) = err {
        // Which circuit-breaker limit refused the request, for the client and its logs.
        resp.headers_mut()
            .insert(OVERLOADED.clone(), HeaderValue::from_static(limit));
    }
    if let ProxyError::FilterOverloaded { .. } = err {
        // A queue wait is at most `limits.queue_timeout` (1 s by default): a second is
        // the shortest wait the header can say, and long enough for the burst to drain.
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A trailers-only gRPC answer: one HEADERS frame ending the stream. `message` is one of
/// the proxy's own ASCII texts, which need no percent-encoding.
fn grpc_status(code: Code, message: &'static str) -> Response<Body> {
    let mut resp = Response::new(Body::empty());
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code as u16));
    headers.insert("grpc-message", HeaderValue::from_static(message));
    resp
}
