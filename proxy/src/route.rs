//! The route table: precompiled matchers, evaluated in config order; the first route whose
//! every condition holds wins.

use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderName, Method};
use regex::Regex;

use crate::config::{ConfigError, MatchConfig, Source};
use crate::conn::ConnInfo;
use crate::filter::ChainEntry;
use crate::upstream::Cluster;
use metrics::RouteCounters;

mod answer;
mod cors;
pub mod destination;
mod fault;
pub mod intercept;
pub mod metrics;
mod mirror;
mod policy;
mod rewrite;
mod shift;

pub use answer::Answer;
pub use cors::{Admission, Cors};
pub use fault::Abort;
pub use policy::Policy;
pub use rewrite::RewriteRefused;

/// A route of one config version.
pub struct Route {
    pub name: Arc<str>,
    matcher: Matcher,
    /// `None` when the policy decides (a split, or an answer).
    pub cluster: Option<Arc<Cluster>>,
    pub timeout: Duration,
    pub host_rewrite: Option<http::HeaderValue>,
    pub filters: Vec<ChainEntry>,
    pub counters: RouteCounters,
    /// Largest body any filter of the chain wants buffered (`None`: stream).
    pub request_body_limit: Option<usize>,
    pub response_body_limit: Option<usize>,
    /// Answers, pins, splits, faults, rewrites, header edits; `None` for a plain route.
    pub policy: Option<Box<Policy>>,
    /// `Upgrade` protocols this route switches to, lowercase.
    pub upgrades: Box<[String]>,
    /// How long an upgraded connection may carry nothing before it is closed.
    pub upgrade_idle: Duration,
}

impl Route {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: Arc<str>,
        matcher: Matcher,
        cluster: Option<Arc<Cluster>>,
        timeout: Duration,
        host_rewrite: Option<http::HeaderValue>,
        filters: Vec<ChainEntry>,
        counters: RouteCounters,
        policy: Option<Policy>,
    ) -> Route {
        let request_body_limit = filters.iter().filter_map(|f| f.filter.request_body_limit()).max();
        let response_body_limit = filters.iter().filter_map(|f| f.filter.response_body_limit()).max();
        Route {
            name,
            matcher,
            cluster,
            timeout,
            host_rewrite,
            filters,
            counters,
            request_body_limit,
            response_body_limit,
            policy: policy.map(Box::new),
            upgrades: Box::new(["websocket".to_owned()]),
            upgrade_idle: Duration::from_secs(300),
        }
    }

    /// The route's path template (`http.route` in traces).
    pub fn template(&self) -> &Arc<str> {
        &self.matcher.template
    }

    pub fn with_upgrades(mut self, upgrades: &[String], idle: Duration) -> Route {
        self.upgrades = upgrades.iter().map(|u| u.to_ascii_lowercase()).collect();
        self.upgrade_idle = idle;
        self
    }

    /// Whether every protocol the request's `Upgrade` offers (`name[/version]`) is one
    /// this route switches to.
    pub fn allows_upgrade(&self, headers: &http::HeaderMap) -> bool {
        let mut offered = headers
            .get_all(http::header::UPGRADE)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or(",").split(','))
            .map(|t| t.trim().split('/').next().unwrap_or(""))
            .peekable();
        offered.peek().is_some() && offered.all(|p| self.upgrades.iter().any(|u| u.eq_ignore_ascii_case(p)))
    }
}

/// Routes in config order.
pub struct Router {
    routes: Vec<Route>,
}

impl Router {
    pub fn new(routes: Vec<Route>) -> Router {
        Router { routes }
    }

    /// The first route matching the request, if any: its conditions on the request, and on
    /// the connection (the client's verified certificate identity, an intercepted
    /// connection's original destination, the listener).
    pub fn find(&self, req: &Parts, conn: &ConnInfo) -> Option<&Route> {
        let host = request_host(req);
        self.routes.iter().find(|r| {
            r.matcher.matches(req, host, conn.identity.as_deref())
                && r.matcher.destination.matches(conn.original_dst)
                && (r.matcher.listeners.is_empty() || r.matcher.listeners.iter().any(|l| **l == *conn.listener))
        })
    }
}

/// The host the client asked for, without a port: `:authority` (HTTP/2) or `Host`.
pub fn request_host(req: &Parts) -> &str {
    let raw = req
        .uri
        .host()
        .or_else(|| req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()))
        .unwrap_or("");
    strip_port(raw)
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // IPv6 literal: keep the brackets, drop what follows them.
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(h, port)| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

enum HostMatch {
    Exact(String),
    /// `*.example.com`: stored as `.example.com`.
    Suffix(String),
}

enum PathMatch {
    /// Whole segments, as the Gateway API's `PathPrefix`: stored without a trailing `/`,
    /// so `/v2` and `/v2/` both take `/v2` and `/v2/x`, never `/v2example`.
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

enum ValueMatch {
    Exact(String),
    Regex(Regex),
    Present(bool),
}

/// All conditions of one route.
pub struct Matcher {
    host: Option<HostMatch>,
    path: PathMatch,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, ValueMatch)>,
    query: Vec<(String, ValueMatch)>,
    identity: Option<ValueMatch>,
    destination: destination::DestinationMatch,
    listeners: Box<[Box<str>]>,
    /// The path template, as traces name the route (`http.route`): a prefix's segments
    /// with `/*` after them (`/api/*`, `/*`), an exact path, or the regex as written.
    template: Arc<str>,
}

