//! The cases file and the comparison, without a component: what a mismatch names, and
//! which mistakes in a `CASES.toml` are refused with their line.

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::plugin::cases::{self, Values};

fn expect_from(toml_text: &str) -> Expect {
    let text = format!("[[case]]\nname = \"c\"\n{toml_text}\n");
    let parsed = cases::parse("CASES.toml", &text).unwrap_or_else(|e| panic!("{e}"));
    parsed
        .cases
        .into_iter()
        .next()
        .and_then(|c| c.expect)
        .expect("an expect")
}

fn headers(list: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (n, v) in list {
        map.append(*n, HeaderValue::from_static(v));
    }
    map
}

fn passed_on<'a>(headers: &'a HeaderMap, path: &'a str) -> Message<'a> {
    Message {
        status: None,
        headers,
        body: None,
        path: Some(path),
    }
}

#[test]
fn a_wrong_decision_is_reported_alone_with_what_happened_instead() {
    let expect = expect_from("expect = { decision = \"respond\", status = 403, headers = { x-a = \"1\" } }");
    let h = headers(&[]);
    let found = compare("request", &expect, &Observed::Continue, &passed_on(&h, "/"));
    assert_eq!(
        found,
        vec![Mismatch {
            field: "request: decision".into(),
            expected: "respond".into(),
            actual: "continue".into(),
        }]
    );

    let error = Observed::Error {
        kind: "trap".into(),
        message: "filter trapped: boom".into(),
    };
    let found = compare("request", &expect, &error, &passed_on(&h, "/"));
    assert_eq!(found[0].actual, "error (trap): filter trapped: boom");
}

#[test]
fn a_header_change_is_compared_by_name_and_every_value() {
    let expect = expect_from(
        "expect = { decision = \"continue\", headers = { x-user = \"alice\", accept = [\"a\", \"b\"] }, removed_headers = [\"authorization\"] }",
    );
    let right = headers(&[("x-user", "alice"), ("accept", "a"), ("accept", "b")]);
    assert!(compare("request", &expect, &Observed::Continue, &passed_on(&right, "/")).is_empty());

    let wrong = headers(&[("x-user", "mallory"), ("accept", "a"), ("authorization", "Bearer t")]);
    let found = compare("request", &expect, &Observed::Continue, &passed_on(&wrong, "/"));
    let fields: Vec<&str> = found.iter().map(|m| m.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "request: header accept",
            "request: header x-user",
            "request: header authorization"
        ]
    );
    assert_eq!(found[0].expected, "[\"a\", \"b\"]");
    assert_eq!(found[0].actual, "\"a\"");
    assert_eq!(found[1].expected, "\"alice\"");
    assert_eq!(found[1].actual, "\"mallory\"");
    assert_eq!(found[2].expected, "(absent)");

    let none = headers(&[]);
    let found = compare("request", &expect, &Observed::Continue, &passed_on(&none, "/"));
    assert!(
        found
            .iter()
            .any(|m| m.actual == "(absent)" && m.field == "request: header x-user")
    );
}

#[test]
fn a_reply_is_compared_by_status_headers_and_body() {
    let expect = expect_from(
        "expect = { decision = \"respond\", status = 403, headers = { content-type = \"text/plain\" }, body = \"forbidden\\n\" }",
    );
    let h = headers(&[]);
    let reply = Observed::Respond {
        status: 401,
        headers: headers(&[("content-type", "text/plain")]),
        body: b"no\n".to_vec(),
    };
    let found = compare("request", &expect, &reply, &passed_on(&h, "/"));
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        (
            found[0].field.as_str(),
            found[0].expected.as_str(),
            found[0].actual.as_str()
        ),
        ("reply: status", "403", "401")
    );
    assert_eq!(found[1].field, "reply: body");
    assert_eq!(found[1].expected, "\"forbidden\\n\"");
}

#[test]
fn a_reroute_names_its_cluster_and_a_continue_its_path() {
    let expect = expect_from("expect = { decision = \"reroute\", cluster = \"canary\", path = \"/v2/x\" }");
    let h = headers(&[]);
    let found = compare(
        "request",
        &expect,
        &Observed::Reroute("stable".into()),
        &passed_on(&h, "/v1/x"),
    );
    let fields: Vec<&str> = found.iter().map(|m| m.field.as_str()).collect();
    assert_eq!(fields, ["request: cluster", "request: path"]);
}

