//! {{name}}: a Weft filter. It
//! - answers 403 to requests whose path starts with `deny_prefix`,
//! - adds a header to every response,
//! - counts requests in a metric (`weft_filter_events_total{filter, name}`).
//!
//! `CASES.toml` says what it must do; `./build` builds it and checks those cases.

use weft_sdk::{Decision, Filter, Reply, Request, Response, ResponseDecision, metrics};

/// The `config` table of the filter's `[[filters]]` entry, checked when the proxy loads
/// the filter: a typo is a load error, not a silently ignored key.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Requests under this path are answered 403; none when unset.
    deny_prefix: Option<String>,
    #[serde(default = "default_header_name")]
    header_name: String,
    #[serde(default = "default_header_value")]
    header_value: String,
}

fn default_header_name() -> String {
    "x-filtered-by".to_owned()
}

fn default_header_value() -> String {
    "{{name}}".to_owned()
}

struct MyFilter {
    config: Config,
}

impl Filter for MyFilter {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        if config.deny_prefix.as_deref().is_some_and(|p| !p.starts_with('/')) {
            return Err("deny_prefix must start with '/'".to_owned());
        }
        Ok(MyFilter { config })
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        metrics::counter_add("requests", 1);
        if let Some(prefix) = &self.config.deny_prefix
            && request.path().starts_with(prefix.as_str())
        {
            return Reply::new(403)
                .header("content-type", "text/plain")
                .body("forbidden\n")
                .into();
        }
        Decision::Continue
    }

    fn on_response(&self, response: &mut Response<'_>) -> ResponseDecision {
        let _ = response.set_header(&self.config.header_name, &self.config.header_value);
        ResponseDecision::Continue
    }
}

weft_sdk::export!(MyFilter);
