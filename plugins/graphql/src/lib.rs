//! A GraphQL endpoint for Weft: GraphQL over HTTP, parsing and validation against the
//! schema in the config before any upstream sees a request, Apollo Router's operation
//! limits, persisted queries, and function routing — each root field answered by the
//! cluster the config maps it to, an operation spanning several clusters split into one
//! operation per cluster and the answers merged.
//!
//! The pure logic (transport, limits, plan, merge) has no SDK dependency and is
//! unit-tested natively; this file wires it to the request.

pub mod apq;
pub mod cache_control;
pub mod config;
pub mod cost;
mod execute;
pub mod forward_cache;
pub mod limits;
pub mod merge;
pub mod operation;
pub mod plan;
pub mod rest;
pub mod transport;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use apollo_compiler::executable::{Operation, OperationType};
use apollo_compiler::parser::Parser;
use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Node};
use serde_json::{Value, json};
use weft_sdk::{Decision, Filter, Options, Phases, Reply, Request, Response, ResponseDecision, kv, log, metrics};

use crate::config::{Config, RawConfig};
use crate::forward_cache::{Forward, ForwardCache};
use crate::operation::{OperationLabels, operations_counter};
use crate::plan::{Coerced, Owner, RootField};
use crate::transport::{HttpError, MediaType, Params};

struct Graphql {
    config: Config,
    /// Validated documents by SHA-256 of their text, oldest first out.
    cache: RefCell<DocumentCache>,
    /// Decisions for POSTs forwarded whole, by the exact request (`forward_cache`).
    forwards: RefCell<ForwardCache>,
}

#[derive(Default)]
struct DocumentCache {
    documents: HashMap<String, Arc<Valid<ExecutableDocument>>>,
    /// Hash and text length, oldest first.
    order: VecDeque<(String, usize)>,
    /// The cached documents' text, in bytes.
    text_bytes: usize,
}

/// The cache holds at most this much query text per instance: a parsed document takes
/// many times its text, and an instance's memory is capped (`limits.memory`, 16 MiB by
/// default), so the cache is bounded by size as well as by count.
const CACHE_TEXT_BYTES: usize = 256 * 1024;

/// A request ready to go: validated, within the limits, its root fields' owners known.
struct Prepared {
    params: Params,
    document: Arc<Valid<ExecutableDocument>>,
    operation: Node<Operation>,
    /// The variables as the service will read them (defaults applied).
    coerced: Valid<Coerced>,
    fields: Vec<RootField>,
    /// `@skip`/`@include` left out root selections the document asks for.
    pruned: bool,
}

/// How a request ends before or instead of reaching a cluster.
enum Stop {
    /// Refused at the HTTP layer (method, media type, body…).
    Http(HttpError),
    /// A GraphQL request error: no `data`; 400 for graphql-response+json, 200 for json.
    Request(Vec<Value>),
    /// A request error with a fixed status (APQ hash mismatch: 400 for both types).
    RequestStatus(u16, Vec<Value>),
}

fn error(message: impl Into<String>, code: &str) -> Value {
    json!({ "message": message.into(), "extensions": { "code": code } })
}

impl Filter for Graphql {
    type Config = RawConfig;

    fn init(raw: RawConfig) -> Result<Self, String> {
        let config = Config::new(raw)?;
        // As many entries as the document cache, within the same text budget.
        let forwards = ForwardCache::new(config.document_cache, CACHE_TEXT_BYTES);
        Ok(Graphql {
            config,
            cache: RefCell::new(DocumentCache::default()),
            forwards: RefCell::new(forwards),
        })
    }

    fn options(&self) -> Options {
        // A rerouted operation's answer comes straight from its service: to redact its
        // errors (the default), this filter reads that answer too.
        let redact = !self.config.include_subgraph_errors;
        Options {
            phases: if redact { Phases::BOTH } else { Phases::REQUEST },
            request_body: true,
            response_body: redact,
        }
    }

