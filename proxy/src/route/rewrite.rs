//! Path rewrites: the route's matched prefix replaced, or a regex substitution.
//!
//! The front door has normalised the path already, but a rewrite can still build a dot
//! segment out of pieces (`/api` + `..x` is fine, `/v2/` + `../x` is not). The result is
//! normalised again and must stay under the fixed part of what the rewrite writes, so a
//! request can never be walked out of the path a rewrite confines it to.

use std::borrow::Cow;

use http::Uri;
use http::request::Parts;
use http::uri::PathAndQuery;
use regex::Regex;

use super::under_prefix;
use crate::config::PathPolicy;
use crate::front::path::normalize;

pub enum PathRewrite {
    Prefix {
        /// The route's `path_prefix` as matched ([`super::segment_prefix`]).
        old: String,
        new: String,
    },
    Regex {
        re: Regex,
        substitution: String,
        confine: String,
    },
}

/// The rewritten path left the rewrite's prefix or is not a valid path (400).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the rewritten path {0:?} leaves the rewrite's prefix or is malformed")]
pub struct RewriteRefused(pub String);

impl PathRewrite {
    pub fn regex(re: Regex, substitution: String) -> PathRewrite {
        // What the substitution writes before its first capture is fixed: the confinement.
        let fixed = substitution
            .find('$')
            .map_or(substitution.as_str(), |i| &substitution[..i]);
        let confine = fixed.rfind('/').map_or("/", |i| &fixed[..=i]).to_owned();
        PathRewrite::Regex {
            re,
            substitution,
            confine,
        }
    }

    pub fn apply(&self, head: &mut Parts) -> Result<(), RewriteRefused> {
        let path = head.uri.path();
        let (rewritten, confine) = match self {
            PathRewrite::Prefix { old, new } => match replace_prefix(path, old, new) {
                Some(rewritten) => (Cow::Owned(rewritten), confine_of(new)),
                None => return Ok(()),
            },
            PathRewrite::Regex {
                re,
                substitution,
                confine,
            } => match re.replace_all(path, substitution.as_str()) {
                // No match: the path goes on unchanged, as Envoy's regex_rewrite and the
                // Gateway API's URLRewrite do (the regex crate borrows only when nothing matched).
                Cow::Borrowed(_) => return Ok(()),
                rewritten => (rewritten, confine.as_str()),
            },
        };
        let policy = PathPolicy {
            merge_slashes: true,
            reject_encoded_slashes: false,
        };
        let normal = match normalize(&rewritten, policy) {
            Ok(normal) if normal.starts_with(confine) || normal.as_ref() == confine.trim_end_matches('/') => normal,
            _ => return Err(RewriteRefused(rewritten.into_owned())),
        };
        let target = match head.uri.query() {
            Some(query) => format!("{normal}?{query}"),
            None => normal.into_owned(),
        };
        let path_and_query = PathAndQuery::try_from(target).map_err(|e| RewriteRefused(e.to_string()))?;
        let mut parts = std::mem::take(&mut head.uri).into_parts();
        parts.path_and_query = Some(path_and_query);
        head.uri = Uri::from_parts(parts).map_err(|e| RewriteRefused(e.to_string()))?;
        Ok(())
    }
}

/// `path` with its leading segments `old` (a [`super::segment_prefix`]) replaced by `new`, as the
/// Gateway API's `ReplacePrefixMatch` does: a `/` at the end of either does not count, so
/// `/foo/bar` becomes `/xyz/bar` under `/foo` or `/foo/` and `/xyz` or `/xyz/`, `/foo`
/// becomes `/xyz`, and `/foo` with `new = "/"` becomes `/`. `None` when the path is not
/// under `old`.
pub fn replace_prefix(path: &str, old: &str, new: &str) -> Option<String> {
    let rest = under_prefix(path, old)?;
    let new = new.trim_end_matches('/');
    Some(match (new, rest) {
        ("", "") => "/".to_owned(),
        _ => format!("{new}{rest}"),
    })
}

/// A prefix confines to itself up to its last `/`: `/v2/` to `/v2/`, `/v2` to `/`.
fn confine_of(prefix: &str) -> &str {
    prefix.rfind('/').map_or("/", |i| &prefix[..=i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(target: &str) -> Parts {
        http::Request::get(target).body(()).expect("request").into_parts().0
    }

    fn prefix(old: &str, new: &str) -> PathRewrite {
        PathRewrite::Prefix {
            old: crate::route::segment_prefix(old).to_owned(),
            new: new.to_owned(),
        }
    }

    #[test]
    fn prefix_replaced_query_kept() {
        let mut h = head("/api/users?x=1");
        prefix("/api/", "/v2/").apply(&mut h).expect("rewrite");
        assert_eq!(h.uri, "/v2/users?x=1");
    }

    #[test]
    fn a_built_dot_segment_cannot_leave_the_prefix() {
        // `/api..` is a segment of its own, not under `/api`: left alone, never `/v2/..`.
        for target in ["/api../secret", "/api%2E%2E/secret"] {
            let mut h = head(target);
            prefix("/api", "/v2/").apply(&mut h).expect("not under the prefix");
            assert_eq!(h.uri, target);
        }
    }

    #[test]
    fn prefixes_are_replaced_by_whole_segments() {
        // The Gateway API's ReplacePrefixMatch table.
        for (path, old, new, want) in [
            ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
            ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo/", "/foo", "/xyz", "/xyz/"),
            ("/foo/bar", "/foo", "/", "/bar"),
            ("/foo/", "/foo", "/", "/"),
            ("/foo", "/foo", "/", "/"),
            ("/foo", "/foo/", "/xyz/", "/xyz"),
        ] {
            let mut h = head(path);
            prefix(old, new).apply(&mut h).expect("rewrite");
            assert_eq!(h.uri, want, "{path} under {old} to {new}");
        }
        let mut h = head("/foobar");
        prefix("/foo", "/xyz").apply(&mut h).expect("not under the prefix");
        assert_eq!(h.uri, "/foobar");
    }

    #[test]
    fn regex_substitution_is_confined_to_its_fixed_part() {
        let rw = PathRewrite::regex(Regex::new("^/u/([^/]*)(.*)$").expect("re"), "/users/$1$2".to_owned());
        let mut h = head("/u/42/posts");
        rw.apply(&mut h).expect("rewrite");
        assert_eq!(h.uri, "/users/42/posts");
        let rw = PathRewrite::regex(Regex::new("^/u/(.*)$").expect("re"), "/users/$1/../..".to_owned());
        let mut h = head("/u/x");
        assert!(rw.apply(&mut h).is_err());
    }

    #[test]
    fn a_regex_that_does_not_match_leaves_the_path_alone() {
        let rw = PathRewrite::regex(Regex::new("^/users/([0-9]+)$").expect("re"), "/u/$1".to_owned());
        let mut h = head("/users/me?x=1");
        rw.apply(&mut h).expect("unchanged");
        assert_eq!(h.uri, "/users/me?x=1");
    }

    #[test]
    fn double_slashes_from_the_join_are_merged() {
        let mut h = head("/api/x");
        prefix("/api", "/v2/").apply(&mut h).expect("rewrite");
        assert_eq!(h.uri, "/v2/x");
    }
}
