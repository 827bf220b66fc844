//! `CASES.toml`: what the test kit feeds a filter and what it expects back. Read in two
//! steps: serde reads the file as written (every key checked, `deny_unknown_fields`),
//! then [`prepare`] turns each case into the HTTP messages, canned answers and
//! expectations the runner uses, pointing any mistake at its line.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, request, response};
use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigError, LimitsConfig, Source};
use crate::wasm::{CalloutFailure, CannedAnswer};

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    filter: FilterSpec,
    #[serde(default, rename = "case")]
    cases: Vec<Spanned<CaseSpec>>,
}

/// `[filter]`: the filter under test, as its `[[filters]]` entry would load it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterSpec {
    #[serde(default = "default_name")]
    name: String,
    #[serde(default = "empty_table")]
    config: toml::Value,
    #[serde(default)]
    limits: LimitsConfig,
    /// Clusters the filter may reroute to (clusters with a canned callout answer exist too).
    #[serde(default)]
    clusters: Vec<String>,
}

impl Default for FilterSpec {
    fn default() -> Self {
        FilterSpec {
            name: default_name(),
            config: empty_table(),
            limits: LimitsConfig::default(),
            clusters: Vec::new(),
        }
    }
}

fn default_name() -> String {
    "test".to_owned()
}

fn empty_table() -> toml::Value {
    toml::Value::Table(toml::Table::new())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseSpec {
    name: String,
    /// Replaces `[filter] config` for this case.
    config: Option<toml::Value>,
    #[serde(default)]
    request: RequestSpec,
    #[serde(default)]
    metadata: MetadataSpec,
    /// The filter's KV space before the case, as text values.
    #[serde(default)]
    kv: BTreeMap<String, String>,
    #[serde(default)]
    callouts: BTreeMap<String, CalloutSpec>,
    /// The response the upstream gives; with it (or `expect_response`) the response phase runs.
    response: Option<ResponseSpec>,
    expect: Option<Spanned<ExpectSpec>>,
    expect_response: Option<Spanned<ExpectSpec>>,
    expect_kv: Option<Spanned<BTreeMap<String, KvExpect>>>,
    expect_callouts: Option<Vec<String>>,
    expect_metrics: Option<Vec<Spanned<MetricSpec>>>,
    expect_logs: Option<Vec<Spanned<LogSpec>>>,
    /// `init` must refuse the config with a message containing this text.
    expect_init_error: Option<String>,
}

/// A metric the case must leave behind: exactly one of `counter`, `gauge`, `histogram`
/// names it; `value` is a counter's total or a gauge's last value, `count` and `sum` a
/// histogram's.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricSpec {
    counter: Option<String>,
    gauge: Option<String>,
    histogram: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    value: Option<i64>,
    count: Option<u64>,
    /// A TOML integer or float.
    sum: Option<toml::Value>,
}

/// A line the case must log, in order: its level, and its text whole or in part.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSpec {
    level: Option<String>,
    message: Option<String>,
    contains: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestSpec {
    #[serde(default = "default_method")]
    method: String,
    #[serde(default = "default_path")]
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, Values>,
    body: Option<String>,
}

impl Default for RequestSpec {
    fn default() -> Self {
        RequestSpec {
            method: default_method(),
            path: default_path(),
            headers: BTreeMap::new(),
            body: None,
        }
    }
}

fn default_method() -> String {
    "GET".to_owned()
}

