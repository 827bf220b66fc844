//! Property tests of the host side of the WIT boundary: whatever a guest returns — any
//! status, header names and values with CR, LF, NUL or non-ASCII text, bodies up to many
//! times the limit, reroutes to any name — the host turns it into a valid response or a
//! clean error of the guest's-fault kind, and never panics. `PROPTEST_CASES` raises the
//! case count for longer runs (the default keeps this to a second or two).

use std::sync::Arc;

use http::{HeaderName, HeaderValue, header};
use proptest::prelude::*;

use super::{Reply, WitRequestDecision, WitResponseDecision, decide_request, decide_response, reply};
use crate::config::Config;
use crate::filter::{FilterError, Limit, RequestDecision, ResponseDecision};
use crate::upstream::{Cluster, Clusters};

fn config() -> ProptestConfig {
    // 256 cases unless PROPTEST_CASES says otherwise (proptest reads it for the default).
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(256),
        ..ProptestConfig::default()
    }
}

/// Header names: valid tokens (either case), the ones only the proxy sets (either case),
/// and anything at all.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}",
        1 => Just("content-length".to_owned()),
        1 => Just("Transfer-Encoding".to_owned()),
        2 => (0..crate::header_policy::REFUSED.len(), any::<bool>()).prop_map(|(i, upper)| {
            let name = crate::header_policy::REFUSED[i].as_str();
            if upper { name.to_ascii_uppercase() } else { name.to_owned() }
        }),
        2 => any::<String>(),
        1 => "[\\x00-\\x20:\\x7f]{0,4}",
    ]
}

/// Header values: visible text, text with CR/LF/NUL/DEL spliced in, and any Unicode.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~\\t]{0,40}",
        2 => ("[ -~]{0,10}", "[\\r\\n\\x00\\x7f]", "[ -~]{0,10}").prop_map(|(a, bad, b)| format!("{a}{bad}{b}")),
        2 => any::<String>(),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..3000),
        // Far over any limit, without paying for random bytes.
        1 => (0usize..4).prop_map(|extra| vec![b'x'; (16 << 20) + extra]),
    ]
}

fn guest_reply() -> impl Strategy<Value = Reply> {
    (
        prop_oneof![3 => 100u16..700, 1 => any::<u16>()],
        proptest::collection::vec((name(), value()), 0..8),
        body(),
    )
        .prop_map(|(status, headers, body)| Reply { status, headers, body })
}

fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(1024), Just(1 << 20)]
}

/// A name the one header policy keeps to the proxy: a reply loses it.
fn is_refused(name: &str) -> bool {
    HeaderName::from_bytes(name.as_bytes()).is_ok_and(|n| crate::header_policy::refuses(&n))
}

