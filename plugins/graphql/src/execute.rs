//! Sending a prepared operation: rerouted whole to one cluster, or split into one
//! operation per cluster (queries at once, mutation runs in order) and the answers merged
//! with the root fields the gateway answers itself (`__typename`, introspection,
//! REST-backed fields).

use std::collections::HashMap;

use apollo_compiler::ExecutableDocument;
use apollo_compiler::executable::{Operation, OperationType};
use apollo_compiler::validation::Valid;
use serde_json::{Value, json};
use weft_sdk::callout::{Callout, CalloutResponse, send_all};
use weft_sdk::{Decision, Reply, Request, metrics};

use crate::merge::{self, Answer};
use crate::plan::{self, Owner, Part, RootField};
use crate::transport::Forwarded;
use crate::{Graphql, Prepared, cache_control, error, rest};

impl Graphql {
    /// Every root field goes to one cluster: the request goes there by reroute, so the
    /// proxy streams the answer back with no copy through the sandbox and the route's
    /// timeout. It carries only what the gateway validated, rebuilt: a GET's query string
    /// or a POST's body holds exactly the parameters parsed (no parameter or JSON key the
    /// gateway did not read, no `?query=` on a POST), the text from the persisted-query
    /// store when the client sent a hash, and, when `@skip`/`@include` left root fields
    /// out, the operation with only the fields that run (the others' service may not know
    /// them).
    ///
    /// Also returns, for a POST forwarded, the body it sent instead of `original` (`None`
    /// inside when `original` went on untouched): what a repeat does again.
    pub(crate) fn forward(
        &self,
        request: &mut Request<'_>,
        cluster: &str,
        prepared: &Prepared,
        path: &str,
        is_get: bool,
        original: &[u8],
    ) -> (Decision, Option<Option<Vec<u8>>>) {
        let params = &prepared.params;
        // For a POST: the body sent on, `None` inside when it is the client's own.
        let mut sent = None;
        let pruned = prepared
            .pruned
            .then(|| {
                plan::split(
                    &prepared.document,
                    &prepared.operation,
                    &prepared.fields,
                    &params.variables,
                    &prepared.coerced,
                )
                .pop()
            })
            .flatten();
        let forwarded = match &pruned {
            Some(part) => Forwarded {
                query: &part.query,
                operation_name: part.operation_name.as_deref(),
                variables: &part.variables,
                extensions: &params.extensions,
            },
            None => Forwarded {
                query: params.query.as_deref().unwrap_or_default(),
                operation_name: params.operation_name.as_deref(),
                variables: &params.variables,
                extensions: &params.extensions,
            },
        };
        let rebuilt = if is_get {
            forwarded
                .query_string()
                .map_err(|e| e.to_string())
                .and_then(|query| request.set_path(&format!("{}?{query}", self.config.path)))
                .and_then(|()| {
                    // A GET's body is not GraphQL's; none goes on.
                    let has_body =
                        request.headers().has("content-length") || request.headers().has("transfer-encoding");
                    if has_body { request.set_body(b"") } else { Ok(()) }
                })
        } else {
            let set_path = if path == self.config.path {
                Ok(())
            } else {
                request.set_path(&self.config.path)
            };
            set_path
                .and_then(|()| forwarded.body().map_err(|e| e.to_string()))
                .and_then(|body| {
                    // Most clients send exactly what the gateway would rebuild: then the
                    // body stays as it is, and crosses the boundary once, not twice.
                    if body.as_bytes() == original {
                        sent = Some(None);
                        return Ok(());
                    }
                    request.set_body(body.as_bytes())?;
                    sent = Some(Some(body.into_bytes()));
                    Ok(())
                })
        };
        match rebuilt.and_then(|()| self.plain_answer(request)) {
            Ok(()) => (Decision::Reroute(cluster.to_owned()), sent),
            Err(e) => (
                Reply::new(500)
                    .body(format!("graphql: cannot rebuild the request: {e}\n"))
                    .into(),
                None,
            ),
        }
    }

    /// A rerouted answer is read for errors to redact (`on_response`), so it must come as
    /// the service's plain bytes: a client's `Accept-Encoding: gzip` would otherwise have
    /// the service compress it, and errors in a compressed body go through unseen.
    pub(crate) fn plain_answer(&self, request: &mut Request<'_>) -> Result<(), String> {
        if self.config.include_subgraph_errors {
            return Ok(());
        }
        Ok(request.set_header("accept-encoding", "identity")?)
    }

    fn callout(&self, request: &Request<'_>, body: String, accept: &str) -> Callout {
        let mut callout = Callout::new("POST", self.config.path.clone())
            .header("content-type", "application/json")
            .header("accept", accept)
            .timeout(self.config.timeout)
            .body(body);
        for name in &self.config.forward_headers {
            for value in request.headers().get_all(name) {
                callout = callout.header(name.clone(), value);
            }
        }
        callout
    }

