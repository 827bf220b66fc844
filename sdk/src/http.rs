//! The request, response and header lists a phase works on: thin wrappers over host
//! handles, so reading a header copies that header only.

use std::cell::OnceCell;
use std::fmt;

use crate::bindings::weft::filter::types as wit;

pub use wit::HeaderError;

impl From<HeaderError> for String {
    fn from(e: HeaderError) -> String {
        e.to_string()
    }
}

/// A header list: a request's or response's (writes change what is sent), a callout
/// response's, or one you build. Names are case-insensitive; a name may have several
/// values. The framing and hop-by-hop headers, `host` and `via` are the proxy's: setting them
/// fails with [`HeaderError::Forbidden`] (the list is in the host's `docs/filters.md`).
///
/// ```no_run
/// # fn phase(request: &weft_sdk::Request<'_>) -> Result<(), weft_sdk::HeaderError> {
/// let headers = request.headers();
/// if let Some(agent) = headers.get("user-agent") {
///     headers.set("x-agent-seen", &agent)?;
/// }
/// headers.delete("cookie");
/// # Ok(())
/// # }
/// ```
pub struct Fields(wit::Fields);

impl Fields {
    /// An empty list.
    ///
    /// ```no_run
    /// let headers = weft_sdk::Fields::new();
    /// headers.append("accept", "application/json").unwrap();
    /// ```
    #[allow(clippy::new_without_default)] // a host call, not a cheap default
    pub fn new() -> Self {
        Fields(wit::Fields::new())
    }

    pub(crate) fn from_wit(fields: wit::Fields) -> Self {
        Fields(fields)
    }

    pub(crate) fn into_wit(self) -> wit::Fields {
        self.0
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<String> {
        self.0.get(name)
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<String> {
        self.0.get_all(name)
    }

    /// Whether `name` has a value.
    pub fn has(&self, name: &str) -> bool {
        self.0.has(name)
    }

    /// The first value of each of `names`, in order: one call into the proxy for all of
    /// them, where [`get`](Self::get) is one per name (since `weft:filter` 0.2.2).
    ///
    /// ```no_run
    /// # fn phase(request: &weft_sdk::Request<'_>) {
    /// let values = request.headers().get_many(&["authorization", "user-agent"]);
    /// let (auth, agent) = (&values[0], &values[1]);
    /// # }
    /// ```
    pub fn get_many(&self, names: &[impl AsRef<str>]) -> Vec<Option<String>> {
        let owned: Vec<String> = names.iter().map(|name| name.as_ref().to_owned()).collect();
        let mut values = self.0.get_many(&owned);
        // One value per name, whatever the host answered.
        values.resize(names.len(), None);
        values
    }

    /// Sets several headers in one call, each replacing its values as
    /// [`set`](Self::set) does, in order (since `weft:filter` 0.2.2). Every entry is
    /// checked first: when one is not valid, nothing changes and its error comes back.
    ///
    /// ```no_run
    /// # fn phase(response: &weft_sdk::Response<'_>) -> Result<(), weft_sdk::HeaderError> {
    /// response.headers().set_many(&[("x-limit", "10"), ("x-remaining", "9")])
    /// # }
    /// ```
    pub fn set_many(&self, entries: &[(impl AsRef<str>, impl AsRef<str>)]) -> Result<(), HeaderError> {
        let owned: Vec<(String, String)> = entries
            .iter()
            .map(|(name, value)| (name.as_ref().to_owned(), value.as_ref().to_owned()))
            .collect();
        self.0.set_many(&owned)
    }

    /// Removes every value of each of `names`, in one call (since `weft:filter` 0.2.2).
    ///
    /// ```no_run
    /// # fn phase(request: &weft_sdk::Request<'_>) {
    /// request.headers().delete_many(&["cookie", "x-internal"]);
    /// # }
    /// ```
    pub fn delete_many(&self, names: &[impl AsRef<str>]) {
        let owned: Vec<String> = names.iter().map(|name| name.as_ref().to_owned()).collect();
        self.0.delete_many(&owned)
    }

    /// Every header as `(name, value)`, one entry per value, in order.
    pub fn entries(&self) -> Vec<(String, String)> {
        self.0.entries()
    }

    /// Replaces every value of `name`.
    pub fn set(&self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.0.set(name, value)
    }

    /// Adds a value to `name`, keeping the others.
    pub fn append(&self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.0.append(name, value)
    }

    /// Removes every value of `name`.
    pub fn delete(&self, name: &str) {
        self.0.delete(name)
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries()).finish()
    }
}

/// The request in [`Filter::on_request`](crate::Filter::on_request). Every method is a
/// call into the proxy; nothing is copied until asked for.
///
/// ```no_run
/// # fn phase(request: &mut weft_sdk::Request<'_>) {
/// if request.header("x-debug").is_some() {
///     request.set_header("x-debug-seen", "1").ok();
/// }
/// # }
/// ```
pub struct Request<'a> {
    handle: &'a wit::Request,
    headers: OnceCell<Fields>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(handle: &'a wit::Request) -> Self {
        Request {
            handle,
            headers: OnceCell::new(),
        }
    }

    /// The method, e.g. `"GET"`.
    ///
    /// ```no_run
    /// # fn phase(request: &weft_sdk::Request<'_>) -> bool {
    /// request.method() == "POST"
    /// # }
    /// ```
    pub fn method(&self) -> String {
        self.handle.method()
    }

    /// The path and query, e.g. `"/a?b=c"`.
    ///
    /// ```no_run
    /// # fn phase(request: &weft_sdk::Request<'_>) -> bool {
    /// request.path().starts_with("/admin")
    /// # }
    /// ```
    pub fn path(&self) -> String {
        self.handle.path()
    }