fn clusters() -> Clusters {
    let text = "[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\n\
                [[clusters]]\nname = \"web\"\nendpoints = [\"127.0.0.1:1\"]\n\
                [[clusters]]\nname = \"canary\"\nendpoints = [\"127.0.0.1:2\"]\n";
    let config = Config::parse("test", text).expect("valid clusters");
    let metrics = Arc::new(<crate::upstream::metrics::UpstreamMetrics as crate::metrics::Families>::unregistered());
    let mut clusters = Clusters::new();
    for c in &config.clusters {
        let cluster = Cluster::build_fixed(c, &config.source, &metrics).expect("cluster");
        clusters.insert(cluster.name.clone(), cluster);
    }
    clusters
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_reply_becomes_a_valid_response_or_a_guest_fault(r in guest_reply(), limit in limit()) {
        let input = r.clone();
        match reply(r, limit) {
            Ok(resp) => {
                prop_assert!((200..600).contains(&resp.status().as_u16()));
                prop_assert!(input.body.len() <= limit);
                prop_assert!(!resp.headers().contains_key(header::CONTENT_LENGTH));
                prop_assert!(!resp.headers().contains_key(header::TRANSFER_ENCODING));
                prop_assert!(resp.headers().keys().all(|n| !crate::header_policy::refuses(n)));
                let kept: Vec<_> = input.headers.iter().filter(|(n, _)| !is_refused(n)).collect();
                prop_assert_eq!(resp.headers().len(), kept.len());
                for (n, v) in kept {
                    prop_assert!(!v.contains(['\r', '\n', '\0']), "a control character got through in {:?}", v);
                    let name = HeaderName::from_bytes(n.as_bytes()).expect("kept names are valid");
                    let value = HeaderValue::from_str(v).expect("kept values are valid");
                    prop_assert!(resp.headers().get_all(&name).iter().any(|seen| *seen == value));
                }
            }
            Err(e) => {
                prop_assert!(e.is_guest_fault(), "{e} must be the guest's fault");
                let bad_header = input.headers.iter().any(|(n, v)| {
                    HeaderName::from_bytes(n.as_bytes()).is_err() || HeaderValue::from_str(v).is_err()
                });
                let bad_status = !(200..600).contains(&input.status);
                match e {
                    FilterError::LimitExceeded(Limit::Body) => prop_assert!(input.body.len() > limit),
                    FilterError::Invalid(_) => prop_assert!(bad_status || bad_header),
                    other => prop_assert!(false, "unexpected error kind {other:?}"),
                }
            }
        }
    }

    #[test]
    fn a_reroute_names_a_cluster_of_the_config_or_is_the_guests_fault(
        target in prop_oneof![Just("web".to_owned()), Just("canary".to_owned()), any::<String>()],
    ) {
        let clusters = clusters();
        match decide_request(WitRequestDecision::Reroute(target.clone()), 1024, &clusters) {
            Ok(RequestDecision::Reroute(cluster)) => {
                let config_cluster = clusters.get(target.as_str()).expect("known cluster");
                prop_assert!(Arc::ptr_eq(&cluster, config_cluster), "the config's own cluster, not a copy");
            }
            Ok(_) => prop_assert!(false, "a reroute stays a reroute"),
            Err(e) => {
                prop_assert!(!clusters.contains_key(target.as_str()));
                prop_assert!(matches!(e, FilterError::Invalid(_)), "{e:?}");
            }
        }
    }
}

#[test]
fn continue_and_respond_decide_as_the_guest_said() {
    let clusters = clusters();
    assert!(matches!(
        decide_request(WitRequestDecision::Continue, 0, &clusters),
        Ok(RequestDecision::Continue)
    ));
    assert!(matches!(
        decide_response(WitResponseDecision::Continue, 0),
        Ok(ResponseDecision::Continue)
    ));
    let teapot = Reply {
        status: 418,
        headers: vec![
            ("X-Why".into(), "because".into()),
            ("content-length".into(), "999".into()),
        ],
        body: b"short".to_vec(),
    };
    match decide_request(WitRequestDecision::Respond(teapot.clone()), 1024, &clusters) {
        Ok(RequestDecision::Respond(resp)) => {
            assert_eq!(resp.status(), 418);
            assert_eq!(resp.headers()["x-why"], "because");
            assert!(
                resp.headers().get("content-length").is_none(),
                "a wrong length is not sent"
            );
        }
        _ => panic!("expected a response"),
    }
    let switch = Reply {
        status: 101,
        headers: vec![],
        body: vec![],
    };
    assert!(matches!(
        decide_response(WitResponseDecision::Respond(teapot), 1024),
        Ok(ResponseDecision::Respond(_))
    ));
    assert!(matches!(
        decide_response(WitResponseDecision::Respond(switch), 0),
        Err(FilterError::Invalid(_))
    ));
}

/// Every phase boxes its future and moves it into the box: a future sized for the cold
/// path (instantiating when the pool is empty, kilobytes) costs every call a copy of that
/// size. Keep the per-phase future small; the cold path is boxed on its own.
#[test]
fn phase_futures_stay_small() {
    use super::WasmFilter;
    use crate::filter::{FilterRequest, FilterResponse, RequestCtx};
    fn size_of_future<'a, A: 'a, B: 'a, C: 'a, R>(_: impl FnOnce(&'a A, &'a mut B, &'a mut C) -> R) -> usize {
        std::mem::size_of::<R>()
    }
    let request = size_of_future::<WasmFilter, FilterRequest, RequestCtx, _>(WasmFilter::request_phase);
    let response = size_of_future::<WasmFilter, FilterResponse, RequestCtx, _>(WasmFilter::response_phase);
    assert!(request <= 1024, "the request phase's future is {request} bytes");
    assert!(response <= 1024, "the response phase's future is {response} bytes");
}
