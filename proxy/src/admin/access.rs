//! Who may use the admin API.
//!
//! - With `[admin] token` (or `token_file`): every request carries
//!   `Authorization: Bearer <token>`, compared in constant time; `401` otherwise.
//! - Without: the listener is on loopback (config validation insists), and two checks keep
//!   a web page the operator visits from using it through their browser: a `POST`
//!   (`/reload`, `/api/drain`) needs a header a cross-site form cannot send (`X-Weft-Admin`; sending it from script
//!   triggers a CORS preflight this API never grants), and the `Host` must be an IP
//!   address or `localhost`, which a DNS-rebinding page (whose host is its own name) cannot
//!   fake.

use http::{HeaderMap, Method, StatusCode, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::AdminConfig;

/// The header that proves a reload request was not a cross-site form post.
pub const PROOF_HEADER: &str = "x-weft-admin";

/// Why a request is refused, and what to tell the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `401`: no bearer token.
    MissingToken,
    /// `401`: a bearer token that is not the admin token.
    WrongToken,
    /// `403`: a `Host` that is a name other than `localhost`.
    ForeignHost,
    /// `403`: a `POST` (reload, drain) without [`PROOF_HEADER`].
    NoProof,
}

impl Refusal {
    /// `401` when credentials are missing or wrong (RFC 9110 15.5.2), `403` otherwise.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::MissingToken | Refusal::WrongToken => StatusCode::UNAUTHORIZED,
            Refusal::ForeignHost | Refusal::NoProof => StatusCode::FORBIDDEN,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Refusal::MissingToken => "the admin API needs `Authorization: Bearer <token>` (the [admin] token)\n",
            Refusal::WrongToken => "the bearer token is not the admin token\n",
            Refusal::ForeignHost => {
                "admin requests must name the host by IP address or as localhost \
                 (other names are refused against DNS rebinding); or configure [admin] token\n"
            }
            Refusal::NoProof => {
                "admin POST requests need the header `X-Weft-Admin: 1` (or the admin bearer token): \
                 a web page cannot send it, so it cannot make your browser reload or drain the proxy\n"
            }
        }
    }

    /// The `WWW-Authenticate` challenge of a `401` (RFC 6750 section 3).
    pub fn challenge(self) -> Option<&'static str> {
        match self {
            Refusal::MissingToken => Some("Bearer realm=\"weft admin\""),
            Refusal::WrongToken => Some("Bearer realm=\"weft admin\", error=\"invalid_token\""),
            Refusal::ForeignHost | Refusal::NoProof => None,
        }
    }
}

/// The admin listener's access rule, fixed for the life of the process.
pub struct Access {
    /// SHA-256 of the token: comparing digests takes the same time whatever the length
    /// of the token a client sends.
    token: Option<[u8; 32]>,
}

impl Access {
    /// The rule `[admin]` asks for, reading `token_file` if the token is kept there.
    pub fn new(config: Option<&AdminConfig>) -> Result<Access, String> {
        let token = match config {
            Some(admin) => admin.token()?,
            None => None,
        };
        Ok(Access {
            token: token.map(|t| Sha256::digest(t.expose().as_bytes()).into()),
        })
    }

    pub fn check(&self, method: &Method, host: Option<&str>, headers: &HeaderMap) -> Result<(), Refusal> {
        if let Some(expected) = &self.token {
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer)
                .ok_or(Refusal::MissingToken)?;
            let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
            if !bool::from(digest.ct_eq(expected)) {
                return Err(Refusal::WrongToken);
            }
            // The Authorization header is itself one a cross-site form cannot send.
            return Ok(());
        }
        if host.is_some_and(|h| !local_host(h)) {
            return Err(Refusal::ForeignHost);
        }
        if method == Method::POST && !headers.contains_key(PROOF_HEADER) {
            return Err(Refusal::NoProof);
        }
        Ok(())
    }
}

/// The credentials of `Bearer <token>`; the scheme is case-insensitive (RFC 9110 11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `localhost` or an IP literal, with or without a port.
fn local_host(authority: &str) -> bool {
    let Ok(authority) = authority.parse::<http::uri::Authority>() else {
        return false;
    };
    let host = authority.host();
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn access(admin_table: &str) -> Access {
        let text = format!("[admin]\n{admin_table}\n[[listeners]]\nname = \"l\"\naddress = \"127.0.0.1:1\"\n");
        let config = Config::parse("t.toml", &text).expect("config");
        Access::new(config.admin.as_ref()).expect("access")
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("header value"));
        }
        map
    }

    #[test]
    fn with_a_token_every_request_needs_it() {
        let a = access("address = \"0.0.0.0:9901\"\ntoken = \"0123456789abcdef\"");
        let get = |h: &HeaderMap| a.check(&Method::GET, Some("example.com"), h);
        assert_eq!(get(&headers(&[])), Err(Refusal::MissingToken));
        assert_eq!(
            get(&headers(&[("authorization", "Basic abc")])),
            Err(Refusal::MissingToken)
        );
        assert_eq!(
            get(&headers(&[("authorization", "Bearer 0123456789abcdeX")])),
            Err(Refusal::WrongToken)
        );
        assert_eq!(
            get(&headers(&[("authorization", "Bearer 0123456789abcdef0")])),
            Err(Refusal::WrongToken)
        );
        assert_eq!(get(&headers(&[("authorization", "bearer 0123456789abcdef")])), Ok(()));
        let auth = headers(&[("authorization", "Bearer 0123456789abcdef")]);
        assert_eq!(a.check(&Method::POST, None, &auth), Ok(()));
    }

    #[test]
    fn without_a_token_reload_needs_the_proof_header_and_a_local_host() {
        let a = access("address = \"127.0.0.1:9901\"");
        assert_eq!(
            a.check(&Method::POST, Some("127.0.0.1:9901"), &headers(&[])),
            Err(Refusal::NoProof)
        );
        let proof = headers(&[("x-weft-admin", "1")]);
        for host in ["127.0.0.1:9901", "localhost:9901", "[::1]:9901", "LOCALHOST"] {
            assert_eq!(a.check(&Method::POST, Some(host), &proof), Ok(()), "{host}");
        }
        assert_eq!(
            a.check(&Method::POST, Some("evil.example:9901"), &proof),
            Err(Refusal::ForeignHost)
        );
        assert_eq!(a.check(&Method::GET, Some("127.0.0.1:9901"), &headers(&[])), Ok(()));
    }
}
