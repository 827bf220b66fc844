//! REST-backed fields, in the shape Gloo users know: a field is resolved by an HTTP call
//! to a cluster — method, path (with query) and header templates with `{$args.id}`,
//! `{$parent.id}`, `{$headers.authorization}`, a `result_root` in the JSON answer, and
//! `setters` for renamed or composed fields. Execution is apollo-compiler's engine, so
//! aliases, fragments, `__typename` and null propagation follow the spec; nested fields of
//! a REST-resolved object (`Product.reviews`) are resolved the same way.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use apollo_compiler::Schema;
use apollo_compiler::ast::Type;
use apollo_compiler::resolvers::{FieldError, ObjectValue, ResolveInfo, ResolvedValue};
use apollo_compiler::schema::ExtendedType;
use serde::Deserialize;
use serde_json::Value;

/// One REST-backed field, as configured.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RestField {
    pub cluster: String,
    #[serde(default = "default_method")]
    pub method: String,
    /// `/products/{$args.id}?fields=all`: values are percent-encoded.
    pub path: String,
    /// Header templates: `{ authorization = "{$headers.authorization}" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Where the field's value is in the answer: `["data", "product"]`.
    #[serde(default)]
    pub result_root: Vec<String>,
    /// Fields set on each resulting object from a template over it (`$parent`):
    /// `{ fullName = "{$parent.first} {$parent.last}" }`.
    #[serde(default)]
    pub setters: BTreeMap<String, String>,
}

fn default_method() -> String {
    "GET".to_owned()
}

