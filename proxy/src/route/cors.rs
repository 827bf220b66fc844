//! Cross-origin resource sharing as a route policy, with the Gateway API's `HTTPCORSFilter`
//! semantics: a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is
//! answered here and never reaches the filters or the upstream (a browser sends no
//! credentials with it, so an auth filter would refuse it); other requests go on, and their
//! answer is marked for the origin when it is allowed.
//!
//! The route's policy is the only one: an upstream's own `Access-Control-*` headers are
//! removed from every answer to a request with an `Origin`, so an upstream that reflects
//! any origin cannot widen what the route allows.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use regex::Regex;

use crate::body::Body;
use crate::config::CorsConfig;

/// The response headers a route's CORS policy owns.
const OWNED: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

pub struct Cors {
    /// `*` alone: every origin.
    any_origin: bool,
    /// Origins listed whole: (https, lowercase host, port unless the scheme's default).
    exact: Vec<(bool, String, Option<u16>)>,
    /// `null` is listed itself.
    null: bool,
    /// Wildcards, as the exact ones with the host part after `*`: `https://*.example.com`
    /// is (true, `.example.com`, None).
    wildcard: Vec<(bool, String, Option<u16>)>,
    regex: Vec<Regex>,
    credentials: bool,
    methods: List,
    headers: List,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
}

/// A configured list of names: the header value to send, or `*`.
enum List {
    None,
    Any,
    Names(HeaderValue),
}

/// What the policy makes of a request, before it goes anywhere.
pub enum Admission {
    /// A preflight: this is the whole answer.
    Answer(Response<Body>),
    /// The request goes on; its answer is marked with [`Cors::mark`].
    Forward(Seen),
}

/// The request's `Origin`, as the policy judged it.
pub enum Seen {
    NoOrigin,
    Refused,
    /// The value `Access-Control-Allow-Origin` gets: `*` or the origin itself.
    Allowed(HeaderValue),
}

impl Cors {
    pub fn build(c: &CorsConfig) -> Result<Cors, String> {
        let mut cors = Cors {
            any_origin: false,
            exact: Vec::new(),
            null: false,
            wildcard: Vec::new(),
            regex: Vec::new(),
            credentials: c.allow_credentials,
            methods: list(&c.allow_methods, "allow_methods", |m| {
                Method::from_bytes(m.as_bytes()).is_ok() && m.bytes().all(|b| b.is_ascii_graphic())
            })?,
            headers: list(&c.allow_headers, "allow_headers", |h| {
                HeaderName::from_bytes(h.as_bytes()).is_ok()
            })?,
            expose: None,
            max_age: HeaderValue::from(c.max_age.as_secs()),
        };
        cors.expose = match list(&c.expose_headers, "expose_headers", |h| {
            HeaderName::from_bytes(h.as_bytes()).is_ok()
        })? {
            List::None => None,
            // Fetch reads `*` as a header name when credentials are allowed.
            List::Any if c.allow_credentials => {
                return Err(
                    "cors: expose_headers = [\"*\"] means nothing with allow_credentials; name the headers".into(),
                );
            }
            List::Any => Some(HeaderValue::from_static("*")),
            List::Names(v) => Some(v),
        };
        for origin in &c.allow_origins {
            if origin == "*" {
                if c.allow_origins.len() > 1 {
                    return Err(
                        "cors: allow_origins \"*\" allows every origin and cannot be listed with others".into(),
                    );
                }
                cors.any_origin = true;
            } else if let Some((scheme, rest)) = origin.split_once("://")
                && origin.contains('*')
            {
                let suffix = rest.strip_prefix('*').unwrap_or(rest);
                let probe = format!("{scheme}://x{suffix}");
                match parse(&probe) {
                    Some(o) if rest.starts_with("*.") => {
                        cors.wildcard.push((o.https, o.host[1..].to_ascii_lowercase(), o.port));
                    }
                    _ => {
                        return Err(format!(
                            "cors: allow_origins {origin:?}: `*` stands only for the leftmost labels, as in https://*.example.com"
                        ));
                    }
                }
            } else {
                match parse(origin) {
                    Some(o) => cors.exact.push((o.https, o.host.to_ascii_lowercase(), o.port)),
                    None if origin == "null" => cors.null = true,
                    None => {
                        return Err(format!(
                            "cors: allow_origins {origin:?} is not an origin (http or https, a host, an optional port, no path)"
                        ));
                    }
                }
            }
        }
        for re in &c.allow_origin_regex {
            let anchored = format!("^(?:{})$", re.get_ref());
            cors.regex
                .push(Regex::new(&anchored).map_err(|e| format!("cors: allow_origin_regex {:?}: {e}", re.get_ref()))?);
        }
        if !cors.any_origin && !cors.null && cors.exact.is_empty() && cors.wildcard.is_empty() && cors.regex.is_empty()
        {
            return Err("cors needs allow_origins or allow_origin_regex".into());
        }
        Ok(cors)
    }

