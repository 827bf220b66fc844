//! Checking one token against a set of keys and the filter's claim policy. The
//! cryptography and the registered-claim checks are `jsonwebtoken`'s; this module chooses
//! the keys and turns failures into the `error_description` a client sees.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::keys::{Key, KeyId, parse_alg};

pub type Claims = Map<String, Value>;

/// A token that verified: its claims and the key whose signature matched.
#[derive(Debug)]
pub struct Verified {
    pub claims: Claims,
    pub key: KeyId,
}

pub struct Policy {
    /// Algorithms a token may use (already restricted to those of some key when empty).
    pub algorithms: Vec<Algorithm>,
    pub issuers: Option<HashSet<String>>,
    pub audiences: Option<HashSet<String>>,
    pub required: Vec<String>,
    pub leeway_secs: u64,
}

/// Why a token was refused; the text is the `error_description`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No key has the token's `kid` (a JWKS refetch may find it).
    UnknownKid(String),
    Invalid(String),
}

impl Failure {
    pub fn description(&self) -> String {
        match self {
            Failure::UnknownKid(kid) => format!("unknown key id {kid:?}"),
            Failure::Invalid(text) => text.clone(),
        }
    }
}

fn invalid(text: impl Into<String>) -> Failure {
    Failure::Invalid(text.into())
}

/// The token's algorithm and `kid`, refusing `none` and anything not allowed before any
/// key is looked at.
pub fn header(token: &str, policy: &Policy) -> Result<(Algorithm, Option<String>), Failure> {
    let mut parts = token.split('.');
    let (Some(head), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(invalid("malformed token"));
    };
    let head = URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| invalid("malformed token header"))?;
    let head: Value = serde_json::from_slice(&head).map_err(|_| invalid("malformed token header"))?;
    let alg = head
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("token header has no alg"))?;
    let refused = || invalid(format!("algorithm {alg:?} is not accepted"));
    let parsed = parse_alg(alg).map_err(|_| refused())?;
    if !policy.algorithms.contains(&parsed) {
        return Err(refused());
    }
    if head.get("crit").is_some() {
        // RFC 7515 4.1.11: extensions we do not understand must not be ignored.
        return Err(invalid("critical header extensions are not supported"));
    }
    let kid = head.get("kid").and_then(Value::as_str).map(str::to_owned);
    Ok((parsed, kid))
}

/// Verifies the token with the first fitting key whose signature matches, then checks
/// the claims. Claims are checked only after a signature verified, so a forged token
/// learns nothing about the policy.
pub fn verify<'k>(
    token: &str,
    alg: Algorithm,
    kid: Option<&str>,
    keys: impl Iterator<Item = &'k Key>,
    policy: &Policy,
) -> Result<Verified, Failure> {
    let mut validation = Validation::new(alg);
    validation.leeway = policy.leeway_secs;
    validation.validate_nbf = true;
    validation.validate_exp = true;
    validation.required_spec_claims = policy
        .required
        .iter()
        .filter(|c| ["exp", "nbf", "aud", "iss", "sub"].contains(&c.as_str()))
        .cloned()
        .collect();
    validation.iss = policy.issuers.clone();
    validation.validate_aud = policy.audiences.is_some();
    validation.aud = policy.audiences.clone();
    if policy.issuers.is_some() {
        validation.required_spec_claims.insert("iss".to_owned());
    }
    if policy.audiences.is_some() {
        validation.required_spec_claims.insert("aud".to_owned());
    }

    let mut tried = false;
    for key in keys.filter(|k| k.fits(alg, kid)) {
        tried = true;
        match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
            Ok(data) => {
                for claim in &policy.required {
                    if !data.claims.contains_key(claim) {
                        return Err(invalid(format!("missing required claim {claim:?}")));
                    }
                }
                return Ok(Verified {
                    claims: data.claims,
                    key: key.id,
                });
            }
            Err(e) => match e.kind() {
                // Another key with the same kid (or none) may still verify it.
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidKeyFormat
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey => continue,
                other => return Err(invalid(describe(other))),
            },
        }
    }
    match (tried, kid) {
        (false, Some(kid)) => Err(Failure::UnknownKid(kid.to_owned())),
        (false, None) => Err(invalid("no key for this token")),
        (true, _) => Err(invalid("signature invalid")),
    }
}

fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token expired".to_owned(),
        ErrorKind::ImmatureSignature => "token not yet valid".to_owned(),
        ErrorKind::InvalidIssuer => "issuer not accepted".to_owned(),
        ErrorKind::InvalidAudience => "audience not accepted".to_owned(),
        ErrorKind::MissingRequiredClaim(c) => format!("missing required claim {c:?}"),
        ErrorKind::InvalidClaimFormat(c) => format!("claim {c:?} is malformed"),
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => "algorithm not accepted".to_owned(),
        _ => "malformed token".to_owned(),
    }
}