/// Fills `{$args.x}`, `{$parent.x.y}`, `{$headers.name}`; `encode` percent-encodes values
/// (for a path template). In the path part of such a template (before its `?`) a value
/// must be an ordinary segment: empty, `.`, `..`, or one holding `/`, `\`, `?`, `#` or `%`
/// (no encoded forms either: routers decode and normalise before they route) is refused,
/// or `/users/{$args.id}/orders` could be made `/users/../orders`, which routers read as
/// `/orders`.
pub fn render(
    template: &str,
    args: &Value,
    parent: &Value,
    headers: &[(String, String)],
    encode: bool,
) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{$") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| format!("unclosed {{$ in {template:?}"))?;
        let reference = &after[..end];
        let (root, path) = reference.split_once('.').unwrap_or((reference, ""));
        let text = match root {
            "args" => text_of(lookup(args, path)),
            "parent" => text_of(lookup(parent, path)),
            "headers" => headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(path))
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            other => {
                return Err(format!(
                    "unknown ${other} in {template:?}: use $args, $parent or $headers"
                ));
            }
        };
        if encode && !out.contains('?') && !plain_segment(&text) {
            return Err(format!("the value {text:?} is not allowed in a path segment"));
        }
        out.push_str(&if encode { percent_encode(&text) } else { text });
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn plain_segment(text: &str) -> bool {
    !text.is_empty() && text != "." && text != ".." && !text.contains(['/', '\\', '?', '#', '%'])
}

fn lookup<'a>(value: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .filter(|p| !p.is_empty())
        .fold(value, |v, key| v.get(key).unwrap_or(&Value::Null))
}

fn text_of(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Checks the templates once, at `init`.
pub fn check(key: &str, field: &RestField) -> Result<(), String> {
    let dummy = Value::Null;
    for template in std::iter::once(&field.path)
        .chain(field.headers.values())
        .chain(field.setters.values())
    {
        render(template, &dummy, &dummy, &[], false).map_err(|e| format!("rest.\"{key}\": {e}"))?;
    }
    if !field.path.starts_with('/') {
        return Err(format!("rest.\"{key}\": path must start with '/'"));
    }
    Ok(())
}

/// What a resolver needs: the schema, the REST fields, the client's headers, and how to
/// call a cluster (`fetch(cluster, method, path, headers) -> (status, body)`).
pub struct Rest<'r> {
    pub schema: &'r Schema,
    pub fields: &'r BTreeMap<(String, String), RestField>,
    pub headers: Vec<(String, String)>,
    /// Name the cluster, the path and the cause in field errors (`include_subgraph_errors`);
    /// else only the status says what went wrong.
    pub details: bool,
    /// Calls one operation may make (`rest_max_calls`): each alias and each list element
    /// makes its own, one after the other.
    pub max_calls: usize,
    /// The calls made so far in this operation; an identical one is answered from here.
    pub calls: RefCell<Calls>,
    #[allow(clippy::type_complexity)]
    pub fetch: &'r dyn Fn(&str, &str, &str, Vec<(String, String)>) -> Result<(u16, Vec<u8>), String>,
}

/// (cluster, method, path, headers) of a call.
type CallKey = (String, String, String, Vec<(String, String)>);

/// The REST calls of one operation.
#[derive(Default)]
pub struct Calls {
    made: usize,
    answers: HashMap<CallKey, Result<(u16, Vec<u8>), String>>,
}

impl Rest<'_> {
    /// `fetch`, once per distinct call and at most `max_calls` times per operation.
    fn fetch_once(
        &self,
        field: &RestField,
        path: String,
        headers: Vec<(String, String)>,
    ) -> Result<(u16, Vec<u8>), FieldError> {
        let key = (field.cluster.clone(), field.method.clone(), path, headers);
        if let Some(answer) = self.calls.borrow().answers.get(&key) {
            return answer.clone().map_err(|e| self.fetch_failed(field, e));
        }
        {
            let mut calls = self.calls.borrow_mut();
            if calls.made >= self.max_calls {
                return Err(FieldError {
                    message: format!("more than {} REST calls in one operation", self.max_calls),
                });
            }
            calls.made += 1;
        }
        let answer = (self.fetch)(&key.0, &key.1, &key.2, key.3.clone());
        self.calls.borrow_mut().answers.insert(key, answer.clone());
        answer.map_err(|e| self.fetch_failed(field, e))
    }

    fn fetch_failed(&self, field: &RestField, e: String) -> FieldError {
        FieldError {
            message: if self.details {
                format!("HTTP fetch failed from '{}': {e}", field.cluster)
            } else {
                "HTTP fetch failed".to_owned()
            },
        }
    }

    fn call(&self, field: &RestField, args: &Value, parent: &Value) -> Result<Value, FieldError> {
        let err = |message: String| FieldError { message };
        let path = render(&field.path, args, parent, &self.headers, true).map_err(err)?;
        let mut headers = Vec::new();
        for (name, template) in &field.headers {
            headers.push((
                name.clone(),
                render(template, args, parent, &self.headers, false).map_err(err)?,
            ));
        }
        let details = self.details;
        let (status, body) = self.fetch_once(field, path.clone(), headers)?;
        if !(200..300).contains(&status) {
            return Err(err(if details {
                format!("HTTP {status} from '{}' for {path}", field.cluster)
            } else {
                format!("HTTP {status}")
            }));
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|e| {
            err(if details {
                format!("'{}' answered {path} with invalid JSON: {e}", field.cluster)
            } else {
                "the answer is not JSON".to_owned()
            })
        })?;
        let mut value = field
            .result_root
            .iter()
            .fold(&answer, |v, key| v.get(key).unwrap_or(&Value::Null))
            .clone();
        if !field.setters.is_empty() {
            let set = |object: &mut Value| -> Result<(), FieldError> {
                let snapshot = object.clone();
                if let Value::Object(map) = object {
                    for (name, template) in &field.setters {
                        let text = render(template, args, &snapshot, &self.headers, false).map_err(err)?;
                        map.insert(name.clone(), Value::String(text));
                    }
                }
                Ok(())
            };
            match &mut value {
                Value::Array(items) => items.iter_mut().try_for_each(set)?,
                object => set(object)?,
            }
        }
        Ok(value)
    }

    /// The resolved value of `value` as a `ty`.
    pub fn resolved<'a>(&'a self, value: Value, ty: &Type) -> ResolvedValue<'a> {
        if value.is_null() {
            return ResolvedValue::null();
        }
        if ty.is_list() {
            let item = ty.item_type().clone();
            let items = match value {
                Value::Array(items) => items,
                other => vec![other],
            };
            return ResolvedValue::list(items.into_iter().map(move |v| self.resolved(v, &item)));
        }
        let name = ty.inner_named_type().as_str();
        match self.schema.types.get(name) {
            Some(ExtendedType::Object(_)) => ResolvedValue::object(JsonObject {
                ty: name.to_owned(),
                value,
                rest: self,
            }),
            Some(ExtendedType::Interface(_) | ExtendedType::Union(_)) => {
                let ty = value
                    .get("__typename")
                    .and_then(Value::as_str)
                    .unwrap_or(name)
                    .to_owned();
                ResolvedValue::object(JsonObject { ty, value, rest: self })
            }
            _ => ResolvedValue::leaf(
                serde_json::from_value::<apollo_compiler::response::JsonValue>(value).unwrap_or_default(),
            ),
        }
    }

    fn resolve<'a>(
        &'a self,
        ty: &str,
        parent: &Value,
        info: &'a ResolveInfo<'a>,
    ) -> Result<ResolvedValue<'a>, FieldError> {
        let def = info.field_definition();
        let value = match self.fields.get(&(ty.to_owned(), info.field_name().to_owned())) {
            Some(field) => {
                let args = serde_json::to_value(info.arguments()).unwrap_or(Value::Null);
                self.call(field, &args, parent)?
            }
            None => parent.get(info.field_name()).cloned().unwrap_or(Value::Null),
        };
        Ok(self.resolved(value, &def.ty))
    }
}

