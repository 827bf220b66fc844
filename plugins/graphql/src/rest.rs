//! REST-backed fields, in the shape Gloo users know: a field is resolved by an HTTP call
//! to a cluster — method, path (with query) and header templates with `{$args.id}`,
//! `{$parent.id}`, `{$headers.authorization}`, a `result_root` in the JSON answer, and
//! `setters` for renamed or composed fields. Execution is apollo-compiler's engine, so
//! aliases, fragments, `__typename` and null propagation follow the spec; nested fields of
//! a REST-resolved object (`Product.reviews`) are resolved the same way.

use std::collections::BTreeMap;

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

/// Fills `{$args.x}`, `{$parent.x.y}`, `{$headers.name}`; `encode` percent-encodes values.
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
        out.push_str(&if encode { percent_encode(&text) } else { text });
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
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
    #[allow(clippy::type_complexity)]
    pub fetch: &'r dyn Fn(&str, &str, &str, Vec<(String, String)>) -> Result<(u16, Vec<u8>), String>,
}

impl Rest<'_> {
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
        let (status, body) = (self.fetch)(&field.cluster, &field.method, &path, headers)
            .map_err(|e| err(format!("HTTP fetch failed from '{}': {e}", field.cluster)))?;
        if !(200..300).contains(&status) {
            return Err(err(format!("HTTP {status} from '{}' for {path}", field.cluster)));
        }
        let answer: Value = serde_json::from_slice(&body)
            .map_err(|e| err(format!("'{}' answered {path} with invalid JSON: {e}", field.cluster)))?;
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
        let args = json!({"id": "a b/c", "n": 3});
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
            "/p/a%20b%2Fc?n=3&u=7"
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
}
