//! The test kit: runs a filter component against the cases of a `CASES.toml` in the
//! proxy's own Wasm host (engine, limits, KV store, callout host), with no listener and no
//! upstream. Canned callout answers replace the network at the callout host
//! ([`CalloutTransport::Canned`]); everything else is the code the proxy runs.
//!
//! From the command line: `weft plugin test FILTER.wasm CASES.toml`. From a Rust test:
//! [`run_cases`], which returns a [`Report`] to assert on.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use tracing::instrument::WithSubscriber as _;

use super::cases::{self, Case, Cases, DecisionKind, Expect, ExpectLog, ExpectMetric, LogText, MetricValue};
use crate::config::{Config, WasmConfig};
use crate::filter::metrics::FilterMetrics;
use crate::filter::{FilterRequest, FilterResponse, RequestCtx, RequestDecision, ResponseDecision};
use crate::metrics::Families;
use crate::upstream::{Cluster, Clusters};
use crate::wasm::{CalloutTransport, CannedCallouts, InstanceReuse, WasmHost};

/// Runs every case of the file at `cases` against the component at `wasm`. Builds its
/// own runtime: call it from a plain `#[test]`, not from inside an async runtime (there,
/// use [`run`]).
pub fn run_cases(wasm: impl AsRef<Path>, cases: impl AsRef<Path>) -> anyhow::Result<Report> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(wasm.as_ref(), cases.as_ref()))
}

/// [`run_cases`] on a running Tokio runtime.
pub async fn run(wasm: &Path, cases: &Path) -> anyhow::Result<Report> {
    let text = std::fs::read_to_string(cases).with_context(|| format!("cannot read {}", cases.display()))?;
    let cases = cases::parse(&cases.display().to_string(), &text)?;
    run_parsed(wasm, &cases).await
}

/// Runs cases already read.
pub async fn run_parsed(wasm: &Path, cases: &Cases) -> anyhow::Result<Report> {
    std::fs::metadata(wasm).with_context(|| format!("cannot read plugin {}", wasm.display()))?;
    let metrics = Arc::new(FilterMetrics::unregistered());
    let host = WasmHost::new(&WasmConfig::default(), metrics.clone())?;
    let mut report = Report::default();
    for case in &cases.cases {
        capture::reset(&metrics);
        let lines = capture::Lines::default();
        let mut mismatches = match &case.expect_logs {
            None => run_case(&host, wasm, cases, case, None).await?,
            Some(_) => {
                run_case(&host, wasm, cases, case, Some(&lines))
                    .with_subscriber(capture::subscriber(lines.clone()))
                    .await?
            }
        };
        for expect in &case.expect_metrics {
            mismatches.extend(compare_metric(
                expect,
                capture::read(&metrics, &cases.filter_name, expect),
            ));
        }
        if let Some(expected) = &case.expect_logs {
            mismatches.extend(compare_logs(expected, &lines.take()));
        }
        report.cases.push(CaseReport {
            name: case.name.clone(),
            at: case.at.clone(),
            mismatches,
        });
    }
    Ok(report)
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub cases: Vec<CaseReport>,
}

#[derive(Debug)]
pub struct CaseReport {
    pub name: String,
    /// `CASES.toml:12`.
    pub at: String,
    pub mismatches: Vec<Mismatch>,
}

/// One difference between what a case expected and what the filter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// What differs, e.g. `request: decision`, `response: header x-hello`.
    pub field: String,
    pub expected: String,
    pub actual: String,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.cases.iter().all(|c| c.mismatches.is_empty())
    }

    pub fn failed(&self) -> usize {
        self.cases.iter().filter(|c| !c.mismatches.is_empty()).count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for case in &self.cases {
            if case.mismatches.is_empty() {
                writeln!(f, "ok    {}", case.name)?;
                continue;
            }
            writeln!(f, "FAIL  {}  ({})", case.name, case.at)?;
            for m in &case.mismatches {
                writeln!(f, "      {}", m.field)?;
                writeln!(f, "        - expected: {}", m.expected)?;
                writeln!(f, "        + actual:   {}", m.actual)?;
            }
        }
        let failed = self.failed();
        let total = self.cases.len();
        let cases = if total == 1 { "case" } else { "cases" };
        write!(f, "{total} {cases}: {} passed, {failed} failed", total - failed)
    }
}

