//! `@cacheControl` hints turned into the answer's `Cache-Control`, as Apollo Server
//! computes a response's cache policy: a field's own hint, else its return type's; a root
//! field or a field returning an object, interface or union has `maxAge` 0 unless hinted
//! (or `inheritMaxAge: true`), a scalar field no constraint; the policy is the smallest
//! `maxAge` and `PRIVATE` if any hint says so.

use std::collections::HashMap;

use apollo_compiler::Schema;
use apollo_compiler::ast::{DirectiveList, Value};
use apollo_compiler::executable::{ExecutableDocument, Operation, OperationType, Selection, SelectionSet};
use apollo_compiler::schema::ExtendedType;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// `None`: nothing constrains it.
    pub max_age: Option<u32>,
    pub private: bool,
}

impl Policy {
    fn restrict(&mut self, other: Policy) {
        self.max_age = match (self.max_age, other.max_age) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.private |= other.private;
    }

    /// The header value, when the answer may be cached at all.
    pub fn header(&self) -> Option<String> {
        let age = self.max_age.filter(|a| *a > 0)?;
        Some(format!(
            "max-age={age}, {}",
            if self.private { "private" } else { "public" }
        ))
    }
}

struct Hint {
    max_age: Option<u32>,
    private: bool,
    inherit: bool,
}

fn hint(directives: &DirectiveList) -> Option<Hint> {
    let directive = directives.get("cacheControl")?;
    let max_age = directive
        .specified_argument_by_name("maxAge")
        .and_then(|v| v.to_i32())
        .map(|a| a.max(0) as u32);
    let private = matches!(
        directive.specified_argument_by_name("scope").map(|v| v.as_ref()),
        Some(Value::Enum(scope)) if scope == "PRIVATE"
    );
    let inherit = matches!(
        directive
            .specified_argument_by_name("inheritMaxAge")
            .map(|v| v.as_ref()),
        Some(Value::Boolean(true))
    );
    Some(Hint {
        max_age,
        private,
        inherit,
    })
}

/// The operation's policy; mutations are never cached.
pub fn policy(schema: &Schema, document: &ExecutableDocument, operation: &Operation) -> Policy {
    if operation.operation_type != OperationType::Query {
        return Policy {
            max_age: Some(0),
            private: false,
        };
    }
    let mut memo = HashMap::new();
    set(schema, document, &operation.selection_set, true, &mut memo, 0)
}

fn set(
    schema: &Schema,
    document: &ExecutableDocument,
    selection_set: &SelectionSet,
    root: bool,
    memo: &mut HashMap<String, Policy>,
    level: usize,
) -> Policy {
    let mut policy = Policy::default();
    if level > 512 {
        return policy;
    }
    for selection in &selection_set.selections {
        match selection {
            Selection::Field(field) => {
                if field.name.starts_with("__") {
                    continue;
                }
                let def = &field.definition;
                let ty = schema.types.get(def.ty.inner_named_type());
                let type_hint = ty.and_then(|t| match t {
                    ExtendedType::Object(o) => hint(&o.directives.iter().map(|d| d.node.clone()).collect()),
                    ExtendedType::Interface(i) => hint(&i.directives.iter().map(|d| d.node.clone()).collect()),
                    ExtendedType::Union(u) => hint(&u.directives.iter().map(|d| d.node.clone()).collect()),
                    _ => None,
                });
                let composite = matches!(
                    ty,
                    Some(ExtendedType::Object(_) | ExtendedType::Interface(_) | ExtendedType::Union(_))
                );
                let own = hint(&def.directives).or(type_hint);
                let inherit = own.as_ref().is_some_and(|h| h.inherit);
                let max_age = own
                    .as_ref()
                    .and_then(|h| h.max_age)
                    .or(if (composite || root) && !inherit { Some(0) } else { None });
                policy.restrict(Policy {
                    max_age,
                    private: own.as_ref().is_some_and(|h| h.private),
                });
                policy.restrict(set(schema, document, &field.selection_set, false, memo, level + 1));
            }
            Selection::InlineFragment(inline) => {
                policy.restrict(set(schema, document, &inline.selection_set, root, memo, level + 1));
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.fragment_name.as_str();
                let sub = match memo.get(name) {
                    Some(p) => *p,
                    None => {
                        let Some(fragment) = document.fragments.get(name) else {
                            continue;
                        };
                        let p = set(schema, document, &fragment.selection_set, root, memo, level + 1);
                        memo.insert(name.to_owned(), p);
                        p
                    }
                };
                policy.restrict(sub);
            }
        }
    }
    policy
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const SDL: &str = r#"
        enum CacheControlScope { PUBLIC PRIVATE }
        directive @cacheControl(maxAge: Int, scope: CacheControlScope, inheritMaxAge: Boolean) on FIELD_DEFINITION | OBJECT | INTERFACE | UNION
        type Query {
          users: [User] @cacheControl(maxAge: 60)
          me: User @cacheControl(maxAge: 90, scope: PRIVATE)
          plain: String
          post: Post
        }
        type Mutation { m: String }
        type User @cacheControl(maxAge: 30) { id: ID  friends: [User]  post: Post }
        type Post { id: ID  author: User @cacheControl(inheritMaxAge: true) }
    "#;

    fn header(query: &str) -> Option<String> {
        let schema = Schema::parse_and_validate(SDL, "s.graphql").unwrap();
        let doc = ExecutableDocument::parse_and_validate(&schema, query, "q.graphql").unwrap();
        policy(&schema, &doc, doc.operations.get(None).unwrap()).header()
    }

    #[test]
    fn hints() {
        assert_eq!(header("{ users { id } }").as_deref(), Some("max-age=60, public"));
        assert_eq!(
            header("{ users { friends { id } } }").as_deref(),
            Some("max-age=30, public")
        );
        assert_eq!(
            header("{ users { id } me { id } }").as_deref(),
            Some("max-age=60, private")
        );
        // A root scalar without a hint, and an object type without one: 0, no header.
        assert_eq!(header("{ users { id } plain }"), None);
        assert_eq!(header("{ users { post { id } } }"), None);
        assert_eq!(header("{ __typename }"), None);
        assert_eq!(header("mutation { m }"), None);
    }
}