    /// A service's own answer (an operation rerouted whole) keeps of its errors only what
    /// a client may see, as the answers this filter builds do ([`merge::redact_answer`]).
    fn on_response(&self, response: &mut Response<'_>) -> ResponseDecision {
        // Errors in an encoded body cannot be seen (the request asked for the plain bytes,
        // `Graphql::plain_answer`; a service that encodes anyway is not trusted to have
        // no errors in it): fail closed.
        if let Some(coding) = response.header("content-encoding")
            && !coding.trim().eq_ignore_ascii_case("identity")
        {
            return Reply::new(502)
                .body("subgraph answer is content-encoded and cannot be checked for errors to redact")
                .into();
        }
        if let Some(body) = response.body()
            && let Some(redacted) = merge::redact_answer(&body)
            && response.set_body(redacted.as_bytes()).is_err()
        {
            // Fail closed: an answer whose errors cannot be redacted is not sent.
            return Reply::new(502).body("subgraph answer could not be redacted").into();
        }
        ResponseDecision::Continue
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        let started = Instant::now();
        let accept = request.header("accept");
        let media = transport::negotiate(accept.as_deref());
        let mut seen = None;
        let outcome = match media {
            None => Err(Stop::Http(HttpError::new(
                406,
                "unsupported Accept: use application/graphql-response+json or application/json",
            ))),
            Some(media) => self.handle(request, media, &mut seen),
        };
        let decision = match outcome {
            Ok(decision) => decision,
            Err(stop) => {
                metrics::counter_add("rejected", 1);
                count_codes(&stop, seen.as_ref());
                reply(media.unwrap_or(MediaType::Json), stop).into()
            }
        };
        // The gateway's own time: parsing, validation, and for a split operation the
        // calls; for a rerouted one the service's time is the proxy's upstream metrics.
        let seconds = started.elapsed().as_secs_f64();
        metrics::histogram_observe("request_phase_seconds", seconds);
        if let Some(operation) = seen {
            operation.count();
            operation.observe(seconds);
        }
        decision
    }
}

/// `errors_<code>` per refusal: the codes are this filter's own (a bounded set), so the
/// metric names stay within the per-filter cap. With the operation known, also
/// `operation_errors{operation, type, code}`.
fn count_codes(stop: &Stop, operation: Option<&Rc<OperationLabels>>) {
    let codes: Vec<&str> = match stop {
        Stop::Http(e) => e.code.into_iter().collect(),
        Stop::Request(errors) | Stop::RequestStatus(_, errors) => {
            errors.iter().filter_map(|e| e["extensions"]["code"].as_str()).collect()
        }
    };
    for code in codes {
        metrics::counter_add(&format!("errors_{}", code.to_ascii_lowercase()), 1);
        if let Some(operation) = operation {
            operation.count_error(code);
        }
    }
}

fn reply(media: MediaType, stop: Stop) -> Reply {
    let (status, headers, errors) = match stop {
        Stop::Http(e) => {
            let mut err = json!({ "message": e.message });
            if let Some(code) = e.code {
                err["extensions"] = json!({ "code": code });
            }
            (e.status, e.headers, vec![err])
        }
        Stop::Request(errors) => {
            let status = match media {
                MediaType::GraphqlResponse => 400,
                MediaType::Json => 200,
            };
            (status, Vec::new(), errors)
        }
        Stop::RequestStatus(status, errors) => (status, Vec::new(), errors),
    };
    let mut reply = Reply::new(status)
        .header("content-type", media.content_type())
        .body(json!({ "errors": errors }).to_string());
    for (name, value) in headers {
        reply = reply.header(name, value);
    }
    reply
}