/// The clusters a case's filter may name, built by the config code the proxy uses. Their
/// endpoint is never contacted: callouts are canned, and a reroute is only a decision.
async fn clusters(names: &[String]) -> anyhow::Result<Arc<Clusters>> {
    let mut text = String::from("[[listeners]]\nname = \"test\"\naddress = \"127.0.0.1:1\"\n");
    for name in names {
        let name = toml::Value::String(name.clone());
        text.push_str(&format!("[[clusters]]\nname = {name}\nendpoints = [\"127.0.0.1:9\"]\n"));
    }
    let config = Config::parse("<test kit clusters>", &text)?;
    let metrics = Arc::new(<crate::upstream::metrics::UpstreamMetrics as crate::metrics::Families>::unregistered());
    let mut clusters = Clusters::new();
    for c in &config.clusters {
        let cluster = Cluster::build(c, &config.source, &metrics, None).await?;
        clusters.insert(cluster.name.clone(), cluster);
    }
    Ok(Arc::new(clusters))
}

/// `lines`, when the case checks its logs: emptied once `init` has run, so a case lists the
/// lines of its phases, not those every case's `init` writes.
async fn run_case(
    host: &WasmHost,
    wasm: &Path,
    cases: &Cases,
    case: &Case,
    lines: Option<&capture::Lines>,
) -> anyhow::Result<Vec<Mismatch>> {
    let mut out = Vec::new();
    let name = &cases.filter_name;
    // The space outlives the filter of the previous case only if something still holds it:
    // nothing does, so each case starts from exactly its own `kv`.
    let space = host.kv_space(name, &cases.limits);
    for (key, value) in &case.kv {
        space
            .set(key, value.clone().into_bytes(), None)
            .await
            .map_err(|e| anyhow::anyhow!("case {:?}: cannot store kv {key:?}: {e:?}", case.name))?;
    }
    let canned = Arc::new(CannedCallouts::new(case.callouts.clone()));
    let loaded = host
        .load(
            name,
            wasm,
            &case.config_json,
            &cases.limits,
            clusters(&case.clusters).await?,
            InstanceReuse::Pooled,
            CalloutTransport::Canned(canned.clone()),
        )
        .await;
    let filter = match (loaded, &case.expect_init_error) {
        (Ok(filter), None) => {
            if let Some(lines) = lines {
                lines.take();
            }
            filter
        }
        (Ok(_), Some(text)) => {
            out.push(mismatch(
                "init",
                format!("refuses the config ({text:?})"),
                "accepted it",
            ));
            return Ok(out);
        }
        (Err(e), expected) => {
            let actual = format!("{e:#}");
            match expected {
                Some(text) if actual.contains(text.as_str()) => {}
                Some(text) => out.push(mismatch("init", format!("an error containing {text:?}"), actual)),
                None => out.push(mismatch("init", "the filter loads", actual)),
            }
            return Ok(out);
        }
    };

    let mut ctx = RequestCtx::new(
        case.metadata.client,
        case.metadata.listener.as_str().into(),
        case.metadata.route.as_str().into(),
        case.metadata.scheme,
    );
    ctx.peer_identity = case.metadata.peer.as_deref().map(Into::into);

    let mut request = FilterRequest {
        head: clone_request(&case.request),
        // As the chain does: buffered only when the filter asked for it.
        body: filter
            .request_body_limit()
            .and_then(|_| case.request_body.clone().or(Some(Bytes::new()))),
    };
    let request_phase = if filter.has_request_phase() {
        observe(filter.on_request(&mut request, &mut ctx).await).await
    } else {
        Observed::Continue
    };
    if let Some(expect) = &case.expect {
        let passed_on = Message {
            status: None,
            headers: &request.head.headers,
            body: request.body.as_deref(),
            path: request.head.uri.path_and_query().map(|p| p.as_str()),
        };
        out.extend(compare("request", expect, &request_phase, &passed_on));
    }

    if let Some((head, body)) = &case.response {
        let mut response = FilterResponse {
            head: clone_response(head),
            body: filter
                .response_body_limit()
                .and_then(|_| body.clone().or(Some(Bytes::new()))),
        };
        let ran = matches!(request_phase, Observed::Continue | Observed::Reroute(_));
        let response_phase = if !ran {
            None
        } else if filter.has_response_phase() {
            Some(observe_response(filter.on_response(&mut response, &mut ctx).await).await)
        } else {
            Some(Observed::Continue)
        };
        if let Some(expect) = &case.expect_response {
            match response_phase {
                None => out.push(mismatch(
                    "response: phase",
                    "runs",
                    format!("never ran: the request phase decided {}", request_phase.kind().as_str()),
                )),
                Some(observed) => {
                    let passed_on = Message {
                        status: Some(response.head.status.as_u16()),
                        headers: &response.head.headers,
                        body: response.body.as_deref(),
                        path: None,
                    };
                    out.extend(compare("response", expect, &observed, &passed_on));
                }
            }
        }
    }

    if let Some(expected) = &case.expect_kv {
        for (key, value) in expected {
            let actual = space
                .get(key)
                .await
                .map_err(|e| anyhow::anyhow!("kv get {key:?}: {e:?}"))?;
            let actual = actual.map(|v| String::from_utf8_lossy(&v).into_owned());
            if actual != *value {
                out.push(mismatch(
                    format!("kv {key}"),
                    optional(value.as_deref()),
                    optional(actual.as_deref()),
                ));
            }
        }
    }
    if let Some(expected) = &case.expect_callouts {
        let sent: Vec<String> = canned
            .sent()
            .iter()
            .map(|c| format!("{} {} {}", c.cluster, c.method, c.path))
            .collect();
        if &sent != expected {
            out.push(mismatch("callouts", format!("{expected:?}"), format!("{sent:?}")));
        }
    }
    Ok(out)
}

