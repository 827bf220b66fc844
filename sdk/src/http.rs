//! The request and response a phase works on: thin wrappers over host handles, so
//! reading a header copies that header only.

use crate::bindings::weft::filter::types as wit;

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
}

impl<'a> Request<'a> {
    pub(crate) fn new(handle: &'a wit::Request) -> Self {
        Request { handle }
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

    /// The first value of a header (case-insensitive name).
    ///
    /// ```no_run
    /// # fn phase(request: &weft_sdk::Request<'_>) -> Option<String> {
    /// request.header("authorization")
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<String> {
        self.handle.header(name)
    }

    /// Every header as `(name, value)`, one entry per value.
    ///
    /// ```no_run
    /// # fn phase(request: &weft_sdk::Request<'_>) -> usize {
    /// request.headers().len()
    /// # }
    /// ```
    pub fn headers(&self) -> Vec<(String, String)> {
        self.handle.headers()
    }

    /// Sets a header, replacing its values. Fails on an invalid name or value.
    ///
    /// ```no_run
    /// # fn phase(request: &mut weft_sdk::Request<'_>) -> Result<(), String> {
    /// request.set_header("x-user", "alice")
    /// # }
    /// ```
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.handle.set_header(name, value)
    }

    /// Appends a header value, keeping existing ones.
    ///
    /// ```no_run
    /// # fn phase(request: &mut weft_sdk::Request<'_>) -> Result<(), String> {
    /// request.add_header("via", "weft-filter")
    /// # }
    /// ```
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.handle.add_header(name, value)
    }

    /// Removes every value of a header.
    ///
    /// ```no_run
    /// # fn phase(request: &mut weft_sdk::Request<'_>) {
    /// request.remove_header("cookie");
    /// # }
    /// ```
    pub fn remove_header(&mut self, name: &str) {
        self.handle.remove_header(name)
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
}

impl<'a> Response<'a> {
    pub(crate) fn new(handle: &'a wit::Response) -> Self {
        Response { handle }
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

    /// Replaces the status code (100..=999).
    ///
    /// ```no_run
    /// # fn phase(response: &mut weft_sdk::Response<'_>) -> Result<(), String> {
    /// response.set_status(200)
    /// # }
    /// ```
    pub fn set_status(&mut self, status: u16) -> Result<(), String> {
        self.handle.set_status(status)
    }

    /// The first value of a header (case-insensitive name).
    ///
    /// ```no_run
    /// # fn phase(response: &weft_sdk::Response<'_>) -> Option<String> {
    /// response.header("content-type")
    /// # }
    /// ```
    pub fn header(&self, name: &str) -> Option<String> {
        self.handle.header(name)
    }

    /// Every header as `(name, value)`, one entry per value.
    ///
    /// ```no_run
    /// # fn phase(response: &weft_sdk::Response<'_>) -> usize {
    /// response.headers().len()
    /// # }
    /// ```
    pub fn headers(&self) -> Vec<(String, String)> {
        self.handle.headers()
    }

    /// Sets a header, replacing its values.
    ///
    /// ```no_run
    /// # fn phase(response: &mut weft_sdk::Response<'_>) -> Result<(), String> {
    /// response.set_header("cache-control", "no-store")
    /// # }
    /// ```
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.handle.set_header(name, value)
    }

    /// Appends a header value.
    ///
    /// ```no_run
    /// # fn phase(response: &mut weft_sdk::Response<'_>) -> Result<(), String> {
    /// response.add_header("set-cookie", "a=1")
    /// # }
    /// ```
    pub fn add_header(&mut self, name: &str, value: &str) -> Result<(), String> {
        self.handle.add_header(name, value)
    }

    /// Removes every value of a header.
    ///
    /// ```no_run
    /// # fn phase(response: &mut weft_sdk::Response<'_>) {
    /// response.remove_header("server");
    /// # }
    /// ```
    pub fn remove_header(&mut self, name: &str) {
        self.handle.remove_header(name)
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
