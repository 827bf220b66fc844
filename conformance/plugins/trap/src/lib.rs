//! Executes the `unreachable` instruction when the path is `/trap`: a plain Wasm trap.

use weft_sdk::{Decision, Filter, NoConfig, Request};

struct Trap;

impl Filter for Trap {
    type Config = NoConfig;

    fn init(_: NoConfig) -> Result<Self, String> {
        Ok(Trap)
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        if request.path() == "/trap" {
            core::arch::wasm32::unreachable();
        }
        Decision::Continue
    }
}

weft_sdk::export!(Trap);
