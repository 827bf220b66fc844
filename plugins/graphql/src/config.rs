//! The filter's config: parsed once at `init` into validated, immutable types. A schema
//! that does not validate, a routing key naming no root field, or a root field no cluster
//! answers refuses the config.

use std::collections::BTreeMap;
use std::time::Duration;

use apollo_compiler::Schema;
use apollo_compiler::validation::Valid;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The gateway's schema, in SDL: what clients see and are validated against.
    schema: String,
    /// `"Query.user" = "users"`, `"Query.*" = "users"`: which cluster answers each root field.
    routes: BTreeMap<String, String>,
    /// The path of the GraphQL endpoint on every cluster (default `/graphql`).
    #[serde(default = "default_path")]
    path: String,
    /// Timeout of each call to a cluster when an operation is split (default 5s).
    #[serde(default = "default_timeout")]
    timeout: String,
    /// Request headers copied onto the calls of a split operation.
    #[serde(default = "default_forward_headers")]
    forward_headers: Vec<String>,
    /// Answer `__schema` and `__type` (default false: refused with `INTROSPECTION_DISABLED`).
    #[serde(default)]
    introspection: bool,
    #[serde(default)]
    csrf: RawCsrf,
    #[serde(default)]
    limits: Limits,
    /// Validated documents remembered per instance, by hash (default 512; 0 = off).
    #[serde(default = "default_cache")]
    document_cache: usize,
    #[serde(default)]
    persisted_queries: RawPersisted,
    /// REST-backed fields: `"Query.product" = { cluster, path, result_root, setters }`.
    #[serde(default)]
    rest: BTreeMap<String, crate::rest::RestField>,
    /// REST calls one operation may make (default 50): identical calls are made once.
    #[serde(default = "default_rest_max_calls")]
    rest_max_calls: usize,
    /// Batched requests (a JSON array of operations), off by default.
    #[serde(default)]
    batching: RawBatching,
    /// Services' errors whole (extensions, the cluster's name, why a call failed) in the
    /// answers the gateway builds; off by default: message, path and code only.
    #[serde(default)]
    include_subgraph_errors: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBatching {
    #[serde(default)]
    enabled: bool,
    /// Operations per batch (default 16).
    max_size: Option<usize>,
}

fn default_path() -> String {
    "/graphql".to_owned()
}
fn default_timeout() -> String {
    "5s".to_owned()
}
fn default_forward_headers() -> Vec<String> {
    vec!["authorization".to_owned()]
}
fn default_cache() -> usize {
    512
}
fn default_rest_max_calls() -> usize {
    50
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCsrf {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default = "default_required_headers")]
    required_headers: Vec<String>,
}

