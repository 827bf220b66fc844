//! Function routing: which cluster answers each root field of an operation, and, when
//! there are several, one operation per cluster carrying only its root fields, the
//! fragments and variables those use, and the client's aliases.
//!
//! Root-level fragments (spreads and inline) are kept as inline fragments with their
//! directives, so `@skip`/`@include` still apply upstream; fragments below the root are
//! kept as spreads with their definitions.

use std::collections::{BTreeSet, HashSet};

use apollo_compiler::ast::Value;
use apollo_compiler::executable::{
    DirectiveList, ExecutableDocument, InlineFragment, Operation, OperationType, Selection, SelectionSet,
};
use apollo_compiler::{Node, Schema};
use serde_json::{Map, Value as Json};

use crate::config::Routing;

/// A root field as the client sees it in `data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootField {
    /// The response key (alias or name).
    pub key: String,
    /// The field's name in the schema.
    pub name: String,
    /// Who answers it: a cluster, or the gateway (`__typename`, introspection).
    pub owner: Owner,
    /// `String!`: a null here nulls all of `data`.
    pub non_null: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Cluster(String),
    /// `__typename`, `__schema`, `__type`: the gateway answers.
    Gateway,
}

/// One operation sent to one cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    pub cluster: String,
    pub query: String,
    pub operation_name: Option<String>,
    pub variables: Map<String, Json>,
    /// The response keys this part answers, in the client's order.
    pub keys: Vec<String>,
}

/// Coerced variable values (`CoerceVariableValues()`: defaults applied, types checked):
/// what `@skip`/`@include` and list sizes are read from, as a service reads them.
pub type Coerced = apollo_compiler::response::JsonMap;

/// How deep any walk over a document goes (fields, inline fragments and spreads, counted
/// together). [`crate::limits::measure`] refuses a document nested deeper before any
/// other walk runs, so no walk stops short silently.
pub const MAX_NESTING: usize = 512;

/// The root fields an operation runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roots {
    /// In the client's order, one per response key, without those `@skip`/`@include`
    /// exclude.
    pub fields: Vec<RootField>,
    /// `@skip`/`@include` left out a root selection: the document as sent asks for more
    /// than these fields.
    pub pruned: bool,
}

/// The operation's root fields. `None`: the root fragments nest deeper than
/// [`MAX_NESTING`] (which `limits::measure` refuses first).
pub fn root_fields(
    schema: &Schema,
    document: &ExecutableDocument,
    operation: &Operation,
    routing: &Routing,
    variables: &Coerced,
) -> Option<Roots> {
    let root_type = operation.selection_set.ty.as_str();
    let mut out: Vec<RootField> = Vec::new();
    let mut seen = HashSet::new();
    let mut walk = Walk {
        document,
        variables,
        fragments: HashSet::new(),
        pruned: false,
        too_deep: false,
    };
    walk.collect(&operation.selection_set, 0, &mut |field| {
        let key = field.response_key().to_string();
        if !seen.insert(key.clone()) {
            return;
        }
        let name = field.name.to_string();
        let owner = if name.starts_with("__") {
            Owner::Gateway
        } else {
            match routing.cluster(root_type, &name) {
                Some(c) => Owner::Cluster(c.to_owned()),
                None => Owner::Gateway,
            }
        };
        let non_null = schema
            .type_field(root_type, &name)
            .is_ok_and(|def| def.ty.is_non_null());
        out.push(RootField {
            key,
            name,
            owner,
            non_null,
        });
    });
    (!walk.too_deep).then_some(Roots {
        fields: out,
        pruned: walk.pruned,
    })
}

/// A walk over the root selection set through its fragments.
struct Walk<'a> {
    document: &'a ExecutableDocument,
    variables: &'a Coerced,
    /// Named fragments already walked: at the root (an object type) an included spread
    /// always applies, so a second spread of one fragment adds nothing; walking it again
    /// would make `...A ...A` nested n deep cost 2^n.
    fragments: HashSet<&'a str>,
    pruned: bool,
    too_deep: bool,
}

impl<'a> Walk<'a> {
    fn collect(
        &mut self,
        set: &'a SelectionSet,
        level: usize,
        each: &mut dyn FnMut(&apollo_compiler::executable::Field),
    ) {
        if level > MAX_NESTING {
            self.too_deep = true;
            return;
        }
        for selection in &set.selections {
            if !included(selection.directives(), self.variables) {
                self.pruned = true;
                continue;
            }
            match selection {
                Selection::Field(field) => each(field),
                Selection::InlineFragment(inline) => self.collect(&inline.selection_set, level + 1, each),
                Selection::FragmentSpread(spread) => {
                    if self.fragments.insert(spread.fragment_name.as_str())
                        && let Some(fragment) = self.document.fragments.get(&spread.fragment_name)
                    {
                        self.collect(&fragment.selection_set, level + 1, each);
                    }
                }
            }
        }
    }

