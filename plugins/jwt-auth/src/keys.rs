//! Verification keys and the algorithms each may verify.
//!
//! Every key carries the exact list of algorithms it accepts, derived from what the key
//! *is* (an RSA modulus, a P-256 point, an HMAC secret...), never from the token. That is
//! what stops algorithm confusion: an `HS256` token is only ever checked against a key
//! configured as an HMAC secret, so an RSA public key can never serve as an HMAC secret.

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// A key as written in the filter's config: exactly one of `pem`, `jwk`, `secret`,
/// `secret_base64`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Matched against the token header's `kid`; a key without one matches any token.
    pub kid: Option<String>,
    /// Required for `pem` and secrets (a PEM RSA key could be RS* or PS*); for a `jwk`,
    /// defaults to the JWK's own `alg`, else every algorithm of its key type.
    pub alg: Option<String>,
    pub pem: Option<String>,
    pub jwk: Option<serde_json::Value>,
    pub secret: Option<String>,
    pub secret_base64: Option<String>,
}

pub struct Key {
    pub kid: Option<String>,
    pub algorithms: Vec<Algorithm>,
    pub key: DecodingKey,
    /// Which key this is, across JWKS refetches: the token cache remembers it for each
    /// token and serves the token only while a key with this id is still in the key set.
    pub id: KeyId,
}

/// A key's identity. Inline keys live as long as the config (a reload builds new
/// instances); a JWKS key is the SHA-256 of its parsed JWK (`kid`, `alg` and the key
/// material), so an unchanged key keeps its id when the document is refetched and a
/// replaced one under the same `kid` does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyId {
    Inline(usize),
    Jwks([u8; 32]),
}

impl Key {
    /// Whether this key may verify a token with this header.
    pub fn fits(&self, alg: Algorithm, kid: Option<&str>) -> bool {
        let kid_ok = match (kid, &self.kid) {
            (Some(wanted), Some(mine)) => wanted == mine,
            _ => true,
        };
        kid_ok && self.algorithms.contains(&alg)
    }
}

pub fn parse_alg(name: &str) -> Result<Algorithm, String> {
    Algorithm::from_str(name).map_err(|_| {
        format!(
            "unsupported algorithm {name:?} (HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
        )
    })
}

/// Keeps the algorithms the filter allows (`allowed` empty: all).
fn restrict(algs: Vec<Algorithm>, allowed: &[Algorithm]) -> Vec<Algorithm> {
    algs.into_iter()
        .filter(|a| allowed.is_empty() || allowed.contains(a))
        .collect()
}

/// Builds an inline key from config; errors name the key.
pub fn from_config(index: usize, config: &KeyConfig, allowed: &[Algorithm]) -> Result<Key, String> {
    let name = match &config.kid {
        Some(kid) => format!("keys[{index}] (kid {kid:?})"),
        None => format!("keys[{index}]"),
    };
    let given = [
        config.pem.is_some(),
        config.jwk.is_some(),
        config.secret.is_some(),
        config.secret_base64.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(format!("{name}: give exactly one of pem, jwk, secret, secret_base64"));
    }
    let alg = config
        .alg
        .as_deref()
        .map(parse_alg)
        .transpose()
        .map_err(|e| format!("{name}: {e}"))?;
    let (key, algorithms) = if let Some(jwk) = &config.jwk {
        let jwk: Jwk = serde_json::from_value(jwk.clone()).map_err(|e| format!("{name}: not a JWK: {e}"))?;
        let (key, mut algs) = from_jwk(&jwk).map_err(|e| format!("{name}: {e}"))?;
        if let Some(alg) = alg {
            if !algs.contains(&alg) {
                return Err(format!("{name}: alg {alg:?} does not fit this JWK's key type"));
            }
            algs = vec![alg];
        }
        (key, algs)
    } else {
        let alg = alg.ok_or_else(|| format!("{name}: `alg` is required for pem and secret keys"))?;
        let family = alg.family();
        let key = if let Some(pem) = &config.pem {
            let pem = pem.as_bytes();
            let parsed = match family {
                AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
                AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
                AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
                AlgorithmFamily::Hmac => {
                    return Err(format!("{name}: {alg:?} takes a `secret`, not a PEM public key"));
                }
            };
            parsed.map_err(|e| format!("{name}: not a {family:?} public key in PEM: {e}"))?
        } else {
            if family != AlgorithmFamily::Hmac {
                return Err(format!("{name}: {alg:?} needs a public key (pem or jwk), not a secret"));
            }
            let secret = match (&config.secret, &config.secret_base64) {
                (Some(s), _) => s.as_bytes().to_vec(),
                (None, Some(b64)) => DecodingKey::from_base64_secret(b64)
                    .map_err(|e| format!("{name}: secret_base64 is not base64: {e}"))?
                    .as_bytes()
                    .to_vec(),
                (None, None) => Vec::new(),
            };
            // RFC 7518 3.2: an HMAC key must be at least as long as the hash output.
            if secret.len() < 32 {
                return Err(format!("{name}: an HMAC secret needs at least 32 bytes"));
            }
            DecodingKey::from_secret(&secret)
        };
        (key, vec![alg])
    };
    let algorithms = restrict(algorithms, allowed);
    if algorithms.is_empty() {
        return Err(format!("{name}: none of its algorithms is in `algorithms`"));
    }
    Ok(Key {
        kid: config.kid.clone(),
        algorithms,
        key,
        id: KeyId::Inline(index),
    })
}

/// A JWK's key and the algorithms its type (and `alg`, when present) allows.
pub fn from_jwk(jwk: &Jwk) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa.algorithms().to_vec(),
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            ref other => return Err(format!("unsupported EC curve {other:?}")),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            ref other => return Err(format!("unsupported OKP curve {other:?}")),
        },
        AlgorithmParameters::OctetKey(_) => AlgorithmFamily::Hmac.algorithms().to_vec(),
    };
    let algs = match jwk.common.key_algorithm {
        None => by_type,
        Some(KeyAlgorithm::UNKNOWN_ALGORITHM) => return Err("unknown JWK alg".to_owned()),
        Some(alg) => {
            let alg = parse_alg(&alg.to_string())?;
            if !by_type.contains(&alg) {
                return Err(format!("JWK alg {alg:?} does not fit its key type"));
            }
            vec![alg]
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("bad JWK: {e}"))?;
    Ok((key, algs))
}

/// The usable keys of a JWKS document. Keys for encryption, symmetric keys (a shared
/// secret has no business in a published key set) and unsupported types are skipped.
pub fn from_jwks(body: &[u8], allowed: &[Algorithm]) -> Result<Vec<Key>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
            || matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_))
        {
            continue;
        }
        let Ok((key, algs)) = from_jwk(&jwk) else { continue };
        let algorithms = restrict(algs, allowed);
        if !algorithms.is_empty() {
            // Serializing the parsed JWK is deterministic (struct field order), unlike the
            // document's own bytes.
            let Ok(canonical) = serde_json::to_vec(&jwk) else {
                continue;
            };
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                algorithms,
                key,
                id: KeyId::Jwks(Sha256::digest(&canonical).into()),
            });
        }
    }
    if keys.is_empty() {
        return Err("the JWKS document has no usable signing key".to_owned());
    }
    Ok(keys)
}
