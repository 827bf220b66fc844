//! Write filters for the [Weft](https://example.invalid/weft) proxy in Rust.
//!
//! A filter is a type implementing [`Filter`], exported with [`export!`], built for
//! `wasm32-wasip2`. The proxy calls [`Filter::init`] once per instance with the filter's
//! config (from the `config = { .. }` table of its `[[filters]]` entry), then
//! [`Filter::on_request`] and [`Filter::on_response`] for each request of the routes that
//! list it. Override only the phases you need; the defaults continue.
//!
//! ```no_run
//! use weft_sdk::{Decision, Filter, Reply, Request};
//!
//! #[derive(serde::Deserialize)]
//! struct Config {
//!     blocked: String,
//! }
//!
//! struct Block {
//!     blocked: String,
//! }
//!
//! impl Filter for Block {
//!     type Config = Config;
//!
//!     fn init(config: Config) -> Result<Self, String> {
//!         Ok(Block { blocked: config.blocked })
//!     }
//!
//!     fn on_request(&self, request: &mut Request<'_>) -> Decision {
//!         if request.path().starts_with(&self.blocked) {
//!             return Reply::new(403).body("forbidden").into();
//!         }
//!         Decision::Continue
//!     }
//! }
//!
//! weft_sdk::export!(Block);
//! ```
//!
//! Build with `cargo build --release --target wasm32-wasip2` (in the Weft repository:
//! `cargo plugins`) and point a `[[filters]]` entry's `wasm` at the `.wasm` file.
//!
//! Besides the request and response, a filter can use the host's [`log`], [`metrics`],
//! request [`metadata`], per-request [`context`] values, a shared key-value store
//! ([`kv`]) and HTTP [`callout`]s. It has no file system and no sockets.
//!
//! This SDK targets `weft:filter` [`WIT_VERSION`]; a proxy refuses plugins built for
//! another minor version, naming both.

// The generated code refers to the runtime through `::weft_sdk::...` so that plugin
// crates need no direct dependency on wit-bindgen.
extern crate self as weft_sdk;

pub mod callout;
pub mod context;
mod http;
pub mod kv;
pub mod log;
pub mod metadata;
pub mod metrics;

pub use http::{Fields, HeaderError, Request, Response};

/// The `weft:filter` WIT version this SDK's bindings were generated from.
pub const WIT_VERSION: &str = env!("WEFT_WIT_VERSION");

/// Bindings generated from `wit/filter.wit`; the rest of the SDK wraps them. Use them
/// directly only for something the SDK does not cover.
#[allow(missing_docs, clippy::all, unsafe_code)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "filter",
        pub_export_macro: true,
        export_macro_name: "__export_filter_world",
        default_bindings_module: "::weft_sdk::bindings",
        runtime_path: "::weft_sdk::__private::wit_bindgen::rt",
    });
}

/// One filter: its config, its state, and what it does in each phase.
///
/// The proxy may run several instances of a filter at once (one per concurrent request)
/// and reuses them across requests, so keep per-request state out of `self`, and put state
/// shared between instances in the [`kv`] store.
///
/// ```no_run
/// use weft_sdk::{Filter, NoConfig, Options, Phases, Response, ResponseDecision};
///
/// struct Stamp;
///
/// impl Filter for Stamp {
///     type Config = NoConfig;
///
///     fn init(_: NoConfig) -> Result<Self, String> {
///         Ok(Stamp)
///     }
///
///     fn options(&self) -> Options {
///         // Only the response phase: the proxy never calls this filter on the way in.
///         Options { phases: Phases::RESPONSE, ..Options::default() }
///     }
///
///     fn on_response(&self, response: &mut Response<'_>) -> ResponseDecision {
///         let _ = response.set_header("x-stamped", "yes");
///         ResponseDecision::Continue
///     }
/// }
/// weft_sdk::export!(Stamp);
/// ```
pub trait Filter: Sized + 'static {
    /// The filter's config, deserialised from the JSON form of its `config` table. Use
    /// [`NoConfig`] when there is none, and `#[serde(deny_unknown_fields)]` to catch typos.
    type Config: serde::de::DeserializeOwned;

    /// Builds the filter. An `Err` rejects the config: the proxy refuses to load it and
    /// reports the message (for instance on a reload, which then keeps the old version).
    fn init(config: Self::Config) -> Result<Self, String>;

    /// What the filter needs from the proxy: the phases to call, buffered bodies. Asked
    /// once, after `init`. The default calls both phases and buffers nothing; declare
    /// only the phases you implement, and the proxy skips the others at no cost.
    fn options(&self) -> Options {
        Options::default()
    }

    /// Runs after routing, before the request goes upstream. May change the request,
    /// answer directly ([`Decision::Respond`]) or pick another cluster
    /// ([`Decision::Reroute`]). The default continues.
    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        let _ = request;
        Decision::Continue
    }

    /// Runs when the response head is known (from upstream, or a direct answer). May
    /// change the response or replace it with [`ResponseDecision::Respond`]. The default
    /// continues.
    fn on_response(&self, response: &mut Response<'_>) -> ResponseDecision {
        let _ = response;
        ResponseDecision::Continue
    }
}

