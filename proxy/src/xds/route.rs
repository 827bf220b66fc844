//! RDS: a `RouteConfiguration` as Weft's `[[routes]]` tables. Weft's routes are one list
//! tried in order, so virtual hosts are laid out as Envoy picks them: exact domains first,
//! then `*.suffix` domains (longest first), then `*`; within a host, Envoy's route order.
//! A field Weft cannot honour is a NACK naming the route and the field.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{HeaderValueOption, header_value_option::HeaderAppendAction};
use envoy_types::pb::envoy::config::route::v3::{
    HeaderMatcher, QueryParameterMatcher, RedirectAction, Route, RouteAction, RouteConfiguration, VirtualHost,
    header_matcher::HeaderMatchSpecifier, query_parameter_matcher::QueryParameterMatchSpecifier, redirect_action,
    route, route_action, route_match::PathSpecifier,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use toml::{Table, Value};

use super::{Rejected, duration_text};

/// One route configuration, mapped.
#[derive(Debug, Clone)]
pub struct Routes {
    /// `[[routes]]` tables in match order; each `cluster`-like key is checked against CDS
    /// at assembly.
    pub routes: Vec<Table>,
    /// `validate_clusters`: a route to a cluster CDS lacks is a NACK rather than a 503.
    pub validate_clusters: bool,
    /// Retries per cluster (Envoy's are per route, Weft's per cluster).
    pub retries: BTreeMap<String, Table>,
    /// What a hashing cluster hashes (Envoy's `hash_policy` is per route, Weft's `hash_on`
    /// per cluster).
    pub hash_on: BTreeMap<String, Table>,
}

pub fn map(rc: &RouteConfiguration) -> Result<Routes, Rejected> {
    let at = format!("route_configuration {:?}", rc.name);
    let mut hosts: Vec<(u8, usize, String, &VirtualHost)> = Vec::new();
    for vh in &rc.virtual_hosts {
        let mut seen = Vec::new();
        for domain in &vh.domains {
            let d = strip_port(domain).to_ascii_lowercase();
            if seen.contains(&d) {
                continue;
            }
            seen.push(d.clone());
            let rank = if d == "*" {
                2
            } else if d.starts_with("*.") {
                1
            } else if d.contains('*') {
                return Err(Rejected(format!(
                    "{at}: virtual host {:?}: domain {domain:?}: only exact, *.suffix and * domains are supported",
                    vh.name
                )));
            } else {
                0
            };
            hosts.push((rank, usize::MAX - d.len(), d, vh));
        }
    }
    // Stable: equal ranks keep Envoy's order.
    hosts.sort_by_key(|(rank, len, _, _)| (*rank, *len));
    let mut out = Routes {
        routes: Vec::new(),
        validate_clusters: rc.validate_clusters.is_some_and(|v| v.value),
        retries: BTreeMap::new(),
        hash_on: BTreeMap::new(),
    };
    let mut edits_config = Edits::default();
    edits_config.take(
        &rc.request_headers_to_add,
        &rc.request_headers_to_remove,
        &rc.response_headers_to_add,
        &rc.response_headers_to_remove,
        &at,
    )?;
    for (_, _, domain, vh) in hosts {
        let vat = format!("{at}: virtual host {:?}", vh.name);
        if vh.require_tls != 0 || vh.cors.is_some() || !vh.rate_limits.is_empty() || vh.retry_policy.is_some() {
            return Err(Rejected(format!(
                "{vat}: require_tls, cors, rate_limits and retry_policy on a virtual host are not supported"
            )));
        }
        let mut vedits = edits_config.clone();
        vedits.take(
            &vh.request_headers_to_add,
            &vh.request_headers_to_remove,
            &vh.response_headers_to_add,
            &vh.response_headers_to_remove,
            &vat,
        )?;
        for (i, r) in vh.routes.iter().enumerate() {
            let name = if r.name.is_empty() {
                format!("{}/{i}", vh.name)
            } else {
                r.name.clone()
            };
            let rat = format!("{vat}: route {name:?}");
            let mut t = route_table(r, &rat, &mut out)?;
            t.insert("name".into(), Value::String(format!("{}/{domain}", name)));
            if domain != "*" {
                let m = t.entry("match").or_insert_with(|| Value::Table(Table::new()));
                if let Value::Table(m) = m {
                    m.insert("host".into(), Value::String(domain.clone()));
                }
            }
            let mut edits = vedits.clone();
            edits.take(
                &r.request_headers_to_add,
                &r.request_headers_to_remove,
                &r.response_headers_to_add,
                &r.response_headers_to_remove,
                &rat,
            )?;
            edits.put(&mut t);
            out.routes.push(t);
        }
    }
    Ok(out)
}

fn strip_port(domain: &str) -> &str {
    match domain.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') && host.contains(':') => {
            let _ = port;
            domain
        }
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) || port == "*" => host,
        _ => domain,
    }
}

