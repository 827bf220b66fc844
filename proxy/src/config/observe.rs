//! `[access_log]` and `[tracing]`: what the proxy records about each request and where it
//! sends it. Both are off unless their section is present, and both reload with the rest
//! of the config.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// `[access_log]`: one record per request, written by a thread of its own.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessLogConfig {
    /// The file records are appended to (reopened on SIGUSR1, for logrotate); stdout when unset.
    pub path: Option<PathBuf>,
    /// `"json"` (one object a line), or a line with `%field%` placeholders.
    #[serde(default = "defaults::json")]
    pub format: String,
    /// The fraction of requests logged, 0.0 to 1.0.
    #[serde(default = "defaults::one")]
    pub sample: f64,
    /// Records waiting for the writer; past it records are dropped and counted in
    /// `weft_access_log_dropped_total`, never making a request wait.
    #[serde(default = "defaults::buffer")]
    pub buffer: usize,
}

/// `[tracing]`: spans exported over OTLP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// `http://host:4318/v1/traces` for `protocol = "http"`, `http://host:4317` for `"grpc"`
    /// (cleartext only).
    pub endpoint: String,
    #[serde(default)]
    pub protocol: OtlpProtocol,
    /// The fraction of new traces recorded, 0.0 to 1.0; a request whose `traceparent`
    /// says sampled (or not) follows its parent, within `client_sampled`.
    #[serde(default = "defaults::one")]
    pub sample: f64,
    /// Requests a second, process-wide, whose client's "sampled" decision is followed
    /// (in bursts of as many); past it `sample` decides. 0: never followed.
    #[serde(default = "defaults::client_sampled")]
    pub client_sampled: u32,
    /// Listeners on which `sample` alone decides: the client's decision, sampled or not,
    /// is ignored (the trace id is kept).
    #[serde(default)]
    pub ignore_client_sampled: Vec<String>,
    /// The `service.name` resource attribute.
    #[serde(default = "defaults::service_name")]
    pub service_name: String,
    /// Finished spans waiting for export; past it spans are dropped and counted in
    /// `weft_trace_spans_dropped_total`.
    #[serde(default = "defaults::queue")]
    pub queue: usize,
    /// How often a batch is sent.
    #[serde(default = "defaults::interval", deserialize_with = "super::duration")]
    pub interval: Duration,
    /// Longest one export may take.
    #[serde(default = "defaults::timeout", deserialize_with = "super::duration")]
    pub timeout: Duration,
    /// What the spans' `url.query` (and the client span's `url.full`) show of a query.
    #[serde(default)]
    pub query: QueryShown,
    /// Keys whose values `query = "keys"` shows (compared decoded, without case); a
    /// credential-named key is redacted all the same.
    #[serde(default)]
    pub query_keep: Vec<String>,
}

/// `[tracing] query`: how much of a query string a span shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryShown {
    /// Every key, each value replaced by `REDACTED` (but those of `query_keep`).
    #[default]
    Keys,
    /// As received, but the values of credential-named keys.
    Full,
    /// No `url.query`; `url.full` without a query.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/HTTP with protobuf bodies.
    #[default]
    Http,
    /// OTLP/gRPC.
    Grpc,
}

impl AccessLogConfig {
    pub(super) fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample) {
            return Err(format!(
                "[access_log] sample must be between 0.0 and 1.0, not {}",
                self.sample
            ));
        }
        if self.buffer == 0 {
            return Err("[access_log] buffer must be more than zero".to_owned());
        }
        AccessLogFormat::parse(&self.format).map(|_| ())
    }
}

