//! One gateway for every test: two GraphQL services, a reference service with the whole
//! schema, a cluster nobody listens on, and one route per filter variant.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use weft_conformance::*;

/// What clients see: the two services' schemas together, plus fields on a dead cluster,
/// cost hints (Apollo's demand-control directives) and cache hints (`@cacheControl`).
pub const SCHEMA: &str = r#"
directive @cost(weight: Int!) on FIELD_DEFINITION | OBJECT | SCALAR | ENUM
directive @listSize(assumedSize: Int, slicingArguments: [String!]) on FIELD_DEFINITION
enum CacheControlScope { PUBLIC PRIVATE }
directive @cacheControl(maxAge: Int, scope: CacheControlScope, inheritMaxAge: Boolean) on FIELD_DEFINITION | OBJECT | INTERFACE | UNION
type Query {
  user(id: ID!): User
  users: [User!]! @cacheControl(maxAge: 60)
  slowUser(id: ID!, ms: Int!): User
  order(id: ID!): Order
  orders(userId: ID): [Order!]! @listSize(assumedSize: 5) @cacheControl(maxAge: 120)
  slowOrder(id: ID!, ms: Int!): Order
  down: String
  downNonNull: String!
  product(id: ID!): Product
}
type Product { id: ID!  title: String!  price: Int!  label: String!  seenAuth: String  reviews: [Review!]! }
type Review { id: ID!  stars: Int! }
type Mutation { setName(id: ID!, name: String!): Stamp!  createOrder(item: String!): Stamp! }
type User @cacheControl(maxAge: 30) { id: ID!  name: String!  email: String @cost(weight: 3)  friends(first: Int): [User!]! }
type Order @cacheControl(maxAge: 300, scope: PRIVATE) { id: ID!  item: String!  userId: ID! }
type Stamp { value: String!  started: Float!  finished: Float! }
"#;

const ROUTES: &str = r#"routes = { "Query.*" = "users", "Query.order" = "orders", "Query.orders" = "orders", "Query.slowOrder" = "orders", "Query.down" = "down", "Query.downNonNull" = "down", "Mutation.setName" = "users", "Mutation.createOrder" = "orders" }"#;

/// REST-backed fields (the `gql` filter only, at most 4 calls per operation): Query.product
/// and, nested, Product.reviews. `GET /calls` (no filter) says how many calls the REST
/// service served.
const REST: &str = r#"rest = {
  "Query.product" = { cluster = "catalog", path = "/products/{$args.id}", result_root = ["product"],
                      headers = { x-auth = "{$headers.authorization}" },
                      setters = { label = "{$parent.title} #{$parent.id}" } },
  "Product.reviews" = { cluster = "catalog", path = "/reviews?product={$parent.id}" },
}"#;

/// The documents of the safelist route.
pub const SAFE_QUERY: &str = "{ users { id } }";

/// A node GraphQL service; killed when dropped.
pub struct Service {
    pub addr: SocketAddr,
    _child: tokio::process::Child,
}

impl Service {
    pub async fn start(which: &str) -> Service {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("graphql");
        assert!(
            dir.join("node_modules/graphql-http").is_dir(),
            "{}: node_modules missing: run scripts/setup (npm ci)",
            dir.display()
        );
        // Bound on port 0: it says which port it got.
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("server.mjs"))
            .arg(which)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node (/usr/bin/node)");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(15), lines.next_line()).await;
        let port = match ready {
            Ok(Ok(Some(line))) => announced_port(&line, "listening "),
            _ => None,
        };
        let port = port.unwrap_or_else(|| panic!("the {which} GraphQL service did not start"));
        Service {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            _child: child,
        }
    }
}

pub struct Env {
    pub weft: Weft,
    /// The services live as long as the gateway.
    _services: [Service; 4],
}

