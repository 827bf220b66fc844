//! The graphql-http audit suite (the GraphQL-over-HTTP spec's own conformance checks, npm
//! `graphql-http`'s `auditServer`) against the real binary: every MUST passes, and so
//! does every SHOULD and MAY (a regression in those fails too). The route
//! is `/open` (CSRF off: the suite sends bare GETs, as a non-browser client may).

use std::path::Path;

use serde_json::Value;

use super::env::*;

#[tokio::test]
async fn graphql_http_audits_pass() {
    let env = Env::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("graphql/audit.mjs");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        tokio::process::Command::new("node")
            .arg(script)
            .arg(env.weft.url("/open"))
            .output(),
    )
    .await
    .expect("the audits finish within a minute")
    .expect("node");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("audit.mjs prints JSON");
    assert!(results.len() > 20, "{results:?}");
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r["status"] != "ok")
        .map(|r| format!("{} {}: {}", r["id"], r["name"], r["reason"]))
        .collect();
    assert!(failed.is_empty(), "audits failed:\n{}", failed.join("\n"));
}