    /// A preflight is answered; anything else goes on with its origin judged. Costs a
    /// header lookup for a request without `Origin`.
    pub fn admit(&self, head: &Parts) -> Admission {
        let mut origins = head.headers.get_all(header::ORIGIN).iter();
        let seen = match (origins.next(), origins.next()) {
            (None, _) => Seen::NoOrigin,
            (Some(origin), None) => self.judge(origin),
            // A browser sends one; two are someone trying which one is checked.
            (Some(_), Some(_)) => Seen::Refused,
        };
        let preflight = head.method == Method::OPTIONS
            && head.headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
            && !matches!(seen, Seen::NoOrigin);
        if !preflight {
            return Admission::Forward(seen);
        }
        let mut resp = Response::new(Body::empty());
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
        self.vary(headers);
        let Seen::Allowed(allow_origin) = seen else {
            // The Gateway API's alternative for a refused preflight: 403, no CORS headers.
            *resp.status_mut() = StatusCode::FORBIDDEN;
            return Admission::Answer(resp);
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        // With credentials, `*` is not a wildcard to a browser: the request's own is echoed.
        let echo = |name: HeaderName| head.headers.get(name).cloned();
        let methods = match &self.methods {
            List::None => None,
            List::Any if self.credentials => echo(header::ACCESS_CONTROL_REQUEST_METHOD),
            List::Any => Some(HeaderValue::from_static("*")),
            List::Names(v) => Some(v.clone()),
        };
        let allowed_headers = match &self.headers {
            List::None => None,
            List::Any if self.credentials => echo(header::ACCESS_CONTROL_REQUEST_HEADERS),
            List::Any => Some(HeaderValue::from_static("*")),
            List::Names(v) => Some(v.clone()),
        };
        if let Some(v) = methods {
            headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        if let Some(v) = allowed_headers {
            headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Admission::Answer(resp)
    }

    /// Marks the answer to a request that went on: the route's CORS headers for an allowed
    /// origin, none for a refused one, and `Vary: Origin` when the answer depends on it.
    pub fn mark(&self, seen: Seen, headers: &mut HeaderMap) {
        self.vary(headers);
        let allow_origin = match seen {
            Seen::NoOrigin => return,
            Seen::Refused => {
                for name in &OWNED {
                    headers.remove(name);
                }
                return;
            }
            Seen::Allowed(origin) => origin,
        };
        for name in &OWNED {
            headers.remove(name);
        }
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }

    fn judge(&self, origin: &HeaderValue) -> Seen {
        let Ok(sent) = origin.to_str() else {
            return Seen::Refused;
        };
        let allowed = (self.any_origin && sent != "null")
            || self.regex.iter().any(|re| re.is_match(sent))
            || match parse(sent) {
                // Compared in place: no allocation for a request's origin.
                Some(o) => {
                    self.exact.iter().any(|(https, host, port)| {
                        *https == o.https && *port == o.port && host.eq_ignore_ascii_case(o.host)
                    }) || self.wildcard.iter().any(|(https, suffix, port)| {
                        *https == o.https
                            && *port == o.port
                            && o.host.len() > suffix.len()
                            && o.host[o.host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    })
                }
                // `null` (sandboxed frames, files) only where it is listed itself.
                None => sent == "null" && self.null,
            };
        match allowed {
            false => Seen::Refused,
            true if self.any_origin && !self.credentials => Seen::Allowed(HeaderValue::from_static("*")),
            true => Seen::Allowed(origin.clone()),
        }
    }

    /// The answer depends on the request's `Origin` unless it is `*` for all.
    fn vary(&self, headers: &mut HeaderMap) {
        if self.any_origin && !self.credentials {
            return;
        }
        let said = headers.get_all(header::VARY).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .map(str::trim)
                    .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
            })
        });
        if !said {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// A list of names joined for a header, `*` alone, or nothing.
fn list(names: &[String], key: &str, valid: impl Fn(&str) -> bool) -> Result<List, String> {
    match names {
        [] => Ok(List::None),
        [any] if any == "*" => Ok(List::Any),
        _ => {
            if let Some(bad) = names.iter().find(|n| *n == "*" || !valid(n)) {
                return Err(format!("cors: {key}: {bad:?} is not a name (or \"*\" alone)"));
            }
            HeaderValue::from_str(&names.join(", "))
                .map(List::Names)
                .map_err(|_| format!("cors: {key} is not a header value"))
        }
    }
}

/// An origin's parts, borrowed from its text.
struct Origin<'a> {
    https: bool,
    /// ASCII: a DNS name or address, or a bracketed IPv6 address.
    host: &'a str,
    /// `None` for the scheme's default port.
    port: Option<u16>,
}

/// `scheme://host[:port]` with an http or https scheme; `None` for anything else (a path,
/// user info, another scheme, `null`).
fn parse(origin: &str) -> Option<Origin<'_>> {
    let (scheme, authority) = origin.split_once("://")?;
    let (https, default) = if scheme.eq_ignore_ascii_case("https") {
        (true, 443)
    } else if scheme.eq_ignore_ascii_case("http") {
        (false, 80)
    } else {
        return None;
    };
    let (host, port) = match authority.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            ip.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (&authority[..ip.len() + 2], port)
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            };
            let name = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'-';
            if host.is_empty() || !host.bytes().all(name) {
                return None;
            }
            (host, port)
        }
    };
    let port = match port {
        None => None,
        Some(p) if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) => return None,
        Some(p) => match p.parse::<u16>().ok()? {
            0 => return None,
            n if n == default => None,
            n => Some(n),
        },
    };
    Some(Origin { https, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(text: &str) -> Result<Cors, String> {
        let c: CorsConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        Cors::build(&c)
    }

    fn judged(cors: &Cors, origin: &str) -> Option<String> {
        match cors.judge(&HeaderValue::from_str(origin).expect("value")) {
            Seen::Allowed(v) => Some(v.to_str().expect("text").to_owned()),
            _ => None,
        }
    }

    #[test]
    fn origins_are_compared_whole_and_normalised() {
        let c = cors(r#"allow_origins = ["https://app.example", "https://*.example.com", "http://local:8080"]"#)
            .expect("cors");
        for ok in [
            "https://app.example",
            "HTTPS://APP.example",
            "https://app.example:443",
            "https://a.example.com",
            "https://a.b.example.com",
            "http://local:8080",
        ] {
            assert_eq!(judged(&c, ok).as_deref(), Some(ok), "{ok}");
        }
        for refused in [
            "https://app.example.evil",
            "https://app.exampl",
            "http://app.example",
            "https://app.example:8443",
            "https://app.example/",
            "https://user@app.example",
            "https://example.com",
            "https://evilexample.com",
            "https://a.example.com.evil.net",
            "http://a.example.com",
            "https://a.example.com:444",
            "http://local",
            "null",
            "",
            "https://",
            "https://app.example\\@evil",
        ] {
            assert_eq!(judged(&c, refused), None, "{refused}");
        }
    }

    #[test]
    fn a_lone_star_allows_all_but_null_and_reflects_with_credentials() {
        let c = cors(r#"allow_origins = ["*"]"#).expect("cors");
        assert_eq!(judged(&c, "https://x.example").as_deref(), Some("*"));
        assert_eq!(judged(&c, "null"), None);
        let c = cors("allow_origins = [\"*\"]\nallow_credentials = true").expect("cors");
        assert_eq!(judged(&c, "https://x.example").as_deref(), Some("https://x.example"));
        let c = cors(r#"allow_origins = ["null"]"#).expect("cors");
        assert_eq!(judged(&c, "null").as_deref(), Some("null"));
    }

    #[test]
    fn regexes_match_the_whole_origin() {
        let c = cors(r#"allow_origin_regex = ['https://[a-z]+\.example\.org']"#).expect("cors");
        assert!(judged(&c, "https://shop.example.org").is_some());
        assert!(judged(&c, "https://shop.example.org.evil").is_none());
        assert!(judged(&c, "xhttps://shop.example.org").is_none());
    }

    #[test]
    fn vary_names_origin_once() {
        let c = cors(r#"allow_origins = ["https://app.example"]"#).expect("cors");
        let mut headers = HeaderMap::new();
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        c.vary(&mut headers);
        c.vary(&mut headers);
        let vary: Vec<_> = headers.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["accept-encoding", "Origin"]);
        let mut any = HeaderMap::new();
        cors(r#"allow_origins = ["*"]"#).expect("cors").vary(&mut any);
        assert!(any.is_empty(), "`*` for all does not vary");
    }

    #[test]
    fn bad_policies_are_refused() {
        for (text, wanted) in [
            ("", "needs allow_origins"),
            (
                r#"allow_origins = ["*", "https://a.example"]"#,
                "cannot be listed with others",
            ),
            (r#"allow_origins = ["https://a.*.example"]"#, "leftmost"),
            (r#"allow_origins = ["https://*example.com"]"#, "leftmost"),
            (r#"allow_origins = ["https://a.example/path"]"#, "not an origin"),
            (r#"allow_origins = ["ftp://a.example"]"#, "not an origin"),
            (
                "allow_origins = [\"*\"]\nallow_methods = [\"GET\", \"*\"]",
                "allow_methods",
            ),
            (
                "allow_origins = [\"*\"]\nallow_headers = [\"bad header\"]",
                "allow_headers",
            ),
            (
                "allow_origins = [\"*\"]\nexpose_headers = [\"*\"]\nallow_credentials = true",
                "expose_headers",
            ),
            (r#"allow_origin_regex = ["("]"#, "allow_origin_regex"),
        ] {
            let err = cors(text).err().unwrap_or_default();
            assert!(err.contains(wanted), "{text}: {err}");
        }
    }
}