impl Default for RawCsrf {
    fn default() -> Self {
        RawCsrf {
            enabled: true,
            required_headers: default_required_headers(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_required_headers() -> Vec<String> {
    vec![
        "x-apollo-operation-name".to_owned(),
        "apollo-require-preflight".to_owned(),
    ]
}

fn default_list_size() -> u32 {
    10
}

/// Protection limits, as Apollo Router names them; each is off unless set.
#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub max_depth: Option<u32>,
    pub max_height: Option<u32>,
    pub max_aliases: Option<u32>,
    pub max_root_fields: Option<u32>,
    /// Lexer tokens per document (the parser stops there: always enforced).
    pub parser_max_tokens: Option<usize>,
    /// Parser nesting (always enforced).
    pub parser_max_recursion: Option<usize>,
    /// Static cost (Apollo Router's demand control estimate; see `cost.rs`).
    pub max_cost: Option<u64>,
    /// The size assumed for a list field without `@listSize` or a slicing argument.
    #[serde(default = "default_list_size")]
    pub default_list_size: u32,
    /// Log and count operations over a limit instead of refusing them (not the parser's).
    #[serde(default)]
    pub warn_only: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: None,
            max_height: None,
            max_aliases: None,
            max_root_fields: None,
            parser_max_tokens: None,
            parser_max_recursion: None,
            max_cost: None,
            default_list_size: default_list_size(),
            warn_only: false,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPersisted {
    /// Automatic persisted queries (Apollo's protocol), kept in the shared KV store.
    #[serde(default)]
    apq: bool,
    /// How long a registered query is kept (default 24h).
    ttl: Option<String>,
    /// Only these documents run (no APQ registration): the safelist.
    #[serde(default)]
    safelist: Vec<String>,
}

pub struct Persisted {
    pub apq: bool,
    pub ttl: Duration,
    /// sha256 hex → document, when a safelist is configured.
    pub safelist: Option<BTreeMap<String, String>>,
}

pub struct Csrf {
    pub enabled: bool,
    pub required_headers: Vec<String>,
}

/// Root field → cluster, for each root operation type.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// (root type, field) → cluster.
    fields: BTreeMap<(String, String), String>,
    /// root type → cluster for the fields not named.
    wildcard: BTreeMap<String, String>,
    /// Root fields the gateway resolves itself (REST-backed).
    gateway: std::collections::BTreeSet<(String, String)>,
}

impl Routing {
    /// The cluster answering `type_name.field`.
    pub fn cluster(&self, type_name: &str, field: &str) -> Option<&str> {
        if self.gateway.contains(&(type_name.to_owned(), field.to_owned())) {
            return None;
        }
        self.fields
            .get(&(type_name.to_owned(), field.to_owned()))
            .or_else(|| self.wildcard.get(type_name))
            .map(String::as_str)
    }

    /// Routing from `"Type.field" = "cluster"` entries, checked against the schema.
    pub fn new(schema: &Schema, routes: &BTreeMap<String, String>) -> Result<Routing, String> {
        Routing::with_gateway_fields(schema, routes, Default::default())
    }

    /// Routing where `gateway` root fields are resolved by the gateway (REST-backed).
    pub fn with_gateway_fields(
        schema: &Schema,
        routes: &BTreeMap<String, String>,
        gateway: std::collections::BTreeSet<(String, String)>,
    ) -> Result<Routing, String> {
        let roots = root_types(schema);
        let mut routing = Routing {
            gateway,
            ..Routing::default()
        };
        for (key, cluster) in routes {
            let Some((ty, field)) = key.split_once('.') else {
                return Err(format!("routes: {key:?} is not \"Type.field\" or \"Type.*\""));
            };
            if cluster.is_empty() {
                return Err(format!("routes: {key:?} names an empty cluster"));
            }
            if !roots.iter().any(|r| r == ty) {
                return Err(format!(
                    "routes: {key:?}: {ty} is not a root operation type of the schema ({})",
                    roots.join(", ")
                ));
            }
            if field == "*" {
                routing.wildcard.insert(ty.to_owned(), cluster.clone());
            } else {
                let known = schema.get_object(ty).is_some_and(|o| o.fields.contains_key(field));
                if !known {
                    return Err(format!("routes: {key:?}: {ty} has no field {field:?}"));
                }
                routing
                    .fields
                    .insert((ty.to_owned(), field.to_owned()), cluster.clone());
            }
        }
        for ty in &roots {
            if let Some(object) = schema.get_object(ty) {
                for name in object.fields.keys() {
                    let rest = routing.gateway.contains(&(ty.clone(), name.to_string()));
                    if !rest && routing.cluster(ty, name).is_none() {
                        return Err(format!(
                            "routes: no cluster answers {ty}.{name} (add \"{ty}.{name}\" or \"{ty}.*\")"
                        ));
                    }
                }
            }
        }
        Ok(routing)
    }
}

fn root_types(schema: &Schema) -> Vec<String> {
    let def = &schema.schema_definition;
    [&def.query, &def.mutation]
        .into_iter()
        .flatten()
        .map(|n| n.name.to_string())
        .collect()
}

pub struct Config {
    pub schema: Valid<Schema>,
    pub routing: Routing,
    pub path: String,
    pub timeout: Duration,
    pub forward_headers: Vec<String>,
    pub introspection: bool,
    pub csrf: Csrf,
    pub limits: Limits,
    pub document_cache: usize,
    pub persisted: Persisted,
    /// REST-backed fields by (type, field).
    pub rest: BTreeMap<(String, String), crate::rest::RestField>,
    /// Operations per batch; `None`: batching off.
    pub batch_max: Option<usize>,
    pub include_subgraph_errors: bool,
    /// REST calls per operation.
    pub rest_max_calls: usize,
}

impl Config {
    pub fn new(raw: RawConfig) -> Result<Config, String> {
        let schema =
            Schema::parse_and_validate(raw.schema, "schema.graphql").map_err(|e| format!("schema: {}", e.errors))?;
        if schema.schema_definition.subscription.is_some() {
            return Err("schema: subscriptions are not supported".to_owned());
        }
        let mut rest = BTreeMap::new();
        for (key, field) in raw.rest {
            let Some((ty, name)) = key.split_once('.') else {
                return Err(format!("rest: {key:?} is not \"Type.field\""));
            };
            let known = schema.get_object(ty).is_some_and(|o| o.fields.contains_key(name));
            if !known {
                return Err(format!("rest: {key:?}: no such object field in the schema"));
            }
            if schema.schema_definition.mutation.as_ref().is_some_and(|m| m.name == ty) {
                return Err(format!("rest: {key:?}: REST-backed mutation fields are not supported"));
            }
            if field.cluster.is_empty() {
                return Err(format!("rest: {key:?} names an empty cluster"));
            }
            crate::rest::check(&key, &field)?;
            rest.insert((ty.to_owned(), name.to_owned()), field);
        }
        let query_type = schema.schema_definition.query.as_ref().map(|n| n.name.to_string());
        let gateway = rest
            .keys()
            .filter(|(ty, _)| Some(ty) == query_type.as_ref())
            .cloned()
            .collect();
        let routing = Routing::with_gateway_fields(&schema, &raw.routes, gateway)?;
        if !raw.path.starts_with('/') {
            return Err(format!("path {:?} must start with '/'", raw.path));
        }
        let timeout = plugin_common::duration::parse("timeout", &raw.timeout)?;
        let forward_headers = raw
            .forward_headers
            .iter()
            .map(|h| plugin_common::header::name("forward_headers", h))
            .collect::<Result<_, _>>()?;
        let required_headers = raw
            .csrf
            .required_headers
            .iter()
            .map(|h| plugin_common::header::name("csrf.required_headers", h))
            .collect::<Result<_, _>>()?;
        let ttl = match &raw.persisted_queries.ttl {
            Some(t) => plugin_common::duration::parse("persisted_queries.ttl", t)?,
            None => Duration::from_secs(24 * 3600),
        };
        let safelist = if raw.persisted_queries.safelist.is_empty() {
            None
        } else {
            if raw.persisted_queries.apq {
                return Err("persisted_queries: a safelist turns APQ registration off: drop `apq = true`".to_owned());
            }
            let mut list = BTreeMap::new();
            for doc in raw.persisted_queries.safelist {
                list.insert(crate::apq::sha256_hex(&doc), doc);
            }
            Some(list)
        };
        if raw.rest_max_calls == 0 {
            return Err("rest_max_calls must be at least 1".to_owned());
        }
        let batch_max = match (raw.batching.enabled, raw.batching.max_size) {
            (false, _) => None,
            (true, Some(0)) => return Err("batching.max_size must be at least 1".to_owned()),
            (true, size) => Some(size.unwrap_or(16)),
        };
        Ok(Config {
            rest,
            batch_max,
            include_subgraph_errors: raw.include_subgraph_errors,
            rest_max_calls: raw.rest_max_calls,
            schema,
            routing,
            path: raw.path,
            timeout,
            forward_headers,
            introspection: raw.introspection,
            csrf: Csrf {
                enabled: raw.csrf.enabled,
                required_headers,
            },
            limits: raw.limits,
            document_cache: raw.document_cache,
            persisted: Persisted {
                apq: raw.persisted_queries.apq,
                ttl,
                safelist,
            },
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    const SDL: &str = "type Query { a: Int  b: Int }  type Mutation { m: Int }";

    fn load(extra: serde_json::Value) -> Result<Config, String> {
        let mut raw = serde_json::json!({
            "schema": SDL,
            "routes": { "Query.*": "one", "Mutation.m": "two" },
        });
        for (k, v) in extra.as_object().unwrap() {
            raw[k] = v.clone();
        }
        Config::new(serde_json::from_value(raw).map_err(|e| e.to_string())?)
    }

    fn refused(extra: serde_json::Value) -> String {
        match load(extra) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        }
    }

    #[test]
    fn routes_cover_every_root_field_and_name_real_ones() {
        let config = load(serde_json::json!({})).unwrap();
        assert_eq!(config.routing.cluster("Query", "b"), Some("one"));
        assert_eq!(config.routing.cluster("Mutation", "m"), Some("two"));
        assert!(refused(serde_json::json!({"routes": {"Query.*": "one"}})).contains("Mutation.m"));
        assert!(
            refused(serde_json::json!({"routes": {"Query.*": "one", "Mutation.*": "two", "Query.zz": "x"}}))
                .contains("no field")
        );
        assert!(
            refused(serde_json::json!({"routes": {"Query.*": "one", "Mutation.*": "two", "User.a": "x"}}))
                .contains("root operation type")
        );
        assert!(refused(serde_json::json!({"schema": "type Query { a: Nope }"})).starts_with("schema:"));
    }

    #[test]
    fn rest_fields_are_checked() {
        let rest = |key: &str, path: &str| serde_json::json!({"rest": {key: {"cluster": "c", "path": path}}});
        let config = load(rest("Query.a", "/a/{$args.id}")).unwrap();
        assert_eq!(config.routing.cluster("Query", "a"), None, "the gateway answers it");
        assert!(refused(rest("Mutation.m", "/m")).contains("mutation"));
        assert!(refused(rest("Query.zz", "/z")).contains("no such"));
        assert!(refused(rest("Query.a", "/a/{$env.X}")).contains("unknown $env"));
        assert!(refused(rest("Query.a", "a")).contains("must start with '/'"));
    }

    #[test]
    fn persisted_and_batching_options() {
        assert!(
            refused(serde_json::json!({"persisted_queries": {"apq": true, "safelist": ["{ a }"]}}))
                .contains("safelist")
        );
        assert!(refused(serde_json::json!({"batching": {"enabled": true, "max_size": 0}})).contains("at least 1"));
        assert_eq!(
            load(serde_json::json!({"batching": {"enabled": true}}))
                .unwrap()
                .batch_max,
            Some(16)
        );
        assert!(refused(serde_json::json!({"limits": {"max_depht": 3}})).contains("unknown field"));
    }
}
