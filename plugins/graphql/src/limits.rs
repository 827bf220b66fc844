//! Operation limits, measured as Apollo Router measures them (fragments counted where they
//! are spread; each fragment measured once, so a fragment "bomb" costs linear time):
//! depth (a root field is depth 1), height (distinct field names per selection set,
//! summed), aliases, root fields; and the nesting every other walk over the document
//! relies on (fields and fragments counted together), always bounded.

use std::collections::{HashMap, HashSet};

use apollo_compiler::executable::{ExecutableDocument, Operation, Selection, SelectionSet};

use crate::config::Limits;
use crate::plan::MAX_NESTING;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Measures {
    pub depth: u64,
    pub height: u64,
    pub aliases: u64,
    pub root_fields: u64,
    /// Selections on the longest path through the expanded operation: fields, inline
    /// fragments and spreads.
    pub nesting: u64,
}

/// A limit an operation is over: its Apollo Router code and message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exceeded {
    pub code: &'static str,
    pub message: &'static str,
    pub measured: u64,
    pub limit: u64,
}

pub fn measure(document: &ExecutableDocument, operation: &Operation) -> Measures {
    let mut memo = HashMap::new();
    let (m, _) = set(document, &operation.selection_set, &mut memo, 0);
    Measures {
        root_fields: m.root_fields,
        ..m
    }
}

/// The selection set's measures; `root_fields` counts the fields of this level (through
/// inline fragments and spreads). `level` guards against a cycle in an unvalidated input.
fn set(
    document: &ExecutableDocument,
    selection_set: &SelectionSet,
    memo: &mut HashMap<String, Measures>,
    level: usize,
) -> (Measures, ()) {
    let mut m = Measures::default();
    if level > MAX_NESTING {
        // Deeper than any walk goes: enough to be refused by `too_nested`.
        m.nesting = MAX_NESTING as u64 + 1;
        return (m, ());
    }
    let mut names = HashSet::new();
    for selection in &selection_set.selections {
        let sub = match selection {
            Selection::Field(field) => {
                m.root_fields += 1;
                if field.alias.is_some() {
                    m.aliases += 1;
                }
                if names.insert(field.name.as_str()) {
                    m.height += 1;
                }
                let (sub, ()) = set(document, &field.selection_set, memo, level + 1);
                m.depth = m.depth.max(1 + sub.depth);
                m.nesting = m.nesting.max(1 + sub.nesting);
                m.aliases = m.aliases.saturating_add(sub.aliases);
                m.height = m.height.saturating_add(sub.height);
                continue;
            }
            Selection::InlineFragment(inline) => set(document, &inline.selection_set, memo, level + 1).0,
            Selection::FragmentSpread(spread) => {
                let name = spread.fragment_name.as_str();
                if let Some(known) = memo.get(name) {
                    *known
                } else if let Some(fragment) = document.fragments.get(name) {
                    let (sub, ()) = set(document, &fragment.selection_set, memo, level + 1);
                    memo.insert(name.to_owned(), sub);
                    sub
                } else {
                    Measures::default()
                }
            }
        };
        m.depth = m.depth.max(sub.depth);
        m.nesting = m.nesting.max(1 + sub.nesting);
        m.aliases = m.aliases.saturating_add(sub.aliases);
        m.height = m.height.saturating_add(sub.height);
        m.root_fields = m.root_fields.saturating_add(sub.root_fields);
    }
    (m, ())
}

/// The bound no configuration lifts: an operation nested deeper than [`MAX_NESTING`] is
/// refused (`warn_only` or not), because the walks that route, price and split it stop
/// there.
pub fn too_nested(measures: &Measures) -> Option<Exceeded> {
    (measures.nesting > MAX_NESTING as u64).then_some(Exceeded {
        code: "NESTING_LIMIT",
        message: "the operation nests fields and fragments deeper than the gateway walks",
        measured: measures.nesting,
        limit: MAX_NESTING as u64,
    })
}

