//! The admin listener as an attacker meets it: off loopback only with a token, every
//! endpoint behind the token when there is one, no reload from a cross-site form, and no
//! secret from the config echoed by a rejected reload.

use weft_conformance::*;

const TOKEN: &str = "c0ffee-0123456789abcdef-token";

fn config(up: &Upstream, admin_extra: &str) -> String {
    Config::new()
        // Reloads only when a test asks: the file watcher would add its own.
        .top("[runtime]\nwatch = false")
        .admin(admin_extra)
        .cluster("web", &[up.addr])
        .route("all", "path_prefix = \"/\"", "web", &[], "")
        .to_string()
}

// Raw text: a non-loopback `[admin]` address (the builder's is always `{admin}`) is the subject.
const CHECKED: &str = r#"
[admin]
address = "0.0.0.0:9901"
{token}

[[listeners]]
name = "main"
address = "127.0.0.1:8080"
"#;

#[test]
fn check_refuses_a_non_loopback_admin_address_without_a_token() {
    let (ok, text) = weft_check(&CHECKED.replace("{token}", ""), &[]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("[admin] address 0.0.0.0:9901 is not a loopback address"),
        "{text}"
    );
    assert!(text.contains("token_file = "), "the error says how to fix it: {text}");

    let (ok, text) = weft_check(
        &CHECKED.replace("{token}", "token_file = \"admin.token\""),
        &[("admin.token", &format!("{TOKEN}\n"))],
    );
    assert!(ok, "{text}");
    let (ok, text) = weft_check(&CHECKED.replace("{token}", "token_file = \"missing.token\""), &[]);
    assert!(!ok && text.contains("missing.token: cannot read it"), "{text}");
    let (ok, text) = weft_check(&CHECKED.replace("{token}", "token = \"short\""), &[]);
    assert!(!ok && text.contains("at least 16"), "{text}");
    assert!(!text.contains("\"short\""), "the error shows the token: {text}");
}

#[tokio::test]
async fn with_a_token_every_endpoint_needs_it() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config(&up, &format!("token = \"{TOKEN}\""))).await;
    let good = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {TOKEN}x");
    let endpoints = [
        ("GET", "/ready", 200),
        ("GET", "/metrics", 200),
        ("HEAD", "/metrics", 200),
        ("HEAD", "/api/config", 200),
        ("GET", "/version", 200),
        ("POST", "/reload", 200),
        ("GET", "/nothing-here", 404),
    ];
    for (method, path, _) in endpoints {
        for (headers, what) in [
            (vec![], "no Authorization"),
            (vec![("x-weft-admin", "1")], "the proof header alone"),
            (vec![("authorization", wrong.as_str())], "a wrong token"),
            (vec![("authorization", "Basic YWRtaW46YWRtaW4=")], "Basic credentials"),
        ] {
            let reply = weft.admin_request(method, path, &headers).await;
            assert_eq!(reply.status, 401, "{method} {path} with {what}: {}", reply.text());
            let challenge = reply.header("www-authenticate").unwrap_or_default();
            assert!(challenge.starts_with("Bearer "), "{method} {path}: {challenge:?}");
            assert!(!reply.text().contains(TOKEN));
        }
    }
    let version = weft.admin_request("GET", "/version", &[("authorization", &good)]).await;
    assert_eq!(version.text(), "1\n", "a refused reload ran");

    for (method, path, expected) in endpoints {
        // The bearer header is proof enough for a reload: no X-Weft-Admin needed.
        let reply = weft.admin_request(method, path, &[("authorization", &good)]).await;
        assert_eq!(reply.status, expected, "{method} {path}: {}", reply.text());
    }
    let version = weft.admin_request("GET", "/version", &[("authorization", &good)]).await;
    assert_eq!(version.text(), "2\n", "the authorised reload ran once");
}

