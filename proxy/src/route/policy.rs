//! What a route does beyond sending the request to its cluster: answers, pins and splits,
//! faults, rewrites, header edits, mirrors and CORS. A route with none of them has no `Policy`, and its
//! requests take the path they took before any of this existed.

use std::sync::Arc;

use http::{HeaderName, StatusCode};
use regex::Regex;

use super::answer::Answer;
use super::cors::Cors;
use super::fault::{Abort, Chance, Fault};
use super::metrics::RouteMetrics;
use super::mirror::{Mirror, Mirrors};
use super::rewrite::PathRewrite;
use super::shift::{Backend, Pin, PinOn, Split};
use crate::config::{ConfigError, HeaderEditsConfig, RouteConfig, Source};
use crate::header_policy::HeaderEdits;
use crate::upstream::{Cluster, Clusters};

/// A route's (or a split entry's) `request_headers` / `response_headers`, through the one
/// header policy.
fn edits_of(config: &HeaderEditsConfig, what: &str) -> Result<HeaderEdits, String> {
    HeaderEdits::build(what, &config.remove, &config.set, &config.add)
}

pub struct Policy {
    pub answer: Option<Answer>,
    pub pins: Vec<Pin>,
    pub split: Option<Split>,
    pub fault: Option<Fault>,
    pub rewrite: Option<PathRewrite>,
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
    pub mirror: Option<Mirrors>,
    pub cors: Option<Cors>,
}

