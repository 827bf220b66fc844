//! GraphQL over HTTP (the GraphQL foundation's spec, as graphql-http audits it): what a
//! request carries, which media type the answer uses, and the request errors that stop a
//! request before GraphQL sees it. Plain Rust, no SDK: unit-tested natively.

use serde_json::{Map, Value};

/// The media type of the answer, chosen from `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    /// `application/graphql-response+json`: request errors are 400 and carry no `data`.
    GraphqlResponse,
    /// `application/json`: the legacy type; GraphQL errors are 200.
    Json,
}

impl MediaType {
    pub fn content_type(self) -> &'static str {
        match self {
            MediaType::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        }
    }
}

/// A GraphQL request's parameters, from a POST body or a GET query string.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    pub query: Option<String>,
    pub operation_name: Option<String>,
    pub variables: Map<String, Value>,
    pub extensions: Map<String, Value>,
}

/// A request refused before GraphQL parsing: an HTTP status, extra headers, a message.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpError {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub message: String,
    /// Apollo Router's code when it has one (`CSRF_ERROR`…).
    pub code: Option<&'static str>,
}

impl HttpError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        HttpError {
            status,
            headers: Vec::new(),
            message: message.into(),
            code: None,
        }
    }
    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// Picks the answer's media type from `Accept`. No `Accept` means `application/json` (the
/// spec's rule for legacy clients); `*/*` and `application/*` too. `None`: 406.
pub fn negotiate(accept: Option<&str>) -> Option<MediaType> {
    let Some(accept) = accept else {
        return Some(MediaType::Json);
    };
    let mut best: Option<MediaType> = None;
    // Compared in place (no lower-cased or space-stripped copies): this runs on every
    // request.
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let essence = parts.next().unwrap_or("").trim();
        let refused = parts.any(|p| {
            let p = p.trim().bytes().filter(|b| *b != b' ');
            ["q=0", "q=0.0", "q=0.00", "q=0.000"]
                .iter()
                .any(|zero| p.clone().eq(zero.bytes()))
        });
        if refused {
            continue;
        }
        let is = |media: &str| essence.eq_ignore_ascii_case(media);
        if is("application/graphql-response+json") {
            return Some(MediaType::GraphqlResponse);
        }
        if is("application/json") || is("application/*") || is("*/*") {
            best = Some(MediaType::Json);
        }
    }
    best
}

/// Cross-site request forgery protection as Apollo Router does it: a request is let
/// through only when a browser would have preflighted it — a `content-type` that is not
/// one of the three "simple" ones, or one of `required_headers`. GET has no content type.
/// `has_required_header` is asked only when the content type does not settle it.
pub fn csrf_check(content_type: Option<&str>, has_required_header: impl FnOnce() -> bool) -> Result<(), HttpError> {
    let simple = match content_type {
        None => true,
        Some(ct) => {
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence.is_empty()
                || ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
                    .iter()
                    .any(|simple| essence.eq_ignore_ascii_case(simple))
        }
    };
    if simple && !has_required_header() {
        return Err(HttpError::new(
            400,
            "This operation has been blocked as a potential Cross-Site Request Forgery (CSRF). \
             Please either specify a 'content-type' header (with a mime-type that is not one of \
             application/x-www-form-urlencoded, multipart/form-data, text/plain) or provide one \
             of the following headers: x-apollo-operation-name, apollo-require-preflight",
        )
        .code("CSRF_ERROR"));
    }
    Ok(())
}

fn essence(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// What a POST carries: one request, or a batch (a JSON array) when batching is on.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    One(Params),
    Batch(Vec<Params>),
}

/// The parameters of a POST: `application/json` (charset utf-8 or none) with a JSON
/// object, or an array of at most `batch_max` of them (`None`: batching off).
pub fn parse_post(content_type: Option<&str>, body: &[u8], batch_max: Option<usize>) -> Result<Body, HttpError> {
    let Some(content_type) = content_type else {
        return Err(HttpError::new(415, "missing content-type: send application/json"));
    };
    if essence(content_type) != "application/json" {
        return Err(HttpError::new(
            415,
            format!("unsupported content-type {content_type:?}: send application/json"),
        ));
    }
    for param in content_type.split(';').skip(1) {
        if let Some((name, value)) = param.split_once('=')
            && name.trim().eq_ignore_ascii_case("charset")
            && !value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        {
            return Err(HttpError::new(415, format!("unsupported charset {:?}", value.trim())));
        }
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| HttpError::new(400, format!("invalid JSON body: {e}")))?;
    match (value, batch_max) {
        (Value::Array(items), Some(max)) => {
            if items.is_empty() || items.len() > max {
                return Err(
                    HttpError::new(400, format!("a batch holds 1 to {max} operations, not {}", items.len()))
                        .code("BATCH_LIMIT_EXCEEDED"),
                );
            }
            let batch = items.into_iter().map(params).collect::<Result<_, _>>()?;
            Ok(Body::Batch(batch))
        }
        (Value::Array(_), None) => {
            Err(HttpError::new(400, "batched requests are not enabled").code("BATCHING_NOT_ENABLED"))
        }
        (value, _) => params(value).map(Body::One),
    }
}

