use super::*;

pub(super) const MINIMAL: &str = r#"
[[listeners]]
name = "main"
address = "127.0.0.1:8080"

[[clusters]]
name = "web"
endpoints = ["127.0.0.1:3000"]

[[routes]]
match = { path_prefix = "/" }
cluster = "web"
"#;

pub(super) fn error(text: &str) -> ConfigError {
    match Config::parse("test.toml", text) {
        Ok(_) => panic!("config should be rejected:\n{text}"),
        Err(e) => e,
    }
}

#[test]
fn minimal_config_parses_with_defaults() {
    let config = Config::parse("test.toml", MINIMAL).expect("valid");
    assert_eq!(config.listeners.len(), 1);
    let route = config.routes[0].get_ref();
    assert_eq!(route.timeout, Duration::from_secs(15));
    let cluster = config.clusters[0].get_ref();
    assert_eq!(cluster.connect_timeout, Duration::from_secs(2));
    assert_eq!(cluster.protocol, UpstreamProtocol::Http1);
    assert!(config.runtime.watch);
}

#[test]
fn unknown_cluster_is_located_and_lists_the_known_ones() {
    let text = MINIMAL.replace("cluster = \"web\"", "cluster = \"api\"");
    let e = error(&text);
    assert_eq!(e.position, Some((12, 11)));
    let shown = e.to_string();
    assert!(shown.contains("unknown cluster \"api\" (defined: web)"), "{shown}");
    assert!(shown.contains("12 | cluster = \"api\""), "{shown}");
    assert!(shown.contains("^^^^^"), "{shown}");
}

#[test]
fn unknown_field_names_the_field_and_line() {
    let text = MINIMAL.replace("cluster = \"web\"", "cluster = \"web\"\ntimout = \"1s\"");
    let e = error(&text);
    assert!(e.message.contains("unknown field `timout`"), "{}", e.message);
    assert_eq!(e.position.map(|p| p.0), Some(13));
}

#[test]
fn bad_duration_says_how_to_write_one() {
    let text = MINIMAL.replace("cluster = \"web\"", "cluster = \"web\"\ntimeout = \"fast\"");
    let e = error(&text);
    assert!(e.message.contains("invalid duration \"fast\""), "{}", e.message);
}

#[test]
fn duplicate_names_and_addresses_are_rejected() {
    let twice = MINIMAL.replace(
        "[[routes]]",
        "[[clusters]]\nname = \"web\"\nendpoints = [\"127.0.0.1:1\"]\n\n[[routes]]",
    );
    assert!(error(&twice).message.contains("cluster name \"web\" is used twice"));
    let same_port = MINIMAL.replace(
        "[[clusters]]",
        "[[listeners]]\nname = \"other\"\naddress = \"127.0.0.1:8080\"\n\n[[clusters]]",
    );
    assert!(error(&same_port).message.contains("127.0.0.1:8080 is used twice"));
    // Port 0 is bound to a port of its own per listener.
    let port_zero = MINIMAL.replace("127.0.0.1:8080", "127.0.0.1:0").replace(
        "[[clusters]]",
        "[[listeners]]\nname = \"other\"\naddress = \"127.0.0.1:0\"\n\n[[clusters]]",
    );
    assert!(Config::parse("weft.toml", &port_zero).is_ok());
}

#[test]
fn route_conditions_must_be_unambiguous() {
    let two_paths = MINIMAL.replace(
        "{ path_prefix = \"/\" }",
        "{ path_prefix = \"/\", path_exact = \"/x\" }",
    );
    assert!(error(&two_paths).message.contains("at most one of path_prefix"));
    let vague = MINIMAL.replace("{ path_prefix = \"/\" }", "{ headers = [{ name = \"x\" }] }");
    assert!(error(&vague).message.contains("exactly one of exact, regex, present"));
}

#[test]
fn filters_need_one_kind_and_routes_need_known_filters() {
    let no_kind = MINIMAL.replace("[[routes]]", "[[filters]]\nname = \"f\"\n\n[[routes]]");
    assert!(error(&no_kind).message.contains("exactly one of `wasm"));
    let unknown = MINIMAL.replace("cluster = \"web\"", "cluster = \"web\"\nfilters = [\"auth\"]");
    let e = error(&unknown);
    assert!(
        e.message.contains("unknown filter \"auth\" (defined: none)"),
        "{}",
        e.message
    );
}

