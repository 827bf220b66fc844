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
use crate::transport::{self, MediaType, Params};
use crate::{Graphql, Prepared, Stop, cache_control, error, reply, rest};

impl Graphql {
    /// Every root field goes to one cluster: the request goes there as the client sent
    /// it — by reroute, so the proxy streams the answer back with no copy through the
    /// sandbox and the route's timeout — unless its text came from the persisted-query
    /// store, when the cluster is asked with the full text.
    pub(crate) fn forward(
        &self,
        request: &mut Request<'_>,
        cluster: &str,
        params: &Params,
        sent_query: bool,
        path: &str,
        is_get: bool,
    ) -> Decision {
        if sent_query {
            let (route_path, query_string) = match path.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (path, None),
            };
            if route_path != self.config.path {
                let target = match query_string {
                    Some(q) if is_get => format!("{}?{q}", self.config.path),
                    _ => self.config.path.clone(),
                };
                if let Err(e) = request.set_path(&target) {
                    return Reply::new(500)
                        .body(format!("graphql: cannot set the path: {e}\n"))
                        .into();
                }
            }
            return Decision::Reroute(cluster.to_owned());
        }
        let body = json!({
            "query": params.query,
            "operationName": params.operation_name,
            "variables": params.variables,
        });
        // The client's Accept goes along: the service's answer is passed through as is.
        let accept = request
            .header("accept")
            .unwrap_or_else(|| "application/json".to_owned());
        let answer = self.callout(request, body.to_string(), &accept).send(cluster);
        match answer {
            Ok(response) => pass_through(response),
            Err(e) => {
                let media = transport::negotiate(request.header("accept").as_deref()).unwrap_or(MediaType::Json);
                reply(
                    media,
                    Stop::RequestStatus(
                        502,
                        vec![json!({
                            "message": format!("HTTP fetch failed from '{cluster}': {e}"),
                            "extensions": { "code": "SUBREQUEST_HTTP_ERROR", "service": cluster },
                        })],
                    ),
                )
                .into()
            }
        }
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
            fields,
            ..
        } = prepared;
        let parts = plan::split(document, operation, fields, &params.variables);
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
            self.gateway_fields(document, operation, fields, params, request.headers().entries());
        // An answer with errors is never cached.
        let cacheable = gateway_errors.is_empty() && !parsed.iter().any(merge::Parsed::has_errors);
        let cache_control = cacheable
            .then(|| cache_control::policy(&self.config.schema, document, operation).header())
            .flatten();
        (
            merge::merge(fields, &parts, &parsed, &gateway, gateway_errors),
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
        params: &Params,
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
            fetch: &fetch,
        };
        let root = rest::Root {
            ty: root_type.to_owned(),
            rest: &rest,
        };
        let variables: apollo_compiler::response::JsonMap =
            serde_json::from_value(Value::Object(params.variables.clone())).unwrap_or_default();
        let introspects = fields.iter().any(|f| f.name == "__schema" || f.name == "__type");
        let result = apollo_compiler::request::coerce_variable_values(schema, operation, &variables).and_then(|vars| {
            if introspects {
                apollo_compiler::introspection::check_max_depth(document, operation)?;
            }
            apollo_compiler::resolvers::Execution::new(schema, document)
                .operation(operation)
                .coerced_variable_values(&vars)
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

/// The cluster's answer to a forwarded persisted query, as it came.
fn pass_through(response: CalloutResponse) -> Decision {
    let content_type = response.header("content-type");
    let mut reply = Reply::new(response.status).body(response.body);
    if let Some(ct) = content_type {
        reply = reply.header("content-type", ct);
    }
    reply.into()
}
