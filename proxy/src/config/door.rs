//! A listener's front-door policy as plain data, derived once from its `[[listeners]]`
//! entry. `front` is the code that applies it to each request.

use super::ListenerConfig;

/// A listener's front-door policy, built once from its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontDoor {
    pub path: PathPolicy,
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    /// Longest wait for the next piece of a request body.
    pub body_idle: std::time::Duration,
}

impl FrontDoor {
    pub fn new(config: &ListenerConfig) -> FrontDoor {
        let l = &config.limits;
        FrontDoor {
            path: PathPolicy {
                merge_slashes: config.merge_slashes,
                reject_encoded_slashes: config.reject_encoded_slashes,
            },
            max_uri_bytes: l.max_uri_bytes,
            max_header_bytes: l.max_header_bytes,
            max_headers: l.max_headers,
            max_body_bytes: l.max_request_body_bytes,
            body_idle: config.timeouts.body_idle,
        }
    }
}

/// How the path is normalised; per listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPolicy {
    /// Collapse runs of `/` into one.
    pub merge_slashes: bool,
    /// Refuse `%2F` and `%5C` (an encoded `/` or `\`). When off they are kept encoded,
    /// never decoded: decoding them would change which segments the path has.
    pub reject_encoded_slashes: bool,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            merge_slashes: true,
            reject_encoded_slashes: true,
        }
    }
}
