//! Where a token is looked for, in the configured order: `"bearer"` (the `Authorization:
//! Bearer` header), `"header:<name>"`, `"cookie:<name>"`, `"query:<name>"`, and how it is
//! taken out of the request before it goes upstream. Pure string work on what the request
//! gives; the plugin reads and edits the request.

/// One place a token may be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Bearer,
    Header(String),
    Cookie(String),
    Query(String),
}

impl Source {
    /// One entry of the config's list of sources; the error names `field`.
    pub fn parse(field: &str, spec: &str) -> Result<Source, String> {
        let invalid =
            || format!("{field}: {spec:?} is not \"bearer\", \"header:NAME\", \"cookie:NAME\" or \"query:NAME\"");
        if spec == "bearer" {
            return Ok(Source::Bearer);
        }
        let (kind, name) = spec.split_once(':').ok_or_else(invalid)?;
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(invalid());
        }
        match kind {
            "header" => Ok(Source::Header(name.to_ascii_lowercase())),
            "cookie" => Ok(Source::Cookie(name.to_owned())),
            "query" => Ok(Source::Query(name.to_owned())),
            _ => Err(invalid()),
        }
    }

    /// The request header this source reads, if any.
    pub fn header_name(&self) -> Option<&str> {
        match self {
            Source::Bearer => Some("authorization"),
            Source::Header(name) => Some(name),
            Source::Cookie(_) => Some("cookie"),
            Source::Query(_) => None,
        }
    }

    /// The token this source finds, given the header value it reads (see
    /// [`Source::header_name`]) and the request's path and query.
    pub fn find(&self, header: Option<&str>, path_and_query: &str) -> Option<String> {
        let token = match self {
            Source::Bearer => {
                let value = header?.trim();
                let (scheme, rest) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_owned())?
            }
            Source::Header(_) => header?.trim().to_owned(),
            Source::Cookie(name) => cookie(header?, name)?.to_owned(),
            Source::Query(name) => query_param(path_and_query, name)?,
        };
        (!token.is_empty()).then_some(token)
    }

    /// The edit that takes this source's token out of the request, given the same header
    /// value and path as [`Source::find`].
    pub fn strip(&self, header: Option<&str>, path_and_query: &str) -> Strip<'_> {
        match self {
            Source::Bearer => Strip::RemoveHeader("authorization"),
            Source::Header(name) => Strip::RemoveHeader(name),
            Source::Cookie(name) => match header.and_then(|h| cookie_without(h, name)) {
                Some(rest) => Strip::SetHeader("cookie", rest),
                None => Strip::RemoveHeader("cookie"),
            },
            Source::Query(name) => Strip::SetPath(path_without_param(path_and_query, name)),
        }
    }
}

/// How to take a token out of a request (see [`Source::strip`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strip<'a> {
    RemoveHeader(&'a str),
    /// The header with the other values kept (the other cookies).
    SetHeader(&'a str, String),
    /// The path and query without the token's parameter.
    SetPath(String),
}

fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        (k.trim() == name).then(|| v.trim().trim_matches('"'))
    })
}

/// The cookie header without cookie `name`; `None` when nothing is left.
fn cookie_without(header: &str, name: &str) -> Option<String> {
    let kept: Vec<&str> = header
        .split(';')
        .map(str::trim)
        .filter(|pair| !pair.is_empty() && pair.split_once('=').map(|(k, _)| k.trim()) != Some(name))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

fn query_param(path_and_query: &str, name: &str) -> Option<String> {
    let (_, query) = path_and_query.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (crate::form::decode(k)? == name).then(|| crate::form::decode(v))?
    })
}

/// The path and query without parameter `name`.
fn path_without_param(path_and_query: &str, name: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split_once('=').map_or(*pair, |(k, _)| k);
            crate::form::decode(key).as_deref() != Some(name)
        })
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(Source::parse("token_sources", "bearer"), Ok(Source::Bearer));
        assert_eq!(
            Source::parse("token_sources", "header:X-Token"),
            Ok(Source::Header("x-token".into()))
        );
        assert_eq!(
            Source::parse("token_sources", "cookie:session"),
            Ok(Source::Cookie("session".into()))
        );
        assert_eq!(
            Source::parse("token_sources", "query:access_token"),
            Ok(Source::Query("access_token".into()))
        );
        for bad in ["Bearer", "header:", "form:x", "cookie", "query:a b"] {
            assert!(
                Source::parse("sources", bad).unwrap_err().starts_with("sources: "),
                "{bad}"
            );
        }
    }

    #[test]
    fn bearer_needs_the_scheme() {
        let b = Source::Bearer;
        assert_eq!(b.find(Some("Bearer abc.def.ghi"), "/"), Some("abc.def.ghi".into()));
        assert_eq!(b.find(Some("bearer  abc "), "/"), Some("abc".into()));
        assert_eq!(b.find(Some("Basic dXNlcg=="), "/"), None);
        assert_eq!(b.find(Some("Bearer "), "/"), None);
        assert_eq!(b.find(None, "/"), None);
    }

    #[test]
    fn cookies_and_queries() {
        let c = Source::Cookie("jwt".into());
        assert_eq!(c.find(Some("a=1; jwt=t.o.k; b=2"), "/"), Some("t.o.k".into()));
        assert_eq!(c.find(Some("xjwt=1"), "/"), None);
        assert_eq!(cookie_without("a=1; jwt=t; b=2", "jwt"), Some("a=1; b=2".into()));
        assert_eq!(cookie_without("jwt=t", "jwt"), None);

        let q = Source::Query("access_token".into());
        assert_eq!(q.find(None, "/x?a=1&access_token=t.o%2Bk"), Some("t.o+k".into()));
        assert_eq!(q.find(None, "/x?access_tokens=1"), None);
        assert_eq!(q.find(None, "/x"), None);
        assert_eq!(
            path_without_param("/x?a=1&access_token=t&b=2", "access_token"),
            "/x?a=1&b=2"
        );
        assert_eq!(path_without_param("/x?access_token=t", "access_token"), "/x");
    }

    #[test]
    fn strips_take_out_only_the_token() {
        let header = Strip::RemoveHeader;
        assert_eq!(Source::Bearer.strip(Some("Bearer t"), "/"), header("authorization"));
        assert_eq!(
            Source::Header("x-token".into()).strip(Some("t"), "/"),
            header("x-token")
        );
        let c = Source::Cookie("jwt".into());
        assert_eq!(
            c.strip(Some("a=1; jwt=t"), "/"),
            Strip::SetHeader("cookie", "a=1".into())
        );
        assert_eq!(c.strip(Some("jwt=t"), "/"), header("cookie"));
        assert_eq!(
            Source::Query("k".into()).strip(None, "/x?k=t&b=2"),
            Strip::SetPath("/x?b=2".into())
        );
    }
}