fn route_table(r: &Route, at: &str, out: &mut Routes) -> Result<Table, Rejected> {
    let no = |what: &str| Rejected(format!("{at}: {what} is not supported"));
    let mut t = Table::new();
    let m = r.r#match.as_ref().ok_or_else(|| no("a route without match"))?;
    let mut mt = Table::new();
    if m.case_sensitive.is_some_and(|c| !c.value) {
        return Err(no("case_sensitive = false"));
    }
    if m.runtime_fraction.is_some() || !m.cookies.is_empty() || m.grpc.is_some() || m.tls_context.is_some() {
        return Err(no("runtime_fraction, cookies, grpc or tls_context in a match"));
    }
    match &m.path_specifier {
        Some(PathSpecifier::Prefix(p)) | Some(PathSpecifier::PathSeparatedPrefix(p)) => {
            mt.insert(
                "path_prefix".into(),
                Value::String(if p.is_empty() { "/".into() } else { p.clone() }),
            );
        }
        Some(PathSpecifier::Path(p)) => {
            mt.insert("path_exact".into(), Value::String(p.clone()));
        }
        Some(PathSpecifier::SafeRegex(re)) => {
            mt.insert("path_regex".into(), Value::String(re.regex.clone()));
        }
        _ => {
            return Err(no(
                "a path match other than prefix, path, safe_regex, path_separated_prefix",
            ));
        }
    }
    let headers = m
        .headers
        .iter()
        .map(|h| header_match(h, at))
        .collect::<Result<Vec<_>, _>>()?;
    let methods: Vec<Value> = Vec::new();
    let mut headers_out = Vec::new();
    for (name, cond) in headers {
        headers_out.push(Value::Table(cond_table(&name, cond)));
    }
    if !headers_out.is_empty() {
        mt.insert("headers".into(), Value::Array(headers_out));
    }
    if !methods.is_empty() {
        mt.insert("methods".into(), Value::Array(methods));
    }
    let query = m
        .query_parameters
        .iter()
        .map(|q| query_match(q, at).map(|c| Value::Table(cond_table(&q.name, c))))
        .collect::<Result<Vec<_>, _>>()?;
    if !query.is_empty() {
        mt.insert("query".into(), Value::Array(query));
    }
    t.insert("match".into(), Value::Table(mt));
    match &r.action {
        Some(route::Action::Route(a)) => action(a, &mut t, at, out)?,
        Some(route::Action::Redirect(rd)) => {
            t.insert("redirect".into(), Value::Table(redirect(rd, at)?));
        }
        Some(route::Action::DirectResponse(d)) => {
            let mut dr = Table::new();
            let status = i64::from(d.status);
            dr.insert("status".into(), Value::Integer(status));
            if let Some(body) = &d.body {
                use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
                match &body.specifier {
                    Some(Specifier::InlineString(s)) => {
                        dr.insert("body".into(), Value::String(s.clone()));
                    }
                    Some(Specifier::InlineBytes(b)) => {
                        let s =
                            String::from_utf8(b.clone()).map_err(|_| no("a direct_response body that is not UTF-8"))?;
                        dr.insert("body".into(), Value::String(s));
                    }
                    None => {}
                    _ => return Err(no("a direct_response body from a file or environment variable")),
                }
            }
            t.insert("direct_response".into(), Value::Table(dr));
        }
        _ => return Err(no("an action other than route, redirect, direct_response")),
    }
    Ok(t)
}