impl TracingConfig {
    pub(super) fn check(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample) {
            return Err(format!(
                "[tracing] sample must be between 0.0 and 1.0, not {}",
                self.sample
            ));
        }
        let uri: http::Uri = self
            .endpoint
            .parse()
            .map_err(|e| format!("[tracing] endpoint {:?} is not a URL: {e}", self.endpoint))?;
        // The exporters are built without TLS: a collector is reached in cleartext, usually
        // an agent on the same host, which forwards over TLS itself.
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(format!(
                "[tracing] endpoint {:?} needs http:// and a host, e.g. \"http://127.0.0.1:4318/v1/traces\" \
                 (https is not supported: export to a collector or agent nearby)",
                self.endpoint
            ));
        }
        if self.queue == 0 {
            return Err("[tracing] queue must be more than zero".to_owned());
        }
        if self.interval.is_zero() || self.timeout.is_zero() {
            return Err("[tracing] interval and timeout must be more than zero".to_owned());
        }
        Ok(())
    }
}

mod defaults {
    use std::time::Duration;
    pub fn json() -> String {
        "json".to_owned()
    }
    pub fn one() -> f64 {
        1.0
    }
    /// Enough for the traces a caller sampled at a low rate, or a developer forcing a few;
    /// a bound on what a client can make every request cost.
    pub fn client_sampled() -> u32 {
        100
    }
    pub fn buffer() -> usize {
        8192
    }
    pub fn service_name() -> String {
        "weft".to_owned()
    }
    pub fn queue() -> usize {
        4096
    }
    pub fn interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn timeout() -> Duration {
        Duration::from_secs(10)
    }
}

/// Checks both sections, pointing at the one at fault.
pub(super) fn check(config: &super::Config) -> Result<(), super::ConfigError> {
    let src = &config.source;
    if let Some(log) = &config.access_log {
        log.get_ref().check().map_err(|e| src.error_at(log.span(), e))?;
    }
    if let Some(tracing) = &config.tracing {
        tracing.get_ref().check().map_err(|e| src.error_at(tracing.span(), e))?;
        for name in &tracing.get_ref().ignore_client_sampled {
            if !config.listeners.iter().any(|l| l.get_ref().name == *name) {
                return Err(src.error_at(
                    tracing.span(),
                    format!("[tracing] ignore_client_sampled: unknown listener {name:?}"),
                ));
            }
        }
    }
    Ok(())
}

/// The fields a format string may name, as `%name%`; the JSON keys are the same.
pub const ACCESS_LOG_FIELDS: &[&str] = &[
    "time",
    "client",
    "listener",
    "method",
    "authority",
    "path",
    "protocol",
    "status",
    "flags",
    "answered_by",
    "upstream",
    "duration_ms",
    "upstream_ms",
    "filter_ms",
    "bytes_received",
    "bytes_sent",
    "route",
    "trace_id",
    "direction",
    "original_dst",
];

