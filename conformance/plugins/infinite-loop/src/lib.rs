//! Spins forever when the path is `/loop`, continues otherwise: proves the CPU budget
//! stops a runaway phase and that the filter keeps serving afterwards.

use weft_sdk::{Decision, Filter, NoConfig, Request};

struct Spin;

impl Filter for Spin {
    type Config = NoConfig;

    fn init(_: NoConfig) -> Result<Self, String> {
        Ok(Spin)
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        if request.path() == "/loop" {
            let mut n: u64 = 0;
            loop {
                // black_box keeps the optimiser from proving the loop useless.
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        Decision::Continue
    }
}

weft_sdk::export!(Spin);
