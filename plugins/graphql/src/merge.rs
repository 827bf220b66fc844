//! Merging the answers of a split operation into one GraphQL response: `data` in the
//! client's key order (upstream values are copied verbatim, so nested objects keep their
//! order too), a failed cluster's fields null with an error naming the cluster and the
//! field's `path`, upstream `locations` dropped (they point into text the client never
//! sent), and a null non-null root field nulling all of `data`, as the spec's null
//! propagation requires.
//!
//! Errors are redacted unless the config asks for details (`include_subgraph_errors`), as
//! Apollo Router does: a service's error keeps its `message`, `path` and
//! `extensions.code` only (no stack traces or other extensions), and a failed call says
//! neither which cluster nor why (addresses, timeouts).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::plan::{Owner, Part, RootField};

/// What one cluster answered for one part.
pub enum Answer {
    /// The body of an answer (any status): parsed as a GraphQL response if it is one.
    Body { status: u16, body: Vec<u8> },
    /// No answer: a timeout, a refused connection.
    Failed(String),
    /// Not sent: an earlier mutation's non-null field failed.
    NotSent,
}

#[derive(Deserialize)]
struct Upstream {
    #[serde(default)]
    data: Option<HashMap<String, Box<RawValue>>>,
    #[serde(default)]
    errors: Option<Vec<Map<String, Value>>>,
}

/// A parsed answer: the data values by key and the errors, or why there is none.
pub struct Parsed {
    data: Option<HashMap<String, Box<RawValue>>>,
    errors: Vec<Map<String, Value>>,
    failure: Option<String>,
}

impl Parsed {
    /// The cluster gave no GraphQL response.
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// The answer adds errors to the merged response.
    pub fn has_errors(&self) -> bool {
        self.failed() || !self.errors.is_empty()
    }
}

pub fn parse(answer: Answer) -> Parsed {
    let failed = |why: String| Parsed {
        data: None,
        errors: Vec::new(),
        failure: Some(why),
    };
    match answer {
        Answer::Failed(why) => failed(why),
        Answer::NotSent => failed("not sent: an earlier mutation field failed".to_owned()),
        Answer::Body { status, body } => match serde_json::from_slice::<Upstream>(&body) {
            Ok(up) if up.data.is_some() || up.errors.is_some() => Parsed {
                data: up.data,
                errors: up.errors.unwrap_or_default(),
                failure: None,
            },
            _ => failed(format!("HTTP {status} without a GraphQL response")),
        },
    }
}

/// Whether a part's answer failed outright (to stop later mutation parts).
pub fn nulls_non_null(parsed: &Parsed, part: &Part, fields: &[RootField]) -> bool {
    fields
        .iter()
        .filter(|f| f.non_null && part.keys.contains(&f.key))
        .any(|f| value_of(parsed, &f.key).is_none())
}

fn value_of<'a>(parsed: &'a Parsed, key: &str) -> Option<&'a str> {
    let raw = parsed.data.as_ref()?.get(key)?.get();
    (raw != "null").then_some(raw)
}

/// The merged response body. `gateway` holds the JSON of the fields the gateway answered
/// itself (`__typename`, introspection), `gateway_errors` its errors. `details`: keep the
/// services' errors whole and name the cluster (`include_subgraph_errors`).
pub fn merge(
    fields: &[RootField],
    parts: &[Part],
    answers: &[Parsed],
    gateway: &HashMap<String, String>,
    gateway_errors: Vec<Value>,
    details: bool,
) -> String {
    let mut errors: Vec<Value> = gateway_errors;
    for (part, parsed) in parts.iter().zip(answers) {
        match &parsed.failure {
            Some(why) => {
                for key in &part.keys {
                    errors.push(if details {
                        json!({
                            "message": format!("HTTP fetch failed from '{}': {why}", part.cluster),
                            "path": [key],
                            "extensions": { "code": "SUBREQUEST_HTTP_ERROR", "service": part.cluster },
                        })
                    } else {
                        json!({
                            "message": "HTTP fetch failed",
                            "path": [key],
                            "extensions": { "code": "SUBREQUEST_HTTP_ERROR" },
                        })
                    });
                }
            }
            None => {
                for error in &parsed.errors {
                    errors.push(Value::Object(if details {
                        let mut error = error.clone();
                        error.remove("locations");
                        let extensions = error.entry("extensions").or_insert_with(|| Value::Object(Map::new()));
                        if let Value::Object(ext) = extensions {
                            ext.entry("service").or_insert_with(|| json!(part.cluster));
                        }
                        error
                    } else {
                        redacted(error, Locations::Drop)
                    }));
                }
            }
        }
    }

    let mut data = String::from("{");
    let mut null_data = false;
    for (i, field) in fields.iter().enumerate() {
        let value = match &field.owner {
            Owner::Gateway => gateway.get(&field.key).map(String::as_str),
            Owner::Cluster(_) => parts
                .iter()
                .position(|p| p.keys.contains(&field.key))
                .and_then(|at| value_of(&answers[at], &field.key)),
        };
        if value.is_none() && field.non_null {
            null_data = true;
        }
        if i > 0 {
            data.push(',');
        }
        data.push_str(&Value::String(field.key.clone()).to_string());
        data.push(':');
        data.push_str(value.unwrap_or("null"));
    }
    data.push('}');

    let mut out = String::from("{");
    if !errors.is_empty() {
        out.push_str("\"errors\":");
        out.push_str(&Value::Array(errors).to_string());
        out.push(',');
    }
    out.push_str("\"data\":");
    out.push_str(if null_data { "null" } else { &data });
    out.push('}');
    out
}