fn clone_request(parts: &http::request::Parts) -> http::request::Parts {
    let mut builder = http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers.clone();
    }
    builder
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| http::Request::new(()).into_parts().0)
}

fn clone_response(parts: &http::response::Parts) -> http::response::Parts {
    let mut builder = http::Response::builder().status(parts.status).version(parts.version);
    if let Some(headers) = builder.headers_mut() {
        *headers = parts.headers.clone();
    }
    builder
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| http::Response::new(()).into_parts().0)
}

/// A phase's outcome, with a reply's body read.
#[derive(Debug)]
pub(crate) enum Observed {
    Continue,
    Respond {
        status: u16,
        headers: HeaderMap,
        body: Vec<u8>,
    },
    Reroute(String),
    Error {
        kind: String,
        message: String,
    },
}

impl Observed {
    fn kind(&self) -> DecisionKind {
        match self {
            Observed::Continue => DecisionKind::Continue,
            Observed::Respond { .. } => DecisionKind::Respond,
            Observed::Reroute(_) => DecisionKind::Reroute,
            Observed::Error { .. } => DecisionKind::Error,
        }
    }

    fn describe(&self) -> String {
        match self {
            Observed::Continue => "continue".to_owned(),
            Observed::Respond { status, body, .. } => {
                format!("respond {status} with body {}", quoted(&String::from_utf8_lossy(body)))
            }
            Observed::Reroute(cluster) => format!("reroute to {cluster:?}"),
            Observed::Error { kind, message } => format!("error ({kind}): {message}"),
        }
    }
}

/// A response phase's outcome: its decisions are the request phase's without a reroute.
async fn observe_response(result: Result<ResponseDecision, crate::filter::FilterError>) -> Observed {
    observe(result.map(|decision| match decision {
        ResponseDecision::Continue => RequestDecision::Continue,
        ResponseDecision::Respond(response) => RequestDecision::Respond(response),
    }))
    .await
}