    /// Replaces the path and query sent upstream.
    ///
    /// ```no_run
    /// # fn phase(request: &mut weft_sdk::Request<'_>) -> Result<(), String> {
    /// request.set_path("/v2/items")
    /// # }
    /// ```
    pub fn set_path(&mut self, path: &str) -> Result<(), String> {
        self.handle.set_path(path)
    }

    /// The request's headers (asked of the proxy once per phase).
    ///
    /// ```no_run
    /// # fn phase(request: &weft_sdk::Request<'_>) -> usize {
    /// request.headers().entries().len()
    /// # }
    /// ```
    pub fn headers(&self) -> &Fields {
        self.headers.get_or_init(|| Fields(self.handle.headers()))
    }

    /// The first value of a header (case-insensitive name); `headers().get(name)`.
    ///
    /// ```no_run
    /// # fn phase(request: &weft_sdk::Request<'_>) -> Option<String> {
    /// request.header("authorization")
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers().get(name)
    }

    /// Sets a header, replacing its values; `headers().set(name, value)`.
    ///
    /// ```no_run
    /// # fn phase(request: &mut weft_sdk::Request<'_>) -> Result<(), weft_sdk::HeaderError> {
    /// request.set_header("x-user", "alice")
    /// # }
    /// ```
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.headers().set(name, value)
    }

    /// Removes every value of a header; `headers().delete(name)`.
    ///
    /// ```no_run
    /// # fn phase(request: &mut weft_sdk::Request<'_>) {
    /// request.remove_header("cookie");
    /// # }
    /// ```
    pub fn remove_header(&mut self, name: &str) {
        self.headers().delete(name)
    }

    /// The buffered body, when [`Options::request_body`](crate::Options) asked for it.
    ///
    /// ```no_run
    /// # fn phase(request: &weft_sdk::Request<'_>) -> usize {
    /// request.body().map_or(0, |b| b.len())
    /// # }
    /// ```
    pub fn body(&self) -> Option<Vec<u8>> {
        self.handle.body()
    }

    /// Replaces the buffered body. Fails when bodies are not buffered for this filter.
    ///
    /// ```no_run
    /// # fn phase(request: &mut weft_sdk::Request<'_>) -> Result<(), String> {
    /// request.set_body(b"{}")
    /// # }
    /// ```
    pub fn set_body(&mut self, body: &[u8]) -> Result<(), String> {
        self.handle.set_body(body)
    }
}

/// The response in [`Filter::on_response`](crate::Filter::on_response).
///
/// ```no_run
/// # fn phase(response: &mut weft_sdk::Response<'_>) {
/// if response.status() >= 500 {
///     response.set_header("retry-after", "1").ok();
/// }
/// # }
/// ```
pub struct Response<'a> {
    handle: &'a wit::Response,
    headers: OnceCell<Fields>,
}

impl<'a> Response<'a> {
    pub(crate) fn new(handle: &'a wit::Response) -> Self {
        Response {
            handle,
            headers: OnceCell::new(),
        }
    }

    /// The status code.
    ///
    /// ```no_run
    /// # fn phase(response: &weft_sdk::Response<'_>) -> bool {
    /// response.status() == 404
    /// # }
    /// ```
    pub fn status(&self) -> u16 {
        self.handle.status()
    }

    /// Replaces the status code (200..=599).
    ///
    /// ```no_run
    /// # fn phase(response: &mut weft_sdk::Response<'_>) -> Result<(), String> {
    /// response.set_status(200)
    /// # }
    /// ```
    pub fn set_status(&mut self, status: u16) -> Result<(), String> {
        self.handle.set_status(status)
    }

    /// The response's headers (asked of the proxy once per phase).
    ///
    /// ```no_run
    /// # fn phase(response: &weft_sdk::Response<'_>) -> Vec<String> {
    /// response.headers().get_all("set-cookie")
    /// # }
    /// ```
    pub fn headers(&self) -> &Fields {
        self.headers.get_or_init(|| Fields(self.handle.headers()))
    }

    /// The first value of a header (case-insensitive name); `headers().get(name)`.
    ///
    /// ```no_run
    /// # fn phase(response: &weft_sdk::Response<'_>) -> Option<String> {
    /// response.header("content-type")
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers().get(name)
    }

    /// Sets a header, replacing its values; `headers().set(name, value)`.
    ///
    /// ```no_run
    /// # fn phase(response: &mut weft_sdk::Response<'_>) -> Result<(), weft_sdk::HeaderError> {
    /// response.set_header("cache-control", "no-store")
    /// # }
    /// ```
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), HeaderError> {
        self.headers().set(name, value)
    }

    /// Removes every value of a header; `headers().delete(name)`.
    ///
    /// ```no_run
    /// # fn phase(response: &mut weft_sdk::Response<'_>) {
    /// response.remove_header("server");
    /// # }
    /// ```
    pub fn remove_header(&mut self, name: &str) {
        self.headers().delete(name)
    }

    /// The buffered body, when [`Options::response_body`](crate::Options) asked for it.
    ///
    /// ```no_run
    /// # fn phase(response: &weft_sdk::Response<'_>) -> bool {
    /// response.body().is_some()
    /// # }
    /// ```
    pub fn body(&self) -> Option<Vec<u8>> {
        self.handle.body()
    }

    /// Replaces the buffered body.
    ///
    /// ```no_run
    /// # fn phase(response: &mut weft_sdk::Response<'_>) -> Result<(), String> {
    /// response.set_body(b"redacted")
    /// # }
    /// ```
    pub fn set_body(&mut self, body: &[u8]) -> Result<(), String> {
        self.handle.set_body(body)
    }
}