enum Cond {
    Exact(String),
    Regex(String),
    Present(bool),
}

fn cond_table(name: &str, c: Cond) -> Table {
    let mut t = Table::new();
    t.insert("name".into(), Value::String(name.to_owned()));
    match c {
        Cond::Exact(v) => t.insert("exact".into(), Value::String(v)),
        Cond::Regex(v) => t.insert("regex".into(), Value::String(v)),
        Cond::Present(p) => t.insert("present".into(), Value::Boolean(p)),
    };
    t
}

fn string_cond(s: &StringMatcher, what: &str) -> Result<Cond, Rejected> {
    if s.ignore_case {
        return Err(Rejected(format!("{what}: ignore_case is not supported")));
    }
    Ok(match &s.match_pattern {
        Some(MatchPattern::Exact(v)) => Cond::Exact(v.clone()),
        Some(MatchPattern::Prefix(v)) => Cond::Regex(format!("{}.*", regex::escape(v))),
        Some(MatchPattern::Suffix(v)) => Cond::Regex(format!(".*{}", regex::escape(v))),
        Some(MatchPattern::Contains(v)) => Cond::Regex(format!(".*{}.*", regex::escape(v))),
        Some(MatchPattern::SafeRegex(re)) => Cond::Regex(re.regex.clone()),
        _ => return Err(Rejected(format!("{what}: this string match is not supported"))),
    })
}

fn header_match(h: &HeaderMatcher, at: &str) -> Result<(String, Cond), Rejected> {
    let what = format!("{at}: header match {:?}", h.name);
    if h.invert_match || h.treat_missing_header_as_empty {
        return Err(Rejected(format!(
            "{what}: invert_match and treat_missing_header_as_empty are not supported"
        )));
    }
    let cond = match &h.header_match_specifier {
        Some(HeaderMatchSpecifier::ExactMatch(v)) => Cond::Exact(v.clone()),
        Some(HeaderMatchSpecifier::SafeRegexMatch(re)) => Cond::Regex(re.regex.clone()),
        Some(HeaderMatchSpecifier::PresentMatch(p)) => Cond::Present(*p),
        Some(HeaderMatchSpecifier::PrefixMatch(v)) => Cond::Regex(format!("{}.*", regex::escape(v))),
        Some(HeaderMatchSpecifier::SuffixMatch(v)) => Cond::Regex(format!(".*{}", regex::escape(v))),
        Some(HeaderMatchSpecifier::ContainsMatch(v)) => Cond::Regex(format!(".*{}.*", regex::escape(v))),
        Some(HeaderMatchSpecifier::StringMatch(s)) => string_cond(s, &what)?,
        None => Cond::Present(true),
        _ => return Err(Rejected(format!("{what}: range matches are not supported"))),
    };
    Ok((h.name.to_ascii_lowercase(), cond))
}

fn query_match(q: &QueryParameterMatcher, at: &str) -> Result<Cond, Rejected> {
    let what = format!("{at}: query parameter match {:?}", q.name);
    match &q.query_parameter_match_specifier {
        Some(QueryParameterMatchSpecifier::StringMatch(s)) => string_cond(s, &what),
        Some(QueryParameterMatchSpecifier::PresentMatch(p)) => Ok(Cond::Present(*p)),
        None => Ok(Cond::Present(true)),
    }
}

