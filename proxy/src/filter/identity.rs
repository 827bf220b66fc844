//! `native = "identity"`: allows or denies requests by the client's verified certificate
//! identity (mutual TLS), per route.
//!
//! ```toml
//! [[filters]]
//! name = "only-frontends"
//! native = "identity"
//! config = { allow = ["spiffe://example.org/ns/web/*"], deny = ["spiffe://example.org/ns/web/sa/legacy"] }
//! ```
//!
//! A pattern is an exact identity, or a prefix ending in `*`. `deny` wins over `allow`; with
//! a non-empty `allow`, anything not listed (and any client without a certificate) gets 403.

use http::{Response, StatusCode};
use serde::Deserialize;

use super::{Filter, FilterRequest, RequestCtx, RequestDecision, RequestFuture};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

pub struct IdentityFilter {
    name: String,
    allow: Vec<String>,
    deny: Vec<String>,
}

fn matches(pattern: &str, identity: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => identity.starts_with(prefix),
        None => pattern == identity,
    }
}

impl IdentityFilter {
    pub fn new(name: &str, config: toml::Value) -> Result<IdentityFilter, String> {
        let settings: Settings = config.try_into().map_err(|e: toml::de::Error| e.message().to_owned())?;
        if settings.allow.is_empty() && settings.deny.is_empty() {
            return Err("needs `allow` or `deny` patterns".to_owned());
        }
        Ok(IdentityFilter {
            name: name.to_owned(),
            allow: settings.allow,
            deny: settings.deny,
        })
    }

    fn permits(&self, identity: Option<&str>) -> bool {
        match identity {
            Some(id) if self.deny.iter().any(|p| matches(p, id)) => false,
            Some(id) => self.allow.is_empty() || self.allow.iter().any(|p| matches(p, id)),
            None => self.allow.is_empty(),
        }
    }
}

impl Filter for IdentityFilter {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_request<'a>(&'a self, _req: &'a mut FilterRequest, ctx: &'a mut RequestCtx) -> RequestFuture<'a> {
        let decision = if self.permits(ctx.peer_identity.as_deref()) {
            RequestDecision::Continue
        } else {
            tracing::info!(filter = %self.name, identity = ctx.peer_identity.as_deref().unwrap_or("-"), "identity denied");
            RequestDecision::Respond(forbidden())
        };
        Box::pin(std::future::ready(Ok(decision)))
    }

    fn has_response_phase(&self) -> bool {
        false
    }
}

fn forbidden() -> Response<crate::body::Body> {
    crate::body::text(StatusCode::FORBIDDEN, "forbidden\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allow: &[&str], deny: &[&str]) -> IdentityFilter {
        IdentityFilter {
            name: "t".into(),
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn deny_wins_and_allow_is_a_closed_list() {
        let f = filter(&["spiffe://td/ns/web/*"], &["spiffe://td/ns/web/sa/legacy"]);
        assert!(f.permits(Some("spiffe://td/ns/web/sa/app")));
        assert!(!f.permits(Some("spiffe://td/ns/web/sa/legacy")));
        assert!(!f.permits(Some("spiffe://td/ns/db/sa/app")));
        assert!(!f.permits(None));
        let deny_only = filter(&[], &["spiffe://td/ns/bad/*"]);
        assert!(deny_only.permits(Some("spiffe://td/ns/good/sa/x")));
        assert!(deny_only.permits(None));
        assert!(!deny_only.permits(Some("spiffe://td/ns/bad/sa/x")));
    }

    #[test]
    fn config_needs_patterns() {
        let empty = toml::Value::Table(toml::Table::new());
        assert!(IdentityFilter::new("t", empty).is_err());
    }
}
