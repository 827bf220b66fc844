//! Does nothing: every phase continues. The baseline for the boundary's cost.

use weft_sdk::{Filter, NoConfig};

struct Noop;

impl Filter for Noop {
    type Config = NoConfig;

    fn init(_: NoConfig) -> Result<Self, String> {
        Ok(Noop)
    }
}

weft_sdk::export!(Noop);
