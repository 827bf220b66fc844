//! Static cost, as Apollo Router's demand control estimates it (the IBM GraphQL cost
//! specification): an object, interface or union field costs 1, a scalar or enum 0, a
//! mutation root field 10, unless `@cost(weight:)` on the field or its type says
//! otherwise; a list field multiplies its type's and its selection's cost by its size —
//! `@listSize(assumedSize:)`, else the value of a slicing argument (`@listSize(
//! slicingArguments:)`, else `first`, `last` or `limit`), else the configured default.
//! Each fragment is costed once.

use std::collections::HashMap;

use apollo_compiler::ast::Value;
use apollo_compiler::executable::{ExecutableDocument, Field, Operation, OperationType, Selection, SelectionSet};
use apollo_compiler::schema::ExtendedType;
use apollo_compiler::{Node, Schema};
use serde_json::{Map, Value as Json};

const SLICING: [&str; 3] = ["first", "last", "limit"];

pub fn estimate(
    schema: &Schema,
    document: &ExecutableDocument,
    operation: &Operation,
    variables: &Map<String, Json>,
    default_list_size: f64,
) -> f64 {
    let mut ctx = Ctx {
        schema,
        document,
        variables,
        default_list_size,
        memo: HashMap::new(),
    };
    let mutation = operation.operation_type == OperationType::Mutation;
    ctx.set(&operation.selection_set, mutation, 0)
}

struct Ctx<'a> {
    schema: &'a Schema,
    document: &'a ExecutableDocument,
    variables: &'a Map<String, Json>,
    default_list_size: f64,
    memo: HashMap<String, f64>,
}

impl Ctx<'_> {
    fn set(&mut self, set: &SelectionSet, mutation_root: bool, level: usize) -> f64 {
        if level > 512 {
            return 0.0;
        }
        let mut total = 0.0;
        for selection in &set.selections {
            total += match selection {
                Selection::Field(field) => self.field(field, mutation_root, level),
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

    fn field(&mut self, field: &Node<Field>, mutation_root: bool, level: usize) -> f64 {
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
        let sizes = field
            .arguments
            .iter()
            .filter(|arg| declared.iter().any(|d| d == arg.name.as_str()))
            .filter_map(|arg| match arg.value.as_ref() {
                Value::Int(i) => i.try_to_i32().ok().map(f64::from),
                Value::Variable(v) => self.variables.get(v.as_str()).and_then(Json::as_f64),
                _ => None,
            });
        sizes
            .fold(None, |max: Option<f64>, s| Some(max.map_or(s, |m| m.max(s))))
            .map_or(self.default_list_size, |s| s.max(0.0))
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

    const SDL: &str = r#"
        directive @cost(weight: Int!) on FIELD_DEFINITION | OBJECT | SCALAR | ENUM
        directive @listSize(assumedSize: Int, slicingArguments: [String!]) on FIELD_DEFINITION
        type Query {
          users(first: Int, limit: Int): [User!]!
          tagged: [User] @listSize(assumedSize: 3)
          page(size: Int): [User] @listSize(slicingArguments: ["size"])
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
        estimate(&schema, &doc, op, vars.as_object().unwrap_or(&Map::new()), 10.0)
    }

    #[test]
    fn objects_one_scalars_zero_lists_multiply() {
        assert_eq!(cost("{ user { id name } }", Json::Null), 1.0);
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