fn action(a: &RouteAction, t: &mut Table, at: &str, out: &mut Routes) -> Result<(), Rejected> {
    let no = |what: &str| Rejected(format!("{at}: {what} is not supported"));
    if a.cors.is_some() || !a.rate_limits.is_empty() || a.hedge_policy.is_some() {
        return Err(no("cors, rate_limits or hedge_policy on a route"));
    }
    if a.path_rewrite_policy.is_some() || !a.path_rewrite.is_empty() {
        return Err(no("path_rewrite"));
    }
    let mut targets = Vec::new();
    match &a.cluster_specifier {
        Some(route_action::ClusterSpecifier::Cluster(c)) => {
            t.insert("cluster".into(), Value::String(c.clone()));
            targets.push(c.clone());
        }
        Some(route_action::ClusterSpecifier::WeightedClusters(w)) => {
            let mut split = Vec::new();
            for c in &w.clusters {
                if !c.cluster_header.is_empty() {
                    return Err(no("weighted_clusters with cluster_header"));
                }
                let mut s = Table::new();
                s.insert("cluster".into(), Value::String(c.name.clone()));
                let weight = c.weight.map_or(0, |w| w.value);
                s.insert("weight".into(), Value::Integer(i64::from(weight)));
                let mut edits = Edits::default();
                edits.take(
                    &c.request_headers_to_add,
                    &c.request_headers_to_remove,
                    &c.response_headers_to_add,
                    &c.response_headers_to_remove,
                    at,
                )?;
                edits.put(&mut s);
                split.push(Value::Table(s));
                targets.push(c.name.clone());
            }
            t.insert("split".into(), Value::Array(split));
        }
        _ => return Err(no("a cluster_specifier other than cluster or weighted_clusters")),
    }
    if !a.prefix_rewrite.is_empty() {
        let mut rw = Table::new();
        rw.insert("prefix".into(), Value::String(a.prefix_rewrite.clone()));
        t.insert("rewrite".into(), Value::Table(rw));
    }
    if let Some(rr) = &a.regex_rewrite {
        let re = rr.pattern.as_ref().map(|p| p.regex.clone()).unwrap_or_default();
        let mut rw = Table::new();
        rw.insert("regex".into(), Value::String(re));
        // RE2 writes captures as \1; the regex crate as ${1}.
        let sub = regex::Regex::new(r"\\(\d)").map_err(|e| no(&e.to_string()))?;
        let substitution = sub.replace_all(&rr.substitution, "$${$1}").into_owned();
        rw.insert("substitution".into(), Value::String(substitution));
        t.insert("rewrite".into(), Value::Table(rw));
    }
    match &a.host_rewrite_specifier {
        Some(route_action::HostRewriteSpecifier::HostRewriteLiteral(h)) => {
            t.insert("host_rewrite".into(), Value::String(h.clone()));
        }
        None => {}
        _ => return Err(no("a host rewrite other than host_rewrite_literal")),
    }
    if let Some(d) = &a.timeout {
        let text = if d.seconds == 0 && d.nanos == 0 {
            // 0 disables Envoy's timeout; Weft always has one.
            "1h".to_owned()
        } else {
            duration_text(d.seconds, d.nanos).ok_or_else(|| no("a negative timeout"))?
        };
        t.insert("timeout".into(), Value::String(text));
    }
    if !a.hash_policy.is_empty() {
        let hash = hash_on(&a.hash_policy, at)?;
        per_cluster(&mut out.hash_on, &targets, hash, at, "hash policies")?;
    }
    if let Some(rp) = &a.retry_policy {
        let retry = retry(rp, at)?;
        per_cluster(&mut out.retries, &targets, retry, at, "retry policies")?;
    }
    if !a.request_mirror_policies.is_empty() {
        let mut mirrors = Vec::new();
        for m in &a.request_mirror_policies {
            if !m.cluster_header.is_empty() {
                return Err(no("request_mirror_policies with cluster_header"));
            }
            let mut mt = Table::new();
            mt.insert("cluster".into(), Value::String(m.cluster.clone()));
            if let Some(f) = m.runtime_fraction.as_ref().and_then(|f| f.default_value.as_ref()) {
                let denominator = match f.denominator {
                    0 => 100.0,
                    1 => 10_000.0,
                    _ => 1_000_000.0,
                };
                mt.insert(
                    "percent".into(),
                    Value::Float(f64::from(f.numerator) * 100.0 / denominator),
                );
            }
            mirrors.push(Value::Table(mt));
        }
        t.insert("mirror".into(), Value::Array(mirrors));
    }
    Ok(())
}