fn default_path() -> String {
    "/".to_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseSpec {
    #[serde(default = "default_status")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, Values>,
    body: Option<String>,
}

fn default_status() -> u16 {
    200
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MetadataSpec {
    client: Option<String>,
    listener: Option<String>,
    route: Option<String>,
    scheme: Option<String>,
    peer: Option<String>,
}

/// A canned callout answer: a response, or `error = "timeout" | "connect-failed" | "unavailable"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CalloutSpec {
    status: Option<u16>,
    #[serde(default)]
    headers: BTreeMap<String, Values>,
    #[serde(default)]
    body: String,
    error: Option<String>,
}

/// A key's value after a case: its text, or `false` for "absent".
#[derive(Deserialize)]
#[serde(untagged)]
enum KvExpect {
    Text(String),
    Present(bool),
}

/// One header value or several, in order.
#[derive(Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(untagged)]
pub enum Values {
    One(String),
    Many(Vec<String>),
}

impl Values {
    pub fn as_slice(&self) -> &[String] {
        match self {
            Values::One(v) => std::slice::from_ref(v),
            Values::Many(v) => v,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectSpec {
    decision: DecisionKind,
    status: Option<u16>,
    #[serde(default)]
    headers: BTreeMap<String, Values>,
    #[serde(default)]
    removed_headers: Vec<String>,
    body: Option<String>,
    path: Option<String>,
    cluster: Option<String>,
    error: Option<String>,
}

/// What a filter decided in a phase.
#[derive(Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DecisionKind {
    Continue,
    Respond,
    Reroute,
    /// The phase failed (a trap, a limit hit, an invalid decision).
    Error,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Continue => "continue",
            DecisionKind::Respond => "respond",
            DecisionKind::Reroute => "reroute",
            DecisionKind::Error => "error",
        }
    }
}

/// Which family a guest metric is in: each kind has its own names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// What one series must hold after the case.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// The sum of the case's `counter-add` calls.
    Counter(u64),
    /// The last `gauge-set`.
    Gauge(i64),
    /// The number of observations and their sum; `None`: not checked.
    Histogram { count: Option<u64>, sum: Option<f64> },
}

/// A metric series the filter must have emitted in the case.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpectMetric {
    pub kind: MetricKind,
    pub name: String,
    /// The guest's labels, sorted by name as the host stores them.
    pub labels: Vec<(String, String)>,
    pub value: MetricValue,
}

/// A log line the filter must have written, matched in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectLog {
    /// `trace`, `debug`, `info`, `warn` or `error`; `None`: any.
    pub level: Option<String>,
    pub text: LogText,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogText {
    Exactly(String),
    Contains(String),
}

/// The file, ready to run.
pub struct Cases {
    pub filter_name: String,
    pub limits: LimitsConfig,
    pub cases: Vec<Case>,
}

/// The facts of the request that no filter changes (`metadata` in the WIT).
pub struct Metadata {
    pub client: SocketAddr,
    pub listener: String,
    pub route: String,
    pub scheme: &'static str,
    pub peer: Option<String>,
}

/// One case, ready to run.
pub struct Case {
    pub name: String,
    /// `file:line` of the case.
    pub at: String,
    pub config_json: String,
    pub request: request::Parts,
    pub request_body: Option<Bytes>,
    pub metadata: Metadata,
    pub kv: BTreeMap<String, String>,
    pub callouts: HashMap<String, CannedAnswer>,
    /// Names every cluster the filter may reach in this case (reroute or callout).
    pub clusters: Vec<String>,
    pub response: Option<(response::Parts, Option<Bytes>)>,
    pub expect: Option<Expect>,
    pub expect_response: Option<Expect>,
    /// Keys and their text after the case; `None`: the key must be absent.
    pub expect_kv: Option<BTreeMap<String, Option<String>>>,
    pub expect_callouts: Option<Vec<String>>,
    pub expect_metrics: Vec<ExpectMetric>,
    /// Every line the filter logs in the case, in order; `None`: logs are not checked.
    pub expect_logs: Option<Vec<ExpectLog>>,
    pub expect_init_error: Option<String>,
}

/// What a phase must decide and leave behind. Which message the fields describe follows
/// from the decision: the reply for `respond`, otherwise the request (or response) as
/// the filter passed it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    pub decision: DecisionKind,
    pub status: Option<u16>,
    pub headers: BTreeMap<String, Values>,
    pub removed_headers: Vec<String>,
    pub body: Option<String>,
    pub path: Option<String>,
    pub cluster: Option<String>,
    /// The error's kind (`trap`, `cpu`, `memory`, `body`, `invalid`), for `decision = "error"`.
    pub error: Option<String>,
}

