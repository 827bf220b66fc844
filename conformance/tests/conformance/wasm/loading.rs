//! Loading plugins: the happy path, the cache, and every way a load is refused.

use std::time::Instant;

use weft_conformance::plugins;

use super::support::*;

fn error_text(result: anyhow::Result<std::sync::Arc<dyn weft::filter::Filter>>) -> String {
    match result {
        Ok(_) => panic!("the load should have failed"),
        Err(e) => format!("{e:#}"),
    }
}

#[tokio::test]
async fn noop_continues_in_both_phases_and_leaves_the_request_alone() {
    let filter = load("noop", plugins::NOOP, "{}").await.expect("load noop");
    assert_eq!(filter.name(), "noop");
    assert_eq!(filter.request_body_limit(), None, "noop asked for no body");
    let (decision, req) = run(&*filter, "/a?b=c", &[("x-k", "v")]).await;
    assert!(is_continue(&decision));
    assert_eq!(req.head.uri, "/a?b=c");
    assert_eq!(header(&req, "x-k"), Some("v"));
    let mut resp = response(204, &[]);
    let decision = filter.on_response(&mut resp, &mut ctx()).await;
    assert!(is_continue(&decision));
    assert_eq!(resp.head.status, 204);
}

#[tokio::test]
async fn hello_filter_denies_its_prefix_stamps_responses_and_counts() {
    let config = r#"{"header_name": "x-greeting", "header_value": "hi", "deny_prefix": "/private"}"#;
    let filter = load("hello", plugins::HELLO_FILTER, config).await.expect("load hello");

    let (status, body) = responded(run(&*filter, "/private/file", &[]).await.0).await;
    assert_eq!((status, body.as_str()), (403, "forbidden\n"));
    assert!(is_continue(&run(&*filter, "/public", &[]).await.0));

    let mut resp = response(200, &[]);
    assert!(is_continue(&filter.on_response(&mut resp, &mut ctx()).await));
    assert_eq!(
        resp.head.headers.get("x-greeting").map(|v| v.as_bytes()),
        Some(&b"hi"[..])
    );

    assert_eq!(
        sample(r#"weft_filter_events_total{filter="hello",name="requests"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(r#"weft_filter_events_total{filter="hello",name="denied"}"#),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_config_the_sdk_cannot_parse_is_refused_with_serdes_message() {
    let text = error_text(load("hello-typo", plugins::HELLO_FILTER, r#"{"deny_prefx": "/x"}"#).await);
    assert!(
        text.contains("init refused the config") && text.contains("unknown field `deny_prefx`"),
        "{text}"
    );
}

#[tokio::test]
async fn init_refusal_carries_the_guests_message() {
    let text = error_text(
        load(
            "refuser",
            plugins::CAPABILITIES,
            r#"{"refuse": "no upstream key configured"}"#,
        )
        .await,
    );
    assert!(
        text.contains("init refused the config: no upstream key configured"),
        "{text}"
    );
}

#[tokio::test]
async fn a_trap_in_init_fails_the_load_with_the_panic_message() {
    let text = error_text(load("init-panic", plugins::CAPABILITIES, r#"{"panic_in_init": true}"#).await);
    assert!(
        text.contains("failed to start") && text.contains("capabilities was told to panic in init"),
        "{text}"
    );
}

#[tokio::test]
async fn a_plugin_for_another_wit_version_is_refused_naming_both_versions() {
    let ours = format!("weft:filter@{}", weft::wasm::WIT_VERSION);
    for (plugin, theirs) in [
        (plugins::BUILT_FOR_0_1, "weft:filter@0.1.0"),
        (plugins::WRONG_VERSION, ""),
    ] {
        let text = error_text(load("other", plugin, "{}").await);
        assert!(text.contains(&ours) && text.contains(theirs), "{text}");
        assert!(text.matches("weft:filter@").count() >= 2, "both versions named: {text}");
    }
}

#[tokio::test]
async fn files_that_are_not_components_are_refused_with_what_they_are() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.wasm");
    let text = error_text(load("missing", missing.to_str().expect("utf-8"), "{}").await);
    assert!(
        text.contains("cannot read plugin") && text.contains("missing.wasm"),
        "{text}"
    );

    let not_wasm = dir.path().join("notes.wasm");
    std::fs::write(&not_wasm, "just text").expect("write");
    let text = error_text(load("text", not_wasm.to_str().expect("utf-8"), "{}").await);
    assert!(text.contains("not a WebAssembly file"), "{text}");

    // The smallest valid core module: magic and version 1, no sections.
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").expect("write");
    let text = error_text(load("core", core.to_str().expect("utf-8"), "{}").await);
    assert!(text.contains("core Wasm module, not a component"), "{text}");

    // A component header followed by garbage: the compiler's error, with the file named.
    let broken = dir.path().join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x0d\0\x01\0\xff\xff\xff").expect("write");
    let text = error_text(load("broken", broken.to_str().expect("utf-8"), "{}").await);
    assert!(text.contains("is not a valid Wasm component"), "{text}");
}

#[tokio::test]
async fn a_memory_limit_over_the_hosts_maximum_is_refused() {
    let limits = limits(8 << 30, std::time::Duration::from_millis(50), 1024);
    let text = error_text(load_with("big", plugins::NOOP, "{}", &limits, clusters(&[])).await);
    assert!(text.contains("limits.memory"), "{text}");
}

#[tokio::test]
async fn reloading_an_unchanged_file_reuses_the_compiled_component() {
    // A copy under a new path: the cache is by content, not by path.
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("trap-copy.wasm");
    std::fs::copy(plugins::TRAP, &copy).expect("copy");
    let bytes = std::fs::read(&copy).expect("read");
    let mut changed = bytes.clone();
    // A custom section appended to the component makes different bytes, same code.
    changed.extend_from_slice(&[0, 5, 4, b'w', b'e', b'f', b't']);
    let changed_path = dir.path().join("trap-changed.wasm");
    std::fs::write(&changed_path, &changed).expect("write");

    let started = Instant::now();
    load("cache-a", changed_path.to_str().expect("utf-8"), "{}")
        .await
        .expect("first load");
    let cold = started.elapsed();
    let started = Instant::now();
    load("cache-b", changed_path.to_str().expect("utf-8"), "{}")
        .await
        .expect("second load");
    let warm = started.elapsed();
    eprintln!("load: cold {cold:?}, cached {warm:?}");
    assert!(
        warm * 5 < cold,
        "a cached load ({warm:?}) should be far cheaper than compiling ({cold:?})"
    );
}