async fn observe(result: Result<RequestDecision, crate::filter::FilterError>) -> Observed {
    match result {
        Ok(RequestDecision::Continue) => Observed::Continue,
        Ok(RequestDecision::Reroute(cluster)) => Observed::Reroute(cluster.name.to_string()),
        Ok(RequestDecision::Respond(response)) => {
            let (head, body) = response.into_parts();
            let body = match body.collect().await {
                Ok(collected) => collected.to_bytes().to_vec(),
                Err(e) => format!("<unreadable body: {e}>").into_bytes(),
            };
            Observed::Respond {
                status: head.status.as_u16(),
                headers: head.headers,
                body,
            }
        }
        Err(e) => Observed::Error {
            kind: e.kind().to_owned(),
            message: e.to_string(),
        },
    }
}

/// The message a phase passed on: the request or response as the filter left it.
pub(crate) struct Message<'a> {
    pub status: Option<u16>,
    pub headers: &'a HeaderMap,
    pub body: Option<&'a [u8]>,
    pub path: Option<&'a str>,
}

fn mismatch(field: impl Into<String>, expected: impl Into<String>, actual: impl Into<String>) -> Mismatch {
    Mismatch {
        field: field.into(),
        expected: expected.into(),
        actual: actual.into(),
    }
}

/// A value as the report shows it: quoted and escaped, long ones cut.
fn quoted(text: &str) -> String {
    const MAX: usize = 200;
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("{cut:?}… ({} bytes)", text.len())
    } else {
        format!("{text:?}")
    }
}

fn optional(text: Option<&str>) -> String {
    text.map_or_else(|| "(absent)".to_owned(), quoted)
}

fn values(list: &[String]) -> String {
    match list {
        [one] => quoted(one),
        many => format!("{many:?}"),
    }
}

/// Compares one phase's outcome with its expectation. A wrong decision is reported alone:
/// the other fields would describe a different message than the case means.
pub(crate) fn compare(phase: &str, expect: &Expect, observed: &Observed, passed_on: &Message<'_>) -> Vec<Mismatch> {
    let mut out = Vec::new();
    if observed.kind() != expect.decision {
        out.push(mismatch(
            format!("{phase}: decision"),
            expect.decision.as_str(),
            observed.describe(),
        ));
        return out;
    }
    let message = match observed {
        Observed::Error { kind, message } => {
            if let Some(expected) = &expect.error
                && expected != kind
            {
                out.push(mismatch(
                    format!("{phase}: error"),
                    quoted(expected),
                    format!("{kind:?}: {message}"),
                ));
            }
            return out;
        }
        Observed::Reroute(cluster) => {
            if let Some(expected) = &expect.cluster
                && expected != cluster
            {
                out.push(mismatch(format!("{phase}: cluster"), quoted(expected), quoted(cluster)));
            }
            passed_on.clone_ref()
        }
        Observed::Continue => passed_on.clone_ref(),
        Observed::Respond { status, headers, body } => Message {
            status: Some(*status),
            headers,
            body: Some(body),
            path: None,
        },
    };
    let what = if matches!(observed, Observed::Respond { .. }) {
        "reply"
    } else {
        phase
    };
    if let Some(expected) = expect.status
        && message.status != Some(expected)
    {
        out.push(mismatch(
            format!("{what}: status"),
            expected.to_string(),
            message.status.map_or_else(|| "(none)".to_owned(), |s| s.to_string()),
        ));
    }
    if let Some(expected) = &expect.path
        && message.path != Some(expected.as_str())
    {
        out.push(mismatch(
            format!("{what}: path"),
            quoted(expected),
            optional(message.path),
        ));
    }
    for (name, expected) in &expect.headers {
        let actual: Vec<String> = message
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if actual.as_slice() != expected.as_slice() {
            let actual = if actual.is_empty() {
                "(absent)".to_owned()
            } else {
                values(&actual)
            };
            out.push(mismatch(
                format!("{what}: header {name}"),
                values(expected.as_slice()),
                actual,
            ));
        }
    }
    for name in &expect.removed_headers {
        if let Some(value) = message.headers.get(name.as_str()) {
            out.push(mismatch(
                format!("{what}: header {name}"),
                "(absent)",
                quoted(&String::from_utf8_lossy(value.as_bytes())),
            ));
        }
    }
    if let Some(expected) = &expect.body {
        let actual = message.body.map(|b| String::from_utf8_lossy(b).into_owned());
        if actual.as_deref() != Some(expected.as_str()) {
            let actual = actual.map_or_else(
                || "(no body: the filter did not ask for bodies)".to_owned(),
                |a| quoted(&a),
            );
            out.push(mismatch(format!("{what}: body"), quoted(expected), actual));
        }
    }
    out
}

