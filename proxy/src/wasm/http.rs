//! Host side of the `request` and `response` resources.
//!
//! The guest only ever holds *borrowed* handles, which the component model revokes when
//! the phase call returns, so a handle always means "the request (or response) of the
//! phase in progress" and needs no table entry: its value is ignored and the state lives
//! in [`Phase`](super::state::Phase).

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use wasmtime::component::Resource;

use super::bindings::types::{Host, HostRequest, HostResponse};
use super::limits::LimitHit;
use super::state::HostState;

/// The type behind `borrow<request>` handles.
pub struct RequestHandle;
/// The type behind `borrow<response>` handles.
pub struct ResponseHandle;

type Headers = Vec<(String, String)>;

fn header(map: &HeaderMap, name: &str) -> Option<String> {
    map.get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn headers(map: &HeaderMap) -> Headers {
    map.iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn parse(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header name {name:?}"))?;
    let value = HeaderValue::from_str(value).map_err(|_| format!("invalid value for header {name}"))?;
    Ok((name, value))
}

fn set_header(map: &mut HeaderMap, name: &str, value: &str) -> Result<(), String> {
    let (name, value) = parse(name, value)?;
    map.insert(name, value);
    Ok(())
}

fn add_header(map: &mut HeaderMap, name: &str, value: &str) -> Result<(), String> {
    let (name, value) = parse(name, value)?;
    map.append(name, value);
    Ok(())
}

fn remove_header(map: &mut HeaderMap, name: &str) {
    // An invalid name cannot be present: nothing to remove.
    if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
        map.remove(name);
    }
}

/// Replaces a buffered body, and the `content-length` that described the old one. Over
/// the limit is a limit hit (the phase fails), not an error the guest may ignore: a filter
/// must not push more than `limits.body` through.
fn set_body(
    slot: &mut Option<Bytes>,
    headers: &mut HeaderMap,
    body: Vec<u8>,
    limit: usize,
    hit: &mut LimitHit,
) -> wasmtime::Result<Result<(), String>> {
    if slot.is_none() {
        return Ok(Err(
            "the body is not buffered for this filter: ask for it in init's options".to_owned(),
        ));
    }
    if body.len() > limit {
        *hit = Some("body");
        return Err(wasmtime::Error::msg(format!(
            "body of {} bytes is over the filter's limit of {limit}",
            body.len()
        )));
    }
    if headers.contains_key(CONTENT_LENGTH) {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    *slot = Some(Bytes::from(body));
    Ok(Ok(()))
}

impl Host for HostState {}

impl HostRequest for HostState {
    fn method(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<String> {
        Ok(self.phase.req_head.method.as_str().to_owned())
    }

    fn path(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<String> {
        let uri = &self.phase.req_head.uri;
        Ok(uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned()))
    }

    fn set_path(&mut self, _: Resource<RequestHandle>, path: String) -> wasmtime::Result<Result<(), String>> {
        if !path.starts_with('/') {
            return Ok(Err(format!("path {path:?} must start with '/'")));
        }
        let pq = match PathAndQuery::try_from(path.as_str()) {
            Ok(pq) => pq,
            Err(e) => return Ok(Err(format!("invalid path {path:?}: {e}"))),
        };
        let mut parts = std::mem::take(&mut self.phase.req_head.uri).into_parts();
        parts.path_and_query = Some(pq);
        Ok(match http::Uri::from_parts(parts) {
            Ok(uri) => {
                self.phase.req_head.uri = uri;
                Ok(())
            }
            Err(e) => Err(format!("invalid path {path:?}: {e}")),
        })
    }

    fn header(&mut self, _: Resource<RequestHandle>, name: String) -> wasmtime::Result<Option<String>> {
        Ok(header(&self.phase.req_head.headers, &name))
    }

    fn headers(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<Headers> {
        Ok(headers(&self.phase.req_head.headers))
    }

    fn set_header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(set_header(&mut self.phase.req_head.headers, &name, &value))
    }

    fn add_header(
        &mut self,
        _: Resource<RequestHandle>,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(add_header(&mut self.phase.req_head.headers, &name, &value))
    }

    fn remove_header(&mut self, _: Resource<RequestHandle>, name: String) -> wasmtime::Result<()> {
        remove_header(&mut self.phase.req_head.headers, &name);
        Ok(())
    }

    fn body(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.phase.req_body.as_ref().map(|b| b.to_vec()))
    }

    fn set_body(&mut self, _: Resource<RequestHandle>, body: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        let phase = &mut self.phase;
        set_body(
            &mut phase.req_body,
            &mut phase.req_head.headers,
            body,
            self.shared.body_limit,
            &mut self.limiter.hit,
        )
    }

    fn drop(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<()> {
        // Only borrows are handed out; the component model never drops them here.
        Ok(())
    }
}

impl HostResponse for HostState {
    fn status(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<u16> {
        Ok(self.phase.resp_head.status.as_u16())
    }

    fn set_status(&mut self, _: Resource<ResponseHandle>, status: u16) -> wasmtime::Result<Result<(), String>> {
        Ok(match http::StatusCode::from_u16(status) {
            Ok(code) => {
                self.phase.resp_head.status = code;
                Ok(())
            }
            Err(_) => Err(format!("invalid status {status}")),
        })
    }

    fn header(&mut self, _: Resource<ResponseHandle>, name: String) -> wasmtime::Result<Option<String>> {
        Ok(header(&self.phase.resp_head.headers, &name))
    }

    fn headers(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<Headers> {
        Ok(headers(&self.phase.resp_head.headers))
    }

    fn set_header(
        &mut self,
        _: Resource<ResponseHandle>,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(set_header(&mut self.phase.resp_head.headers, &name, &value))
    }

    fn add_header(
        &mut self,
        _: Resource<ResponseHandle>,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(add_header(&mut self.phase.resp_head.headers, &name, &value))
    }

    fn remove_header(&mut self, _: Resource<ResponseHandle>, name: String) -> wasmtime::Result<()> {
        remove_header(&mut self.phase.resp_head.headers, &name);
        Ok(())
    }

    fn body(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.phase.resp_body.as_ref().map(|b| b.to_vec()))
    }

    fn set_body(&mut self, _: Resource<ResponseHandle>, body: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        let phase = &mut self.phase;
        set_body(
            &mut phase.resp_body,
            &mut phase.resp_head.headers,
            body,
            self.shared.body_limit,
            &mut self.limiter.hit,
        )
    }

    fn drop(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<()> {
        Ok(())
    }
}