/// The limits `measures` exceed, in Apollo Router's order.
pub fn check(limits: &Limits, measures: &Measures) -> Vec<Exceeded> {
    let rules = [
        (
            limits.max_depth,
            measures.depth,
            "MAX_DEPTH_LIMIT",
            "Maximum depth limit exceeded in this operation",
        ),
        (
            limits.max_height,
            measures.height,
            "MAX_HEIGHT_LIMIT",
            "Maximum height (field count) limit exceeded in this operation",
        ),
        (
            limits.max_root_fields,
            measures.root_fields,
            "MAX_ROOT_FIELDS_LIMIT",
            "Maximum root fields limit exceeded in this operation",
        ),
        (
            limits.max_aliases,
            measures.aliases,
            "MAX_ALIASES_LIMIT",
            "Maximum aliases limit exceeded in this operation",
        ),
    ];
    rules
        .into_iter()
        .filter_map(|(limit, measured, code, message)| {
            let limit = u64::from(limit?);
            (measured > limit).then_some(Exceeded {
                code,
                message,
                measured,
                limit,
            })
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use apollo_compiler::Schema;

    fn measures(query: &str) -> Measures {
        let schema = Schema::parse_and_validate(
            "type Query { user(id: ID): User  me: User }  type User { id: ID  name: String  friends: [User] }",
            "s.graphql",
        )
        .unwrap();
        let doc = ExecutableDocument::parse_and_validate(&schema, query, "q.graphql").unwrap();
        let op = doc.operations.get(None).unwrap();
        measure(&doc, op)
    }

    #[test]
    fn root_field_is_depth_one() {
        assert_eq!(measures("{ me { id } }").depth, 2);
        assert_eq!(measures("{ __typename }").depth, 1);
        assert_eq!(measures("{ me { friends { friends { id } } } }").depth, 4);
    }

    #[test]
    fn fragments_count_where_spread() {
        let m = measures(
            "query { a: me { ...F } b: user(id: 1) { ...F } ... on Query { me { id } } }
             fragment F on User { n: name friends { id } }",
        );
        assert_eq!(m.root_fields, 3);
        assert_eq!(m.aliases, 4); // a, b, and n twice
        assert_eq!(m.depth, 3);
        // root: me, user (me twice counts once per set: the inline fragment's set is its own)
        // + F twice (name, friends + id) + the inline fragment's me + id
        assert_eq!(m.height, 2 + 3 + 3 + 1 + 1);
    }

    #[test]
    fn nesting_counts_fragments_and_is_bounded() {
        assert_eq!(measures("{ me { id } }").nesting, 2);
        assert_eq!(
            measures("{ ... on Query { ...F } } fragment F on Query { me { id } }").nesting,
            4
        );
        // Fragments spread inside fields inside fragments: `fragments` of them, each
        // `fields` deep, nest fragments × (fields + 1) + 3 (`me`, the last spread, `id`).
        let deep = |fragments: usize, fields: usize| {
            let mut q = String::from("{ me { ...F0 } }");
            for i in 0..fragments {
                let (open, close) = ("friends { ".repeat(fields), "} ".repeat(fields));
                q.push_str(&format!(" fragment F{i} on User {{ {open}...F{} {close}}}", i + 1));
            }
            q.push_str(&format!(" fragment F{fragments} on User {{ id }}"));
            q
        };
        // Validation stops at about 100 nested fragments (apollo-compiler's own bound), so
        // these are measured as parsed: the bound holds whatever validation lets through.
        let measures = |query: &str| {
            let schema = Schema::parse_and_validate(
                "type Query { me: User }  type User { id: ID  friends: [User] }",
                "s.graphql",
            )
            .unwrap();
            let doc = ExecutableDocument::parse(&schema, query, "q.graphql").unwrap();
            let op = doc.operations.get(None).unwrap();
            measure(&doc, op)
        };
        let at = measures(&deep(10, 40));
        assert_eq!(at.nesting, 413);
        assert!(too_nested(&at).is_none());
        // One over: the walk stops there and reports more than the bound.
        let over = measures(&deep(10, 50));
        assert!(over.nesting > MAX_NESTING as u64);
        assert_eq!(too_nested(&over).map(|e| e.code), Some("NESTING_LIMIT"));
        assert!(too_nested(&measures(&deep(20, 60))).is_some());
    }

    #[test]
    fn limits_are_inclusive() {
        let limits = Limits {
            max_depth: Some(2),
            max_aliases: Some(0),
            ..Default::default()
        };
        assert!(check(&limits, &measures("{ me { id } }")).is_empty());
        let over = check(&limits, &measures("{ x: me { friends { id } } }"));
        let codes: Vec<_> = over.iter().map(|e| e.code).collect();
        assert_eq!(codes, ["MAX_DEPTH_LIMIT", "MAX_ALIASES_LIMIT"]);
    }
}