/// How access-log records are written: parsed here so that a bad format fails the config.
#[derive(Debug, Clone, PartialEq)]
pub enum AccessLogFormat {
    /// One JSON object a line.
    Json,
    /// Literal text and fields, in order.
    Template(Vec<AccessLogPiece>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum AccessLogPiece {
    Text(String),
    Field(usize),
}

impl AccessLogFormat {
    /// `"json"`, or text with `%field%` placeholders (`%%` is a literal `%`).
    pub fn parse(text: &str) -> Result<AccessLogFormat, String> {
        if text == "json" {
            return Ok(AccessLogFormat::Json);
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('%') {
            literal.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let end = after.find('%').ok_or_else(|| {
                format!(
                    "[access_log] format: a `%` at byte {} is never closed",
                    text.len() - rest.len() + start
                )
            })?;
            let name = &after[..end];
            if name.is_empty() {
                literal.push('%');
            } else {
                let field = ACCESS_LOG_FIELDS.iter().position(|f| *f == name).ok_or_else(|| {
                    format!(
                        "[access_log] format: unknown field %{name}% (known: {})",
                        ACCESS_LOG_FIELDS.join(", ")
                    )
                })?;
                if !literal.is_empty() {
                    pieces.push(AccessLogPiece::Text(std::mem::take(&mut literal)));
                }
                pieces.push(AccessLogPiece::Field(field));
            }
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(AccessLogPiece::Text(literal));
        }
        if !pieces.iter().any(|p| matches!(p, AccessLogPiece::Field(_))) {
            return Err(
                "[access_log] format names no field: write \"json\" or e.g. \"%method% %path% %status%\"".to_owned(),
            );
        }
        Ok(AccessLogFormat::Template(pieces))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{MINIMAL, error as rejected};
    use super::super::{Config, ConfigError};

    /// The minimal config, its one route kept out of the access log.
    fn routes() -> String {
        format!("{MINIMAL}access_log = false\n")
    }

    /// `top` (sections ahead of the routes, so its line numbers are the config's) rejected.
    fn error(top: &str) -> ConfigError {
        rejected(&format!("{top}\n{}", routes()))
    }

    #[test]
    fn both_sections_are_off_unless_present_and_take_defaults() {
        let config = Config::parse("test.toml", &routes()).expect("valid");
        assert!(config.access_log.is_none() && config.tracing.is_none());
        assert!(!config.routes[0].get_ref().access_log);
        let text = format!(
            "[access_log]\n[tracing]\nendpoint = \"http://127.0.0.1:4318/v1/traces\"\n{}",
            routes()
        );
        let config = Config::parse("test.toml", &text).expect("valid");
        let log = config.access_log.expect("on");
        assert_eq!((log.get_ref().format.as_str(), log.get_ref().sample), ("json", 1.0));
        let tracing = config.tracing.expect("on");
        assert_eq!(tracing.get_ref().protocol, super::OtlpProtocol::Http);
        assert_eq!(tracing.get_ref().service_name, "weft");
        assert_eq!(
            tracing.get_ref().client_sampled,
            100,
            "clients' decisions followed, within a bound"
        );
        assert!(tracing.get_ref().ignore_client_sampled.is_empty());
    }

    #[test]
    fn mistakes_are_located_at_their_section_and_name_the_key() {
        let e = error("[access_log]\nsample = 1.5");
        assert_eq!(e.position.map(|p| p.0), Some(1), "{e}");
        assert!(
            e.message.contains("[access_log] sample must be between 0.0 and 1.0"),
            "{e}"
        );
        let e = error("[access_log]\nformat = \"%status% %nope%\"");
        assert!(e.message.contains("unknown field %nope%"), "{e}");
        let e = error("[access_log]\nbuffer = 0");
        assert!(e.message.contains("buffer must be more than zero"), "{e}");
        let e = error("[access_log]\nfile = \"x.log\"");
        assert!(e.message.contains("unknown field `file`"), "{e}");

        let e = error("[tracing]\nendpoint = \"127.0.0.1:4318\"");
        assert!(e.message.contains("needs http://"), "{e}");
        let e = error("[tracing]\nendpoint = \"https://collector.example:4318/v1/traces\"");
        assert!(e.message.contains("https is not supported"), "{e}");
        let e = error("[tracing]\nendpoint = \"http://127.0.0.1:4317\"\nprotocol = \"thrift\"");
        assert!(e.message.contains("unknown variant `thrift`"), "{e}");
        let e = error("[tracing]\nendpoint = \"http://127.0.0.1:4317\"\nsample = -0.1");
        assert!(e.message.contains("[tracing] sample"), "{e}");
        let e = error("[tracing]\nendpoint = \"http://127.0.0.1:4317\"\ninterval = \"soon\"");
        assert!(e.message.contains("invalid duration"), "{e}");
        let e = error("[tracing]\nendpoint = \"http://127.0.0.1:4317\"\nignore_client_sampled = [\"nope\"]");
        assert!(e.message.contains("unknown listener \"nope\""), "{e}");
        let e = error("[tracing]\nendpoint = \"http://127.0.0.1:4317\"\nclient_sampled = -1");
        assert_eq!(e.position.map(|p| p.0), Some(3), "{e}");
    }
}