impl Graphql {
    fn handle(
        &self,
        request: &mut Request<'_>,
        media: MediaType,
        seen: &mut Option<Rc<OperationLabels>>,
    ) -> Result<Decision, Stop> {
        let method = request.method();
        let is_get = match method.as_str() {
            "GET" => true,
            "POST" => false,
            _ => return Err(Stop::Http(transport::method_not_allowed("GET, POST"))),
        };
        let content_type = request.header("content-type");
        if self.config.csrf.enabled {
            // The headers are asked for only when the content type would not make a
            // browser preflight (a host call each).
            let preflighted = || {
                self.config
                    .csrf
                    .required_headers
                    .iter()
                    .any(|h| request.headers().has(h))
            };
            transport::csrf_check(if is_get { None } else { content_type.as_deref() }, preflighted)
                .map_err(Stop::Http)?;
        }
        let path = request.path();
        let body = if is_get {
            Vec::new()
        } else {
            request.body().unwrap_or_default()
        };
        // Missing and empty content types are refused below, so never cached under "".
        let type_key = content_type.as_deref().unwrap_or_default();
        if !is_get && let Some(hit) = self.forwards.borrow().get(type_key, &body) {
            return Ok(self.forward_again(request, hit, &path, seen));
        }
        let params = if is_get {
            transport::parse_get(&path).map_err(Stop::Http)?
        } else {
            match transport::parse_post(content_type.as_deref(), &body, self.config.batch_max).map_err(Stop::Http)? {
                transport::Body::One(params) => params,
                transport::Body::Batch(batch) => {
                    metrics::counter_add("batches", 1);
                    return Ok(self.batch(request, media, batch).into());
                }
            }
        };
        // Only a decision that depends on the request alone, and leaves nothing else to
        // do, may be replayed: a hash-only persisted query depends on the KV store, a
        // registering one writes to it, and with `warn_only` an operation over a limit is
        // logged and counted each time.
        let cacheable = !is_get && !params.extensions.contains_key("persistedQuery") && !self.config.limits.warn_only;
        let prepared = self.prepare(params, is_get, seen)?;
        let mut clusters = prepared.fields.iter().filter_map(|f| match &f.owner {
            Owner::Cluster(c) => Some(c.as_str()),
            Owner::Gateway => None,
        });
        let first = clusters.next();
        let one_cluster = first.is_some_and(|c| clusters.all(|o| o == c));
        let all_remote = prepared.fields.iter().all(|f| f.owner != Owner::Gateway);
        if let Some(cluster) = first
            && one_cluster
            && all_remote
        {
            metrics::counter_add("forwarded", 1);
            let (decision, sent) = self.forward(request, cluster, &prepared, &path, is_get, &body);
            if cacheable
                && let Some(rebuilt) = sent
                && let Some(operation) = seen.as_ref()
            {
                let forward = Forward {
                    cluster: cluster.to_owned(),
                    rebuilt,
                    operation: operation.clone(),
                };
                self.forwards.borrow_mut().insert(type_key, &body, forward);
            }
            return Ok(decision);
        }
        metrics::counter_add("split", 1);
        let (body, cache_control) = self.execute(request, &prepared);
        let mut reply = Reply::new(200).header("content-type", media.content_type()).body(body);
        if let Some(value) = cache_control {
            reply = reply.header("cache-control", value);
        }
        Ok(reply.into())
    }

    /// A repeat of a request forwarded before: the same decision, the same metrics as
    /// [`prepare`](Self::prepare) and the forward counted, without parsing anything.
    fn forward_again(
        &self,
        request: &mut Request<'_>,
        hit: &Forward,
        path: &str,
        seen: &mut Option<Rc<OperationLabels>>,
    ) -> Decision {
        metrics::counter_add("operations", 1);
        metrics::counter_add(operations_counter(hit.operation.kind()), 1);
        metrics::counter_add("forwarded", 1);
        *seen = Some(hit.operation.clone());
        let rebuilt = if path == self.config.path {
            Ok(())
        } else {
            request.set_path(&self.config.path)
        };
        let rebuilt = match &hit.rebuilt {
            Some(body) => rebuilt.and_then(|()| request.set_body(body)),
            None => rebuilt,
        };
        match rebuilt.and_then(|()| self.plain_answer(request)) {
            Ok(()) => Decision::Reroute(hit.cluster.clone()),
            Err(e) => Reply::new(500)
                .body(format!("graphql: cannot rebuild the request: {e}\n"))
                .into(),
        }
    }