/// Records `value` for each target cluster; routes that disagree on a cluster are a NACK.
fn per_cluster(
    map: &mut BTreeMap<String, Table>,
    targets: &[String],
    value: Table,
    at: &str,
    what: &str,
) -> Result<(), Rejected> {
    for cluster in targets {
        match map.get(cluster) {
            Some(other) if *other != value => {
                return Err(Rejected(format!(
                    "{at}: routes to cluster {cluster:?} have different {what} (Weft sets them per cluster)"
                )));
            }
            _ => {
                map.insert(cluster.clone(), value.clone());
            }
        }
    }
    Ok(())
}

/// The first hash policy Weft can honour: a header, a cookie, or the client's address.
fn hash_on(policies: &[route_action::HashPolicy], at: &str) -> Result<Table, Rejected> {
    use route_action::hash_policy::PolicySpecifier;
    let [policy] = policies else {
        return Err(Rejected(format!("{at}: more than one hash_policy is not supported")));
    };
    let mut t = Table::new();
    match &policy.policy_specifier {
        Some(PolicySpecifier::Header(h)) if h.regex_rewrite.is_none() => {
            t.insert("header".into(), Value::String(h.header_name.to_ascii_lowercase()));
        }
        Some(PolicySpecifier::Cookie(c)) if c.ttl.is_none() => {
            t.insert("cookie".into(), Value::String(c.name.clone()));
        }
        Some(PolicySpecifier::ConnectionProperties(p)) if p.source_ip => {
            t.insert("client_address".into(), Value::Boolean(true));
        }
        _ => {
            return Err(Rejected(format!(
                "{at}: a hash_policy other than a header, a cookie without ttl, or source_ip is not supported"
            )));
        }
    }
    Ok(t)
}

/// `retry_on` conditions Weft has: connect failures and resets are always retried, 5xx
/// and `retriable-status-codes` name statuses.
fn retry(rp: &envoy_types::pb::envoy::config::route::v3::RetryPolicy, at: &str) -> Result<Table, Rejected> {
    let mut statuses: Vec<i64> = Vec::new();
    for cond in rp.retry_on.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        match cond {
            "5xx" => statuses.extend(500..=599),
            "gateway-error" => statuses.extend([502, 503, 504]),
            "retriable-status-codes" => statuses.extend(rp.retriable_status_codes.iter().map(|s| i64::from(*s))),
            // Always retried by Weft.
            "connect-failure" | "reset" | "refused-stream" | "reset-before-request" => {}
            // gRPC statuses arrive in trailers Weft's retries do not read: honoured as resets.
            "cancelled" | "unavailable" | "deadline-exceeded" | "resource-exhausted" | "internal" => {}
            other => {
                return Err(Rejected(format!("{at}: retry_on {other:?} is not supported")));
            }
        }
    }
    statuses.sort_unstable();
    statuses.dedup();
    let mut t = Table::new();
    let attempts = rp.num_retries.map_or(1, |n| n.value).saturating_add(1).min(10);
    t.insert("attempts".into(), Value::Integer(i64::from(attempts)));
    t.insert(
        "statuses".into(),
        Value::Array(statuses.into_iter().map(Value::Integer).collect()),
    );
    if let Some(d) = &rp.per_try_timeout
        && let Some(text) = duration_text(d.seconds, d.nanos).filter(|_| d.seconds > 0 || d.nanos > 0)
    {
        t.insert("per_try_timeout".into(), Value::String(text));
    }
    Ok(t)
}

