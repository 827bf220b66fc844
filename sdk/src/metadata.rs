//! Facts about the current request that no filter can change. During `init` there is no
//! request: strings are empty and options `None`.
//!
//! ```no_run
//! let who = weft_sdk::metadata::peer_identity().unwrap_or_else(|| "anonymous".to_owned());
//! ```

use crate::bindings::weft::filter::metadata as wit;

/// The client's address as `ip:port`.
///
/// ```no_run
/// let addr = weft_sdk::metadata::client_address();
/// ```
pub fn client_address() -> String {
    wit::client_address()
}

/// The name of the listener that accepted the connection.
///
/// ```no_run
/// let edge = weft_sdk::metadata::listener() == "public";
/// ```
pub fn listener() -> String {
    wit::listener()
}

/// The name of the route that matched.
///
/// ```no_run
/// let route = weft_sdk::metadata::route();
/// ```
pub fn route() -> String {
    wit::route()
}

/// `"http"` or `"https"`.
///
/// ```no_run
/// let secure = weft_sdk::metadata::scheme() == "https";
/// ```
pub fn scheme() -> String {
    wit::scheme()
}

/// The identity of a verified TLS client certificate, if the client presented one.
///
/// ```no_run
/// let mtls = weft_sdk::metadata::peer_identity().is_some();
/// ```
pub fn peer_identity() -> Option<String> {
    wit::peer_identity()
}
