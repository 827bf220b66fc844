//! External authorization for Weft, in the style of Envoy's HTTP `ext_authz`: for each
//! protected request, the filter sends the same method and path (after `path_prefix`)
//! with the chosen request headers to the `cluster`, and
//! - a 2xx answer allows the request, copying `allowed_upstream_headers` of the answer
//!   onto the upstream request;
//! - any other answer denies it with the service's status, headers (`allowed_client_headers`,
//!   or all but framing ones) and body;
//! - no answer (timeout, connection error) denies with `failure_status` (403), or allows
//!   when `failure_mode_allow = true`.

use std::time::Duration;

use plugin_common::scope::Scope;
use plugin_common::{duration, header};
use serde::Deserialize;
use weft_sdk::callout::Callout;
use weft_sdk::{Decision, Filter, Options, Phases, Reply, Request, log, metadata, metrics};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    cluster: String,
    #[serde(default)]
    path_prefix: String,
    #[serde(default = "default_timeout")]
    timeout: String,
    #[serde(default = "default_request_headers")]
    allowed_request_headers: Vec<String>,
    #[serde(default)]
    allowed_upstream_headers: Vec<String>,
    /// Empty: every header of a denial but the framing ones.
    #[serde(default)]
    allowed_client_headers: Vec<String>,
    #[serde(default)]
    failure_mode_allow: bool,
    #[serde(default = "default_failure_status")]
    failure_status: u16,
    #[serde(default)]
    anonymous_paths: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
}

fn default_timeout() -> String {
    "200ms".to_owned()
}
fn default_request_headers() -> Vec<String> {
    vec!["authorization".to_owned()]
}
fn default_failure_status() -> u16 {
    403
}

/// Headers that describe one hop's framing, never copied from the service's answer.
const FRAMING: [&str; 7] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
];

struct ExtAuthz {
    cluster: String,
    path_prefix: String,
    timeout: Duration,
    request_headers: Vec<String>,
    upstream_headers: Vec<String>,
    client_headers: Vec<String>,
    failure_mode_allow: bool,
    failure_status: u16,
    scope: Scope,
}

fn header_names(field: &str, names: Vec<String>) -> Result<Vec<String>, String> {
    names.iter().map(|n| header::name(field, n)).collect()
}

impl ExtAuthz {
    /// The denial a client sees: the service's status, chosen headers and body.
    fn denial(&self, status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Reply {
        let mut reply = Reply::new(status).body(body);
        for (name, value) in headers {
            let lower = name.to_ascii_lowercase();
            let wanted = if self.client_headers.is_empty() {
                !FRAMING.contains(&lower.as_str())
            } else {
                self.client_headers.contains(&lower)
            };
            if wanted {
                reply = reply.header(lower, value);
            }
        }
        reply
    }
}

impl Filter for ExtAuthz {
    type Config = Config;

    fn options(&self) -> Options {
        // Nothing to do on the way back: the proxy skips this filter there.
        Options::for_phases(Phases::REQUEST)
    }

    fn init(config: Config) -> Result<Self, String> {
        if config.cluster.is_empty() {
            return Err("cluster must not be empty".to_owned());
        }
        if !config.path_prefix.is_empty() && !config.path_prefix.starts_with('/') {
            return Err(format!("path_prefix {:?} must start with '/'", config.path_prefix));
        }
        if !(200..=599).contains(&config.failure_status) {
            return Err(format!(
                "failure_status {} is not an HTTP error status",
                config.failure_status
            ));
        }
        Ok(ExtAuthz {
            cluster: config.cluster,
            path_prefix: config.path_prefix.trim_end_matches('/').to_owned(),
            timeout: duration::parse("timeout", &config.timeout)?,
            request_headers: header_names("allowed_request_headers", config.allowed_request_headers)?,
            upstream_headers: header_names("allowed_upstream_headers", config.allowed_upstream_headers)?,
            client_headers: header_names("allowed_client_headers", config.allowed_client_headers)?,
            failure_mode_allow: config.failure_mode_allow,
            failure_status: config.failure_status,
            scope: Scope::new(config.anonymous_paths, config.methods)?,
        })
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        // What the service may set upstream, the client may not.
        for name in &self.upstream_headers {
            request.remove_header(name);
        }
        let (method, path) = (request.method(), request.path());
        if !self.scope.protects(&method, &path) {
            return Decision::Continue;
        }
        let mut check = Callout::new(method, format!("{}{path}", self.path_prefix)).timeout(self.timeout);
        let headers = request.headers();
        for name in &self.request_headers {
            for value in headers.get_all(name) {
                check = check.header(name.as_str(), value);
            }
        }
        let client = metadata::client_address();
        if let Some((ip, _)) = client.rsplit_once(':') {
            check = check.header("x-forwarded-for", ip.trim_matches(['[', ']']));
        }
        match check.send(&self.cluster) {
            Ok(answer) if (200..300).contains(&answer.status) => {
                for name in &self.upstream_headers {
                    for value in answer.headers.get_all(name) {
                        if let Err(e) = request.headers().append(name, &value) {
                            log::warn(&format!("cannot copy {name} from the authorization answer: {e}"));
                        }
                    }
                }
                metrics::counter_add("allowed", 1);
                Decision::Continue
            }
            Ok(answer) => {
                metrics::counter_add("denied", 1);
                self.denial(answer.status, answer.headers.entries(), answer.body).into()
            }
            Err(e) => {
                metrics::counter_add("failures", 1);
                log::warn(&format!("authorization service {}: {e}", self.cluster));
                if self.failure_mode_allow {
                    return Decision::Continue;
                }
                Reply::new(self.failure_status)
                    .header("content-type", "text/plain")
                    .body("authorization unavailable\n")
                    .into()
            }
        }
    }
}

weft_sdk::export!(ExtAuthz);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn init(config: serde_json::Value) -> Result<ExtAuthz, String> {
        ExtAuthz::init(serde_json::from_value(config).map_err(|e| e.to_string())?)
    }

    #[test]
    fn configs_are_checked() {
        assert!(init(serde_json::json!({ "cluster": "authz" })).is_ok());
        let cases = [
            (serde_json::json!({ "cluster": "" }), "cluster"),
            (serde_json::json!({ "cluster": "a", "path_prefix": "x" }), "path_prefix"),
            (
                serde_json::json!({ "cluster": "a", "failure_status": 100 }),
                "failure_status",
            ),
            (serde_json::json!({ "cluster": "a", "timeout": "1" }), "timeout"),
            (
                serde_json::json!({ "cluster": "a", "allowed_upstream_headers": ["x y"] }),
                "allowed_upstream_headers",
            ),
            (
                serde_json::json!({ "cluster": "a", "failure_mode": "allow" }),
                "unknown field",
            ),
        ];
        for (config, want) in cases {
            let err = init(config.clone()).err().unwrap_or_default();
            assert!(err.contains(want), "{config}: {err}");
        }
    }

    #[test]
    fn denials_keep_the_service_headers_but_not_framing() {
        let f = init(serde_json::json!({ "cluster": "a" })).unwrap_or_else(|e| panic!("{e}"));
        let headers = vec![
            ("WWW-Authenticate".into(), "Bearer".into()),
            ("content-length".into(), "3".into()),
            ("x-reason".into(), "no".into()),
        ];
        let reply = f.denial(401, headers, b"no\n".to_vec());
        assert_eq!(reply.status, 401);
        assert_eq!(reply.body, b"no\n");
        let names: Vec<&str> = reply.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["www-authenticate", "x-reason"]);
    }
}
