//! Static cost, as Apollo Router's demand control estimates it (the IBM GraphQL cost
//! specification): an object, interface or union field costs 1, a scalar or enum 0, a
//! mutation root field 10, unless `@cost(weight:)` on the field or its type says
//! otherwise; a list field multiplies its type's and its selection's cost by its size —
//! `@listSize(assumedSize:)`, else the value of a slicing argument (`@listSize(
//! slicingArguments:)`, else `first`, `last` or `limit`), else the configured default.
//! An argument's value is the one the service will use: the literal, else the coerced
//! variable (its default included when the client sent none), else the argument's
//! default in the schema; `null` means no size. A REST-backed field is a call: it costs at
//! least 1 whatever its type. Each fragment is costed once.

use std::collections::{BTreeMap, HashMap};

use apollo_compiler::ast::Value;
use apollo_compiler::executable::{ExecutableDocument, Field, Operation, OperationType, Selection, SelectionSet};
use apollo_compiler::schema::ExtendedType;
use apollo_compiler::{Node, Schema};

use crate::plan::{Coerced, MAX_NESTING};
use crate::rest::RestField;

const SLICING: [&str; 3] = ["first", "last", "limit"];

pub fn estimate(
    schema: &Schema,
    document: &ExecutableDocument,
    operation: &Operation,
    variables: &Coerced,
    rest: &BTreeMap<(String, String), RestField>,
    default_list_size: f64,
) -> f64 {
    let mut ctx = Ctx {
        schema,
        document,
        variables,
        rest,
        default_list_size,
        memo: HashMap::new(),
    };
    let mutation = operation.operation_type == OperationType::Mutation;
    ctx.set(&operation.selection_set, mutation, 0)
}

struct Ctx<'a> {
    schema: &'a Schema,
    document: &'a ExecutableDocument,
    variables: &'a Coerced,
    rest: &'a BTreeMap<(String, String), RestField>,
    default_list_size: f64,
    memo: HashMap<String, f64>,
}

impl Ctx<'_> {
    fn set(&mut self, set: &SelectionSet, mutation_root: bool, level: usize) -> f64 {
        // Unreachable: `limits::measure` refused deeper documents first.
        if level > MAX_NESTING {
            return 0.0;
        }
        let mut total = 0.0;
        for selection in &set.selections {
            total += match selection {
                Selection::Field(field) => self.field(set.ty.as_str(), field, mutation_root, level),
                Selection::InlineFragment(inline) => self.set(&inline.selection_set, mutation_root, level + 1),
                Selection::FragmentSpread(spread) => {
                    let name = spread.fragment_name.as_str();
                    match self.memo.get(name) {
                        Some(cost) => *cost,
                        None => {
                            let Some(fragment) = self.document.fragments.get(name) else {
                                continue;
                            };
                            let cost = self.set(&fragment.selection_set, mutation_root, level + 1);
                            self.memo.insert(name.to_owned(), cost);
                            cost
                        }
                    }
                }
            };
        }
        total
    }

    fn field(&mut self, parent: &str, field: &Node<Field>, mutation_root: bool, level: usize) -> f64 {
        let def = &field.definition;
        let type_name = def.ty.inner_named_type();
        let ty = self.schema.types.get(type_name);
        let weight = weight(def.directives.get("cost").map(|d| &**d))
            .or_else(|| ty.and_then(|t| weight(t.directives().get("cost").map(|d| &***d))))
            .unwrap_or(if mutation_root {
                10.0
            } else if matches!(
                ty,
                Some(ExtendedType::Object(_) | ExtendedType::Interface(_) | ExtendedType::Union(_))
            ) {
                1.0
            } else {
                0.0
            });
        let weight = if !self.rest.is_empty() && self.rest.contains_key(&(parent.to_owned(), field.name.to_string())) {
            weight.max(1.0)
        } else {
            weight
        };
        let children = self.set(&field.selection_set, false, level + 1);
        if def.ty.is_list() {
            self.list_size(field) * (weight + children)
        } else {
            weight + children
        }
    }

    fn list_size(&self, field: &Field) -> f64 {
        let list_size = field.definition.directives.get("listSize");
        if let Some(size) = list_size
            .and_then(|d| d.specified_argument_by_name("assumedSize"))
            .and_then(|v| v.to_i32())
        {
            return f64::from(size.max(0));
        }
        let declared: Vec<String> = list_size
            .and_then(|d| d.specified_argument_by_name("slicingArguments"))
            .and_then(|v| v.as_list())
            .map(|items| items.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_else(|| SLICING.iter().map(|s| (*s).to_owned()).collect());
        let sizes = declared.iter().filter_map(|name| self.argument_size(field, name));
        sizes
            .fold(None, |max: Option<f64>, s| Some(max.map_or(s, |m| m.max(s))))
            .map_or(self.default_list_size, |s| s.max(0.0))
    }

    /// The value the service will give argument `name` of `field`, as a size: `None`
    /// when it is null or not a number.
    fn argument_size(&self, field: &Field, name: &str) -> Option<f64> {
        let given = field.arguments.iter().find(|arg| arg.name == name);
        let default = || {
            let def = field.definition.arguments.iter().find(|arg| arg.name == name)?;
            literal_size(def.default_value.as_deref()?)
        };
        match given.map(|arg| arg.value.as_ref()) {
            None => default(),
            Some(Value::Variable(v)) => match self.variables.get(v.as_str()) {
                // Not sent and no default in the operation: the argument's own applies.
                None => default(),
                Some(value) => value.as_f64(),
            },
            Some(value) => literal_size(value),
        }
    }
}