/// `body` (a service's GraphQL answer) with its errors [`redacted`], when it has any that
/// carry more than a client may see; `None` when it has none (the answer goes as it is)
/// or is no JSON object (then it holds no GraphQL errors to redact).
pub(crate) fn redact_answer(body: &[u8]) -> Option<String> {
    // Most answers have no errors: a byte search spares them the parse. A key may also
    // be written with escapes (`"\u0065rrors"`): a body with any escape is parsed.
    const ERRORS: &[u8] = b"\"errors\"";
    if !body.windows(ERRORS.len()).any(|w| w == ERRORS) && !body.windows(2).any(|w| w == b"\\u") {
        return None;
    }
    let mut answer: Map<String, Value> = serde_json::from_slice(body).ok()?;
    let errors = answer.get_mut("errors")?.as_array_mut()?;
    let mut changed = false;
    for error in errors.iter_mut() {
        let Some(fields) = error.as_object() else { continue };
        let clean = redacted(fields, Locations::Keep);
        if clean != *fields {
            *error = Value::Object(clean);
            changed = true;
        }
    }
    changed.then(|| Value::Object(answer).to_string())
}

/// Whether an error's `locations` point into the text the client sent: they do in a
/// service's own answer to the operation rerouted to it, not in a sub-operation's.
#[derive(Clone, Copy, PartialEq)]
enum Locations {
    Keep,
    Drop,
}

