//! The filter to copy when you start your own. It
//! - answers 403 to requests whose path starts with `deny_prefix`,
//! - adds a header to every response,
//! - counts requests and denials in metrics (`weft_filter_events_total{filter, name}`).
//!
//! Config (the `config` table of its `[[filters]]` entry):
//! ```toml
//! [[filters]]
//! name = "hello"
//! wasm = "target/wasm/wasm32-wasip2/release/hello_filter.wasm"
//! config = { header_name = "x-hello", header_value = "world", deny_prefix = "/private" }
//! ```

use weft_sdk::{Decision, Filter, Reply, Request, Response, ResponseDecision, metrics};

/// The config, checked when the proxy loads the filter: a typo is a load error, not a
/// silently ignored key.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_header_name")]
    header_name: String,
    #[serde(default = "default_header_value")]
    header_value: String,
    /// Requests under this path are answered 403; none when unset.
    deny_prefix: Option<String>,
}

fn default_header_name() -> String {
    "x-hello".to_owned()
}

fn default_header_value() -> String {
    "world".to_owned()
}

struct Hello {
    config: Config,
}

impl Filter for Hello {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        if config.header_name.is_empty() {
            return Err("header_name must not be empty".to_owned());
        }
        if config.deny_prefix.as_deref().is_some_and(|p| !p.starts_with('/')) {
            return Err("deny_prefix must start with '/'".to_owned());
        }
        Ok(Hello { config })
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        metrics::counter_add("requests", 1);
        if let Some(prefix) = &self.config.deny_prefix
            && request.path().starts_with(prefix.as_str())
        {
            metrics::counter_add("denied", 1);
            return Reply::new(403)
                .header("content-type", "text/plain")
                .body("forbidden\n")
                .into();
        }
        Decision::Continue
    }

    fn on_response(&self, response: &mut Response<'_>) -> ResponseDecision {
        // Validated in `init`, so this only fails on a value the proxy rejects; the
        // response then goes out without the header rather than failing.
        let _ = response.set_header(&self.config.header_name, &self.config.header_value);
        ResponseDecision::Continue
    }
}

weft_sdk::export!(Hello);
