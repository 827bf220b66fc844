use http::Version;

use super::*;

fn door() -> FrontDoor {
    let config = crate::config::Config::parse(
        "t.toml",
        "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\nlimits = { max_uri_bytes = 64, max_headers = 8, max_header_bytes = 1024, max_request_body_bytes = 100 }\n",
    )
    .expect("valid config");
    FrontDoor::new(config.listeners[0].get_ref())
}

fn head(version: Version, uri: &str, headers: &[(&str, &str)]) -> request::Parts {
    let mut b = http::Request::builder().uri(uri).version(version);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(()).expect("request").into_parts().0
}

fn admit_h1(uri: &str, headers: &[(&str, &str)]) -> Result<request::Parts, Refusal> {
    let mut h = head(Version::HTTP_11, uri, headers);
    admit(&mut h, &door()).map(|_| h)
}

#[test]
fn path_is_normalised_and_query_kept() {
    let h = admit_h1("/x/../%61dmin//users?a=%2F..", &[("host", "a")]).expect("admitted");
    assert_eq!(h.uri.path(), "/admin/users");
    assert_eq!(h.uri.query(), Some("a=%2F.."), "the query is not the path's business");
}

#[test]
fn host_rules_of_rfc_9112() {
    assert_eq!(
        admit_h1("/", &[]).err().map(|r| r.status()),
        Some(StatusCode::BAD_REQUEST)
    );
    let two = admit_h1("/", &[("host", "a"), ("host", "b")]);
    assert!(matches!(two, Err(Refusal::Host("several Host headers"))));
    let absolute = admit_h1("http://public.example/x", &[("host", "admin.example")]).expect("admitted");
    assert_eq!(
        absolute.headers[header::HOST],
        "public.example",
        "the target's authority wins"
    );
    assert!(admit_h1("/", &[("host", "a b")]).is_err(), "invalid Host");
    assert!(admit_h1("/", &[("host", "user@a")]).is_err(), "userinfo in Host");
    let mut old = head(Version::HTTP_10, "/", &[]);
    assert!(admit(&mut old, &door()).is_ok(), "HTTP/1.0 needs no Host");
}

#[test]
fn authority_and_host_must_agree_on_http2() {
    let mut agree = head(Version::HTTP_2, "http://a.example/", &[("host", "A.example")]);
    assert!(admit(&mut agree, &door()).is_ok());
    let mut disagree = head(Version::HTTP_2, "http://a.example/", &[("host", "b.example")]);
    assert!(matches!(admit(&mut disagree, &door()), Err(Refusal::Host(_))));
}

#[test]
fn size_limits_answer_with_their_status() {
    let long = format!("/{}", "a".repeat(64));
    assert_eq!(
        admit_h1(&long, &[("host", "a")]).err().map(|r| r.status()),
        Some(StatusCode::URI_TOO_LONG)
    );
    let many: Vec<(String, String)> = (0..9).map(|i| (format!("x-{i}"), "v".to_owned())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(
        admit_h1("/", &many).err().map(|r| r.status()),
        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
    let big = "v".repeat(1100);
    assert_eq!(
        admit_h1("/", &[("host", "a"), ("x-big", &big)])
            .err()
            .map(|r| r.status()),
        Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
    );
    assert_eq!(
        admit_h1("/", &[("host", "a"), ("content-length", "101")])
            .err()
            .map(|r| r.status()),
        Some(StatusCode::PAYLOAD_TOO_LARGE)
    );
    assert!(admit_h1("/", &[("host", "a"), ("content-length", "100")]).is_ok());
    assert!(matches!(
        admit_h1("/", &[("host", "a"), ("content-length", "1"), ("content-length", "2")]),
        Err(Refusal::Framing(_))
    ));
}

#[test]
fn connection_cannot_name_what_filters_will_set() {
    let h = admit_h1("/", &[("host", "a"), ("connection", "x-user"), ("x-user", "spoofed")]).expect("admitted");
    assert!(
        !h.headers.contains_key("x-user"),
        "stripped on arrival, before any filter"
    );
    assert!(!h.headers.contains_key("connection"));
}

#[test]
fn a_trailing_dot_names_the_same_host() {
    let h = admit_h1("/", &[("host", "Admin.example.com.:8080")]).expect("admitted");
    assert_eq!(h.headers[header::HOST], "Admin.example.com:8080");
    let h = admit_h1("/", &[("host", "admin.example.com..")]).expect("admitted");
    assert_eq!(h.headers[header::HOST], "admin.example.com");
    let h = admit_h1("/", &[("host", "[::ffff:10.0.0.1]:8080")]).expect("admitted");
    assert_eq!(h.headers[header::HOST], "[::ffff:10.0.0.1]:8080");
    let mut h2 = head(Version::HTTP_2, "http://admin.example.com./x", &[]);
    admit(&mut h2, &door()).expect("admitted");
    assert_eq!(h2.uri.host(), Some("admin.example.com"));
    assert!(admit_h1("/", &[("host", ".")]).is_err());
}