#[tokio::test]
async fn a_reload_needs_the_proof_header_and_a_local_host() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config(&up, "")).await;
    // What a cross-site form post sends: a simple content type, an Origin, no custom header.
    let form = [
        ("content-type", "application/x-www-form-urlencoded"),
        ("origin", "http://evil.example"),
    ];
    let reply = weft.admin_request("POST", "/reload", &form).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.text().contains("X-Weft-Admin: 1"), "{}", reply.text());
    // A DNS-rebinding page reaches 127.0.0.1 under its own name, proof header and all.
    let rebound = [("host", "evil.example:9901"), ("x-weft-admin", "1")];
    let reply = weft.admin_request("POST", "/reload", &rebound).await;
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert!(reply.text().contains("DNS rebinding"), "{}", reply.text());

    let (_, version) = weft.admin("GET", "/version").await;
    assert_eq!(version, "1\n", "a refused reload ran");
    assert!(!weft.log().contains("config reloaded"), "{}", weft.log());

    let reply = weft
        .admin_request("POST", "/reload", &[("x-weft-admin", "1"), ("host", "localhost")])
        .await;
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (200, "reloaded: config version 2\n")
    );
    let (status, _) = weft.admin("GET", "/metrics").await;
    assert_eq!(status, 200, "reads need no proof header");
}

#[tokio::test]
async fn a_rejected_reload_echoes_no_password_or_secret() {
    const PASSWORD: &str = "hunter2-redis-pw";
    const HMAC: &str = "hmac-s3cr3t-value";
    let up = Upstream::echo("web").await;
    // The Redis store connects lazily: no Redis is needed while no filter uses it.
    let kv = format!("[kv]\nbackend = \"redis\"\nurl = \"redis://weft:{PASSWORD}@127.0.0.1:1\"\n");
    let good = format!("{}\n{kv}", config(&up, ""));
    let weft = Weft::start(&good).await;

    let filter = format!(
        "filters = [{{ name = \"caps\", wasm = \"{}\", config = {{ hmac_secret = \"{HMAC}\" }} }}]\n",
        plugins::CAPABILITIES
    );
    let broken = [
        // A syntax error on the line holding the password: the error quotes that line.
        good.replace("@127.0.0.1:1\"\n", "@127.0.0.1:1\" oops\n"),
        // A URL the validation refuses, which names the URL.
        good.replace("url = \"redis://", "url = \"rediss://"),
        // A plugin refusing its config (an unknown field), quoted with its inline table.
        format!("{filter}{good}"),
    ];
    for (i, text) in broken.iter().enumerate() {
        weft.write_config(text);
        let (status, body) = weft.admin("POST", "/reload").await;
        assert_eq!(status, 409, "case {i}: {body}");
        assert!(body.starts_with("reload rejected"), "case {i}: {body}");
        for secret in [PASSWORD, HMAC] {
            assert!(!body.contains(secret), "case {i} echoed a secret:\n{body}");
        }
    }
    let log = weft.log();
    assert_eq!(log.matches("reload rejected").count(), 3, "{log}");
    assert!(
        !log.contains(PASSWORD) && !log.contains(HMAC),
        "the log holds a secret:\n{log}"
    );
    assert!(log.contains("redis://*"), "the masked URL is still shown:\n{log}");
}

/// Header values that carry credentials (`authorization`, `proxy-authorization`,
/// `cookie`, `set-cookie`), written in every shape a config can hold them: a header edit
/// (route or native filter), a header condition inline or as its own table.
const CREDENTIALS: [&str; 8] = [
    "FILTER-AUTHZ-1",
    "FILTER-COOKIE-2",
    "FILTER-SETCOOKIE-3",
    "MATCH-AUTHZ-4",
    "MATCH-COOKIE-5",
    "ROUTE-PROXY-6",
    "TABLE-PROXY-7",
    "TABLE-AUTHZ-8",
];

fn credential_config(up: &Upstream) -> String {
    Config::new()
        .top("[runtime]\nwatch = false")
        .cluster("web", &[up.addr])
        .native_filter(
            "tag",
            "headers",
            "request_set = { authorization = \"Bearer FILTER-AUTHZ-1\", Cookie = \"sid=FILTER-COOKIE-2\" }, \
             response_set = { set-cookie = \"sid=FILTER-SETCOOKIE-3\" }",
        )
        // The routes' text is the subject: a credential in each place a header value can stand.
        .routes(
            r#"
[[routes]]
name = "inline"
match = { path_prefix = "/a", headers = [{ name = "Authorization", exact = "Bearer MATCH-AUTHZ-4" }, { name = "cookie", regex = "sid=MATCH-COOKIE-5.*" }] }
cluster = "web"
filters = ["tag"]
request_headers = { set = { "Proxy-Authorization" = "Basic ROUTE-PROXY-6" } }

[[routes]]
name = "tables"
cluster = "web"

[routes.match]
path_prefix = "/"

[[routes.match.headers]]
exact = "Basic TABLE-PROXY-7"
name = "proxy-authorization"

[routes.request_headers.set]
authorization = "Bearer TABLE-AUTHZ-8"
"#,
        )
        .to_string()
}