#[test]
fn no_listeners_is_an_error() {
    assert!(error("").message.contains("no [[listeners]]"));
}

#[test]
fn syntax_errors_point_at_the_line() {
    let e = error("[[listeners]]\nname = \"a\"\naddress = 127.0.0.1:80\n");
    assert_eq!(e.position.map(|p| p.0), Some(3));
}

#[test]
fn plugin_paths_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = MINIMAL.replace(
        "[[routes]]",
        "[[filters]]\nname = \"f\"\nwasm = \"plugins/f.wasm\"\n\n[[routes]]",
    );
    let path = dir.path().join("weft.toml");
    std::fs::write(&path, text).expect("write");
    let config = Config::load(&path).expect("valid");
    assert_eq!(
        config.filters[0].get_ref().wasm.as_deref(),
        Some(dir.path().join("plugins/f.wasm").as_path())
    );
}

#[test]
fn zero_limits_are_refused_naming_the_filter_and_the_key() {
    let with = |limits: &str| {
        MINIMAL.replace(
            "[[routes]]",
            &format!("[[filters]]\nname = \"rl\"\nwasm = \"f.wasm\"\nlimits = {{ {limits} }}\n\n[[routes]]"),
        )
    };
    for key in ["kv_keys", "kv_bytes", "max_concurrency"] {
        let e = error(&with(&format!("{key} = 0")));
        assert!(e.message.contains("filter \"rl\""), "{}", e.message);
        assert!(
            e.message.contains(&format!("limits.{key} must be more than zero")),
            "{}",
            e.message
        );
    }
    let config = Config::parse("t", &with("kv_keys = 10, max_queue = 0")).expect("valid");
    let limits = &config.filters[0].get_ref().limits;
    assert_eq!((limits.kv_keys, limits.kv_bytes, limits.max_queue), (10, 64 << 20, 0));
    assert_eq!(limits.max_concurrency, 256);
}

#[test]
fn errors_do_not_show_passwords_or_secret_values() {
    let text = format!(
        "{MINIMAL}\n[kv]\nbackend = \"redis\"\nurl = \"rediss://weft:hunter2hunter2@cache:6379\"\n\n\
         [[filters]]\nname = \"jwt\"\nnative = \"headers\"\nconfig = {{ hmac_secret = \"s3cr3t-value\", bogus = }}\n"
    );
    let e = error(&text).to_string();
    assert!(e.contains("bogus = }"), "{e}");
    assert!(!e.contains("s3cr3t-value"), "{e}");
    let e = error(&text.replace("bogus = ", "")).to_string();
    assert!(e.contains("must start with redis://"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Lines a config is made of, right and wrong: tables, keys of every type, values of
    /// the wrong type, unknown keys, duplicates, broken syntax.
    fn line() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "[[listeners]]",
            "name = \"main\"",
            "name = \"\"",
            "address = \"127.0.0.1:8080\"",
            "address = \"nope\"",
            "limits = { max_uri_bytes = 0 }",
            "limits = { max_headers = 10, bogus = 1 }",
            "timeouts = { idle = \"1s\" }",
            "timeouts = { idle = \"soon\" }",
            "merge_slashes = 3",
            "[[clusters]]",
            "name = \"web\"",
            "endpoints = [\"127.0.0.1:3000\"]",
            "endpoints = []",
            "[[routes]]",
            "cluster = \"web\"",
            "cluster = \"missing\"",
            "match = { path_prefix = \"/\" }",
            "match = { path_regex = \"(\" }",
            "filters = [\"nope\"]",
            "[[filters]]",
            "native = \"headers\"",
            "wasm = \"x.wasm\"",
            "[kv]",
            "backend = \"redis\"",
            "url = \"redis://:secret@127.0.0.1:1\"",
            "[admin]",
            "address = \"0.0.0.0:9901\"",
            "[runtime]",
            "workers = -1",
            "= broken",
            "\"unterminated",
            "[[",
            "x = 1",
        ])
        .prop_map(str::to_owned)
    }

    proptest! {
        /// Any text: a config or an error located inside the text, never a panic.
        #[test]
        fn parse_answers_every_text(lines in prop::collection::vec(line(), 0..24)) {
            let text = lines.join("\n");
            match Config::parse("fuzz.toml", &text) {
                Ok(config) => prop_assert!(!config.listeners.is_empty()),
                Err(e) => {
                    prop_assert!(!e.message.is_empty());
                    if let Some((line, col)) = e.position {
                        prop_assert!(line >= 1 && line <= text.lines().count().max(1));
                        prop_assert!(col >= 1);
                    }
                }
            }
        }

        #[test]
        fn parse_never_panics_on_bytes(text in "\\PC{0,200}") {
            let _ = Config::parse("fuzz.toml", &text);
        }
    }
}