/// What a filter asks of the proxy, returned by [`Filter::options`].
///
/// ```
/// let options = weft_sdk::Options { request_body: true, ..Default::default() };
/// assert!(!options.response_body);
/// assert_eq!(options.phases, weft_sdk::Phases::BOTH);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// The phases the proxy calls (default: both).
    pub phases: Phases,
    /// Buffer request bodies (up to the filter's `limits.body`) so [`Request::body`] works.
    pub request_body: bool,
    /// Buffer response bodies so [`Response::body`] works.
    pub response_body: bool,
}

impl Options {
    /// These phases, no buffered bodies.
    ///
    /// ```
    /// use weft_sdk::{Options, Phases};
    /// assert!(!Options::for_phases(Phases::REQUEST).phases.response);
    /// ```
    pub const fn for_phases(phases: Phases) -> Options {
        Options {
            phases,
            request_body: false,
            response_body: false,
        }
    }
}

/// The phases a filter implements; see [`Options::phases`].
///
/// ```
/// use weft_sdk::Phases;
/// assert!(Phases::REQUEST.request && !Phases::REQUEST.response);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phases {
    /// Call [`Filter::on_request`].
    pub request: bool,
    /// Call [`Filter::on_response`].
    pub response: bool,
}

impl Phases {
    /// Both phases (the default).
    pub const BOTH: Phases = Phases {
        request: true,
        response: true,
    };
    /// The request phase only.
    pub const REQUEST: Phases = Phases {
        request: true,
        response: false,
    };
    /// The response phase only.
    pub const RESPONSE: Phases = Phases {
        request: false,
        response: true,
    };
}

impl Default for Phases {
    fn default() -> Self {
        Phases::BOTH
    }
}

/// What a filter decided in the request phase.
///
/// ```
/// use weft_sdk::{Decision, Reply};
/// let go_on = Decision::Continue;
/// let deny: Decision = Reply::new(403).body("no").into();
/// let elsewhere = Decision::Reroute("canary".to_owned());
/// # let _ = (go_on, deny, elsewhere);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Go on to the next filter (then upstream, or back to the client).
    Continue,
    /// Stop the chain and answer with this response.
    Respond(Reply),
    /// Send the request to this cluster instead of the route's.
    Reroute(String),
}

/// What a filter decided in the response phase: there is no upstream left to pick.
///
/// ```
/// use weft_sdk::{Reply, ResponseDecision};
/// let keep = ResponseDecision::Continue;
/// let replace: ResponseDecision = Reply::new(502).body("upstream said too much").into();
/// # let _ = (keep, replace);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseDecision {
    /// Go on to the previous filter, then to the client.
    Continue,
    /// Replace the response with this one.
    Respond(Reply),
}

/// A response a filter answers with; see [`Decision::Respond`] and
/// [`ResponseDecision::Respond`].
///
/// ```
/// let reply = weft_sdk::Reply::new(429).header("retry-after", "1").body("slow down");
/// assert_eq!(reply.status, 429);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// Header names and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (may be empty).
    pub body: Vec<u8>,
}

impl Reply {
    /// A reply with this status, no headers and an empty body.
    ///
    /// ```
    /// assert!(weft_sdk::Reply::new(204).body.is_empty());
    /// ```
    pub fn new(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    ///
    /// ```
    /// let r = weft_sdk::Reply::new(200).header("content-type", "text/plain");
    /// assert_eq!(r.headers[0].0, "content-type");
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    ///
    /// ```
    /// let r = weft_sdk::Reply::new(200).body("hi");
    /// assert_eq!(r.body, b"hi");
    /// ```
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

impl From<Reply> for Decision {
    fn from(reply: Reply) -> Self {
        Decision::Respond(reply)
    }
}

impl From<Reply> for ResponseDecision {
    fn from(reply: Reply) -> Self {
        ResponseDecision::Respond(reply)
    }
}

/// A config type for filters that take none: accepts (and ignores) any config.
///
/// ```
/// let _: weft_sdk::NoConfig = serde_json::from_str(r#"{"anything": 1}"#).unwrap();
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct NoConfig;

impl<'de> serde::Deserialize<'de> for NoConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(NoConfig)
    }
}

/// Exports a [`Filter`] type as the component's `weft:filter/hooks` implementation.
/// Use it once per plugin crate, at the top level.
///
/// ```no_run
/// struct Noop;
/// impl weft_sdk::Filter for Noop {
///     type Config = weft_sdk::NoConfig;
///     fn init(_: weft_sdk::NoConfig) -> Result<Self, String> {
///         Ok(Noop)
///     }
/// }
/// weft_sdk::export!(Noop);
/// ```
#[macro_export]
macro_rules! export {
    ($filter:ty) => {
        /// The component's `weft:filter/hooks` implementation, generated by `weft_sdk::export!`.
        #[doc(hidden)]
        pub struct __WeftExport;

        impl $crate::__private::Guest for __WeftExport {
            fn init(config: String) -> Result<$crate::__private::WitOptions, String> {
                $crate::__private::init::<$filter>(&config)
            }

            fn on_request(
                request: $crate::__private::WitRequestRef<'_>,
            ) -> $crate::__private::WitRequestDecision {
                $crate::__private::on_request::<$filter>(request)
            }

            fn on_response(
                response: $crate::__private::WitResponseRef<'_>,
            ) -> $crate::__private::WitResponseDecision {
                $crate::__private::on_response::<$filter>(response)
            }
        }

        $crate::bindings::__export_filter_world!(__WeftExport with_types_in $crate::bindings);
    };
}

#[doc(hidden)]
pub mod __private;