/// Reads and checks a `CASES.toml`; `origin` names it in errors.
pub fn parse(origin: &str, text: &str) -> Result<Cases, ConfigError> {
    let src = Source {
        origin: origin.to_owned(),
        text: text.to_owned(),
    };
    let file: File = toml::from_str(text).map_err(|e| match e.span() {
        Some(span) => src.error_at(span, e.message().to_owned()),
        None => src.error(e.message().to_owned()),
    })?;
    if file.cases.is_empty() {
        return Err(src.error("no [[case]]: a test kit run needs at least one case"));
    }
    file.filter
        .limits
        .check()
        .map_err(|e| src.error(format!("[filter] {e}")))?;
    let cases = file
        .cases
        .iter()
        .map(|case| prepare(&src, &file.filter, case))
        .collect::<Result<_, _>>()?;
    Ok(Cases {
        filter_name: file.filter.name,
        limits: file.filter.limits,
        cases,
    })
}

fn prepare(src: &Source, filter: &FilterSpec, spanned: &Spanned<CaseSpec>) -> Result<Case, ConfigError> {
    let case = spanned.get_ref();
    let fail = |span: std::ops::Range<usize>, e: String| src.error_at(span, format!("case {:?}: {e}", case.name));
    let at_case = |e: String| fail(spanned.span(), e);
    if case.expect.is_none()
        && case.expect_response.is_none()
        && case.expect_kv.is_none()
        && case.expect_callouts.is_none()
        && case.expect_metrics.is_none()
        && case.expect_logs.is_none()
        && case.expect_init_error.is_none()
    {
        return Err(at_case(
            "expects nothing: give `expect`, `expect_response`, `expect_kv`, `expect_callouts`, `expect_metrics`, \
             `expect_logs` or `expect_init_error`"
                .to_owned(),
        ));
    }
    let config = case.config.as_ref().unwrap_or(&filter.config);
    let config_json = serde_json::to_string(config).map_err(|e| at_case(format!("config: {e}")))?;

    let r = &case.request;
    let mut builder = http::Request::builder().method(r.method.as_str()).uri(r.path.as_str());
    if let Some(headers) = builder.headers_mut() {
        *headers = header_map(&r.headers).map_err(|e| at_case(format!("request: {e}")))?;
    }
    let request_body = r.body.as_ref().map(|b| Bytes::from(b.clone()));
    let (mut request, ()) = builder
        .body(())
        .map_err(|e| at_case(format!("request {} {}: {e}", r.method, r.path)))?
        .into_parts();
    if let Some(body) = &request_body
        && !request.headers.contains_key(http::header::CONTENT_LENGTH)
    {
        request
            .headers
            .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }

    let response = match &case.response {
        Some(spec) => Some(response_parts(spec).map_err(|e| at_case(format!("response: {e}")))?),
        None if case.expect_response.is_some() => Some(
            response_parts(&ResponseSpec {
                status: 200,
                headers: BTreeMap::new(),
                body: None,
            })
            .map_err(at_case)?,
        ),
        None => None,
    };

    let m = &case.metadata;
    let metadata = Metadata {
        client: match &m.client {
            Some(text) => text
                .parse()
                .map_err(|_| at_case(format!("metadata.client {text:?} is not an ip:port")))?,
            None => SocketAddr::from(([192, 0, 2, 1], 40000)),
        },
        listener: m.listener.clone().unwrap_or_else(|| "public".to_owned()),
        route: m.route.clone().unwrap_or_else(|| "default".to_owned()),
        scheme: match m.scheme.as_deref() {
            None | Some("http") => "http",
            Some("https") => "https",
            Some(other) => {
                return Err(at_case(format!(
                    "metadata.scheme {other:?}: write \"http\" or \"https\""
                )));
            }
        },
        peer: m.peer.clone(),
    };

    let mut callouts = HashMap::new();
    for (cluster, spec) in &case.callouts {
        let answer = canned(spec).map_err(|e| at_case(format!("callouts.{cluster}: {e}")))?;
        callouts.insert(cluster.clone(), answer);
    }
    let mut clusters: Vec<String> = filter.clusters.clone();
    clusters.extend(case.callouts.keys().cloned());
    clusters.sort_unstable();
    clusters.dedup();

    let expect = match &case.expect {
        Some(e) => {
            Some(expectation(e.get_ref(), Phase::Request).map_err(|msg| fail(e.span(), format!("expect: {msg}")))?)
        }
        None => None,
    };
    let expect_response = match &case.expect_response {
        Some(e) => Some(
            expectation(e.get_ref(), Phase::Response)
                .map_err(|msg| fail(e.span(), format!("expect_response: {msg}")))?,
        ),
        None => None,
    };
    let expect_kv = match &case.expect_kv {
        None => None,
        Some(spanned) => {
            let mut keys = BTreeMap::new();
            for (key, value) in spanned.get_ref() {
                let value = match value {
                    KvExpect::Text(text) => Some(text.clone()),
                    KvExpect::Present(false) => None,
                    KvExpect::Present(true) => {
                        return Err(fail(
                            spanned.span(),
                            format!("expect_kv.{key}: write its value, or false for absent"),
                        ));
                    }
                };
                keys.insert(key.clone(), value);
            }
            Some(keys)
        }
    };
    let mut expect_metrics = Vec::new();
    for (i, m) in case.expect_metrics.iter().flatten().enumerate() {
        let metric =
            metric_expectation(m.get_ref()).map_err(|e| fail(m.span(), format!("expect_metrics[{i}]: {e}")))?;
        expect_metrics.push(metric);
    }
    let expect_logs = match &case.expect_logs {
        None => None,
        Some(lines) => Some(
            lines
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    log_expectation(l.get_ref()).map_err(|e| fail(l.span(), format!("expect_logs[{i}]: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let (line, _) = src.error_at(spanned.span(), "").position.unwrap_or((0, 0));
    Ok(Case {
        name: case.name.clone(),
        at: format!("{}:{line}", src.origin),
        config_json,
        request,
        request_body,
        metadata,
        kv: case.kv.clone(),
        callouts,
        clusters,
        response,
        expect,
        expect_response,
        expect_kv,
        expect_callouts: case.expect_callouts.clone(),
        expect_metrics,
        expect_logs,
        expect_init_error: case.expect_init_error.clone(),
    })
}

fn metric_expectation(spec: &MetricSpec) -> Result<ExpectMetric, String> {
    let (kind, name) = match (&spec.counter, &spec.gauge, &spec.histogram) {
        (Some(n), None, None) => (MetricKind::Counter, n),
        (None, Some(n), None) => (MetricKind::Gauge, n),
        (None, None, Some(n)) => (MetricKind::Histogram, n),
        _ => return Err("name the metric with exactly one of `counter`, `gauge` or `histogram`".to_owned()),
    };
    let value = match kind {
        MetricKind::Counter | MetricKind::Gauge if spec.count.is_some() || spec.sum.is_some() => {
            return Err(format!(
                "`count` and `sum` are a histogram's; a {} has `value`",
                kind.as_str()
            ));
        }
        MetricKind::Counter => match spec.value {
            Some(v) => MetricValue::Counter(u64::try_from(v).map_err(|_| format!("a counter cannot be {v}"))?),
            None => return Err("give the counter's `value`".to_owned()),
        },
        MetricKind::Gauge => MetricValue::Gauge(spec.value.ok_or("give the gauge's `value`")?),
        MetricKind::Histogram => {
            if spec.value.is_some() {
                return Err("a histogram has `count` and `sum`, not `value`".to_owned());
            }
            let sum = match &spec.sum {
                None => None,
                Some(toml::Value::Integer(i)) => Some(*i as f64),
                Some(toml::Value::Float(f)) => Some(*f),
                Some(other) => return Err(format!("`sum` is a number, not {other}")),
            };
            if spec.count.is_none() && sum.is_none() {
                return Err("give the histogram's `count`, `sum` or both".to_owned());
            }
            MetricValue::Histogram { count: spec.count, sum }
        }
    };
    let mut labels: Vec<(String, String)> = spec.labels.clone().into_iter().collect();
    labels.sort_unstable();
    Ok(ExpectMetric {
        kind,
        name: name.clone(),
        labels,
        value,
    })
}

fn log_expectation(spec: &LogSpec) -> Result<ExpectLog, String> {
    if let Some(level) = &spec.level
        && !matches!(level.as_str(), "trace" | "debug" | "info" | "warn" | "error")
    {
        return Err(format!(
            "level {level:?}: write \"trace\", \"debug\", \"info\", \"warn\" or \"error\""
        ));
    }
    let text = match (&spec.message, &spec.contains) {
        (Some(m), None) => LogText::Exactly(m.clone()),
        (None, Some(c)) => LogText::Contains(c.clone()),
        _ => return Err("give the line's `message` (all of it) or `contains` (a part), one of them".to_owned()),
    };
    Ok(ExpectLog {
        level: spec.level.clone(),
        text,
    })
}

fn header_map(headers: &BTreeMap<String, Values>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    for (name, values) in headers {
        let header = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))?;
        for value in values.as_slice() {
            let value =
                HeaderValue::from_str(value).map_err(|_| format!("header {name}: {value:?} is not a valid value"))?;
            map.append(header.clone(), value);
        }
    }
    Ok(map)
}

fn response_parts(spec: &ResponseSpec) -> Result<(response::Parts, Option<Bytes>), String> {
    let mut builder = http::Response::builder().status(spec.status);
    if let Some(headers) = builder.headers_mut() {
        *headers = header_map(&spec.headers)?;
    }
    let (head, ()) = builder
        .body(())
        .map_err(|e| format!("status {}: {e}", spec.status))?
        .into_parts();
    Ok((head, spec.body.as_ref().map(|b| Bytes::from(b.clone()))))
}

fn canned(spec: &CalloutSpec) -> Result<CannedAnswer, String> {
    match (&spec.error, spec.status) {
        (Some(_), Some(_)) => Err("give `status` (an answer) or `error` (a failure), not both".to_owned()),
        (Some(kind), None) => Ok(CannedAnswer::Failure(match kind.as_str() {
            "timeout" => CalloutFailure::Timeout,
            "connect-failed" => CalloutFailure::ConnectFailed,
            "unavailable" => CalloutFailure::Unavailable,
            other => {
                return Err(format!(
                    "error {other:?}: write \"timeout\", \"connect-failed\" or \"unavailable\""
                ));
            }
        })),
        (None, status) => {
            let status = status.unwrap_or(200);
            if !(100..600).contains(&status) {
                return Err(format!("status {status} is not an HTTP status"));
            }
            Ok(CannedAnswer::Response {
                status,
                headers: header_map(&spec.headers)?,
                body: spec.body.clone().into_bytes(),
            })
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    Response,
}

/// Checks that every field given means something for the decision and phase: an
/// expectation that can never be compared would be a test that cannot fail.
fn expectation(spec: &ExpectSpec, phase: Phase) -> Result<Expect, String> {
    let d = spec.decision;
    let not_for = |field: &str| Err(format!("`{field}` does not apply to decision = \"{}\"", d.as_str()));
    if phase == Phase::Response && d == DecisionKind::Reroute {
        return Err("a response phase cannot reroute (decision: continue, respond or error)".to_owned());
    }
    if d == DecisionKind::Error {
        for (field, given) in [
            ("status", spec.status.is_some()),
            ("headers", !spec.headers.is_empty()),
            ("removed_headers", !spec.removed_headers.is_empty()),
            ("body", spec.body.is_some()),
            ("path", spec.path.is_some()),
            ("cluster", spec.cluster.is_some()),
        ] {
            if given {
                return not_for(field);
            }
        }
    } else if spec.error.is_some() {
        return not_for("error");
    }
    if spec.status.is_some() && phase == Phase::Request && d != DecisionKind::Respond {
        return not_for("status");
    }
    if spec.path.is_some() && (phase == Phase::Response || d == DecisionKind::Respond) {
        return Err("`path` applies to a request passed on (decision continue or reroute)".to_owned());
    }
    if spec.cluster.is_some() && d != DecisionKind::Reroute {
        return not_for("cluster");
    }
    for name in spec.headers.keys().chain(&spec.removed_headers) {
        HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a header name"))?;
    }
    Ok(Expect {
        decision: d,
        status: spec.status,
        headers: spec.headers.clone(),
        removed_headers: spec.removed_headers.clone(),
        body: spec.body.clone(),
        path: spec.path.clone(),
        cluster: spec.cluster.clone(),
        error: spec.error.clone(),
    })
}
