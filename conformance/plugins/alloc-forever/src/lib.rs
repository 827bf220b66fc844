//! Allocates (and touches) memory without bound when the path is `/alloc`: proves the
//! memory limit stops it. Continues otherwise.

use weft_sdk::{Decision, Filter, NoConfig, Request};

struct Hog;

impl Filter for Hog {
    type Config = NoConfig;

    fn init(_: NoConfig) -> Result<Self, String> {
        Ok(Hog)
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        if request.path() == "/alloc" {
            let mut chunks: Vec<Vec<u8>> = Vec::new();
            loop {
                chunks.push(std::hint::black_box(vec![0xA5; 1 << 20]));
            }
        }
        Decision::Continue
    }
}

weft_sdk::export!(Hog);
