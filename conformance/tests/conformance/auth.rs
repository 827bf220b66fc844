//! The first-party authentication plugins (`plugins/jwt-auth`, `api-key`, `basic-auth`,
//! `ext-authz`) through the real `weft` binary. Tokens, keys and password hashes are made
//! by independent libraries (Python's PyJWT + cryptography, bcrypt; see `auth/mint.py`),
//! never by the plugins' own code.

// A test crate root resolves modules beside it, hence the paths.
mod ext_authz;
mod jwks;
mod jwt;
mod keys;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use weft_conformance::*;

/// Runs `auth/mint.py` with `spec` on stdin (asynchronously: a blocking wait would starve
/// the in-process upstreams) and returns its JSON answer.
pub async fn mint(spec: Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/conformance/auth/mint.py");
    let mut child = tokio::process::Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup installs PyJWT and cryptography)");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(spec.to_string().as_bytes()).await.expect("write spec");
    drop(stdin);
    let out = child.wait_with_output().await.expect("mint.py");
    assert!(
        out.status.success(),
        "mint.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("mint.py answers JSON")
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// A JSON object as the key/values inside a TOML inline table.
fn fields(map: &serde_json::Map<String, Value>) -> String {
    let fields: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{} = {}", Value::String(k.clone()), toml(v)))
        .collect();
    fields.join(", ")
}

/// A JSON value as a TOML value (inline tables), for filter configs.
pub fn toml(value: &Value) -> String {
    match value {
        Value::Object(map) => format!("{{ {} }}", fields(map)),
        Value::Array(items) => format!("[{}]", items.iter().map(toml).collect::<Vec<_>>().join(", ")),
        // JSON string escapes (\n, \", \\, \uXXXX) are valid in TOML basic strings.
        other => other.to_string(),
    }
}

/// A config: the echo upstream `web`, extra clusters, filters `(name, wasm, config)` and
/// routes `(path prefix, filters)` to `web`, in order.
pub fn config(
    web: &Upstream,
    clusters: &[(&str, SocketAddr)],
    filters: &[(&str, &str, Value)],
    routes: &[(&str, &[&str])],
) -> String {
    let mut config = Config::new().cluster("web", &[web.addr]);
    for (name, addr) in clusters {
        config = config.cluster(name, &[*addr]);
    }
    for (name, wasm, filter_config) in filters {
        let table = filter_config.as_object().expect("a filter's config is an object");
        config = config.wasm_filter(name, wasm, &fields(table), "");
    }
    for (i, (prefix, chain)) in routes.iter().enumerate() {
        config = config.route(
            &format!("r{i}"),
            &format!("path_prefix = \"{prefix}\""),
            "web",
            chain,
            "",
        );
    }
    config.to_string()
}

/// Gives filter `name` of a [`config`] this CPU budget (`limits.cpu`).
pub fn with_cpu_limit(config: String, name: &str, cpu: &str) -> String {
    let entry = format!("[[filters]]\nname = \"{name}\"\n");
    config.replace(&entry, &format!("{entry}limits = {{ cpu = \"{cpu}\" }}\n"))
}

/// A request through the proxy with these headers.
pub async fn call(weft: &Weft, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Request::builder().method(method).uri(weft.url(path));
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    send(&http1_client(), builder.body(Full::new(Bytes::new())).expect("request")).await
}

/// `GET path` with `Authorization: Bearer <token>`.
pub async fn bearer(weft: &Weft, path: &str, token: &str) -> Reply {
    call(weft, "GET", path, &[("authorization", &format!("Bearer {token}"))]).await
}

/// The `error_description` of a 401's `WWW-Authenticate`, asserting the challenge's shape.
pub fn refusal(reply: &Reply) -> String {
    assert_eq!(
        reply.status,
        401,
        "expected a refusal, got {}: {}",
        reply.status,
        reply.text()
    );
    let challenge = reply.header("www-authenticate").expect("WWW-Authenticate").to_owned();
    assert!(
        challenge.starts_with("Bearer realm=\"") && challenge.contains("error=\"invalid_token\""),
        "{challenge}"
    );
    let start = challenge.find("error_description=\"").expect("error_description") + 19;
    challenge[start..].trim_end_matches('"').to_owned()
}