fn params(value: Value) -> Result<Params, HttpError> {
    let Value::Object(object) = value else {
        return Err(HttpError::new(400, "the body must be a JSON object"));
    };
    let query = match object.get("query") {
        None | Some(Value::Null) => None,
        Some(Value::String(q)) => Some(q.clone()),
        Some(_) => return Err(HttpError::new(400, "\"query\" must be a string")),
    };
    let operation_name = match object.get("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name.clone()),
        Some(_) => return Err(HttpError::new(400, "\"operationName\" must be a string")),
    };
    Ok(Params {
        query,
        operation_name,
        variables: object_param(object.get("variables"), "variables")?,
        extensions: object_param(object.get("extensions"), "extensions")?,
    })
}

fn object_param(value: Option<&Value>, name: &str) -> Result<Map<String, Value>, HttpError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(HttpError::new(400, format!("\"{name}\" must be an object"))),
    }
}

/// The parameters of a GET, from the query string (`variables` and `extensions` as JSON).
/// A parameter given twice is refused: servers disagree on which one counts
/// (graphql-http, Apollo Server, Yoga and gqlgen take the first), so whichever the
/// gateway validated, a service could run the other.
pub fn parse_get(path_and_query: &str) -> Result<Params, HttpError> {
    let mut params = Params::default();
    // query, operationName, variables, extensions
    let mut seen = [false; 4];
    let query_string = path_and_query.split_once('?').map_or("", |(_, q)| q);
    for pair in query_string.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(name) = plugin_common::form::decode(name) else {
            continue;
        };
        let slot = match name.as_str() {
            "query" => 0,
            "operationName" => 1,
            "variables" => 2,
            "extensions" => 3,
            _ => continue,
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(HttpError::new(
                400,
                format!("the parameter {name:?} is given more than once"),
            ));
        }
        let value = plugin_common::form::decode(value)
            .ok_or_else(|| HttpError::new(400, format!("invalid percent-encoding in {name:?}")))?;
        match slot {
            0 => params.query = Some(value),
            1 => params.operation_name = Some(value).filter(|v| !v.is_empty()),
            2 => params.variables = json_param(&value, "variables")?,
            _ => params.extensions = json_param(&value, "extensions")?,
        }
    }
    Ok(params)
}

/// What a rerouted request carries instead of what the client sent: only the parameters
/// the gateway validated, so a service never runs what the gateway did not check.
pub struct Forwarded<'a> {
    pub query: &'a str,
    pub operation_name: Option<&'a str>,
    pub variables: &'a Map<String, Value>,
    /// The client's extensions without `persistedQuery`: the gateway resolved it and
    /// sends the text.
    pub extensions: &'a Map<String, Value>,
}

impl Forwarded<'_> {
    /// A POST body: a JSON object with one key per parameter, written from the parsed
    /// values without copying them. (An error is only possible for a value serde_json
    /// cannot write, which parsed JSON never holds; the caller fails closed on it.)
    pub fn body(&self) -> Result<String, serde_json::Error> {
        let mut out = String::with_capacity(self.query.len() + 16);
        out.push_str("{\"query\":");
        push_json(&mut out, &self.query)?;
        if let Some(name) = self.operation_name {
            out.push_str(",\"operationName\":");
            push_json(&mut out, &name)?;
        }
        if !self.variables.is_empty() {
            out.push_str(",\"variables\":");
            push_json(&mut out, self.variables)?;
        }
        let extensions = Extensions(self.extensions);
        if !extensions.is_empty() {
            out.push_str(",\"extensions\":");
            push_json(&mut out, &extensions)?;
        }
        out.push('}');
        Ok(out)
    }

    /// A GET query string (without the `?`), form-encoded.
    pub fn query_string(&self) -> Result<String, serde_json::Error> {
        let mut out = format!("query={}", form_encode(self.query));
        if let Some(name) = self.operation_name {
            out.push_str("&operationName=");
            out.push_str(&form_encode(name));
        }
        let mut json = String::new();
        if !self.variables.is_empty() {
            push_json(&mut json, self.variables)?;
            out.push_str("&variables=");
            out.push_str(&form_encode(&json));
        }
        let extensions = Extensions(self.extensions);
        if !extensions.is_empty() {
            json.clear();
            push_json(&mut json, &extensions)?;
            out.push_str("&extensions=");
            out.push_str(&form_encode(&json));
        }
        Ok(out)
    }
}

