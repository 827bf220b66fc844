use super::*;
use crate::config::Config;

fn matcher(conditions: &str) -> Matcher {
    let text = format!(
        "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\n[[clusters]]\nname = \"c\"\nendpoints = [\"127.0.0.1:2\"]\n\
         [[routes]]\ncluster = \"c\"\nmatch = {conditions}\n"
    );
    let config = Config::parse("t.toml", &text).expect("valid config");
    let route = &config.routes[0];
    Matcher::build(&route.get_ref().matches, &config.source, route.span()).expect("valid matcher")
}

fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    builder.body(()).expect("request").into_parts().0
}

fn hits(m: &Matcher, req: &Parts) -> bool {
    m.matches(req, request_host(req), None)
}

#[test]
fn path_prefix_exact_and_regex() {
    let prefix = matcher("{ path_prefix = \"/api\" }");
    assert!(hits(&prefix, &request("GET", "/api/users", &[])));
    assert!(!hits(&prefix, &request("GET", "/ap", &[])));
    let exact = matcher("{ path_exact = \"/health\" }");
    assert!(hits(&exact, &request("GET", "/health?x=1", &[])));
    assert!(!hits(&exact, &request("GET", "/health/x", &[])));
    let regex = matcher("{ path_regex = \"/users/[0-9]+\" }");
    assert!(hits(&regex, &request("GET", "/users/42", &[])));
    assert!(
        !hits(&regex, &request("GET", "/users/42/posts", &[])),
        "regex must match the whole path"
    );
}

#[test]
fn path_prefix_matches_whole_segments() {
    for prefix in ["/v2", "/v2/"] {
        let m = matcher(&format!("{{ path_prefix = \"{prefix}\" }}"));
        for path in ["/v2", "/v2/", "/v2/x", "/v2/x/y?q=1", "/v2//x"] {
            assert!(hits(&m, &request("GET", path, &[])), "{prefix} takes {path}");
        }
        for path in ["/v2example", "/v2.json", "/v2%2Fx", "/V2", "/v", "/", "/x/v2", "/v2;x"] {
            assert!(!hits(&m, &request("GET", path, &[])), "{prefix} leaves {path}");
        }
    }
    let root = matcher("{ path_prefix = \"/\" }");
    for path in ["/", "/x", "/v2example"] {
        assert!(hits(&root, &request("GET", path, &[])), "/ takes {path}");
    }
    let deep = matcher("{ path_prefix = \"/a/b\" }");
    assert!(hits(&deep, &request("GET", "/a/b/c", &[])));
    assert!(!hits(&deep, &request("GET", "/a/bc", &[])));
}

#[test]
fn host_exact_wildcard_and_port() {
    let exact = matcher("{ host = \"api.example.com\" }");
    assert!(hits(&exact, &request("GET", "/", &[("host", "API.example.com:8080")])));
    assert!(
        hits(&exact, &request("GET", "http://api.example.com/", &[])),
        "HTTP/2 :authority"
    );
    assert!(!hits(&exact, &request("GET", "/", &[("host", "example.com")])));
    let wildcard = matcher("{ host = \"*.example.com\" }");
    assert!(hits(&wildcard, &request("GET", "/", &[("host", "a.b.example.com")])));
    assert!(!hits(&wildcard, &request("GET", "/", &[("host", "example.com")])));
    assert!(!hits(&wildcard, &request("GET", "/", &[("host", "badexample.com")])));
}

#[test]
fn strip_port_handles_ipv6() {
    assert_eq!(strip_port("[::1]:8080"), "[::1]");
    assert_eq!(strip_port("example.com:80"), "example.com");
    assert_eq!(strip_port("example.com"), "example.com");
}

#[test]
fn methods_headers_and_query() {
    let m = matcher(
        "{ methods = [\"post\", \"PUT\"], headers = [{ name = \"x-env\", exact = \"prod\" }, \
         { name = \"x-trace\", present = true }, { name = \"x-debug\", present = false }], \
         query = [{ name = \"v\", regex = \"[12]\" }] }",
    );
    let ok = [("x-env", "prod"), ("x-trace", "1")];
    assert!(hits(&m, &request("POST", "/?a=b&v=2", &ok)));
    assert!(!hits(&m, &request("GET", "/?v=2", &ok)), "method");
    assert!(!hits(&m, &request("PUT", "/?v=3", &ok)), "query regex");
    assert!(
        !hits(&m, &request("PUT", "/?version=2", &ok)),
        "query name must be exact"
    );
    assert!(
        !hits(&m, &request("PUT", "/?v=2", &[("x-env", "dev"), ("x-trace", "1")])),
        "header exact"
    );
    assert!(
        !hits(&m, &request("PUT", "/?v=2", &[("x-env", "prod")])),
        "header present"
    );
    assert!(!hits(
        &m,
        &request("PUT", "/?v=2", &[("x-env", "prod"), ("x-trace", "1"), ("x-debug", "1")])
    ));
}

