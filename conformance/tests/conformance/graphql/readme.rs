//! The README's GraphQL gateway, as printed: its config (services' addresses and the
//! plugin's path filled in) in front of the real services, and its `curl` command, whose
//! output must be the answer the README shows under it.

use std::path::Path;

use weft_conformance::{Weft, plugins};

use super::env::Service;

/// The text of the README's "A GraphQL gateway" section.
fn section() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).expect("README");
    let start = readme
        .find("## A GraphQL gateway")
        .expect("the README's GraphQL section");
    let rest = &readme[start + 3..];
    rest[..rest.find("\n## ").unwrap_or(rest.len())].to_owned()
}

/// The body of the first fenced block opened with "```<info>".
fn block(text: &str, info: &str) -> String {
    let open = format!("```{info}\n");
    let start = text.find(&open).unwrap_or_else(|| panic!("a ```{info} block")) + open.len();
    text[start..start + text[start..].find("```").expect("closing fence")].to_owned()
}

#[tokio::test]
async fn the_readme_gateway_answers_as_the_readme_shows() {
    let (users, orders, catalog) = tokio::join!(
        Service::start("users"),
        Service::start("orders"),
        Service::start("rest")
    );
    let text = section();
    let config = block(&text, "toml")
        .replace("127.0.0.1:8080", "{listen}")
        .replace("127.0.0.1:4001", &users.addr.to_string())
        .replace("127.0.0.1:4002", &orders.addr.to_string())
        .replace("127.0.0.1:4003", &catalog.addr.to_string())
        .replace("plugins/graphql.wasm", plugins::GRAPHQL);
    let weft = Weft::start(&config).await;

    let shell = block(&text, "sh");
    let (command, shown) = shell.split_once("\n# ").expect("a command, then its answer after `# `");
    let command = command.replace("http://127.0.0.1:8080", &weft.url(""));
    let out = tokio::process::Command::new("sh")
        .args(["-c", &command])
        .output()
        .await
        .expect("sh and curl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    let shown: serde_json::Value = serde_json::from_str(shown.trim()).expect("the README's answer is JSON");
    assert_eq!(got, shown);
}