fn literal_size(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => i.try_to_i32().ok().map(f64::from),
        _ => None,
    }
}

fn weight(directive: Option<&apollo_compiler::ast::Directive>) -> Option<f64> {
    let value = directive?.specified_argument_by_name("weight")?;
    match value.as_ref() {
        Value::Int(i) => i.try_to_i32().ok().map(f64::from),
        Value::Float(f) => f.try_to_f64().ok(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use serde_json::Value as Json;

    const SDL: &str = r#"
        directive @cost(weight: Int!) on FIELD_DEFINITION | OBJECT | SCALAR | ENUM
        directive @listSize(assumedSize: Int, slicingArguments: [String!]) on FIELD_DEFINITION
        type Query {
          users(first: Int, limit: Int): [User!]!
          tagged: [User] @listSize(assumedSize: 3)
          page(size: Int): [User] @listSize(slicingArguments: ["size"])
          all(first: Int = 1000): [User]
          user(id: ID): User
        }
        type Mutation { create(name: String): User }
        type User { id: ID  name: String  secret: String @cost(weight: 7)  friends: [User]  badge: Badge }
        type Badge @cost(weight: 4) { label: String }
    "#;

    fn cost(query: &str, vars: Json) -> f64 {
        let schema = Schema::parse_and_validate(SDL, "s.graphql").unwrap();
        let doc = ExecutableDocument::parse_and_validate(&schema, query, "q.graphql").unwrap();
        let op = doc.operations.get(None).unwrap();
        let raw: Coerced = serde_json::from_value(if vars.is_null() { serde_json::json!({}) } else { vars }).unwrap();
        let coerced = apollo_compiler::request::coerce_variable_values(&schema, op, &raw).unwrap();
        let rest: BTreeMap<(String, String), RestField> = [("User", "name"), ("Query", "tagged")]
            .into_iter()
            .map(|(ty, field)| {
                let rest = serde_json::from_value(serde_json::json!({"cluster": "c", "path": "/x"})).unwrap();
                ((ty.to_owned(), field.to_owned()), rest)
            })
            .collect();
        estimate(&schema, &doc, op, &coerced, &rest, 10.0)
    }

    #[test]
    fn objects_one_scalars_zero_lists_multiply() {
        assert_eq!(cost("{ user { id } }", Json::Null), 1.0);
        assert_eq!(cost("{ users { id } }", Json::Null), 10.0);
        assert_eq!(cost("{ users { friends { id } } }", Json::Null), 10.0 * (1.0 + 10.0));
    }

    #[test]
    fn sizes_from_arguments_variables_and_list_size() {
        assert_eq!(cost("{ users(first: 3) { id } }", Json::Null), 3.0);
        assert_eq!(cost("{ users(first: 3, limit: 5) { id } }", Json::Null), 5.0);
        assert_eq!(
            cost(
                "query($n: Int) { users(limit: $n) { id } }",
                serde_json::json!({"n": 4})
            ),
            4.0
        );
        assert_eq!(cost("{ tagged { id } }", Json::Null), 3.0);
        assert_eq!(cost("{ page(size: 2) { id } }", Json::Null), 2.0);
    }

    #[test]
    fn sizes_are_the_values_the_service_uses() {
        let nested = "query($n: Int = 100000) { users(first: $n) { friends { id } } }";
        // The operation's default, when no variable is sent.
        assert_eq!(cost(nested, Json::Null), 100000.0 * (1.0 + 10.0));
        // A sent value wins; an explicit null is no size.
        assert_eq!(cost(nested, serde_json::json!({"n": 2})), 2.0 * 11.0);
        assert_eq!(cost(nested, serde_json::json!({"n": null})), 10.0 * 11.0);
        // The argument's default in the schema: not given, or a variable not sent.
        assert_eq!(cost("{ all { id } }", Json::Null), 1000.0);
        assert_eq!(cost("query($n: Int) { all(first: $n) { id } }", Json::Null), 1000.0);
        assert_eq!(cost("{ all(first: null) { id } }", Json::Null), 10.0);
        assert_eq!(cost("{ all(first: 4) { id } }", Json::Null), 4.0);
    }

    #[test]
    fn a_rest_backed_field_costs_at_least_one() {
        // User.name is REST-backed here: a scalar, but a call.
        assert_eq!(cost("{ user { id name } }", Json::Null), 2.0);
        assert_eq!(cost("{ users(first: 4) { name } }", Json::Null), 4.0 * 2.0);
        // Query.tagged is REST-backed and already costs its objects.
        assert_eq!(cost("{ tagged { id } }", Json::Null), 3.0);
    }

    #[test]
    fn weights_mutations_and_fragments() {
        assert_eq!(cost("{ user { secret badge { label } } }", Json::Null), 1.0 + 7.0 + 4.0);
        assert_eq!(cost("mutation { create { id } }", Json::Null), 10.0);
        assert_eq!(
            cost(
                "{ a: user { ...F } b: user { ...F } } fragment F on User { secret }",
                Json::Null
            ),
            16.0
        );
    }
}