/// A roomy CPU budget: these tests are about GraphQL, not the budget, and epoch
/// interruption counts wall time, which a loaded 2-core CI machine stretches past the
/// default 50 ms (the audit then saw a 500 where it expects a 400).
fn filter(name: &str, extra: &str) -> String {
    format!(
        "\n[[filters]]\nname = \"{name}\"\nwasm = \"{}\"\nconfig = {{ schema = '''{SCHEMA}''', {ROUTES}, {extra} }}\nlimits = {{ cpu = \"5s\" }}\n",
        plugins::GRAPHQL
    )
}

impl Env {
    pub async fn start() -> Env {
        let (users, orders, reference, catalog) = tokio::join!(
            Service::start("users"),
            Service::start("orders"),
            Service::start("all"),
            Service::start("rest")
        );
        let dead = dead_addr();
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("graphql-wasm-cache");
        let limits = "max_depth = 3, max_height = 6, max_aliases = 2, max_root_fields = 3, \
                      parser_max_tokens = 100, parser_max_recursion = 12";
        let filters = [
            filter(
                "gql",
                &format!("persisted_queries = {{ apq = true }}, timeout = \"2s\", rest_max_calls = 4, {REST}"),
            ),
            filter("limited", &format!("limits = {{ {limits} }}")),
            filter("warned", &format!("limits = {{ {limits}, warn_only = true }}")),
            filter(
                "open",
                "introspection = true, csrf = { enabled = false }, batching = { enabled = true, max_size = 3 }, \
                 include_subgraph_errors = true",
            ),
            filter("costly", "limits = { max_cost = 21 }"),
            filter(
                "safe",
                &format!("persisted_queries = {{ safelist = ['''{SAFE_QUERY}'''] }}"),
            ),
        ]
        .concat();
        let config = Config::new()
            .top(&format!("[wasm]\ncache_dir = \"{}\"", cache.display()))
            .cluster("users", &[users.addr])
            .cluster("orders", &[orders.addr])
            .cluster("reference", &[reference.addr])
            .cluster("catalog", &[catalog.addr])
            .cluster("down", &[dead])
            .filters(&filters)
            .route("gql", "path_prefix = \"/graphql\"", "users", &["gql"], "")
            .route("limited", "path_prefix = \"/limited\"", "users", &["limited"], "")
            .route("warned", "path_prefix = \"/warned\"", "users", &["warned"], "")
            .route("open", "path_prefix = \"/open\"", "users", &["open"], "")
            .route("safe", "path_prefix = \"/safe\"", "users", &["safe"], "")
            .route("costly", "path_prefix = \"/costly\"", "users", &["costly"], "")
            .route("reference", "path_prefix = \"/reference\"", "reference", &[], "")
            .route("calls", "path_exact = \"/calls\"", "catalog", &[], "")
            .to_string();
        let weft = Weft::start(&config).await;
        Env {
            weft,
            _services: [users, orders, reference, catalog],
        }
    }

    /// POSTs a GraphQL request (`application/json`, which also passes the CSRF check).
    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_with(
            path,
            body.to_string(),
            &[("accept", "application/graphql-response+json")],
        )
        .await
    }

    pub async fn post_with(&self, path: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::post(self.weft.url(path));
        let mut has_type = false;
        for (name, value) in headers {
            has_type |= name.eq_ignore_ascii_case("content-type");
            req = req.header(*name, *value);
        }
        if !has_type {
            req = req.header("content-type", "application/json");
        }
        send(&http1_client(), req.body(Full::new(body.into())).expect("request")).await
    }

    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::builder().method(method).uri(self.weft.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        send(&http1_client(), req.body(Full::new(Bytes::new())).expect("request")).await
    }

    /// GET with the query string built from `params` (and the CSRF preflight header).
    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> Reply {
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        self.request(
            "GET",
            &format!("{path}?{}", query.join("&")),
            &[
                ("apollo-require-preflight", "true"),
                ("accept", "application/graphql-response+json"),
            ],
        )
        .await
    }
}

pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// SHA-256 in hex, by `sha256sum` (not the plugin's code).
pub fn sha256_hex(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

/// The `extensions.code` of every error.
pub fn codes(reply: &Reply) -> Vec<String> {
    let body = reply.json();
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["extensions"]["code"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}
