//! Property: for generated operations over the test schema — root fields of both
//! services, aliases, repeated fields, inline and named fragments, nested selections — the
//! gateway's split-and-merged answer is byte for byte the answer of the reference service
//! that implements the whole schema. `PROPTEST_CASES` runs more (default 24).

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::json;

use super::env::*;

/// One root field: which, aliased or not, a mask of its sub-fields, how it is wrapped.
type Spec = (usize, bool, u8, u8);

fn user_fields(mask: u8) -> String {
    let all = ["id", "name", "email", "friends { id name }", "__typename"];
    pick(&all, mask)
}

fn order_fields(mask: u8) -> String {
    let all = ["id", "item", "userId", "__typename"];
    pick(&all, mask)
}

fn pick(all: &[&str], mask: u8) -> String {
    let chosen: Vec<&str> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, f)| *f)
        .collect();
    if chosen.is_empty() {
        all[0].to_owned()
    } else {
        chosen.join(" ")
    }
}

/// The operation text for `specs`.
fn operation(specs: &[Spec]) -> String {
    let mut root = Vec::new();
    let mut fragments = Vec::new();
    for (i, (kind, alias, mask, wrap)) in specs.iter().enumerate() {
        let (name, args, selection) = match kind % 7 {
            0 => ("user", "(id: \"1\")", format!(" {{ {} }}", user_fields(*mask))),
            1 => ("user", "(id: \"2\")", format!(" {{ {} }}", user_fields(*mask))),
            2 => ("users", "", format!(" {{ {} }}", user_fields(*mask))),
            3 => ("order", "(id: \"o1\")", format!(" {{ {} }}", order_fields(*mask))),
            4 => ("order", "(id: \"o9\")", format!(" {{ {} }}", order_fields(*mask))),
            5 => ("orders", "(userId: \"2\")", format!(" {{ {} }}", order_fields(*mask))),
            _ => ("__typename", "", String::new()),
        };
        // Fields with arguments are always aliased, so no two conflict; the others may
        // repeat unaliased, and then merge.
        let key = if *alias || !args.is_empty() {
            format!("f{i}: ")
        } else {
            String::new()
        };
        let field = format!("{key}{name}{args}{selection}");
        match wrap % 3 {
            0 => root.push(field),
            1 => root.push(format!("... on Query {{ {field} }}")),
            _ => {
                root.push(format!("...F{i}"));
                fragments.push(format!("fragment F{i} on Query {{ {field} }}"));
            }
        }
    }
    format!("query Generated {{ {} }}\n{}", root.join(" "), fragments.join("\n"))
}

#[test]
fn merged_answers_equal_one_services() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let env = runtime.block_on(Env::start());
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(24);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let specs = prop::collection::vec((0..7usize, any::<bool>(), any::<u8>(), 0..3u8), 1..6);
    runner
        .run(&specs, |specs| {
            let query = operation(&specs);
            let body = json!({ "query": query });
            let (gateway, reference) =
                runtime.block_on(async { (env.post("/graphql", &body).await, env.post("/reference", &body).await) });
            prop_assert_eq!(reference.status, 200, "{}\n{}", query, reference.text());
            prop_assert_eq!(gateway.text(), reference.text(), "{}", query);
            Ok(())
        })
        .expect("the gateway answers like the reference service");
}
