//! Host side of the `request`, `response` and `fields` resources.
//!
//! The guest only ever holds *borrowed* `request` and `response` handles, which the
//! component model revokes when the phase call returns, so such a handle always means
//! "the request (or response) of the phase in progress" and needs no table entry: its
//! value is ignored and the state lives in [`Phase`](crate::wasm::state::Phase).
//!
//! A `fields` is owned by the guest and lives in the store's resource table: either a
//! view of the phase's request or response headers (what `headers()` returns, so a write
//! goes straight into the message) or a list of its own (a callout's). A guest holds at
//! most [`MAX_LIVE_FIELDS`] at once: each is host memory, and a guest that leaks them in a
//! loop must hit a limit, not the host's allocator.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use wasmtime::component::Resource;

use crate::filter::Limit;
use crate::header_policy::{self, NameError};
use crate::wasm::bindings::HeaderError;
use crate::wasm::bindings::types::{Host, HostFields, HostRequest, HostResponse};
use crate::wasm::limits::LimitHit;
use crate::wasm::state::HostState;

/// The type behind `borrow<request>` handles.
pub struct RequestHandle;
/// The type behind `borrow<response>` handles.
pub struct ResponseHandle;

/// What a `fields` handle stands for.
pub enum Fields {
    /// The headers of the request in the phase in progress.
    Request,
    /// The headers of the response in the phase in progress.
    Response,
    /// A list of the guest's own (a callout request) or the host's (a callout response).
    Own(HeaderMap),
}

/// Most `fields` a guest may hold at once.
pub const MAX_LIVE_FIELDS: usize = 64;

/// Most names (or entries) one `get-many`, `set-many` or `delete-many` takes. Without a
/// bound a guest could ask for one 8 KiB header a million times in one call and make the
/// host copy all of it; over it the call traps (the phase fails, closed).
pub const MAX_BATCH: usize = 64;

fn within_batch(n: usize, call: &str) -> wasmtime::Result<()> {
    if n > MAX_BATCH {
        return Err(wasmtime::Error::msg(format!(
            "{call} with {n} names: at most {MAX_BATCH} in one call"
        )));
    }
    Ok(())
}

/// Parses a guest's header through the one header policy: the names only the proxy sets
/// are `forbidden`, for a phase's message and a callout's own list alike.
fn parse(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), HeaderError> {
    let name = match header_policy::writable(name) {
        Ok(name) => name,
        Err(NameError::Invalid) => return Err(HeaderError::InvalidName(name.to_owned())),
        Err(NameError::Refused) => return Err(HeaderError::Forbidden(name.to_ascii_lowercase())),
    };
    let value = HeaderValue::from_str(value).map_err(|_| HeaderError::InvalidValue(name.as_str().to_owned()))?;
    Ok((name, value))
}

/// A header value as text. Values are almost always ASCII: `from_utf8` checks those a
/// word at a time, where the lossy decoder walks them chunk by chunk (measured: most of
/// the host's share of reading a 700-byte bearer token).
fn lossy(value: &HeaderValue) -> String {
    match std::str::from_utf8(value.as_bytes()) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
    }
}

impl HostState {
    /// Makes a new `fields` handle, or fails the phase when the guest holds too many.
    pub(crate) fn new_fields(&mut self, fields: Fields) -> wasmtime::Result<Resource<Fields>> {
        if self.live_fields >= MAX_LIVE_FIELDS {
            self.limiter.hit = Some(Limit::Fields);
            return Err(wasmtime::Error::msg(format!(
                "the filter holds {MAX_LIVE_FIELDS} header lists (fields) without dropping them"
            )));
        }
        self.live_fields += 1;
        Ok(self.table.push(fields)?)
    }

    /// Takes a guest's `fields` out of the table (it was moved to the host), as a map.
    pub(crate) fn take_fields(&mut self, handle: Resource<Fields>) -> wasmtime::Result<HeaderMap> {
        let fields = self.table.delete(handle)?;
        self.live_fields -= 1;
        Ok(match fields {
            Fields::Request => self.phase.req_head.headers.clone(),
            Fields::Response => self.phase.resp_head.headers.clone(),
            Fields::Own(map) => map,
        })
    }

    /// The header map a handle stands for.
    fn fields(&mut self, handle: &Resource<Fields>) -> wasmtime::Result<&mut HeaderMap> {
        Ok(match self.table.get_mut(handle)? {
            Fields::Request => &mut self.phase.req_head.headers,
            Fields::Response => &mut self.phase.resp_head.headers,
            Fields::Own(map) => map,
        })
    }
}

