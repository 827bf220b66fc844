//! `[admin]`: where the admin listener binds and what a client must show to use it.
//!
//! The admin API reads metrics and reloads the config, so it is either reachable from
//! this host only (a loopback address) or guarded by a bearer token: a config binding it
//! elsewhere without a token is refused.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// Shortest token accepted, in bytes: a guessable token is no guard.
pub const MIN_TOKEN_LEN: usize = 16;

/// A secret from the config: `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub address: SocketAddr,
    /// Every admin request must carry `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// The token read from this file (surrounding whitespace trimmed), so it need not sit
    /// in the config; relative to the config file.
    pub token_file: Option<PathBuf>,
    /// Where the audit trail (config and plugin changes, admin API calls) is appended as
    /// JSON lines; relative to the config file.
    pub audit_log: Option<PathBuf>,
}

impl AdminConfig {
    /// What validation can tell without reading files.
    pub(super) fn check(&self) -> Result<(), String> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err("[admin]: set token or token_file, not both".to_owned()),
            (Some(token), None) => check_token(token.expose(), "token"),
            (None, Some(_)) => Ok(()),
            (None, None) if self.address.ip().is_loopback() => Ok(()),
            (None, None) => Err(format!(
                "[admin] address {} is not a loopback address, and the admin API can reload the \
                 config: set token_file = \"admin.token\" (a file holding at least {MIN_TOKEN_LEN} \
                 random bytes, e.g. from `openssl rand -hex 32`; clients then send \
                 `Authorization: Bearer <token>`), or bind it to 127.0.0.1",
                self.address
            )),
        }
    }

    /// The token, read from `token_file` when it is kept there.
    pub fn token(&self) -> Result<Option<Secret>, String> {
        let Some(path) = &self.token_file else {
            return Ok(self.token.clone());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("[admin] token_file {}: cannot read it: {e}", path.display()))?;
        let token = text.trim();
        check_token(token, &format!("token_file {}", path.display()))?;
        Ok(Some(Secret(token.to_owned())))
    }
}

fn check_token(token: &str, what: &str) -> Result<(), String> {
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "[admin] {what}: the token has {} bytes; use at least {MIN_TOKEN_LEN} random ones \
             (e.g. `openssl rand -hex 32`)",
            token.len()
        ));
    }
    // It travels in a header: anything else could not be sent, or be sent two ways.
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "[admin] {what}: the token may hold printable ASCII only (no spaces)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(address: &str, token: Option<&str>) -> AdminConfig {
        AdminConfig {
            address: address.parse().expect("address"),
            token: token.map(|t| Secret(t.to_owned())),
            token_file: None,
            audit_log: None,
        }
    }

    #[test]
    fn loopback_needs_no_token_but_anything_else_does() {
        assert_eq!(admin("127.0.0.1:9901", None).check(), Ok(()));
        assert_eq!(admin("[::1]:9901", None).check(), Ok(()));
        let e = admin("0.0.0.0:9901", None).check().expect_err("refused");
        assert!(e.contains("0.0.0.0:9901 is not a loopback address"), "{e}");
        assert!(e.contains("token_file"), "{e}");
        assert_eq!(admin("0.0.0.0:9901", Some("0123456789abcdef")).check(), Ok(()));
    }

    #[test]
    fn short_or_unsendable_tokens_are_refused_without_being_shown() {
        let e = admin("127.0.0.1:1", Some("short")).check().expect_err("refused");
        assert!(e.contains("at least 16") && !e.contains("short"), "{e}");
        let e = admin("127.0.0.1:1", Some("with a space in it!"))
            .check()
            .expect_err("refused");
        assert!(e.contains("printable ASCII"), "{e}");
        assert!(!format!("{:?}", admin("127.0.0.1:1", Some("0123456789abcdef"))).contains("0123"));
    }
}
