//! Does nothing: every phase it declares continues. The baseline for the boundary's cost.
//! Config: `phases` = `"both"` (the default), `"request"` or `"response"`: the phases the
//! host calls.

use weft_sdk::{Filter, Options, Phases};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    phases: Option<String>,
}

struct Noop {
    phases: Phases,
}

impl Filter for Noop {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        let phases = match config.phases.as_deref() {
            None | Some("both") => Phases::BOTH,
            Some("request") => Phases::REQUEST,
            Some("response") => Phases::RESPONSE,
            Some(other) => return Err(format!("phases: {other:?} is not request, response or both")),
        };
        Ok(Noop { phases })
    }

    fn options(&self) -> Options {
        Options::for_phases(self.phases)
    }
}

weft_sdk::export!(Noop);