#[test]
fn upstream_settings_are_checked_where_they_are_written() {
    let cluster = |extra: &str| {
        format!(
            "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:8080\"\n\n[[clusters]]\nname = \"web\"\n{extra}\n\n[[routes]]\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"web\"\n"
        )
    };
    // An endpoint's weight is checked at the endpoint.
    let e = error(&cluster(
        "endpoints = [\"127.0.0.1:1\", { address = \"127.0.0.1:2\", weight = 3 }]",
    ));
    assert_eq!(e.position, Some((7, 29)), "{e}");
    assert!(e.message.contains("weights need a balancer"), "{e}");
    let e = error(&cluster(
        "lb = \"random\"\nendpoints = [{ address = \"127.0.0.1:2\", weight = 101 }]",
    ));
    assert!(e.message.contains("weight 101 is not between 1 and 100"), "{e}");

    let cases = [
        ("endpoints = [\"127.0.0.1:1\"]\nlb = \"ring_hash\"", "need hash_on"),
        (
            "endpoints = [\"127.0.0.1:1\"]\nhash_on = { header = \"x-user\" }",
            "hash_on is only for",
        ),
        (
            "endpoints = [\"127.0.0.1:1\"]\nlb = \"maglev\"\nhash_on = { header = \"x\", cookie = \"y\" }",
            "exactly one of header, cookie",
        ),
        (
            "endpoints = [\"127.0.0.1:1\"]\nlatency_ewma = \"10s\"",
            "only for lb = \"least_request\"",
        ),
        (
            "endpoints = [\"127.0.0.1:1\"]\n[clusters.retry]\nstatuses = [404]",
            "404 is not a 5xx",
        ),
        (
            "endpoints = [\"127.0.0.1:1\"]\n[clusters.retry]\nbackoff_base = \"1s\"\nbackoff_max = \"10ms\"",
            "at most backoff_max",
        ),
        (
            "endpoints = [\"127.0.0.1:1\"]\n[clusters.health_check]\npath = \"healthz\"",
            "not an absolute path",
        ),
        (
            "endpoints = [\"127.0.0.1:1\"]\n[clusters.outlier_detection]\nmax_ejection_percent = 150",
            "max_ejection_percent is a percentage",
        ),
        ("endpoints = [\"127.0.0.1\"]", "is not host:port"),
        ("endpoints = []", "has no endpoints"),
    ];
    for (extra, want) in cases {
        let e = error(&cluster(extra));
        assert!(e.message.contains(want), "{extra}: {e}");
        assert!(e.message.contains("\"web\""), "{extra}: names the cluster: {e}");
        assert!(e.position.is_some(), "{extra}: located: {e}");
    }
}

#[test]
fn runtime_scheduler_defaults_to_per_core_and_zero_workers_or_an_unknown_scheduler_are_refused() {
    let config = Config::parse("test.toml", MINIMAL).expect("valid");
    assert_eq!(config.runtime.scheduler, Scheduler::PerCore);
    assert_eq!(config.runtime.workers(Some(3)), 3, "the command line's count wins");
    assert!(config.runtime.workers(None) >= 1, "one per core");
    let stealing = format!("[runtime]\nworkers = 2\nscheduler = \"work-stealing\"\n{MINIMAL}");
    let config = Config::parse("test.toml", &stealing).expect("valid");
    assert_eq!(config.runtime.scheduler, Scheduler::WorkStealing);
    assert_eq!(config.runtime.workers(None), 2);
    let e = error(&format!("[runtime]\nworkers = 0\n{MINIMAL}"));
    assert!(e.message.contains("workers must be more than zero"), "{}", e.message);
    let e = error(&format!("[runtime]\nscheduler = \"per-thread\"\n{MINIMAL}"));
    assert!(
        e.message.contains("per-core") && e.message.contains("work-stealing"),
        "{}",
        e.message
    );
    assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
}

