use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::SubjectAltNameMatcher;

use super::*;
use crate::tls::devcert::{Authority, Usage};
use crate::xds::snapshot::Snapshot;
use crate::xds::tls::{DownstreamTls, Resolved, Source, held, listener_tls};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use prost::Message;
use toml::{Table, Value};

fn inline(pem: &str) -> Option<DataSource> {
    Some(DataSource {
        specifier: Some(data_source::Specifier::InlineString(pem.into())),
        ..DataSource::default()
    })
}

fn cert_secret(name: &str, cert: &str, key: &str) -> Vec<u8> {
    PbSecret {
        name: name.into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(cert),
            private_key: inline(key),
            ..TlsCertificate::default()
        })),
    }
    .encode_to_vec()
}

fn matcher(p: MatchPattern) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(p),
        ..StringMatcher::default()
    }
}

#[test]
fn a_certificate_secret_is_checked_and_its_debug_shows_no_key() {
    let ca = Authority::new("CA").expect("ca");
    let a = ca.issue("a", &["a.test"], &[], Usage::Server).expect("a");
    let b = ca.issue("b", &["b.test"], &[], Usage::Server).expect("b");
    let s = map(&cert_secret("default", &a.cert_pem, &a.key_pem)).expect("valid");
    assert_eq!(s.name, "default");
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("PRIVATE") && !shown.contains(&a.key_pem[30..60]),
        "{shown}"
    );
    assert_eq!(s.part(PemPart::Key).as_deref(), Some(a.key_pem.as_bytes()));
    assert_eq!(s.part(PemPart::TrustedCa), None);
    let again = map(&cert_secret("default", &a.cert_pem, &a.key_pem)).expect("valid");
    assert_eq!(s.sha256, again.sha256, "the hash is the content's");

    // A control plane naming a file that is not PEM learns nothing of its content.
    let file = PbSecret {
        name: "default".into(),
        r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
            certificate_chain: Some(DataSource {
                specifier: Some(data_source::Specifier::Filename("/etc/passwd".into())),
                ..DataSource::default()
            }),
            private_key: inline(&a.key_pem),
            ..TlsCertificate::default()
        })),
    };
    let refused = map(&file.encode_to_vec()).expect_err("not PEM");
    assert_eq!(
        refused.0,
        "secret \"default\": certificate_chain holds no PEM certificate"
    );

    let wrong = map(&cert_secret("default", &a.cert_pem, &b.key_pem)).expect_err("mismatch");
    assert!(
        wrong.0.starts_with("secret \"default\": private_key does not go with"),
        "{wrong}"
    );
    assert!(!wrong.0.contains(&b.key_pem[30..60]));
}

#[test]
fn san_matchers_become_patterns_and_others_are_refused() {
    let ca = Authority::new("CA").expect("ca");
    let v = CertificateValidationContext {
        trusted_ca: inline(&ca.cert_pem),
        match_subject_alt_names: vec![matcher(MatchPattern::Prefix("spiffe://td/ns/a/".into()))],
        match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
            san_type: SanType::Uri as i32,
            matcher: Some(matcher(MatchPattern::Exact("spiffe://td/ns/b/sa/c".into()))),
            ..SubjectAltNameMatcher::default()
        }],
        ..CertificateValidationContext::default()
    };
    let Kind::Validation { ca: Some(_), sans } = validation(&v, "x").expect("valid") else {
        panic!("a validation context with a CA");
    };
    assert_eq!(sans, ["spiffe://td/ns/a/*", "spiffe://td/ns/b/sa/c"]);
    for bad in [
        CertificateValidationContext {
            match_subject_alt_names: vec![matcher(MatchPattern::Suffix(".td".into()))],
            ..CertificateValidationContext::default()
        },
        CertificateValidationContext {
            match_typed_subject_alt_names: vec![SubjectAltNameMatcher {
                san_type: SanType::Email as i32,
                matcher: Some(matcher(MatchPattern::Exact("a@b".into()))),
                ..SubjectAltNameMatcher::default()
            }],
            ..CertificateValidationContext::default()
        },
        CertificateValidationContext {
            allow_expired_certificate: true,
            ..CertificateValidationContext::default()
        },
    ] {
        assert!(validation(&bad, "x").is_err(), "{bad:?}");
    }
}