#[tokio::test]
async fn credential_header_values_are_masked_in_the_config_dump_and_reload_errors() {
    let up = Upstream::echo("web").await;
    let good = credential_config(&up);
    let weft = Weft::start(&good).await;
    let (status, dump) = weft.admin("GET", "/api/config").await;
    assert_eq!(status, 200, "{dump}");
    for secret in CREDENTIALS {
        assert!(!dump.contains(secret), "/api/config shows {secret}:\n{dump}");
    }
    // The rest stays readable: which header, and that a value is there.
    for shown in [
        r#"name = \"proxy-authorization\""#,
        r#"exact = \"*"#,
        r#"name = \"inline\""#,
        r#"path_prefix = \"/a\""#,
    ] {
        assert!(dump.contains(shown), "{shown} in\n{dump}");
    }

    let broken = [
        // A syntax error on the line holding a credential: the error quotes that line.
        good.replace("TABLE-AUTHZ-8\"", "TABLE-AUTHZ-8\" oops"),
        // The value's own line, under a header named on another line of its table.
        good.replace(
            "exact = \"Basic TABLE-PROXY-7\"",
            "exact = \"Basic TABLE-PROXY-7\"\nregex = \"x\"",
        ),
        // A type error, whose message quotes the value itself.
        good.replace("exact = \"Basic TABLE-PROXY-7\"", "present = \"Basic TABLE-PROXY-7\""),
        // An inline condition refused whole.
        good.replace(
            "exact = \"Bearer MATCH-AUTHZ-4\"",
            "exact = \"Bearer MATCH-AUTHZ-4\", present = true",
        ),
        // A header value the filter refuses (a control character), named in its message.
        good.replace("Bearer FILTER-AUTHZ-1", "Bearer FILTER-AUTHZ-1\\u0001"),
        // The same for a route's edit.
        good.replace("Basic ROUTE-PROXY-6", "Basic ROUTE-PROXY-6\\u0001"),
    ];
    for (i, text) in broken.iter().enumerate() {
        weft.write_config(text);
        let (status, body) = weft.admin("POST", "/reload").await;
        assert_eq!(status, 409, "case {i}: {body}");
        for secret in CREDENTIALS {
            assert!(!body.contains(secret), "case {i} echoed {secret}:\n{body}");
        }
    }
    let log = weft.log();
    assert_eq!(log.matches("reload rejected").count(), broken.len(), "{log}");
    for secret in CREDENTIALS {
        assert!(!log.contains(secret), "the log holds {secret}:\n{log}");
    }
}

/// `HEAD` answers what `GET` answers, without the body: the same status and
/// `content-type` (on `/metrics` for either format the `Accept` header picks), and the
/// same `content-length`, so a monitor probing with `HEAD` sees what a scraper gets.
#[tokio::test]
async fn head_answers_as_get_does_without_a_body() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config(&up, "")).await;
    let openmetrics = [("accept", "application/openmetrics-text;version=1.0.0")];
    for (path, headers) in [
        ("/metrics", &[][..]),
        ("/metrics", &openmetrics[..]),
        ("/ready", &[][..]),
        ("/version", &[][..]),
        ("/api/server", &[][..]),
        ("/status", &[][..]),
        ("/no-such-path", &[][..]),
    ] {
        let get = weft.admin_request("GET", path, headers).await;
        let head = weft.admin_request("HEAD", path, headers).await;
        assert_eq!(head.status, get.status, "{path} {headers:?}");
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path} {headers:?}"
        );
        assert!(head.body.is_empty(), "{path}: HEAD has no body");
        if path != "/metrics" {
            // /metrics changes between two scrapes (the admin requests are counted).
            assert_eq!(head.header("content-length"), get.header("content-length"), "{path}");
        }
    }
}