#[test]
fn sidecar_settings_are_checked_where_they_are_written() {
    let transparent = MINIMAL.replace(
        "address = \"127.0.0.1:8080\"",
        "address = \"127.0.0.1:8080\"\ntransparent = \"redirect\"\nopaque_ports = [25]",
    );
    let config = Config::parse("test.toml", &transparent).expect("valid");
    assert_eq!(config.listeners[0].get_ref().transparent, Some(Transparent::Redirect));

    let e = error(&MINIMAL.replace(
        "address = \"127.0.0.1:8080\"",
        "address = \"127.0.0.1:8080\"\nopaque_ports = [25]",
    ));
    assert!(e.message.contains("opaque_ports needs transparent"), "{}", e.message);
    let e = error(&transparent.replace("transparent = \"redirect\"", "transparent = \"nat\""));
    assert!(
        e.message.contains("redirect") && e.message.contains("tproxy"),
        "{}",
        e.message
    );
    let e = error(&transparent.replace("opaque_ports = [25]", "peer_tls = \"strict\""));
    assert!(e.message.contains("need tls"), "{}", e.message);
    let e = error(&transparent.replace("opaque_ports = [25]", "http3 = true"));
    assert!(e.message.contains("http3"), "{}", e.message);

    let original = MINIMAL.replace(
        "endpoints = [\"127.0.0.1:3000\"]",
        "kind = \"original_destination\"\nmark = 1337",
    );
    let config = Config::parse("test.toml", &original).expect("valid");
    assert_eq!(config.clusters[0].get_ref().kind, ClusterKind::OriginalDestination);
    let e = error(&MINIMAL.replace("endpoints = [", "kind = \"original_destination\"\nendpoints = ["));
    assert!(e.message.contains("takes no endpoints"), "{}", e.message);
    let e = error(&original.replace("mark = 1337", "max_destinations = 0"));
    assert!(e.message.contains("max_destinations"), "{}", e.message);

    let e = error(&MINIMAL.replace(
        "match = { path_prefix = \"/\" }",
        "match = { listeners = [\"inbound\"] }",
    ));
    assert!(
        e.message
            .contains("\"inbound\", which is no listener (listeners: main)"),
        "{}",
        e.message
    );
    let e = error(&MINIMAL.replace(
        "match = { path_prefix = \"/\" }",
        "match = { destination = \"10.0.0.0/40\" }",
    ));
    assert!(
        e.message.contains("match.destination") && e.message.contains("0 to 32"),
        "{}",
        e.message
    );
}

#[test]
fn subject_alt_names_need_a_client_ca_and_are_names_or_prefixes() {
    let config = |tls: &str, cluster_tls: &str| {
        format!(
            "[[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:8443\"\n[listeners.tls]\n\
             certificates = [{{ cert = \"c.pem\", key = \"k.pem\" }}]\n{tls}\n\n\
             [[clusters]]\nname = \"web\"\nendpoints = [\"127.0.0.1:3000\"]\n{cluster_tls}\n\n\
             [[routes]]\nmatch = {{ path_prefix = \"/\" }}\ncluster = \"web\"\n"
        )
    };
    let good = config(
        "client_ca = \"ca.pem\"\nsubject_alt_names = [\"spiffe://td/*\"]",
        "tls = { ca = \"ca.pem\", subject_alt_names = [\"spiffe://td/ns/a/sa/b\"] }",
    );
    Config::parse("test.toml", &good).expect("valid");
    let without_ca = error(&config("subject_alt_names = [\"spiffe://td/*\"]", ""));
    assert!(without_ca.to_string().contains("needs client_ca"), "{without_ca}");
    let inner_star = error(&config(
        "",
        "tls = { ca = \"ca.pem\", subject_alt_names = [\"spiffe://*/ns\"] }",
    ));
    assert!(inner_star.to_string().contains("a prefix ending in *"), "{inner_star}");
    let secret = error(&config("", "tls = { ca = { sds = 1 } }"));
    assert!(secret.to_string().contains("sds"), "{secret}");
}