#[test]
fn an_expected_error_is_matched_by_kind() {
    let expect = expect_from("expect = { decision = \"error\", error = \"cpu\" }");
    let h = headers(&[]);
    let trap = Observed::Error {
        kind: "trap".into(),
        message: "boom".into(),
    };
    let found = compare("request", &expect, &trap, &passed_on(&h, "/"));
    assert_eq!(found[0].field, "request: error");
    let cpu = Observed::Error {
        kind: "cpu".into(),
        message: "filter exceeded its cpu limit".into(),
    };
    assert!(compare("request", &expect, &cpu, &passed_on(&h, "/")).is_empty());
}

#[test]
fn a_report_shows_each_mismatch_as_a_diff() {
    let report = Report {
        cases: vec![
            CaseReport {
                name: "good".into(),
                at: "CASES.toml:1".into(),
                mismatches: vec![],
            },
            CaseReport {
                name: "bad".into(),
                at: "CASES.toml:9".into(),
                mismatches: vec![Mismatch {
                    field: "response: header x-hello".into(),
                    expected: "\"world\"".into(),
                    actual: "(absent)".into(),
                }],
            },
        ],
    };
    assert!(!report.passed());
    let text = report.to_string();
    assert!(text.contains("ok    good"), "{text}");
    assert!(text.contains("FAIL  bad  (CASES.toml:9)"), "{text}");
    assert!(
        text.contains("response: header x-hello\n        - expected: \"world\"\n        + actual:   (absent)"),
        "{text}"
    );
    assert!(text.ends_with("2 cases: 1 passed, 1 failed"), "{text}");
}

/// The first line of a parse error, e.g. `CASES.toml:3:1: ...`.
fn error_of(text: &str) -> String {
    match cases::parse("CASES.toml", text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string().lines().next().unwrap_or_default().to_owned(),
    }
}

#[test]
fn mistakes_in_a_cases_file_are_refused_with_their_line() {
    // Unknown key: serde names it, at its line.
    let e = error_of("[[case]]\nname = \"a\"\nexpect = { decision = \"continue\" }\nexpct_response = {}\n");
    assert!(
        e.starts_with("CASES.toml:4:1:") && e.contains("unknown field `expct_response`"),
        "{e}"
    );
    // A decision that does not exist.
    let e = error_of("[[case]]\nname = \"a\"\nexpect = { decision = \"allow\" }\n");
    assert!(
        e.starts_with("CASES.toml:3:") && e.contains("unknown variant `allow`"),
        "{e}"
    );
    // A case that cannot fail.
    let e = error_of("[filter]\nname = \"f\"\n\n[[case]]\nname = \"nothing\"\nrequest = { path = \"/\" }\n");
    assert!(e.starts_with("CASES.toml:4:") && e.contains("expects nothing"), "{e}");
    // A field that means nothing for the decision.
    let e = error_of("[[case]]\nname = \"a\"\nexpect = { decision = \"continue\", status = 200 }\n");
    assert!(
        e.starts_with("CASES.toml:3:") && e.contains("`status` does not apply"),
        "{e}"
    );
    // A header that is not HTTP.
    let e = error_of(
        "[[case]]\nname = \"a\"\nrequest = { headers = { \"bad name\" = \"x\" } }\nexpect = { decision = \"continue\" }\n",
    );
    assert!(e.contains("\"bad name\" is not a header name"), "{e}");
    // A canned answer that is both.
    let e = error_of(
        "[[case]]\nname = \"a\"\ncallouts = { authz = { status = 200, error = \"timeout\" } }\nexpect = { decision = \"continue\" }\n",
    );
    assert!(e.contains("callouts.authz") && e.contains("not both"), "{e}");
    // No cases at all.
    let e = error_of("[filter]\nname = \"f\"\n");
    assert!(e.contains("no [[case]]"), "{e}");
}

#[test]
fn header_values_may_be_one_or_several() {
    let expect = expect_from("expect = { decision = \"continue\", headers = { a = \"1\", b = [\"2\", \"3\"] } }");
    assert_eq!(expect.headers["a"], Values::One("1".into()));
    assert_eq!(expect.headers["b"].as_slice(), ["2", "3"]);
}

#[test]
fn expect_kv_takes_a_value_or_false_for_absent() {
    let parsed = cases::parse(
        "CASES.toml",
        "[[case]]\nname = \"kv\"\nexpect_kv = { a = \"1\", gone = false }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let expected = parsed.cases[0].expect_kv.as_ref().expect("expect_kv");
    assert_eq!(expected["a"].as_deref(), Some("1"));
    assert_eq!(expected["gone"], None);
    let e = error_of("[[case]]\nname = \"kv\"\nexpect_kv = { a = true }\n");
    assert!(e.starts_with("CASES.toml:3:") && e.contains("false for absent"), "{e}");
}
