//! Which requests a filter protects: `anonymous_paths` (prefixes that need no credentials)
//! and `methods` (the methods to protect; empty = all).
//!
//! A prefix ending in `/` matches anything under it; otherwise it matches the path itself
//! and anything under it as a segment (`/health` matches `/health` and `/health/live`, not
//! `/healthz`), so an anonymous `/public` never opens `/publicity`.
//!
//! A path with dot segments (`/public/../admin`) or encoded separators (`%2f`, `%2e`, `%5c`)
//! is never anonymous: the upstream may normalise it into a protected path, so it must
//! present credentials.

/// The checked `anonymous_paths` and `methods` of a config.
pub struct Scope {
    anonymous: Vec<String>,
    methods: Vec<String>,
}

impl Scope {
    /// Checks the config's lists: prefixes start with `/`, methods are HTTP method names.
    pub fn new(anonymous: Vec<String>, methods: Vec<String>) -> Result<Scope, String> {
        for prefix in &anonymous {
            if !prefix.starts_with('/') {
                return Err(format!("anonymous_paths: {prefix:?} must start with '/'"));
            }
        }
        let mut upper = Vec::with_capacity(methods.len());
        for method in methods {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(format!("methods: {method:?} is not an HTTP method"));
            }
            upper.push(method.to_ascii_uppercase());
        }
        Ok(Scope {
            anonymous,
            methods: upper,
        })
    }

    /// Whether every request must be authenticated (no `anonymous_paths`, no `methods`):
    /// then [`protects`](Self::protects) is `true` whatever the method and path, and a
    /// filter need not ask the proxy for them.
    pub fn protects_all(&self) -> bool {
        self.methods.is_empty() && self.anonymous.is_empty()
    }

    /// Whether a request with this method and path (and query) must be authenticated.
    pub fn protects(&self, method: &str, path_and_query: &str) -> bool {
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m.eq_ignore_ascii_case(method)) {
            return false;
        }
        let path = path_and_query.split(['?', '#']).next().unwrap_or_default();
        if suspicious(path) {
            return true;
        }
        !self.anonymous.iter().any(|prefix| matches_prefix(prefix, path))
    }
}

fn matches_prefix(prefix: &str, path: &str) -> bool {
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

fn suspicious(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\')
        || path.split('/').any(|segment| segment == "." || segment == "..")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn scope(anon: &[&str], methods: &[&str]) -> Scope {
        Scope::new(
            anon.iter().map(|s| s.to_string()).collect(),
            methods.iter().map(|s| s.to_string()).collect(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let s = scope(&["/health", "/static/"], &[]);
        assert!(!s.protects("GET", "/health"));
        assert!(!s.protects("GET", "/health/live?x=1"));
        assert!(s.protects("GET", "/healthz"));
        assert!(!s.protects("GET", "/static/app.js"));
        assert!(s.protects("GET", "/static"));
        assert!(s.protects("GET", "/api"));
    }

    #[test]
    fn traversal_is_never_anonymous() {
        let s = scope(&["/public"], &[]);
        assert!(s.protects("GET", "/public/../admin"));
        assert!(s.protects("GET", "/public/%2e%2e/admin"));
        assert!(s.protects("GET", "/public%2Fadmin"));
        assert!(!s.protects("GET", "/public/a.b"));
    }

    #[test]
    fn methods_limit_what_is_protected() {
        let s = scope(&[], &["post", "DELETE"]);
        assert!(s.protects("POST", "/x"));
        assert!(s.protects("delete", "/x"));
        assert!(!s.protects("GET", "/x"));
        assert!(scope(&[], &[]).protects("GET", "/x"));
    }

    #[test]
    fn protects_all_only_when_nothing_is_exempt() {
        let all = scope(&[], &[]);
        assert!(all.protects_all());
        for (method, path) in [("GET", "/"), ("POST", "/a/../b"), ("get", "/x?y=%2e"), ("", "")] {
            assert!(all.protects(method, path), "{method} {path}");
        }
        assert!(!scope(&["/public"], &[]).protects_all());
        assert!(!scope(&[], &["POST"]).protects_all());
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(Scope::new(vec!["public".into()], vec![]).is_err());
        assert!(Scope::new(vec![], vec!["GE T".into()]).is_err());
    }
}