/// The snapshot waits while a secret is awaited, then serves without the listener the
/// server has no secret for, and the config it builds gets the bytes attached.
#[test]
fn a_snapshot_warms_then_leaves_out_the_listener_whose_secret_is_missing() {
    use super::super::listener::{Chain, ChainAction, MappedListener, RouteRef, Shape};
    let ca = Authority::new("CA").expect("ca");
    let a = ca.issue("a", &["a.test"], &[], Usage::Server).expect("a");
    let rc = envoy_types::pb::envoy::config::route::v3::RouteConfiguration {
        name: "r".into(),
        ..Default::default()
    };
    let routes = super::super::route::map(&rc).expect("maps");
    let listener = |name: &str, secret: Option<&str>| {
        let mut t = Table::new();
        t.insert("name".into(), Value::String(name.into()));
        t.insert("address".into(), Value::String("127.0.0.1:0".into()));
        MappedListener {
            table: Some(t),
            chains: vec![Chain {
                destination: None,
                destination_port: None,
                action: ChainAction::Http {
                    routes: RouteRef::Inline("r".into(), routes.clone()),
                    wasm: Vec::new(),
                },
            }],
            shape: Shape::Bound,
            tls: secret.map(|n| DownstreamTls {
                certificates: vec![Source::Sds(n.into())],
                validation: None,
                require_client: false,
                min_version: "1.2",
            }),
        }
    };
    let mut s = Snapshot::default();
    s.listeners.insert("plain".into(), listener("plain", None));
    s.listeners.insert("edge".into(), listener("edge", Some("default")));
    s.listeners
        .insert("gw".into(), listener("gw", Some("kubernetes://gone")));
    let assemble = |s: &Snapshot| s.assemble(&Table::new(), None, &[]).expect("assembles");
    assert_eq!(assemble(&s), None, "warming: no answer for the secrets yet");

    s.sds_answered
        .extend(["default".to_owned(), "kubernetes://gone".to_owned()]);
    let secret = map(&cert_secret("default", &a.cert_pem, &a.key_pem)).expect("valid");
    s.secrets.insert("default".into(), Arc::new(secret));
    let text = assemble(&s).expect("serves");
    let mut config = crate::config::Config::parse("xds", &text).expect("valid");
    let names: Vec<&str> = config.listeners.iter().map(|l| l.get_ref().name.as_str()).collect();
    assert_eq!(names, ["edge", "plain"], "gw is not bound");
    let held = held(&s);
    config
        .attach_secrets(&|name, sha, part| held.get(name).filter(|s| s.sha256 == sha).and_then(|s| s.part(part)))
        .expect("attached");
    let tls = config.listeners[0].get_ref().tls.clone().expect("tls");
    crate::tls::server_config(&tls, &[b"h2"], false).expect("a rustls server config from memory");
    let stale = crate::config::Config::parse("xds", &text.replace(&held["default"].sha256, &"0".repeat(64)))
        .expect("valid")
        .attach_secrets(&|name, sha, part| held.get(name).filter(|s| s.sha256 == sha).and_then(|s| s.part(part)))
        .expect_err("another version of the secret");
    // The name is masked: config errors mask the values under a key named `key`.
    assert!(stale.to_string().contains("is not held"), "{stale}");
}

#[test]
fn a_listener_warms_until_answered_then_is_missing_or_ready() {
    let ca = Authority::new("CA").expect("ca");
    let a = ca.issue("a", &["a.test"], &[], Usage::Server).expect("a");
    let tls = DownstreamTls {
        certificates: vec![Source::Sds("default".into())],
        validation: None,
        require_client: false,
        min_version: "1.2",
    };
    let mut s = Snapshot::default();
    assert!(matches!(listener_tls(&tls, &s, "l"), Ok(Resolved::Warming)));
    s.sds_answered.insert("default".into());
    assert!(matches!(listener_tls(&tls, &s, "l"), Ok(Resolved::Missing(n)) if n == "default"));
    let secret = Arc::new(map(&cert_secret("default", &a.cert_pem, &a.key_pem)).expect("valid"));
    s.secrets.insert("default".into(), secret.clone());
    let Ok(Resolved::Ready(t)) = listener_tls(&tls, &s, "l") else {
        panic!("ready");
    };
    let text = toml::to_string(&t).expect("toml");
    assert!(text.contains(&secret.sha256) && !text.contains("BEGIN"), "{text}");
}

/// A control plane cannot pass a CA off as a certificate, nor turn verification off.
#[test]
fn a_secret_of_the_wrong_kind_or_an_unverified_upstream_is_refused() {
    use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
    use envoy_types::pb::google::protobuf::Any;

    let ca = Authority::new("CA").expect("ca");
    let validation_secret = PbSecret {
        name: "ROOTCA".into(),
        r#type: Some(secret::Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(&ca.cert_pem),
            ..CertificateValidationContext::default()
        })),
    };
    let mut s = Snapshot::default();
    s.secrets.insert(
        "ROOTCA".into(),
        Arc::new(map(&validation_secret.encode_to_vec()).expect("valid")),
    );
    let tls = DownstreamTls {
        certificates: vec![Source::Sds("ROOTCA".into())],
        validation: None,
        require_client: false,
        min_version: "1.2",
    };
    let Err(wrong) = listener_tls(&tls, &s, "listener \"l\"") else {
        panic!("a CA served as a certificate");
    };
    assert!(
        wrong.0.contains("is a validation context, not a certificate"),
        "{wrong}"
    );

    let unverified = TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(transport_socket::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext".into(),
            value: UpstreamTlsContext {
                sni: "x.test".into(),
                ..UpstreamTlsContext::default()
            }
            .encode_to_vec(),
        })),
    };
    let refused = crate::xds::tls::upstream(Some(&unverified), "cluster \"c\"").expect_err("unverified");
    assert!(refused.0.contains("without a validation context"), "{refused}");
}
