//! `plugins/ext-authz` against a real authorization service run by the test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use weft_conformance::*;

use super::*;

/// What the authorization service was asked: method, path and query, headers.
type Asked = Arc<Mutex<Vec<(String, String, Vec<(String, String)>)>>>;

#[tokio::test]
async fn ext_authz_allows_denies_and_handles_timeouts() {
    // The authorization service: records what it was asked, answers by path.
    let asked: Asked = Arc::default();
    let log = asked.clone();
    let authz = Upstream::start(move |req| {
        let headers = req
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let path = req.uri().to_string();
        log.lock()
            .expect("lock")
            .push((req.method().to_string(), path.clone(), headers));
        async move {
            let builder = http::Response::builder();
            if path.starts_with("/authz/allow") {
                builder
                    .header("x-user", "alice")
                    .header("x-internal", "secret")
                    .body(full(""))
            } else if path.starts_with("/authz/slow") {
                tokio::time::sleep(Duration::from_secs(2)).await;
                builder.body(full(""))
            } else {
                builder
                    .status(402)
                    .header("x-reason", "policy")
                    .header("content-type", "text/plain")
                    .body(full("denied by policy\n"))
            }
            .expect("response")
        }
    })
    .await;

    let web = Upstream::echo("web").await;
    let base = json!({
        "cluster": "authz", "path_prefix": "/authz", "timeout": "300ms",
        "allowed_request_headers": ["authorization"], "allowed_upstream_headers": ["x-user"],
    });
    let weft = Weft::start(&config(
        &web,
        &[("authz", authz.addr)],
        &[("authz", plugins::EXT_AUTHZ, base)],
        &[("/", &["authz"])],
    ))
    .await;

    let allowed = call(
        &weft,
        "DELETE",
        "/allow/item?id=7",
        &[("authorization", "Bearer abc"), ("cookie", "s=1"), ("x-user", "root")],
    )
    .await;
    assert_eq!(allowed.status, 200);
    let seen = allowed.json();
    assert_eq!(seen["headers"]["x-user"], json!(["alice"]), "the service's x-user only");
    assert_eq!(
        seen_header(&seen, "x-internal"),
        None,
        "not in allowed_upstream_headers"
    );
    {
        let asked = asked.lock().expect("lock");
        let (method, path, headers) = &asked[0];
        assert_eq!((method.as_str(), path.as_str()), ("DELETE", "/authz/allow/item?id=7"));
        let has = |n: &str| headers.iter().any(|(h, _)| h == n);
        assert!(has("authorization") && !has("cookie") && !has("x-user"), "{headers:?}");
        assert!(headers.contains(&("x-forwarded-for".to_owned(), "127.0.0.1".to_owned())));
    }

    let denied = call(&weft, "GET", "/deny", &[]).await;
    assert_eq!(denied.status, 402);
    assert_eq!(denied.text(), "denied by policy\n");
    assert_eq!(denied.header("x-reason"), Some("policy"));

    let started = Instant::now();
    let timed_out = call(&weft, "GET", "/slow", &[]).await;
    assert_eq!(timed_out.status, 403, "{}", timed_out.text());
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(web.hits(), 1);
    assert!(weft.log().contains("authorization service authz"), "{}", weft.log());
}

#[tokio::test]
async fn ext_authz_failure_modes_allow_or_answer_503() {
    let authz = Upstream::start(|_req| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        http::Response::builder().body(full("")).expect("response")
    })
    .await;
    let web = Upstream::echo("web").await;
    let base = json!({ "cluster": "authz", "timeout": "200ms" });
    let mut open = base.clone();
    open["failure_mode_allow"] = json!(true);
    let mut unavailable = base.clone();
    unavailable["failure_status"] = json!(503);
    let weft = Weft::start(&config(
        &web,
        &[("authz", authz.addr)],
        &[
            ("open", plugins::EXT_AUTHZ, open),
            ("closed", plugins::EXT_AUTHZ, unavailable),
        ],
        &[("/open", &["open"]), ("/", &["closed"])],
    ))
    .await;
    assert_eq!(
        call(&weft, "GET", "/open/x", &[]).await.status,
        200,
        "failure_mode_allow"
    );
    let closed = call(&weft, "GET", "/x", &[]).await;
    assert_eq!(
        (closed.status, closed.text().as_str()),
        (503, "authorization unavailable\n")
    );
    assert_eq!(web.hits(), 1);
}