/// The client's extensions without `persistedQuery`, serialized in place.
struct Extensions<'a>(&'a Map<String, Value>);

impl Extensions<'_> {
    fn is_empty(&self) -> bool {
        self.0.keys().all(|k| k == "persistedQuery")
    }
}

impl serde::Serialize for Extensions<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().filter(|(k, _)| k.as_str() != "persistedQuery"))
    }
}

/// Appends `value` as JSON.
fn push_json(out: &mut String, value: &impl serde::Serialize) -> Result<(), serde_json::Error> {
    out.push_str(&serde_json::to_string(value)?);
    Ok(())
}

/// Percent-encodes all but the unreserved characters (RFC 3986), which every form
/// decoder reads back as they were.
pub fn form_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
    out
}

fn json_param(text: &str, name: &str) -> Result<Map<String, Value>, HttpError> {
    if text.is_empty() {
        return Ok(Map::new());
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| HttpError::new(400, format!("\"{name}\" is not valid JSON: {e}")))?;
    object_param(Some(&value), name)
}

/// 405 for a method GraphQL over HTTP does not use.
pub fn method_not_allowed(allow: &str) -> HttpError {
    HttpError::new(405, format!("method not allowed: use {allow}")).header("allow", allow)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn accept_picks_the_graphql_response_type_first() {
        assert_eq!(negotiate(None), Some(MediaType::Json));
        assert_eq!(
            negotiate(Some("application/json, application/graphql-response+json")),
            Some(MediaType::GraphqlResponse)
        );
        assert_eq!(negotiate(Some("application/json")), Some(MediaType::Json));
        assert_eq!(negotiate(Some("*/*")), Some(MediaType::Json));
        assert_eq!(negotiate(Some("text/html")), None);
        assert_eq!(negotiate(Some("application/json;q=0, text/html")), None);
        assert_eq!(negotiate(Some("application/json; q = 0.00, */*;q=0.000")), None);
        assert_eq!(negotiate(Some("application/json;q=0.5")), Some(MediaType::Json));
        assert_eq!(negotiate(Some("application/json;q=0.01")), Some(MediaType::Json));
        assert_eq!(
            negotiate(Some(" Application/GraphQL-Response+JSON ; charset=utf-8")),
            Some(MediaType::GraphqlResponse)
        );
        assert_eq!(negotiate(Some("APPLICATION/*")), Some(MediaType::Json));
        assert_eq!(negotiate(Some("text/*, application/jsonx")), None);
        assert_eq!(negotiate(Some("")), None);
    }

    #[test]
    fn csrf_needs_a_preflighted_content_type_or_a_header() {
        let never = || -> bool { unreachable!("a preflighted content type settles it") };
        assert!(csrf_check(None, || false).is_err());
        assert!(csrf_check(Some("text/plain; charset=utf-8"), || false).is_err());
        assert!(csrf_check(Some(" Text/Plain ;charset=utf-8"), || false).is_err());
        assert!(csrf_check(Some("multipart/form-data; boundary=x"), || false).is_err());
        assert!(csrf_check(Some("APPLICATION/X-WWW-FORM-URLENCODED"), || false).is_err());
        assert!(csrf_check(Some(""), || false).is_err());
        assert!(csrf_check(Some("application/json"), never).is_ok());
        assert!(csrf_check(Some("Application/JSON; charset=utf-8"), never).is_ok());
        assert!(csrf_check(Some("text/plainx"), never).is_ok());
        assert!(csrf_check(None, || true).is_ok());
        assert!(csrf_check(Some("text/plain"), || true).is_ok());
    }

    #[test]
    fn post_bodies() {
        let post = |ct: &str, body: &[u8]| match parse_post(Some(ct), body, None) {
            Ok(Body::One(p)) => Ok(p),
            Ok(Body::Batch(_)) => panic!("a batch"),
            Err(e) => Err(e),
        };
        let p = post(
            "application/json; charset=utf-8",
            br#"{"query":"{a}","operationName":null,"variables":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(p.query.as_deref(), Some("{a}"));
        assert_eq!(p.variables["x"], 1);
        assert_eq!(post("application/json", b"{").unwrap_err().status, 400);
        assert_eq!(post("application/json", b"[]").unwrap_err().status, 400);
        assert_eq!(post("application/json", br#"{"query":1}"#).unwrap_err().status, 400);
        assert_eq!(
            post("application/json", br#"{"variables":"x"}"#).unwrap_err().status,
            400
        );
        assert_eq!(post("text/plain", b"{}").unwrap_err().status, 415);
        assert_eq!(post("application/json; charset=latin1", b"{}").unwrap_err().status, 415);
    }

    #[test]
    fn batches_when_enabled_within_their_size() {
        let body = br#"[{"query":"{a}"},{"query":"{b}"}]"#;
        assert_eq!(
            parse_post(Some("application/json"), body, None).unwrap_err().code,
            Some("BATCHING_NOT_ENABLED")
        );
        match parse_post(Some("application/json"), body, Some(2)).unwrap() {
            Body::Batch(batch) => assert_eq!(batch[1].query.as_deref(), Some("{b}")),
            Body::One(_) => panic!("not a batch"),
        }
        let over = parse_post(Some("application/json"), body, Some(1)).unwrap_err();
        assert_eq!((over.status, over.code), (400, Some("BATCH_LIMIT_EXCEEDED")));
        assert!(parse_post(Some("application/json"), b"[]", Some(2)).is_err());
        assert!(parse_post(Some("application/json"), b"[1]", Some(2)).is_err());
    }

    #[test]
    fn get_query_strings() {
        let p = parse_get("/graphql?query=%7B%20a%20%7D&variables=%7B%22x%22%3A1%7D&operationName=").unwrap();
        assert_eq!(p.query.as_deref(), Some("{ a }"));
        assert_eq!(p.variables["x"], 1);
        assert_eq!(p.operation_name, None);
        assert_eq!(parse_get("/g?query=%zz").unwrap_err().status, 400);
        assert_eq!(parse_get("/g?variables=nope").unwrap_err().status, 400);
        assert_eq!(parse_get("/g?query=a+b").unwrap().query.as_deref(), Some("a b"));
    }

    #[test]
    fn a_get_parameter_given_twice_is_refused() {
        for twice in [
            "/g?query={a}&query={b}",
            "/g?query={a}&%71uery={b}",
            "/g?query={a}&operationName=A&operationName=B",
            "/g?query={a}&variables={}&variables={}",
            "/g?query={a}&extensions={}&extensions={}",
            "/g?query={a}&query",
        ] {
            assert_eq!(parse_get(twice).unwrap_err().status, 400, "{twice}");
        }
        // Other parameters may repeat: they are not forwarded.
        assert!(parse_get("/g?query={a}&x=1&x=2&Query=3").is_ok());
    }

    #[test]
    fn forwarded_parameters_round_trip() {
        let variables = serde_json::json!({"id": "a&b=c", "n": [1, 2]})
            .as_object()
            .unwrap()
            .clone();
        let extensions = serde_json::json!({"persistedQuery": {"version": 1}, "trace": true})
            .as_object()
            .unwrap()
            .clone();
        let forwarded = Forwarded {
            query: "query Q($id: ID) { a(id: $id) }  # +%&",
            operation_name: Some("Q"),
            variables: &variables,
            extensions: &extensions,
        };
        let back = parse_get(&format!("/g?{}", forwarded.query_string().unwrap())).unwrap();
        assert_eq!(back.query.as_deref(), Some(forwarded.query));
        assert_eq!(back.operation_name.as_deref(), Some("Q"));
        assert_eq!(back.variables, variables);
        assert_eq!(
            back.extensions,
            *serde_json::json!({"trace": true}).as_object().unwrap()
        );
        let Body::One(posted) =
            parse_post(Some("application/json"), forwarded.body().unwrap().as_bytes(), None).unwrap()
        else {
            panic!("a batch")
        };
        assert_eq!(posted, back);
        let empty = Map::new();
        let bare = Forwarded {
            query: "{a}",
            operation_name: None,
            variables: &empty,
            extensions: &empty,
        };
        assert_eq!(bare.body().unwrap(), r#"{"query":"{a}"}"#);
        assert_eq!(bare.query_string().unwrap(), "query=%7Ba%7D");
    }
}
