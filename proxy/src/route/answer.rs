//! Routes that answer themselves: redirects and direct responses.

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

use crate::body::Body;
use crate::config::{DirectResponseConfig, RedirectConfig};
use crate::conn::ConnInfo;
use crate::header_policy::{self, NameError};

pub enum Answer {
    Redirect(Redirect),
    Direct {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
}

pub struct Redirect {
    code: StatusCode,
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    path: PathChange,
    strip_query: bool,
}

enum PathChange {
    Keep,
    Replace(String),
    /// The route's `path_prefix` (first, as matched: [`super::segment_prefix`]) becomes the
    /// second, segment by segment.
    Prefix(String, String),
}

impl Answer {
    pub fn redirect(r: &RedirectConfig, route_prefix: Option<&str>) -> Result<Answer, String> {
        let path = match (&r.path, &r.prefix, route_prefix) {
            (Some(p), _, _) => PathChange::Replace(p.clone()),
            (None, Some(new), Some(old)) => PathChange::Prefix(super::segment_prefix(old).to_owned(), new.clone()),
            _ => PathChange::Keep,
        };
        if let Some(host) = &r.host
            && (host.is_empty() || http::uri::Authority::try_from(host.as_str()).is_err() || host.contains(['@', ':']))
        {
            return Err(format!("redirect.host {host:?} is not a host name"));
        }
        Ok(Answer::Redirect(Redirect {
            code: StatusCode::from_u16(r.code).map_err(|e| e.to_string())?,
            scheme: r.scheme.clone(),
            host: r.host.clone(),
            port: r.port,
            path,
            strip_query: r.strip_query,
        }))
    }

    pub fn direct(d: &DirectResponseConfig) -> Result<Answer, String> {
        let mut headers = HeaderMap::new();
        for (name, value) in &d.headers {
            let name = header_policy::writable(name).map_err(|e| match e {
                NameError::Invalid => format!("direct_response: invalid header name {name:?}"),
                NameError::Refused => format!("direct_response: {name} is set by the proxy"),
            })?;
            let value =
                HeaderValue::from_str(value).map_err(|_| format!("direct_response: invalid value for {name}"))?;
            headers.append(name, value);
        }
        if !d.body.is_empty() && !headers.contains_key(header::CONTENT_TYPE) {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(d.body.len()));
        Ok(Answer::Direct {
            status: StatusCode::from_u16(d.status).map_err(|e| e.to_string())?,
            headers,
            body: Bytes::from(d.body.clone()),
        })
    }

    pub fn respond(&self, head: &Parts, conn: &ConnInfo) -> Response<Body> {
        match self {
            Answer::Direct { status, headers, body } => {
                let mut resp = Response::new(Body::full(body.clone()));
                *resp.status_mut() = *status;
                *resp.headers_mut() = headers.clone();
                resp
            }
            Answer::Redirect(r) => {
                let mut resp = Response::new(Body::empty());
                *resp.status_mut() = r.code;
                match HeaderValue::try_from(r.location(head, conn)) {
                    Ok(location) => {
                        resp.headers_mut().insert(header::LOCATION, location);
                        resp.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                    }
                    // Only a request's own bytes can get here, and they were valid header text.
                    Err(_) => *resp.status_mut() = StatusCode::BAD_REQUEST,
                }
                resp
            }
        }
    }
}

impl Redirect {
    fn location(&self, head: &Parts, conn: &ConnInfo) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(conn.scheme);
        let asked = head
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| head.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        let (asked_host, asked_port) = split_port(asked);
        let host = self.host.as_deref().unwrap_or(asked_host);
        // A scheme change drops the client's port (it belonged to the old scheme).
        let port = match (self.port, &self.scheme) {
            (Some(p), _) => Some(p.to_string()),
            (None, Some(_)) => None,
            (None, None) => asked_port.map(str::to_owned),
        };
        let path = head.uri.path();
        let path = match &self.path {
            PathChange::Keep => path.to_owned(),
            PathChange::Replace(p) => p.clone(),
            PathChange::Prefix(old, new) => {
                super::rewrite::replace_prefix(path, old, new).unwrap_or_else(|| path.to_owned())
            }
        };
        let mut location = format!("{scheme}://{host}");
        if let Some(port) = port {
            location.push(':');
            location.push_str(&port);
        }
        location.push_str(&path);
        if let (Some(query), false) = (head.uri.query(), self.strip_query) {
            location.push('?');
            location.push_str(query);
        }
        location
    }
}

/// `host:port` into its parts; an IPv6 literal keeps its brackets.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !host.ends_with(':') => {
            (host, Some(port))
        }
        _ => (authority, None),
    }
}