    /// The root selection set with only the wanted response keys and only what
    /// `@skip`/`@include` let through; root-level fragment spreads become inline fragments
    /// (with the spread's directives) holding the wanted fields.
    fn keep_root(&mut self, set: &'a SelectionSet, wanted: &HashSet<&str>, level: usize) -> SelectionSet {
        let mut out = SelectionSet::new(set.ty.clone());
        if level > MAX_NESTING {
            self.too_deep = true;
            return out;
        }
        for selection in &set.selections {
            if !included(selection.directives(), self.variables) {
                continue;
            }
            match selection {
                Selection::Field(field) => {
                    if wanted.contains(field.response_key().as_str()) {
                        out.selections.push(selection.clone());
                    }
                }
                Selection::InlineFragment(inline) => {
                    let inner = self.keep_root(&inline.selection_set, wanted, level + 1);
                    if !inner.selections.is_empty() {
                        let mut kept: InlineFragment = (**inline).clone();
                        kept.selection_set = inner;
                        out.selections.push(Selection::InlineFragment(Node::new(kept)));
                    }
                }
                Selection::FragmentSpread(spread) => {
                    if !self.fragments.insert(spread.fragment_name.as_str()) {
                        continue;
                    }
                    let Some(fragment) = self.document.fragments.get(&spread.fragment_name) else {
                        continue;
                    };
                    let inner = self.keep_root(&fragment.selection_set, wanted, level + 1);
                    if !inner.selections.is_empty() {
                        out.selections.push(Selection::InlineFragment(Node::new(InlineFragment {
                            type_condition: Some(fragment.type_condition().clone()),
                            directives: spread.directives.clone(),
                            selection_set: inner,
                        })));
                    }
                }
            }
        }
        out
    }
}

/// `@skip(if:)` and `@include(if:)` with the coerced variables.
fn included(directives: &DirectiveList, variables: &Coerced) -> bool {
    let flag = |name: &str| {
        let value = directives.get(name)?.specified_argument_by_name("if")?;
        match value.as_ref() {
            Value::Boolean(b) => Some(*b),
            Value::Variable(v) => variables.get(v.as_str()).and_then(|v| v.as_bool()),
            _ => None,
        }
    };
    flag("skip") != Some(true) && flag("include") != Some(false)
}

/// The operations to send: for a query, one per cluster (in the order each first appears);
/// for a mutation, one per run of consecutive root fields on the same cluster, in order,
/// to be sent one after the other. Each carries only the root selections `@skip`/
/// `@include` let through, and of the client's `variables` only those it uses.
pub fn split(
    document: &ExecutableDocument,
    operation: &Operation,
    fields: &[RootField],
    variables: &Map<String, Json>,
    coerced: &Coerced,
) -> Vec<Part> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let serial = operation.operation_type == OperationType::Mutation;
    for field in fields {
        let Owner::Cluster(cluster) = &field.owner else {
            continue;
        };
        let existing = if serial {
            groups.last_mut().filter(|(c, _)| c == cluster)
        } else {
            groups.iter_mut().find(|(c, _)| c == cluster)
        };
        match existing {
            Some((_, keys)) => keys.push(field.key.clone()),
            None => groups.push((cluster.clone(), vec![field.key.clone()])),
        }
    }
    groups
        .into_iter()
        .map(|(cluster, keys)| part(document, operation, cluster, keys, variables, coerced))
        .collect()
}