    /// Several clusters (or the gateway itself): one operation per cluster, queries at
    /// once, mutation runs one after the other; then one merged answer.
    /// The merged answer, and its `Cache-Control` from the schema's `@cacheControl` hints.
    pub(crate) fn execute(&self, request: &Request<'_>, prepared: &Prepared) -> (String, Option<String>) {
        let Prepared {
            params,
            document,
            operation,
            coerced,
            fields,
            ..
        } = prepared;
        let parts = plan::split(document, operation, fields, &params.variables, coerced);
        let callouts: Vec<(&str, Callout)> = parts
            .iter()
            .map(|part| {
                (
                    part.cluster.as_str(),
                    self.callout(request, part_body(part), PARTS_ACCEPT),
                )
            })
            .collect();
        let parsed: Vec<merge::Parsed> = if operation.operation_type == OperationType::Mutation {
            // The spec executes mutation root fields serially; a run on one cluster is one
            // operation (that cluster runs it serially), runs go one after the other.
            let mut out = Vec::with_capacity(parts.len());
            let mut stopped = false;
            for ((cluster, callout), part) in callouts.into_iter().zip(&parts) {
                let answer = if stopped {
                    Answer::NotSent
                } else {
                    to_answer(callout.send(cluster))
                };
                let parsed = merge::parse(answer);
                stopped = stopped || merge::nulls_non_null(&parsed, part, fields);
                out.push(parsed);
            }
            out
        } else {
            send_all(callouts)
                .into_iter()
                .map(|a| merge::parse(to_answer(a)))
                .collect()
        };

        let failed = parsed.iter().filter(|p| p.failed()).count();
        if failed > 0 {
            metrics::counter_add("subrequest_errors", failed as u64);
        }
        let (gateway, gateway_errors) =
            self.gateway_fields(document, operation, fields, coerced, request.headers().entries());
        // An answer with errors is never cached.
        let cacheable = gateway_errors.is_empty() && !parsed.iter().any(merge::Parsed::has_errors);
        let cache_control = cacheable
            .then(|| cache_control::policy(&self.config.schema, document, operation).header())
            .flatten();
        (
            merge::merge(
                fields,
                &parts,
                &parsed,
                &gateway,
                gateway_errors,
                self.config.include_subgraph_errors,
            ),
            cache_control,
        )
    }

    /// The root fields the gateway answers: `__typename`, `__schema`/`__type` when
    /// introspection is on, and REST-backed fields (apollo-compiler's execution engine,
    /// resolving by callouts; one after the other, after the clusters' parts).
    fn gateway_fields(
        &self,
        document: &Valid<ExecutableDocument>,
        operation: &Operation,
        fields: &[RootField],
        coerced: &Valid<crate::plan::Coerced>,
        client_headers: Vec<(String, String)>,
    ) -> (HashMap<String, String>, Vec<Value>) {
        let mut values = HashMap::new();
        let mut errors = Vec::new();
        let root_type = operation.selection_set.ty.as_str();
        for field in fields.iter().filter(|f| f.owner == Owner::Gateway) {
            if field.name == "__typename" {
                values.insert(field.key.clone(), Value::String(root_type.to_owned()).to_string());
            }
        }
        // `__typename` alone needs no execution; introspection and REST-backed fields do.
        if !fields
            .iter()
            .any(|f| f.owner == Owner::Gateway && f.name != "__typename")
        {
            return (values, errors);
        }
        let schema = &self.config.schema;
        let timeout = self.config.timeout;
        let fetch = |cluster: &str, method: &str, path: &str, headers: Vec<(String, String)>| {
            let mut callout = Callout::new(method, path).timeout(timeout);
            for (name, value) in headers {
                callout = callout.header(name, value);
            }
            callout
                .send(cluster)
                .map(|r| (r.status, r.body))
                .map_err(|e| e.to_string())
        };
        let rest = rest::Rest {
            schema,
            fields: &self.config.rest,
            headers: client_headers,
            details: self.config.include_subgraph_errors,
            max_calls: self.config.rest_max_calls,
            calls: Default::default(),
            fetch: &fetch,
        };
        let root = rest::Root {
            ty: root_type.to_owned(),
            rest: &rest,
        };
        let introspects = fields.iter().any(|f| f.name == "__schema" || f.name == "__type");
        let result = if introspects {
            apollo_compiler::introspection::check_max_depth(document, operation)
        } else {
            Ok(())
        }
        .and_then(|()| {
            apollo_compiler::resolvers::Execution::new(schema, document)
                .operation(operation)
                .coerced_variable_values(coerced)
                .enable_schema_introspection(self.config.introspection)
                .execute_sync(&root)
        });
        match result {
            Ok(response) => {
                if let Some(data) = response.data {
                    for (key, value) in data.iter() {
                        let ours = fields
                            .iter()
                            .any(|f| f.key == key.as_str() && f.owner == Owner::Gateway);
                        if ours {
                            values.insert(
                                key.as_str().to_owned(),
                                serde_json::to_string(value).unwrap_or_else(|_| "null".into()),
                            );
                        }
                    }
                }
                for e in response.errors {
                    errors.push(serde_json::to_value(e).unwrap_or(Value::Null));
                }
            }
            Err(e) => errors.push(error(e.message().to_string(), "GATEWAY_EXECUTION_FAILED")),
        }
        (values, errors)
    }
}

/// What the parts of a split operation ask for: either type parses the same.
const PARTS_ACCEPT: &str = "application/graphql-response+json, application/json;q=0.9";

fn part_body(part: &Part) -> String {
    json!({
        "query": part.query,
        "operationName": part.operation_name,
        "variables": part.variables,
    })
    .to_string()
}

fn to_answer(result: Result<CalloutResponse, weft_sdk::callout::CalloutError>) -> Answer {
    match result {
        Ok(response) => Answer::Body {
            status: response.status,
            body: response.body,
        },
        Err(e) => Answer::Failed(e.to_string()),
    }
}