impl Policy {
    /// The route's policy, or `None` when it only forwards to its cluster.
    pub fn build(
        spanned: &toml::Spanned<RouteConfig>,
        route: &str,
        clusters: &Clusters,
        metrics: &RouteMetrics,
        src: &Source,
    ) -> Result<Option<Policy>, ConfigError> {
        let r = spanned.get_ref();
        let at = |span: std::ops::Range<usize>| move |problem: String| src.error_at(span, problem);
        let cluster = |name: &toml::Spanned<String>| {
            clusters
                .get(name.get_ref().as_str())
                .cloned()
                .ok_or_else(|| src.error_at(name.span(), format!("unknown cluster {:?}", name.get_ref())))
        };
        let answer = match (&r.redirect, &r.direct_response) {
            (Some(rd), _) => {
                Some(Answer::redirect(rd.get_ref(), r.matches.path_prefix.as_deref()).map_err(at(rd.span()))?)
            }
            (None, Some(dr)) => Some(Answer::direct(dr.get_ref()).map_err(at(dr.span()))?),
            (None, None) => None,
        };
        let pins = r
            .pin
            .iter()
            .map(|p| {
                let on = match (&p.header, &p.cookie) {
                    (Some(h), _) => PinOn::Header(
                        HeaderName::from_bytes(h.as_bytes())
                            .map_err(|_| src.error_at(p.cluster.span(), format!("pin: invalid header name {h:?}")))?,
                    ),
                    (None, Some(c)) => PinOn::Cookie(c.clone()),
                    (None, None) => unreachable_pin(src, &p.cluster)?,
                };
                let target = cluster(&p.cluster)?;
                Ok(Pin {
                    on,
                    value: p.value.clone(),
                    chosen: metrics.shifted(route, &target.name),
                    cluster: target,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let split = if r.split.is_empty() {
            None
        } else {
            let edits = |e: &Option<toml::Spanned<HeaderEditsConfig>>, what| {
                e.as_ref()
                    .map(|e| edits_of(e.get_ref(), what).map_err(at(e.span())))
                    .transpose()
            };
            let backends = r
                .split
                .iter()
                .map(|s| {
                    let c: Arc<Cluster> = cluster(&s.cluster)?;
                    Ok(Backend {
                        chosen: metrics.shifted(route, &c.name),
                        cluster: c,
                        weight: s.weight,
                        request_headers: edits(&s.request_headers, "split.request_headers")?,
                        response_headers: edits(&s.response_headers, "split.response_headers")?,
                    })
                })
                .collect::<Result<Vec<_>, ConfigError>>()?;
            Some(Split::new(backends))
        };
        let fault = match &r.fault {
            None => None,
            Some(f) => {
                let config = f.get_ref();
                let header = config
                    .header
                    .as_deref()
                    .map(|h| {
                        HeaderName::from_bytes(h.as_bytes())
                            .map_err(|_| format!("fault.header {h:?} is not a header name"))
                    })
                    .transpose()
                    .map_err(at(f.span()))?;
                let abort = match &config.abort {
                    None => None,
                    Some(a) => {
                        let kind = match a.status {
                            Some(code) => {
                                Abort::Status(StatusCode::from_u16(code).map_err(|e| at(f.span())(e.to_string()))?)
                            }
                            None => Abort::Reset,
                        };
                        Some((kind, Chance::percent(a.percent)))
                    }
                };
                Some(Fault {
                    header,
                    delay: config.delay.as_ref().map(|d| (d.duration, Chance::percent(d.percent))),
                    abort,
                    delayed: metrics.fault(route, "delay"),
                    aborted: metrics.fault(route, "abort"),
                })
            }
        };
        let rewrite = match &r.rewrite {
            None => None,
            Some(rw) => {
                let w = rw.get_ref();
                match (&w.prefix, &w.regex, &w.substitution, &r.matches.path_prefix) {
                    (Some(new), _, _, Some(old)) => Some(PathRewrite::Prefix {
                        old: super::segment_prefix(old).to_owned(),
                        new: new.clone(),
                    }),
                    (None, Some(re), Some(sub), _) => {
                        let re = Regex::new(re.get_ref())
                            .map_err(|e| src.error_at(re.span(), format!("rewrite.regex: {e}")))?;
                        Some(PathRewrite::regex(re, sub.clone()))
                    }
                    // Config validation refuses any other shape.
                    _ => return Err(src.error_at(rw.span(), "rewrite needs prefix, or regex with substitution")),
                }
            }
        };
        let request_headers = r
            .request_headers
            .as_ref()
            .map(|e| edits_of(e.get_ref(), "request_headers").map_err(at(e.span())))
            .transpose()?;
        let response_headers = r
            .response_headers
            .as_ref()
            .map(|e| edits_of(e.get_ref(), "response_headers").map_err(at(e.span())))
            .transpose()?;
        let mirror = match &r.mirror {
            None => None,
            Some(m) => {
                let each = m
                    .get_ref()
                    .0
                    .iter()
                    .map(|config| {
                        let target = cluster(&config.cluster)?;
                        let outcome = |o| metrics.mirrored(route, &target.name, o);
                        Ok(Mirror {
                            chance: Chance::percent(config.percent),
                            max_body: config.max_body_bytes,
                            in_flight: Default::default(),
                            max_in_flight: config.max_in_flight,
                            sent: outcome("sent"),
                            failed: outcome("failed"),
                            dropped: outcome("dropped"),
                            cluster: target,
                        })
                    })
                    .collect::<Result<_, ConfigError>>()?;
                Some(Mirrors(each))
            }
        };
        let cors = r
            .cors
            .as_ref()
            .map(|c| Cors::build(c.get_ref()).map_err(at(c.span())))
            .transpose()?;
        let policy = Policy {
            cors,
            mirror,
            answer,
            pins,
            split,
            fault,
            rewrite,
            request_headers,
            response_headers,
        };
        Ok((!policy.is_empty()).then_some(policy))
    }

    fn is_empty(&self) -> bool {
        self.answer.is_none()
            && self.pins.is_empty()
            && self.split.is_none()
            && self.fault.is_none()
            && self.rewrite.is_none()
            && self.request_headers.is_none()
            && self.response_headers.is_none()
            && self.mirror.is_none()
            && self.cors.is_none()
    }

    /// The cluster for a request the filters did not reroute: a pin, else the split, else
    /// the route's own; with the split entry drawn, whose header edits come with it.
    pub fn cluster<'a>(
        &'a self,
        headers: &http::HeaderMap,
        default: Option<&'a Cluster>,
    ) -> Option<(&'a Cluster, Option<&'a Backend>)> {
        if let Some(pinned) = super::shift::pinned(&self.pins, headers) {
            return Some((pinned, None));
        }
        match &self.split {
            Some(split) => {
                let backend = split.choose();
                Some((&backend.cluster, Some(backend)))
            }
            None => default.map(|c| (c, None)),
        }
    }
}

fn unreachable_pin(src: &Source, at: &toml::Spanned<String>) -> Result<PinOn, ConfigError> {
    // Config validation requires exactly one of header and cookie.
    Err(src.error_at(at.span(), "a pin needs exactly one of header, cookie"))
}