fn part(
    document: &ExecutableDocument,
    operation: &Operation,
    cluster: String,
    keys: Vec<String>,
    variables: &Map<String, Json>,
    coerced: &Coerced,
) -> Part {
    let wanted: HashSet<&str> = keys.iter().map(String::as_str).collect();
    let mut walk = Walk {
        document,
        variables: coerced,
        fragments: HashSet::new(),
        pruned: false,
        too_deep: false,
    };
    // Never too deep here: `root_fields` walked the same selections first.
    let selection_set = walk.keep_root(&operation.selection_set, &wanted, 0);

    let mut fragments = BTreeSet::new();
    let mut used_vars = BTreeSet::new();
    uses(document, &selection_set, &mut fragments, &mut used_vars, 0);
    for directive in operation.directives.iter() {
        for arg in &directive.arguments {
            value_vars(&arg.value, &mut used_vars);
        }
    }

    let mut op = operation.clone();
    op.selection_set = selection_set;
    op.variables.retain(|v| used_vars.contains(v.name.as_str()));
    let mut query = op.to_string();
    // Fragment definitions in the document's order, so the text is stable.
    for (name, fragment) in &document.fragments {
        if fragments.contains(name.as_str()) {
            query.push('\n');
            query.push_str(&fragment.to_string());
        }
    }
    let variables = variables
        .iter()
        .filter(|(k, _)| used_vars.contains(k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Part {
        cluster,
        query,
        operation_name: operation.name.as_ref().map(|n| n.to_string()),
        variables,
        keys,
    }
}

/// The fragments and variables a selection set uses, through the fragments it spreads.
fn uses(
    document: &ExecutableDocument,
    set: &SelectionSet,
    fragments: &mut BTreeSet<String>,
    vars: &mut BTreeSet<String>,
    level: usize,
) {
    if level > MAX_NESTING {
        return;
    }
    for selection in &set.selections {
        match selection {
            Selection::Field(field) => {
                for arg in &field.arguments {
                    value_vars(&arg.value, vars);
                }
                directive_vars(&field.directives, vars);
                uses(document, &field.selection_set, fragments, vars, level + 1);
            }
            Selection::InlineFragment(inline) => {
                directive_vars(&inline.directives, vars);
                uses(document, &inline.selection_set, fragments, vars, level + 1);
            }
            Selection::FragmentSpread(spread) => {
                directive_vars(&spread.directives, vars);
                if fragments.insert(spread.fragment_name.to_string())
                    && let Some(fragment) = document.fragments.get(&spread.fragment_name)
                {
                    directive_vars(&fragment.directives, vars);
                    uses(document, &fragment.selection_set, fragments, vars, level + 1);
                }
            }
        }
    }
}

fn directive_vars(directives: &DirectiveList, vars: &mut BTreeSet<String>) {
    for directive in directives.iter() {
        for arg in &directive.arguments {
            value_vars(&arg.value, vars);
        }
    }
}

fn value_vars(value: &Value, vars: &mut BTreeSet<String>) {
    match value {
        Value::Variable(name) => {
            vars.insert(name.to_string());
        }
        Value::List(items) => items.iter().for_each(|v| value_vars(v, vars)),
        Value::Object(fields) => fields.iter().for_each(|(_, v)| value_vars(v, vars)),
        _ => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use apollo_compiler::validation::Valid;
    use std::collections::BTreeMap;

    const SDL: &str = "
        type Query { user(id: ID!): User  users: [User!]!  order(id: ID!): Order  orders: [Order!]! }
        type Mutation { setName(id: ID!, name: String!): String!  createOrder(item: String!): String! }
        type User { id: ID!  name: String! }
        type Order { id: ID!  item: String! }";

    fn setup(query: &str, vars: Json) -> (Vec<RootField>, Vec<Part>) {
        let schema = Schema::parse_and_validate(SDL, "s.graphql").unwrap();
        let routes: BTreeMap<String, String> = [
            ("Query.*", "users"),
            ("Query.order", "orders"),
            ("Query.orders", "orders"),
            ("Mutation.setName", "users"),
            ("Mutation.createOrder", "orders"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let routing = Routing::new(&schema, &routes).unwrap();
        let doc = ExecutableDocument::parse_and_validate(&schema, query, "q.graphql").unwrap();
        let op = doc.operations.get(None).unwrap();
        let vars = vars.as_object().cloned().unwrap_or_default();
        let coerced = coerce(&schema, op, &vars);
        let fields = root_fields(&schema, &doc, op, &routing, &coerced).unwrap().fields;
        let parts = split(&doc, op, &fields, &vars, &coerced);
        (fields, parts)
    }

    fn coerce(schema: &Valid<Schema>, op: &Operation, vars: &Map<String, Json>) -> Coerced {
        let raw: Coerced = serde_json::from_value(Json::Object(vars.clone())).unwrap();
        apollo_compiler::request::coerce_variable_values(schema, op, &raw)
            .unwrap()
            .into_inner()
    }

    fn compact(s: &str) -> String {
        s.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn one_cluster_is_one_part() {
        let (fields, parts) = setup("{ user(id: 1) { name } users { id } __typename }", Json::Null);
        assert_eq!(fields.len(), 3);
        assert_eq!(fields[2].owner, Owner::Gateway);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].keys, ["user", "users"]);
    }

    #[test]
    fn split_keeps_only_what_each_part_uses() {
        let (fields, parts) = setup(
            "query Q($id: ID!, $o: ID!, $skip: Boolean!) {
               me: user(id: $id) { ...U }
               ... on Query { o: order(id: $o) { ...O } }
               ...Both @skip(if: $skip)
             }
             fragment U on User { id name }
             fragment O on Order { id item }
             fragment Both on Query { users { ...U } orders { id } }",
            serde_json::json!({"id": "1", "o": "o1", "skip": false}),
        );
        let keys: Vec<_> = fields.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["me", "o", "users", "orders"]);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].cluster, "users");
        assert_eq!(parts[0].keys, ["me", "users"]);
        assert_eq!(
            compact(&parts[0].query),
            compact(
                "query Q($id: ID!, $skip: Boolean!) { me: user(id: $id) { ...U } ... on Query @skip(if: $skip) { users { ...U } } }
                 fragment U on User { id name }"
            )
        );
        assert_eq!(
            parts[0].variables,
            *serde_json::json!({"id": "1", "skip": false}).as_object().unwrap()
        );
        assert_eq!(parts[1].cluster, "orders");
        assert_eq!(
            compact(&parts[1].query),
            compact(
                "query Q($o: ID!, $skip: Boolean!) { ... on Query { o: order(id: $o) { ...O } } ... on Query @skip(if: $skip) { orders { id } } }
                 fragment O on Order { id item }"
            )
        );
    }

    #[test]
    fn skipped_root_fields_are_not_listed() {
        let (fields, _) = setup(
            "query($s: Boolean!) { users { id } orders @skip(if: $s) { id } }",
            serde_json::json!({"s": true}),
        );
        assert_eq!(fields.len(), 1);
    }

    #[test]
    fn skipped_root_fields_are_not_sent() {
        // The issue's case: only `users` is left, and only it goes to the users cluster.
        let (fields, parts) = setup(
            "query Q($s: Boolean!, $i: Boolean!, $d: Boolean = false) {
               me: user(id: 1) @skip(if: $s) { id }
               order(id: 10) @include(if: $i) { id }
               ...F @include(if: $d)
               users { id }
             }
             fragment F on Query { orders { id } }",
            serde_json::json!({"s": true, "i": false}),
        );
        let keys: Vec<_> = fields.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["users"]);
        assert_eq!(parts.len(), 1);
        assert_eq!(compact(&parts[0].query), "query Q { users { id } }");
        assert!(parts[0].variables.is_empty());
    }

    #[test]
    fn a_default_decides_skip_as_the_service_would() {
        let (fields, _) = setup(
            "query($s: Boolean = true) { users { id } orders @skip(if: $s) { id } }",
            Json::Null,
        );
        assert_eq!(fields.len(), 1, "the default applies when the variable is not sent");
        let (fields, _) = setup(
            "query($s: Boolean = true) { users { id } orders @skip(if: $s) { id } }",
            serde_json::json!({"s": false}),
        );
        assert_eq!(fields.len(), 2);
    }

    #[test]
    fn a_fragment_spread_many_times_is_walked_once() {
        // 2^40 spreads if each were walked: this returns at once.
        let mut query = String::from("{ ...F0 }");
        for i in 0..40 {
            query.push_str(&format!(" fragment F{i} on Query {{ ...F{} ...F{} }}", i + 1, i + 1));
        }
        query.push_str(" fragment F40 on Query { users { id } orders { id } }");
        let (fields, parts) = setup(&query, Json::Null);
        assert_eq!(fields.len(), 2);
        assert!(parts.iter().all(|p| compact(&p.query).len() < 1000), "{parts:?}");
    }

    #[test]
    fn mutations_split_into_ordered_runs() {
        let (_, parts) = setup(
            r#"mutation { a: setName(id: 1, name: "x") b: setName(id: 2, name: "y") c: createOrder(item: "z") d: setName(id: 1, name: "w") }"#,
            Json::Null,
        );
        let runs: Vec<_> = parts.iter().map(|p| (p.cluster.as_str(), p.keys.join(","))).collect();
        assert_eq!(
            runs,
            [
                ("users", "a,b".to_owned()),
                ("orders", "c".to_owned()),
                ("users", "d".to_owned())
            ]
        );
    }
}
