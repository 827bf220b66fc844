use super::*;
use crate::config::FrontDoor;
use crate::conn::ConnInfo;
use crate::hop::arriving_request;
use std::sync::Arc;

fn door() -> Arc<FrontDoor> {
    let config = crate::config::Config::parse("t.toml", "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\n")
        .expect("valid config");
    Arc::new(FrontDoor::new(config.listeners[0].get_ref()))
}

fn conn(trust: bool) -> ConnInfo {
    ConnInfo::new(
        "10.1.2.3:5555".parse().expect("addr"),
        "main".into(),
        "http",
        trust,
        door(),
    )
}

fn head(headers: &[(&str, &str)]) -> request::Parts {
    let mut b = http::Request::builder().uri("/x").version(Version::HTTP_11);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).expect("request").into_parts().0
}

#[test]
fn hop_by_hop_headers_are_removed() {
    let mut h = head(&[
        ("host", "example.com"),
        ("connection", "keep-alive, x-secret"),
        ("x-secret", "1"),
        ("keep-alive", "timeout=5"),
        ("proxy-authorization", "Basic x"),
        ("proxy-connection", "keep-alive"),
        ("te", "gzip"),
        ("upgrade", "websocket"),
        ("expect", "100-continue"),
        ("x-kept", "yes"),
    ]);
    assert!(!arriving_request(&mut h), "not an upgrade without Connection: upgrade");
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "upgrade",
        "expect",
    ] {
        assert!(!h.headers.contains_key(gone), "{gone} should be removed");
    }
    assert_eq!(h.headers["x-kept"], "yes");
    assert_eq!(h.headers["host"], "example.com");
}

#[test]
fn te_trailers_survives_and_upgrades_keep_upgrade() {
    let mut h = head(&[("te", "trailers, gzip")]);
    arriving_request(&mut h);
    assert_eq!(h.headers["te"], "trailers");

    let mut h = head(&[("connection", "Upgrade"), ("upgrade", "websocket")]);
    assert!(arriving_request(&mut h));
    assert_eq!(h.headers["upgrade"], "websocket");
    assert_eq!(h.headers["connection"], "upgrade");
}