/// An object of a REST answer.
struct JsonObject<'r> {
    ty: String,
    value: Value,
    rest: &'r Rest<'r>,
}

impl ObjectValue for JsonObject<'_> {
    fn type_name(&self) -> &str {
        &self.ty
    }

    fn resolve_field<'a>(&'a self, info: &'a ResolveInfo<'a>) -> Result<ResolvedValue<'a>, FieldError> {
        self.rest.resolve(&self.ty, &self.value, info)
    }
}

/// The root object for the gateway's part of an operation: REST-backed root fields are
/// resolved, the others skipped (the clusters answer them).
pub struct Root<'r> {
    pub ty: String,
    pub rest: &'r Rest<'r>,
}

impl ObjectValue for Root<'_> {
    fn type_name(&self) -> &str {
        &self.ty
    }

    fn resolve_field<'a>(&'a self, info: &'a ResolveInfo<'a>) -> Result<ResolvedValue<'a>, FieldError> {
        if self
            .rest
            .fields
            .contains_key(&(self.ty.clone(), info.field_name().to_owned()))
        {
            self.rest.resolve(&self.ty, &Value::Null, info)
        } else {
            Ok(ResolvedValue::SkipForPartialExecution)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn templates() {
        let args = json!({"id": "a b", "n": 3});
        let parent = json!({"user": {"id": 7}, "first": "Ada"});
        let headers = vec![("Authorization".to_owned(), "Bearer x".to_owned())];
        assert_eq!(
            render(
                "/p/{$args.id}?n={$args.n}&u={$parent.user.id}",
                &args,
                &parent,
                &headers,
                true
            )
            .unwrap(),
            "/p/a%20b?n=3&u=7"
        );
        assert_eq!(
            render("{$headers.authorization}", &args, &parent, &headers, false).unwrap(),
            "Bearer x"
        );
        assert_eq!(
            render("{$parent.first} {$parent.nope}", &args, &parent, &headers, false).unwrap(),
            "Ada "
        );
        assert!(render("{$env.HOME}", &args, &parent, &headers, false).is_err());
        assert!(render("/p/{$args.id", &args, &parent, &headers, false).is_err());
    }

    #[test]
    fn a_path_segment_value_cannot_move_the_path() {
        let path = |id: Value| {
            render(
                "/users/{$args.id}/orders?q={$args.id}",
                &json!({ "id": id }),
                &Value::Null,
                &[],
                true,
            )
        };
        for bad in ["..", ".", "", "a/b", "..\\x", "a?b", "a#b", "%2e%2e", "%2F"] {
            assert!(path(json!(bad)).is_err(), "{bad:?}");
        }
        assert!(path(Value::Null).is_err(), "missing is empty");
        assert_eq!(path(json!("...")).unwrap(), "/users/.../orders?q=...");
        assert_eq!(path(json!(7)).unwrap(), "/users/7/orders?q=7");
        // After the `?` a value is a query parameter's, encoded.
        assert_eq!(
            render(
                "/search?q={$args.id}",
                &json!({"id": "../a/b?c#d"}),
                &Value::Null,
                &[],
                true
            )
            .unwrap(),
            "/search?q=..%2Fa%2Fb%3Fc%23d"
        );
    }
}