impl Message<'_> {
    fn clone_ref(&self) -> Message<'_> {
        Message {
            status: self.status,
            headers: self.headers,
            body: self.body,
            path: self.path,
        }
    }
}

/// The case's log lines against `expected`, one to one and in order.
fn compare_logs(expected: &[ExpectLog], actual: &[capture::Line]) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for (i, want) in expected.iter().enumerate() {
        let field = format!("log line {}", i + 1);
        let Some(line) = actual.get(i) else {
            out.push(mismatch(field, describe_log(want), "(no such line)"));
            continue;
        };
        let level_ok = want.level.as_deref().is_none_or(|l| l == line.level);
        let text_ok = match &want.text {
            LogText::Exactly(m) => line.message == *m,
            LogText::Contains(part) => line.message.contains(part.as_str()),
        };
        if !level_ok || !text_ok {
            out.push(mismatch(
                field,
                describe_log(want),
                format!("{} {}", line.level, quoted(&line.message)),
            ));
        }
    }
    for (i, line) in actual.iter().enumerate().skip(expected.len()) {
        out.push(mismatch(
            format!("log line {}", i + 1),
            "(no such line)",
            format!("{} {}", line.level, quoted(&line.message)),
        ));
    }
    out
}

fn describe_log(want: &ExpectLog) -> String {
    let level = want.level.as_deref().unwrap_or("any level");
    match &want.text {
        LogText::Exactly(m) => format!("{level} {}", quoted(m)),
        LogText::Contains(part) => format!("{level} containing {}", quoted(part)),
    }
}

/// One expected series against what the registry holds after the case.
fn compare_metric(expect: &ExpectMetric, actual: Option<capture::Reading>) -> Option<Mismatch> {
    use capture::Reading;
    let labels: Vec<String> = expect.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    let series = if labels.is_empty() {
        format!("{} {}", expect.kind.as_str(), expect.name)
    } else {
        format!("{} {}{{{}}}", expect.kind.as_str(), expect.name, labels.join(","))
    };
    let field = format!("metric: {series}");
    let (expected, actual) = match (&expect.value, actual) {
        (MetricValue::Counter(want), Some(Reading::Counter(got))) if *want != got => {
            (want.to_string(), got.to_string())
        }
        (MetricValue::Gauge(want), Some(Reading::Gauge(got))) if *want != got => (want.to_string(), got.to_string()),
        (MetricValue::Histogram { count, sum }, Some(Reading::Histogram { count: c, sum: s }))
            if count.is_some_and(|want| want != c) || sum.is_some_and(|want| !same_sum(want, s)) =>
        {
            (describe_histogram(*count, *sum), format!("count {c}, sum {s}"))
        }
        // A counter the filter never added to reads 0, as Prometheus would show it absent.
        (MetricValue::Counter(0), None) => return None,
        (want, None) => (
            match want {
                MetricValue::Counter(v) => v.to_string(),
                MetricValue::Gauge(v) => v.to_string(),
                MetricValue::Histogram { count, sum } => describe_histogram(*count, *sum),
            },
            "(never emitted)".to_owned(),
        ),
        _ => return None,
    };
    Some(mismatch(field, expected, actual))
}

/// A sum of observations compared as a case author writes it: `0.1 + 0.2` is `0.3`.
fn same_sum(want: f64, got: f64) -> bool {
    (want - got).abs() <= 1e-9 * want.abs().max(1.0)
}

fn describe_histogram(count: Option<u64>, sum: Option<f64>) -> String {
    match (count, sum) {
        (Some(c), Some(s)) => format!("count {c}, sum {s}"),
        (Some(c), None) => format!("count {c}"),
        (None, Some(s)) => format!("sum {s}"),
        (None, None) => "(anything)".to_owned(),
    }
}

mod capture;
#[cfg(test)]
mod tests;
