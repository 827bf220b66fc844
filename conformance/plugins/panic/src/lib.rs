//! Panics when the path is `/panic`: the host must turn the guest's abort into an error
//! and report the panic message.

use weft_sdk::{Decision, Filter, NoConfig, Request};

struct Panicky;

impl Filter for Panicky {
    type Config = NoConfig;

    fn init(_: NoConfig) -> Result<Self, String> {
        Ok(Panicky)
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        if request.path() == "/panic" {
            panic!("the panic plugin was asked to panic");
        }
        Decision::Continue
    }
}

weft_sdk::export!(Panicky);