impl HostFields for HostState {
    fn new(&mut self) -> wasmtime::Result<Resource<Fields>> {
        self.new_fields(Fields::Own(HeaderMap::new()))
    }

    fn get(&mut self, fields: Resource<Fields>, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.fields(&fields)?.get(name.as_str()).map(lossy))
    }

    fn get_all(&mut self, fields: Resource<Fields>, name: String) -> wasmtime::Result<Vec<String>> {
        Ok(self.fields(&fields)?.get_all(name.as_str()).iter().map(lossy).collect())
    }

    fn has(&mut self, fields: Resource<Fields>, name: String) -> wasmtime::Result<bool> {
        Ok(self.fields(&fields)?.contains_key(name.as_str()))
    }

    fn entries(&mut self, fields: Resource<Fields>) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self
            .fields(&fields)?
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), lossy(v)))
            .collect())
    }

    fn set(
        &mut self,
        fields: Resource<Fields>,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), HeaderError>> {
        let map = self.fields(&fields)?;
        match parse(&name, &value) {
            // A full map would panic in `insert`: the guest's phase fails instead (closed).
            Ok((name, value)) => map
                .try_insert(name, value)
                .map(|_| Ok(()))
                .map_err(|_| wasmtime::Error::msg("set: the header list is full")),
            Err(e) => Ok(Err(e)),
        }
    }

    fn append(
        &mut self,
        fields: Resource<Fields>,
        name: String,
        value: String,
    ) -> wasmtime::Result<Result<(), HeaderError>> {
        let map = self.fields(&fields)?;
        match parse(&name, &value) {
            Ok((name, value)) => map
                .try_append(name, value)
                .map(|_| Ok(()))
                .map_err(|_| wasmtime::Error::msg("append: the header list is full")),
            Err(e) => Ok(Err(e)),
        }
    }

    fn delete(&mut self, fields: Resource<Fields>, name: String) -> wasmtime::Result<()> {
        let map = self.fields(&fields)?;
        // An invalid name cannot be present, and the refused ones are the proxy's.
        if let Ok(name) = header_policy::writable(&name) {
            map.remove(name);
        }
        Ok(())
    }

    fn get_many(&mut self, fields: Resource<Fields>, names: Vec<String>) -> wasmtime::Result<Vec<Option<String>>> {
        within_batch(names.len(), "get-many")?;
        let map = self.fields(&fields)?;
        Ok(names.iter().map(|name| map.get(name.as_str()).map(lossy)).collect())
    }

    fn set_many(
        &mut self,
        fields: Resource<Fields>,
        entries: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<(), HeaderError>> {
        within_batch(entries.len(), "set-many")?;
        // All checked before any is applied: a refused batch changes nothing.
        let mut parsed = Vec::with_capacity(entries.len());
        for (name, value) in &entries {
            match parse(name, value) {
                Ok(pair) => parsed.push(pair),
                Err(e) => return Ok(Err(e)),
            }
        }
        let map = self.fields(&fields)?;
        for (name, value) in parsed {
            map.try_insert(name, value)
                .map_err(|_| wasmtime::Error::msg("set-many: the header list is full"))?;
        }
        Ok(Ok(()))
    }

    fn delete_many(&mut self, fields: Resource<Fields>, names: Vec<String>) -> wasmtime::Result<()> {
        within_batch(names.len(), "delete-many")?;
        let map = self.fields(&fields)?;
        for name in &names {
            // As `delete`: an invalid name cannot be present, and the refused ones are the proxy's.
            if let Ok(name) = header_policy::writable(name) {
                map.remove(name);
            }
        }
        Ok(())
    }

    fn drop(&mut self, fields: Resource<Fields>) -> wasmtime::Result<()> {
        self.table.delete(fields)?;
        self.live_fields -= 1;
        Ok(())
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
        *hit = Some(Limit::Body);
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

    fn headers(&mut self, _: Resource<RequestHandle>) -> wasmtime::Result<Resource<Fields>> {
        self.new_fields(Fields::Request)
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
        // Only final statuses: a 1xx here would turn the answer into an interim one (or,
        // 101, an upgrade).
        Ok(match http::StatusCode::from_u16(status) {
            Ok(code) if (200..600).contains(&status) => {
                self.phase.resp_head.status = code;
                Ok(())
            }
            _ => Err(format!("invalid status {status}: a response phase sets 200..=599")),
        })
    }

    fn headers(&mut self, _: Resource<ResponseHandle>) -> wasmtime::Result<Resource<Fields>> {
        self.new_fields(Fields::Response)
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