    /// A batch (a JSON array): each operation runs as if sent alone (one after the other;
    /// each one's parts at once), and the answer is the array of their answers.
    fn batch(&self, request: &Request<'_>, media: MediaType, batch: Vec<Params>) -> Reply {
        let answers: Vec<String> = batch
            .into_iter()
            .map(|params| {
                let mut seen = None;
                let answer = match self.prepare(params, false, &mut seen) {
                    Ok(prepared) => self.execute(request, &prepared).0,
                    Err(stop) => {
                        metrics::counter_add("rejected", 1);
                        count_codes(&stop, seen.as_ref());
                        String::from_utf8_lossy(&reply(media, stop).body).into_owned()
                    }
                };
                if let Some(operation) = seen {
                    operation.count();
                }
                answer
            })
            .collect();
        let body = format!("[{}]", answers.join(","));
        Reply::new(200).header("content-type", media.content_type()).body(body)
    }

    /// Everything between the parameters and the clusters: persisted queries, parsing and
    /// validation, the operation, limits, introspection, and who answers each root field.
    fn prepare(
        &self,
        mut params: Params,
        is_get: bool,
        seen: &mut Option<Rc<OperationLabels>>,
    ) -> Result<Prepared, Stop> {
        let register = self.persisted(&mut params)?;
        let Some(query) = params.query.clone() else {
            return Err(Stop::Http(HttpError::new(400, "Must provide query string.")));
        };

        let document = self.document(&query)?;
        if let Some(hash) = register {
            // Registered only once it validates, so the store holds no junk.
            if let Err(e) = kv::set(&apq::key(&hash), query.as_bytes(), Some(self.config.persisted.ttl)) {
                log::warn(&format!("APQ registration failed: {e}"));
            }
        }
        let operation = document
            .operations
            .get(params.operation_name.as_deref())
            .map_err(|e| {
                let code = if params.operation_name.is_some() {
                    "GRAPHQL_UNKNOWN_OPERATION_NAME"
                } else {
                    "GRAPHQL_VALIDATION_FAILED"
                };
                Stop::Request(vec![error(e.message().to_string(), code)])
            })?
            .clone();
        let kind = match operation.operation_type {
            OperationType::Query => "query",
            OperationType::Mutation => "mutation",
            OperationType::Subscription => "subscription",
        };
        let name = operation.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        *seen = Some(Rc::new(OperationLabels::new(name, kind)));
        if is_get && operation.operation_type != OperationType::Query {
            return Err(Stop::Http(transport::method_not_allowed("POST")));
        }
        let coerced = self.coerce(&operation, &params.variables)?;
        self.check_limits(&document, &operation, &coerced)?;

        let Some(plan::Roots { fields, pruned }) = plan::root_fields(
            &self.config.schema,
            &document,
            &operation,
            &self.config.routing,
            &coerced,
        ) else {
            // `check_limits` refused deeper documents: a walk that stopped short must not
            // route what it did not see.
            return Err(Stop::Request(vec![error(
                "the operation nests too deep",
                "NESTING_LIMIT",
            )]));
        };
        let introspects = fields.iter().any(|f| f.name == "__schema" || f.name == "__type");
        if introspects && !self.config.introspection {
            return Err(Stop::Request(vec![error(
                "introspection has been disabled",
                "INTROSPECTION_DISABLED",
            )]));
        }
        metrics::counter_add("operations", 1);
        metrics::counter_add(operations_counter(kind), 1);
        Ok(Prepared {
            params,
            document,
            operation,
            coerced,
            fields,
            pruned,
        })
    }

    /// `CoerceVariableValues()`: the values a service will run the operation with. A value
    /// of the wrong type, or a required one missing, is a request error here as it would
    /// be there.
    fn coerce(
        &self,
        operation: &Operation,
        variables: &serde_json::Map<String, Value>,
    ) -> Result<Valid<Coerced>, Stop> {
        if operation.variables.is_empty() {
            // Nothing to coerce: sent values the operation does not declare are ignored.
            return Ok(Valid::assume_valid(Coerced::new()));
        }
        let raw: Coerced = serde_json::from_value(Value::Object(variables.clone()))
            .map_err(|e| Stop::Request(vec![error(e.to_string(), "VALIDATION_INVALID_TYPE_VARIABLE")]))?;
        apollo_compiler::request::coerce_variable_values(&self.config.schema, operation, &raw)
            .map_err(|e| Stop::Request(vec![error(e.message().to_string(), "VALIDATION_INVALID_TYPE_VARIABLE")]))
    }