/// A service's error as a client may see it: `message` (a string), `path`, `locations`
/// (with [`Locations::Keep`]) and `extensions.code` (a string), nothing else.
fn redacted(error: &Map<String, Value>, locations: Locations) -> Map<String, Value> {
    let mut out = Map::new();
    let message = error.get("message").filter(|m| m.is_string()).cloned();
    out.insert(
        "message".to_owned(),
        message.unwrap_or_else(|| Value::String("subgraph error".to_owned())),
    );
    if let Some(path) = error.get("path").filter(|p| p.is_array()) {
        out.insert("path".to_owned(), path.clone());
    }
    if let Some(kept) = error
        .get("locations")
        .filter(|l| l.is_array() && locations == Locations::Keep)
    {
        out.insert("locations".to_owned(), kept.clone());
    }
    if let Some(code) = error
        .get("extensions")
        .and_then(|e| e.get("code"))
        .filter(|c| c.is_string())
    {
        out.insert("extensions".to_owned(), json!({ "code": code }));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn a_services_own_answer_loses_what_a_client_may_not_see() {
        let body = br#"{"errors":[{"message":"boom","locations":[{"line":1,"column":3}],"path":["order"],"extensions":{"code":"X","stacktrace":["at /srv/app.js:1"]}}],"data":{"order":null}}"#;
        let redacted: Value = serde_json::from_str(&redact_answer(body).unwrap()).unwrap();
        assert_eq!(
            redacted,
            json!({"errors":[{"message":"boom","locations":[{"line":1,"column":3}],"path":["order"],"extensions":{"code":"X"}}],"data":{"order":null}})
        );
        // Nothing to redact: the answer goes unchanged (no parse, no copy).
        assert_eq!(redact_answer(br#"{"data":{"a":1}}"#), None);
        assert_eq!(redact_answer(br#"{"errors":[{"message":"m","path":["a"]}]}"#), None);
        assert_eq!(redact_answer(b"not json \"errors\""), None);
    }

    #[test]
    fn an_errors_key_written_with_escapes_is_redacted_too() {
        let body = br#"{"\u0065rrors":[{"message":"boom","extensions":{"stacktrace":["at /srv/app.js:1"]}}]}"#;
        let redacted: Value = serde_json::from_str(&redact_answer(body).expect("redacted")).unwrap();
        assert_eq!(redacted, json!({"errors":[{"message":"boom"}]}));
        let body = br#"{"errors":[{"message":"boom","extensions":{"\u0073tacktrace":["x"]}}]}"#;
        let redacted: Value = serde_json::from_str(&redact_answer(body).expect("redacted")).unwrap();
        assert_eq!(redacted, json!({"errors":[{"message":"boom"}]}));
    }

    fn field(key: &str, cluster: &str, non_null: bool) -> RootField {
        RootField {
            key: key.to_owned(),
            name: key.to_owned(),
            owner: if cluster.is_empty() {
                Owner::Gateway
            } else {
                Owner::Cluster(cluster.to_owned())
            },
            non_null,
        }
    }

    fn part(cluster: &str, keys: &[&str]) -> Part {
        Part {
            cluster: cluster.to_owned(),
            query: String::new(),
            operation_name: None,
            variables: Map::new(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn body(text: &str) -> Parsed {
        parse(Answer::Body {
            status: 200,
            body: text.as_bytes().to_vec(),
        })
    }

    #[test]
    fn keys_keep_the_clients_order_and_nested_order() {
        let fields = [
            field("b", "one", false),
            field("t", "", false),
            field("a", "two", false),
        ];
        let parts = [part("one", &["b"]), part("two", &["a"])];
        let answers = [body(r#"{"data":{"b":{"z":1,"y":2}}}"#), body(r#"{"data":{"a":[3]}}"#)];
        let gateway = HashMap::from([("t".to_owned(), "\"Query\"".to_owned())]);
        let out = merge(&fields, &parts, &answers, &gateway, vec![], false);
        assert_eq!(out, r#"{"data":{"b":{"z":1,"y":2},"t":"Query","a":[3]}}"#);
    }

    #[test]
    fn a_failed_cluster_nulls_its_fields_with_a_path() {
        let fields = [field("a", "one", false), field("b", "two", false)];
        let parts = [part("one", &["a"]), part("two", &["b"])];
        let answers = [
            body(r#"{"data":{"a":1}}"#),
            parse(Answer::Failed("connect to 10.0.0.7:4001 failed".into())),
        ];
        let merged = |details| -> Value {
            serde_json::from_str(&merge(&fields, &parts, &answers, &HashMap::new(), vec![], details)).unwrap()
        };
        let out = merged(false);
        assert_eq!(out["data"], json!({"a": 1, "b": null}));
        assert_eq!(
            out["errors"],
            json!([{"message": "HTTP fetch failed", "path": ["b"], "extensions": {"code": "SUBREQUEST_HTTP_ERROR"}}])
        );
        let out = merged(true);
        assert_eq!(out["errors"][0]["extensions"]["service"], "two");
        assert!(out["errors"][0]["message"].as_str().unwrap().contains("10.0.0.7"));
    }

    #[test]
    fn upstream_errors_keep_message_path_and_code() {
        let fields = [field("a", "one", false)];
        let parts = [part("one", &["a"])];
        let answers = [body(
            r#"{"errors":[{"message":"boom","locations":[{"line":1,"column":3}],"path":["a"],"trace":1,
                "extensions":{"code":"E","stacktrace":["at /srv/app.js:1"]}},{"message":7}],"data":{"a":null}}"#,
        )];
        let merged = |details| -> Value {
            serde_json::from_str(&merge(&fields, &parts, &answers, &HashMap::new(), vec![], details)).unwrap()
        };
        assert_eq!(
            merged(false)["errors"],
            json!([{"message": "boom", "path": ["a"], "extensions": {"code": "E"}}, {"message": "subgraph error"}])
        );
        assert_eq!(
            merged(true)["errors"][0],
            json!({"message": "boom", "path": ["a"], "trace": 1,
                   "extensions": {"code": "E", "stacktrace": ["at /srv/app.js:1"], "service": "one"}})
        );
    }

    #[test]
    fn a_null_non_null_root_field_nulls_data() {
        let fields = [field("a", "one", false), field("b", "two", true)];
        let parts = [part("one", &["a"]), part("two", &["b"])];
        let answers = [body(r#"{"data":{"a":1}}"#), body("not json")];
        assert!(nulls_non_null(&answers[1], &parts[1], &fields));
        let out: Value =
            serde_json::from_str(&merge(&fields, &parts, &answers, &HashMap::new(), vec![], false)).unwrap();
        assert_eq!(out["data"], Value::Null);
        assert_eq!(out["errors"][0]["path"], json!(["b"]));
    }
}