#[test]
fn a_transparent_listener_may_say_its_direction_and_no_other_may() {
    let inbound = MINIMAL.replace(
        "address = \"127.0.0.1:8080\"",
        "address = \"127.0.0.1:8080\"\ntransparent = \"redirect\"\ndirection = \"inbound\"",
    );
    let config = Config::parse("test.toml", &inbound).expect("valid");
    assert_eq!(config.listeners[0].get_ref().direction, Some(Direction::Inbound));
    let e = error(&inbound.replace("\"inbound\"", "\"sideways\""));
    assert!(
        e.message.contains("inbound") && e.message.contains("outbound"),
        "{}",
        e.message
    );
    let e = error(&inbound.replace("transparent = \"redirect\"\n", ""));
    assert!(e.message.contains("direction needs transparent"), "{}", e.message);
}

#[test]
fn tls_routes_are_checked_where_they_are_written() {
    let base = MINIMAL.replace(
        "address = \"127.0.0.1:8080\"",
        "address = \"127.0.0.1:8080\"\ntransparent = \"redirect\"",
    );
    let route = |body: &str| format!("{base}\n[[tls_routes]]\nname = \"egress\"\n{body}\n");
    let good = route("listeners = [\"main\"]\nhostnames = [\"api.example.com\", \"*.shop.test\"]\ncluster = \"web\"");
    let config = Config::parse("test.toml", &good).expect("valid");
    assert_eq!(config.tls_routes[0].get_ref().hostnames.len(), 2);

    for (body, wanted) in [
        ("hostnames = []\ncluster = \"web\"", "at least one name"),
        ("hostnames = [\"a.*.example.com\"]\ncluster = \"web\"", "not a DNS name"),
        ("hostnames = [\"*\"]\ncluster = \"web\"", "not a DNS name"),
        (
            "hostnames = [\"api.example.com:443\"]\ncluster = \"web\"",
            "not a DNS name",
        ),
        ("hostnames = [\"a.test\"]\ncluster = \"nope\"", "is no cluster"),
        (
            "listeners = [\"elsewhere\"]\nhostnames = [\"a.test\"]\ncluster = \"web\"",
            "which is no listener",
        ),
        (
            "hostnames = [\"a.test\"]\ncluster = \"web\"\nport = 443",
            "unknown field",
        ),
    ] {
        let e = error(&route(body));
        assert!(e.message.contains(wanted), "{body}: {}", e.message);
    }
    let e = error(&format!(
        "{}\n[[tls_routes]]\nname = \"egress\"\nhostnames = [\"a.test\"]\ncluster = \"web\"\n",
        MINIMAL
    ));
    assert!(e.message.contains("no transparent listener"), "{}", e.message);
    let with_tls = good.replace(
        "endpoints = [\"127.0.0.1:3000\"]",
        "endpoints = [\"127.0.0.1:3000\"]\ntls = { ca = \"ca.pem\" }",
    );
    assert!(error(&with_tls).message.contains("has tls"));
    let original = good.replace("endpoints = [\"127.0.0.1:3000\"]", "kind = \"original_destination\"");
    assert!(error(&original).message.contains("original_destination"));
    let twice = format!("{good}\n[[tls_routes]]\nname = \"egress\"\nhostnames = [\"b.test\"]\ncluster = \"web\"\n");
    assert!(error(&twice).message.contains("used twice"));
    let plain = format!("{good}\n[[listeners]]\nname = \"plain\"\naddress = \"127.0.0.1:8081\"\n")
        .replace("listeners = [\"main\"]", "listeners = [\"main\", \"plain\"]");
    assert!(error(&plain).message.contains("\"plain\" is not transparent"));
    let terminating = good.replace(
        "transparent = \"redirect\"",
        "transparent = \"redirect\"\ntls = { certificates = [{ cert = \"c.pem\", key = \"k.pem\" }] }",
    );
    assert!(error(&terminating).message.contains("terminates TLS"));
}