    /// The document for this text: from the cache, or parsed within the parser limits and
    /// validated against the schema.
    fn document(&self, query: &str) -> Result<Arc<Valid<ExecutableDocument>>, Stop> {
        let hash = apq::sha256_hex(query);
        if let Some(doc) = self.cache.borrow().documents.get(&hash) {
            return Ok(doc.clone());
        }
        let limits = &self.config.limits;
        let mut parser = Parser::new();
        if let Some(n) = limits.parser_max_tokens {
            parser = parser.token_limit(n);
        }
        if let Some(n) = limits.parser_max_recursion {
            parser = parser.recursion_limit(n);
        }
        let parsed = parser.parse_executable(&self.config.schema, query, "query.graphql");
        let document = match parsed {
            Ok(doc) => doc,
            Err(with_errors) => {
                let errors = with_errors
                    .errors
                    .iter()
                    .map(|d| {
                        let mut e = serde_json::to_value(d.to_json()).unwrap_or_else(|_| json!({}));
                        let message = e["message"].as_str().unwrap_or_default().to_owned();
                        // apollo-parser's messages; the codes are this plugin's own.
                        let code = if message.starts_with("token limit reached") {
                            "PARSER_TOKEN_LIMIT"
                        } else if message.starts_with("parser recursion limit reached") {
                            "PARSER_RECURSION_LIMIT"
                        } else if message.starts_with("syntax error") {
                            "GRAPHQL_PARSE_FAILED"
                        } else {
                            "GRAPHQL_VALIDATION_FAILED"
                        };
                        e["extensions"] = json!({ "code": code });
                        e
                    })
                    .collect();
                return Err(Stop::Request(errors));
            }
        };
        let valid = document.validate(&self.config.schema).map_err(|with_errors| {
            Stop::Request(
                with_errors
                    .errors
                    .iter()
                    .map(|d| {
                        let mut e = serde_json::to_value(d.to_json()).unwrap_or_else(|_| json!({}));
                        e["extensions"] = json!({ "code": "GRAPHQL_VALIDATION_FAILED" });
                        e
                    })
                    .collect(),
            )
        })?;
        let valid = Arc::new(valid);
        let capacity = self.config.document_cache;
        // A document over a quarter of the budget is not worth evicting others for.
        if capacity > 0 && query.len() <= CACHE_TEXT_BYTES / 4 {
            let mut cache = self.cache.borrow_mut();
            while cache.order.len() >= capacity || cache.text_bytes + query.len() > CACHE_TEXT_BYTES {
                let Some((old, len)) = cache.order.pop_front() else {
                    break;
                };
                cache.documents.remove(&old);
                cache.text_bytes -= len;
            }
            cache.order.push_back((hash.clone(), query.len()));
            cache.text_bytes += query.len();
            cache.documents.insert(hash, valid.clone());
        }
        Ok(valid)
    }