#[test]
fn invalid_regex_is_a_located_config_error() {
    let text = "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\n[[clusters]]\nname = \"c\"\n\
                endpoints = [\"127.0.0.1:2\"]\n[[routes]]\ncluster = \"c\"\nmatch = { path_regex = \"(\" }\n";
    let config = Config::parse("t.toml", text).expect("parses");
    let route = &config.routes[0];
    let err = Matcher::build(&route.get_ref().matches, &config.source, route.span())
        .err()
        .expect("rejected");
    assert!(err.message.contains("invalid regex"), "{}", err.message);
    assert_eq!(err.position.map(|p| p.0), Some(9));
}

#[test]
fn client_identity() {
    let m = matcher("{ identity = { regex = \"spiffe://example.org/ns/prod/.*\" } }");
    let req = request("GET", "/", &[]);
    assert!(m.matches(&req, "", Some("spiffe://example.org/ns/prod/sa/web")));
    assert!(!m.matches(&req, "", Some("spiffe://example.org/ns/dev/sa/web")));
    assert!(!m.matches(&req, "", None), "no certificate, no identity");
    let anyone = matcher("{ identity = { present = true } }");
    assert!(anyone.matches(&req, "", Some("CN=x")));
    assert!(!anyone.matches(&req, "", None));
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn hosts() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "api.example.com",
            "API.Example.com",
            "a.api.example.com",
            "example.com",
            "[::1]",
            "x",
        ])
        .prop_map(str::to_owned)
    }

    fn paths() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "/",
            "/api",
            "/api/",
            "/api/v1",
            "/apix",
            "/admin",
            "/admin/users",
            "/a",
        ])
        .prop_map(str::to_owned)
    }

    /// What `host` and `path_prefix`/`path_exact` mean, written independently of the matcher.
    fn expected(host_cond: &Option<String>, prefix: bool, cond_path: &str, host: &str, path: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let host_ok = match host_cond.as_deref().map(str::to_ascii_lowercase) {
            None => true,
            Some(h) if h.starts_with("*.") => host.ends_with(&h[1..]) && host.len() > h.len() - 1,
            Some(h) => host == h,
        };
        host_ok
            && if prefix {
                // Whole segments: the prefix's path elements begin the path's (a trailing
                // `/` in either counts for nothing), as the Gateway API's PathPrefix.
                let elements = |p: &str| {
                    p.split('/')
                        .filter(|e| !e.is_empty())
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                };
                let (want, have) = (elements(cond_path), elements(path));
                have.len() >= want.len() && have[..want.len()] == want[..]
            } else {
                path == cond_path
            }
    }

    proptest! {
        #[test]
        fn host_and_path_conditions_match_their_meaning(
            host_cond in prop::option::of(prop_oneof![hosts(), Just("*.example.com".to_owned())]),
            prefix in any::<bool>(),
            cond_path in paths(),
            host in hosts(),
            port in prop::option::of(1u16..),
            path in paths(),
            http2 in any::<bool>(),
        ) {
            let mut conditions = vec![format!("{} = {cond_path:?}", if prefix { "path_prefix" } else { "path_exact" })];
            if let Some(h) = &host_cond {
                conditions.push(format!("host = {h:?}"));
            }
            let m = matcher(&format!("{{ {} }}", conditions.join(", ")));
            let authority = match port { Some(p) => format!("{host}:{p}"), None => host.clone() };
            // HTTP/2 names the host in :authority, HTTP/1.1 in Host.
            let req = if http2 {
                request("GET", &format!("http://{authority}{path}"), &[])
            } else {
                request("GET", &path, &[("host", &authority)])
            };
            prop_assert_eq!(hits(&m, &req), expected(&host_cond, prefix, &cond_path, &host, &path));
        }
    }
}

#[test]
fn the_path_template_names_what_the_route_matches() {
    for (conditions, template) in [
        (r#"{ path_prefix = "/api" }"#, "/api/*"),
        (r#"{ path_prefix = "/api/" }"#, "/api/*"),
        (r#"{ path_prefix = "/" }"#, "/*"),
        (r#"{ host = "example.com" }"#, "/*"),
        (r#"{ path_exact = "/healthz" }"#, "/healthz"),
        (r#"{ path_regex = "/users/[0-9]+" }"#, "/users/[0-9]+"),
    ] {
        assert_eq!(&*matcher(conditions).template, template, "{conditions}");
    }
}
