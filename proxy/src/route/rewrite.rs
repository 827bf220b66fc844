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

use crate::front::path::{PathPolicy, normalize};

pub enum PathRewrite {
    Prefix {
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
            PathRewrite::Prefix { old, new } => match path.strip_prefix(old.as_str()) {
                Some(rest) => (Cow::Owned(format!("{new}{rest}")), confine_of(new)),
                None => return Ok(()),
            },
            PathRewrite::Regex {
                re,
                substitution,
                confine,
            } => (re.replace_all(path, substitution.as_str()), confine.as_str()),
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
            old: old.to_owned(),
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
        // `/api..` is a normal segment; with the prefix swapped it would become `/v2/..`.
        let mut h = head("/api../secret");
        assert!(prefix("/api", "/v2/").apply(&mut h).is_err());
        let mut h = head("/api%2E%2E/secret");
        assert!(prefix("/api", "/v2/").apply(&mut h).is_err());
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
    fn double_slashes_from_the_join_are_merged() {
        let mut h = head("/api/x");
        prefix("/api", "/v2/").apply(&mut h).expect("rewrite");
        assert_eq!(h.uri, "/v2/x");
    }
}