    /// Resolves persisted queries in place. Returns the hash to register once the
    /// document validates (APQ with both a hash and the text).
    fn persisted(&self, params: &mut Params) -> Result<Option<String>, Stop> {
        let settings = &self.config.persisted;
        let hash = match apq::extension(&params.extensions) {
            apq::Extension::None => None,
            apq::Extension::Invalid(why) => {
                return Err(Stop::RequestStatus(400, vec![error(why, "PERSISTED_QUERY_INVALID")]));
            }
            apq::Extension::Hash(h) => Some(h),
        };
        if let Some(list) = &settings.safelist {
            match (&params.query, hash) {
                (None, Some(hash)) => match list.get(&hash) {
                    Some(doc) => params.query = Some(doc.clone()),
                    None => {
                        return Err(Stop::Request(vec![error(
                            format!("Persisted query '{hash}' not found in the persisted query list"),
                            "PERSISTED_QUERY_NOT_IN_LIST",
                        )]));
                    }
                },
                (Some(query), _) => {
                    if !list.contains_key(&apq::sha256_hex(query)) {
                        return Err(Stop::Request(vec![error(
                            "The operation body was not found in the persisted query safelist",
                            "QUERY_NOT_IN_SAFELIST",
                        )]));
                    }
                }
                (None, None) => {}
            }
            return Ok(None);
        }
        let Some(hash) = hash else {
            return Ok(None);
        };
        if !settings.apq {
            return Err(Stop::Request(vec![error(
                "PersistedQueryNotSupported",
                "PERSISTED_QUERY_NOT_SUPPORTED",
            )]));
        }
        match &params.query {
            Some(query) => {
                if apq::sha256_hex(query) != hash {
                    return Err(Stop::RequestStatus(
                        400,
                        vec![error(
                            "provided sha does not match query",
                            "PERSISTED_QUERY_HASH_MISMATCH",
                        )],
                    ));
                }
                Ok(Some(hash))
            }
            None => match kv::get(&apq::key(&hash)) {
                Ok(Some(bytes)) => {
                    metrics::counter_add("apq_hits", 1);
                    params.query = Some(String::from_utf8_lossy(&bytes).into_owned());
                    Ok(None)
                }
                found => {
                    if let Err(e) = found {
                        log::warn(&format!("APQ lookup failed: {e}"));
                    }
                    metrics::counter_add("apq_misses", 1);
                    Err(Stop::Request(vec![error(
                        "PersistedQueryNotFound",
                        "PERSISTED_QUERY_NOT_FOUND",
                    )]))
                }
            },
        }
    }

    fn check_limits(
        &self,
        document: &ExecutableDocument,
        operation: &Operation,
        variables: &Coerced,
    ) -> Result<(), Stop> {
        let limits = &self.config.limits;
        let measures = limits::measure(document, operation);
        if let Some(e) = limits::too_nested(&measures) {
            metrics::counter_add("limit_nesting_limit", 1);
            log::info(&format!(
                "operation {:?} {}: {} > {}",
                operation.name.as_ref().map(|n| n.as_str()).unwrap_or(""),
                e.code,
                e.measured,
                e.limit
            ));
            return Err(Stop::Request(vec![error(e.message, e.code)]));
        }
        // (code, message, measured, limit)
        let mut over: Vec<(&str, String, String, String)> = limits::check(limits, &measures)
            .into_iter()
            .map(|e| {
                (
                    e.code,
                    e.message.to_owned(),
                    e.measured.to_string(),
                    e.limit.to_string(),
                )
            })
            .collect();
        if let Some(max) = limits.max_cost {
            let estimated = cost::estimate(
                &self.config.schema,
                document,
                operation,
                variables,
                &self.config.rest,
                f64::from(limits.default_list_size),
            );
            if estimated > max as f64 {
                over.push((
                    "COST_ESTIMATED_TOO_EXPENSIVE",
                    format!("query estimated cost {estimated} exceeded configured maximum {max}"),
                    estimated.to_string(),
                    max.to_string(),
                ));
            }
        }
        if over.is_empty() {
            return Ok(());
        }
        for (code, _, measured, limit) in &over {
            metrics::counter_add(&format!("limit_{}", code.to_ascii_lowercase()), 1);
            log::info(&format!(
                "operation {:?} {code}: {measured} > {limit}{}",
                operation.name.as_ref().map(|n| n.as_str()).unwrap_or(""),
                if limits.warn_only {
                    " (warn_only: let through)"
                } else {
                    ""
                }
            ));
        }
        if limits.warn_only {
            return Ok(());
        }
        Err(Stop::Request(
            over.into_iter()
                .map(|(code, message, ..)| error(message, code))
                .collect(),
        ))
    }
}

weft_sdk::export!(Graphql);
