//! HTTP requests from a filter to a cluster of the proxy's configuration (an auth
//! service, a feature-flag store...). The phase waits for the answer; the time spent
//! waiting does not count against the filter's CPU budget.
//!
//! ```no_run
//! use std::time::Duration;
//! use weft_sdk::callout::Callout;
//!
//! let answer = Callout::get("/check?user=alice")
//!     .header("accept", "application/json")
//!     .timeout(Duration::from_millis(200))
//!     .send("auth");
//! let allowed = matches!(answer, Ok(r) if r.status == 200);
//! ```

use std::time::Duration;

use crate::Fields;
use crate::bindings::weft::filter::callout as wit;

pub use wit::CalloutError;

impl From<CalloutError> for String {
    fn from(e: CalloutError) -> String {
        e.to_string()
    }
}

/// An outgoing request, built then [`sent`](Callout::send).
///
/// ```no_run
/// let r = weft_sdk::callout::Callout::new("POST", "/events").body(b"{}".to_vec()).send("events");
/// ```
#[derive(Debug, Clone)]
pub struct Callout {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Duration,
}

/// The answer to a [`Callout`], fully read.
///
/// ```no_run
/// # let response: weft_sdk::callout::CalloutResponse = unimplemented!();
/// if response.status == 200 {
///     let text = response.text();
/// }
/// ```
#[derive(Debug)]
pub struct CalloutResponse {
    /// The status code.
    pub status: u16,
    /// The response's headers.
    pub headers: Fields,
    /// The body.
    pub body: Vec<u8>,
}

impl Callout {
    /// The timeout when none is set.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

    /// A request with this method and path (and query).
    ///
    /// ```
    /// let c = weft_sdk::callout::Callout::new("DELETE", "/session/1");
    /// ```
    pub fn new(method: impl Into<String>, path: impl Into<String>) -> Self {
        Callout {
            method: method.into(),
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// A `GET` request.
    ///
    /// ```
    /// let c = weft_sdk::callout::Callout::get("/flags");
    /// ```
    pub fn get(path: impl Into<String>) -> Self {
        Self::new("GET", path)
    }

    /// Adds a header.
    ///
    /// ```
    /// let c = weft_sdk::callout::Callout::get("/").header("x-from", "filter");
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    ///
    /// ```
    /// let c = weft_sdk::callout::Callout::new("POST", "/").body("hello");
    /// ```
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// How long to wait for the whole response (default one second).
    ///
    /// ```
    /// let c = weft_sdk::callout::Callout::get("/").timeout(std::time::Duration::from_millis(50));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends the request to an endpoint of `cluster` and waits for the response. The
    /// error says what failed ([`CalloutError::Timeout`], `ConnectFailed`...).
    ///
    /// ```no_run
    /// use weft_sdk::callout::{Callout, CalloutError};
    /// match Callout::get("/health").send("backend") {
    ///     Ok(r) => println!("{}", r.status),
    ///     Err(CalloutError::Timeout) => println!("slow"),
    ///     Err(e) => println!("{e}"),
    /// }
    /// ```
    pub fn send(self, cluster: &str) -> Result<CalloutResponse, CalloutError> {
        let timeout_ms = millis(self.timeout);
        let response = wit::send(cluster, self.lower()?, timeout_ms)?;
        Ok(CalloutResponse::lift(response))
    }

    /// The WIT request, its headers appended to a new `Fields` (checked there).
    fn lower(self) -> Result<wit::CalloutRequest, CalloutError> {
        let headers = Fields::new();
        for (name, value) in &self.headers {
            headers
                .append(name, value)
                .map_err(|e| CalloutError::InvalidRequest(e.to_string()))?;
        }
        Ok(wit::CalloutRequest {
            method: self.method,
            path: self.path,
            headers: headers.into_wit(),
            body: self.body,
        })
    }
}

fn millis(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX)
}

/// Sends every callout at once and waits for all of them, each within its own timeout:
/// the time taken is the slowest one's, not the sum. Answers come in the order given. At
/// most 16 at once (the rest fail with [`CalloutError::InvalidRequest`]).
///
/// ```no_run
/// use weft_sdk::callout::{Callout, send_all};
/// let answers = send_all(vec![
///     ("users", Callout::get("/users/1")),
///     ("orders", Callout::get("/orders?user=1")),
/// ]);
/// let ok = answers.iter().filter(|a| a.is_ok()).count();
/// ```
pub fn send_all<'a>(
    callouts: impl IntoIterator<Item = (&'a str, Callout)>,
) -> Vec<Result<CalloutResponse, CalloutError>> {
    let mut pending = Vec::new();
    // Requests that cannot even be built answer in place, the others go out together.
    let mut early: Vec<Option<CalloutError>> = Vec::new();
    for (cluster, callout) in callouts {
        let timeout_ms = millis(callout.timeout);
        match callout.lower() {
            Ok(request) => {
                pending.push(wit::Pending {
                    cluster: cluster.to_owned(),
                    request,
                    timeout_ms,
                });
                early.push(None);
            }
            Err(e) => early.push(Some(e)),
        }
    }
    let mut answers = wit::send_all(pending).into_iter();
    early
        .into_iter()
        .map(|slot| match slot {
            Some(e) => Err(e),
            None => match answers.next() {
                Some(answer) => answer.map(CalloutResponse::lift),
                None => Err(CalloutError::Unavailable(
                    "the host gave fewer answers than requests".into(),
                )),
            },
        })
        .collect()
}

impl CalloutResponse {
    fn lift(response: wit::CalloutResponse) -> Self {
        CalloutResponse {
            status: response.status,
            headers: Fields::from_wit(response.headers),
            body: response.body,
        }
    }

    /// The first value of a header (case-insensitive name).
    ///
    /// ```no_run
    /// # let response: weft_sdk::callout::CalloutResponse = unimplemented!();
    /// let kind = response.header("content-type");
    /// ```
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name)
    }

    /// The body as UTF-8 text (lossily converted).
    ///
    /// ```no_run
    /// # let response: weft_sdk::callout::CalloutResponse = unimplemented!();
    /// println!("{}", response.text());
    /// ```
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