impl Matcher {
    pub fn build(m: &MatchConfig, src: &Source, route_span: std::ops::Range<usize>) -> Result<Matcher, ConfigError> {
        let host = m.host.as_ref().map(|h| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
                None => HostMatch::Exact(h),
            }
        });
        let template: Arc<str> = match (&m.path_exact, &m.path_regex, &m.path_prefix) {
            (Some(p), _, _) => p.as_str().into(),
            (_, Some(re), _) => re.get_ref().as_str().into(),
            (_, _, Some(p)) => format!("{}/*", segment_prefix(p)).into(),
            _ => "/*".into(),
        };
        let path = if let Some(p) = &m.path_exact {
            PathMatch::Exact(p.clone())
        } else if let Some(re) = &m.path_regex {
            PathMatch::Regex(anchored(re, src)?)
        } else {
            PathMatch::Prefix(segment_prefix(m.path_prefix.as_deref().unwrap_or("/")).to_owned())
        };
        let methods = m
            .methods
            .iter()
            .map(|name| {
                Method::from_bytes(name.to_ascii_uppercase().as_bytes())
                    .map_err(|_| src.error_at(route_span.clone(), format!("invalid method {name:?}")))
            })
            .collect::<Result<_, _>>()?;
        let headers = m
            .headers
            .iter()
            .map(|h| {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| src.error_at(route_span.clone(), format!("invalid header name {:?}", h.name)))?;
                Ok((name, ValueMatch::build(&h.exact, &h.regex, h.present, src)?))
            })
            .collect::<Result<_, ConfigError>>()?;
        let query = m
            .query
            .iter()
            .map(|q| Ok((q.name.clone(), ValueMatch::build(&q.exact, &q.regex, q.present, src)?)))
            .collect::<Result<_, ConfigError>>()?;
        let identity = m
            .identity
            .as_ref()
            .map(|p| ValueMatch::build(&p.exact, &p.regex, p.present, src))
            .transpose()?;
        let cidr = m
            .destination
            .as_ref()
            .map(|d| {
                destination::Cidr::parse(d)
                    .map_err(|e| src.error_at(route_span.clone(), format!("match.destination: {e}")))
            })
            .transpose()?;
        Ok(Matcher {
            listeners: m.listeners.iter().map(|l| l.as_str().into()).collect(),
            destination: destination::DestinationMatch {
                cidr,
                port: m.destination_port,
            },
            host,
            path,
            methods,
            headers,
            query,
            identity,
            template,
        })
    }

    fn matches(&self, req: &Parts, host: &str, identity: Option<&str>) -> bool {
        let host_ok = match &self.host {
            None => true,
            Some(HostMatch::Exact(h)) => host.eq_ignore_ascii_case(h),
            Some(HostMatch::Suffix(s)) => host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s),
        };
        let path = req.uri.path();
        let path_ok = match &self.path {
            PathMatch::Prefix(p) => under_prefix(path, p).is_some(),
            PathMatch::Exact(p) => path == p,
            PathMatch::Regex(re) => re.is_match(path),
        };
        host_ok
            && path_ok
            && (self.methods.is_empty() || self.methods.contains(&req.method))
            && self
                .headers
                .iter()
                .all(|(name, cond)| cond.check_any(req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok())))
            && self.query.iter().all(|(name, cond)| {
                let query = req.uri.query().unwrap_or("");
                cond.check_any(query_values(query, name))
            })
            && self
                .identity
                .as_ref()
                .is_none_or(|cond| cond.check_any(identity.into_iter()))
    }
}

impl ValueMatch {
    fn build(
        exact: &Option<String>,
        regex: &Option<toml::Spanned<String>>,
        present: Option<bool>,
        src: &Source,
    ) -> Result<ValueMatch, ConfigError> {
        Ok(match (exact, regex, present) {
            (Some(v), _, _) => ValueMatch::Exact(v.clone()),
            (_, Some(re), _) => ValueMatch::Regex(anchored(re, src)?),
            (_, _, Some(p)) => ValueMatch::Present(p),
            // Config validation guarantees one of the three.
            _ => ValueMatch::Present(true),
        })
    }

    fn check_any<'a>(&self, mut values: impl Iterator<Item = &'a str>) -> bool {
        match self {
            ValueMatch::Present(want) => values.next().is_some() == *want,
            ValueMatch::Exact(v) => values.any(|x| x == v),
            ValueMatch::Regex(re) => values.any(|x| re.is_match(x)),
        }
    }
}

/// A `path_prefix` as it is matched: without its trailing `/` (`/` itself becomes empty,
/// which every path is under).
pub fn segment_prefix(prefix: &str) -> &str {
    prefix.trim_end_matches('/')
}

/// What follows `prefix` (from [`segment_prefix`]) in `path` when the path is under it by
/// whole segments: empty, or starting with `/`. `/v2` is under `/v2`; `/v2example` is not.
pub fn under_prefix<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    path.strip_prefix(prefix)
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Regexes match the whole value, as in Envoy's `safe_regex`; a partial match would make
/// `/api` match `/not-api/x`.
fn anchored(re: &toml::Spanned<String>, src: &Source) -> Result<Regex, ConfigError> {
    Regex::new(&format!("^(?:{})$", re.get_ref())).map_err(|e| src.error_at(re.span(), format!("invalid regex: {e}")))
}

/// Values of `name` in a query string, percent-decoding not applied (names and values
/// are compared as sent).
fn query_values<'a>(query: &'a str, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests;