fn redirect(rd: &RedirectAction, at: &str) -> Result<Table, Rejected> {
    let mut t = Table::new();
    if !rd.host_redirect.is_empty() {
        t.insert("host".into(), Value::String(rd.host_redirect.clone()));
    }
    if rd.port_redirect != 0 {
        t.insert("port".into(), Value::Integer(i64::from(rd.port_redirect)));
    }
    match &rd.scheme_rewrite_specifier {
        Some(redirect_action::SchemeRewriteSpecifier::SchemeRedirect(s)) => {
            t.insert("scheme".into(), Value::String(s.clone()));
        }
        Some(redirect_action::SchemeRewriteSpecifier::HttpsRedirect(true)) => {
            t.insert("scheme".into(), Value::String("https".into()));
        }
        _ => {}
    }
    match &rd.path_rewrite_specifier {
        Some(redirect_action::PathRewriteSpecifier::PathRedirect(p)) => {
            t.insert("path".into(), Value::String(p.clone()));
        }
        Some(redirect_action::PathRewriteSpecifier::PrefixRewrite(p)) => {
            t.insert("prefix".into(), Value::String(p.clone()));
        }
        None => {}
        _ => return Err(Rejected(format!("{at}: regex_rewrite in a redirect is not supported"))),
    }
    let code = match rd.response_code {
        0 => 301,
        1 => 302,
        2 => 303,
        3 => 307,
        4 => 308,
        other => return Err(Rejected(format!("{at}: redirect response_code {other} is unknown"))),
    };
    t.insert("code".into(), Value::Integer(code));
    if rd.strip_query {
        t.insert("strip_query".into(), Value::Boolean(true));
    }
    Ok(t)
}

/// Header edits gathered from the route configuration, virtual host, route (and split
/// entry), applied in that order as Envoy's `most_specific_header_mutations_wins = false`.
#[derive(Debug, Clone, Default)]
struct Edits {
    request: (Vec<String>, Table, Table),
    response: (Vec<String>, Table, Table),
}

impl Edits {
    fn take(
        &mut self,
        req_add: &[HeaderValueOption],
        req_remove: &[String],
        resp_add: &[HeaderValueOption],
        resp_remove: &[String],
        at: &str,
    ) -> Result<(), Rejected> {
        for (side, add, remove) in [
            (&mut self.request, req_add, req_remove),
            (&mut self.response, resp_add, resp_remove),
        ] {
            side.0.extend(remove.iter().cloned());
            for h in add {
                let hv = h
                    .header
                    .as_ref()
                    .ok_or_else(|| Rejected(format!("{at}: a header to add without header")))?;
                let value = if hv.raw_value.is_empty() {
                    hv.value.clone()
                } else {
                    String::from_utf8(hv.raw_value.clone())
                        .map_err(|_| Rejected(format!("{at}: header {:?}: raw_value is not UTF-8", hv.key)))?
                };
                let key = hv.key.to_ascii_lowercase();
                let append = match (h.append, HeaderAppendAction::try_from(h.append_action)) {
                    (Some(a), _) => a.value,
                    (None, Ok(HeaderAppendAction::AppendIfExistsOrAdd)) => true,
                    (None, Ok(HeaderAppendAction::OverwriteIfExistsOrAdd)) => false,
                    _ => {
                        return Err(Rejected(format!(
                            "{at}: header {:?}: append_action ADD_IF_ABSENT and OVERWRITE_IF_EXISTS are not supported",
                            hv.key
                        )));
                    }
                };
                let target = if append { &mut side.2 } else { &mut side.1 };
                target.insert(key, Value::String(value));
            }
        }
        Ok(())
    }

    fn put(&self, t: &mut Table) {
        for (key, (remove, set, add)) in [("request_headers", &self.request), ("response_headers", &self.response)] {
            if remove.is_empty() && set.is_empty() && add.is_empty() {
                continue;
            }
            let mut e = Table::new();
            if !remove.is_empty() {
                e.insert(
                    "remove".into(),
                    Value::Array(remove.iter().cloned().map(Value::String).collect()),
                );
            }
            if !set.is_empty() {
                e.insert("set".into(), Value::Table(set.clone()));
            }
            if !add.is_empty() {
                e.insert("add".into(), Value::Table(add.clone()));
            }
            t.insert(key.into(), Value::Table(e));
        }
    }
}