#[test]
fn forwarded_headers_replaced_unless_trusted() {
    let spoofed = [
        ("x-forwarded-for", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
        ("x-forwarded-proto", "https"),
    ];
    let mut h = head(&spoofed);
    upstream_request(&mut h, &conn(false), None, Version::HTTP_11);
    assert_eq!(h.headers["x-forwarded-for"], "10.1.2.3");
    assert_eq!(h.headers["forwarded"], "for=10.1.2.3;proto=http");
    assert_eq!(h.headers["x-forwarded-proto"], "http");

    let mut h = head(&spoofed);
    upstream_request(&mut h, &conn(true), None, Version::HTTP_11);
    assert_eq!(h.headers["x-forwarded-for"], "6.6.6.6, 10.1.2.3");
    assert_eq!(h.headers["forwarded"], "for=6.6.6.6, for=10.1.2.3;proto=http");
    assert_eq!(h.headers["x-forwarded-proto"], "https");
}

#[test]
fn ipv6_clients_are_quoted_in_forwarded() {
    let c = ConnInfo::new("[::1]:1".parse().expect("addr"), "l".into(), "http", false, door());
    let mut h = head(&[]);
    upstream_request(&mut h, &c, None, Version::HTTP_11);
    assert_eq!(h.headers["forwarded"], "for=\"[::1]\";proto=http");
    assert_eq!(h.headers["x-forwarded-for"], "::1");
}

#[test]
fn via_is_appended_and_host_rewritten_or_taken_from_authority() {
    let mut h = head(&[("via", "1.1 edge")]);
    let rewrite = HeaderValue::from_static("internal.svc");
    upstream_request(&mut h, &conn(false), Some(&rewrite), Version::HTTP_11);
    assert_eq!(h.headers["via"], "1.1 edge, 1.1 weft");
    assert_eq!(h.headers["host"], "internal.svc");

    let mut h2 = http::Request::builder()
        .uri("http://api.example.com/x")
        .version(Version::HTTP_2)
        .body(())
        .expect("request")
        .into_parts()
        .0;
    upstream_request(&mut h2, &conn(false), None, Version::HTTP_11);
    assert_eq!(h2.headers["host"], "api.example.com");
    assert_eq!(h2.headers["via"], "2.0 weft");
    assert_eq!(h2.version, Version::HTTP_11);
}

#[test]
fn response_hop_by_hop_removed_and_via_added() {
    let mut resp = http::Response::builder()
        .header("connection", "close, x-internal")
        .header("x-internal", "1")
        .header("transfer-encoding", "chunked")
        .header("upgrade", "h2c")
        .body(())
        .expect("response")
        .into_parts()
        .0;
    downstream_response(&mut resp, false);
    assert!(!resp.headers.contains_key("connection"));
    assert!(!resp.headers.contains_key("x-internal"));
    assert!(!resp.headers.contains_key("transfer-encoding"));
    assert!(!resp.headers.contains_key("upgrade"));
    assert_eq!(resp.headers["via"], "1.1 weft");
}

#[test]
fn headers_a_filter_sets_survive_the_way_upstream() {
    // The client's `Connection: x-user` was dealt with on arrival; what a filter set after
    // that is forwarded.
    let mut h = head(&[("connection", "x-user")]);
    arriving_request(&mut h);
    h.headers.insert("x-user", HeaderValue::from_static("alice"));
    upstream_request(&mut h, &conn(false), None, Version::HTTP_11);
    assert_eq!(h.headers["x-user"], "alice");
}

#[test]
fn http2_upstreams_get_the_host_as_authority_and_no_host_header() {
    let c = conn(false);
    // HTTP/1.1 client: Host becomes :authority.
    let mut h = head(&[("host", "api.example.com")]);
    upstream_request(&mut h, &c, None, Version::HTTP_2);
    assert_eq!(h.uri.authority().map(|a| a.as_str()), Some("api.example.com"));
    assert_eq!(h.uri.path(), "/x");
    assert!(!h.headers.contains_key(header::HOST));
    // A host rewrite wins over the client's, whichever way it came.
    let rewrite = HeaderValue::from_static("internal.example");
    let mut h = head(&[("host", "api.example.com")]);
    upstream_request(&mut h, &c, Some(&rewrite), Version::HTTP_2);
    assert_eq!(h.uri.authority().map(|a| a.as_str()), Some("internal.example"));
    assert!(!h.headers.contains_key(header::HOST));
    let (mut h2, ()) = http::Request::get("http://api.example.com/x?q=1")
        .version(Version::HTTP_2)
        .body(())
        .expect("request")
        .into_parts();
    upstream_request(&mut h2, &c, Some(&rewrite), Version::HTTP_2);
    assert_eq!(h2.uri.to_string(), "http://internal.example/x?q=1");
    assert!(!h2.headers.contains_key(header::HOST));
}

#[test]
fn every_name_connection_lists_goes_on_any_line_in_any_case() {
    // The strip looks up only the fixed names the scan saw, and the listed names beyond
    // them: none may slip through, whatever the spelling or the line they are on.
    let mut resp = http::Response::builder()
        .header("connection", "Keep-Alive , X-One")
        .header("connection", "close,te,,X-TWO")
        .header("x-one", "1")
        .header("x-two", "2")
        .header("close", "3")
        .header("te", "trailers")
        .header("keep-alive", "timeout=5")
        .header("x-kept", "yes")
        .body(())
        .expect("response")
        .into_parts()
        .0;
    downstream_response(&mut resp, false);
    for gone in ["connection", "x-one", "x-two", "close", "te", "keep-alive"] {
        assert!(!resp.headers.contains_key(gone), "{gone} should be removed");
    }
    assert_eq!(resp.headers["x-kept"], "yes");

    // A protocol switch keeps Upgrade and says `Connection: upgrade`, and nothing else.
    let mut switched = http::Response::builder()
        .status(101)
        .header("connection", "Upgrade, x-one")
        .header("upgrade", "websocket")
        .header("x-one", "1")
        .header("proxy-connection", "keep-alive")
        .body(())
        .expect("response")
        .into_parts()
        .0;
    downstream_response(&mut switched, true);
    assert_eq!(switched.headers["upgrade"], "websocket");
    assert_eq!(switched.headers["connection"], "upgrade");
    assert!(!switched.headers.contains_key("x-one"));
    assert!(!switched.headers.contains_key("proxy-connection"));
}
