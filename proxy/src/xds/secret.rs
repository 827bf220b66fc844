//! SDS: a `Secret` (a certificate with its key, or a validation context) is validated
//! when it arrives and then held in memory only. The TLS contexts that name secrets are
//! `xds::tls`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret as PbSecret, TlsCertificate, secret, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use prost::Message;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::Digest;
use toml::{Table, Value};

use super::Rejected;
use crate::config::PemPart;

/// One validated secret, held in memory. Its `Debug` shows no key.
pub struct Secret {
    pub name: String,
    /// SHA-256 of its content: the version a config text names.
    pub sha256: String,
    pub kind: Kind,
    /// A certificate's end of validity (RFC 3339), for `/api/xds`.
    pub not_after: Option<String>,
}

pub enum Kind {
    Certificate {
        chain: Arc<[u8]>,
        key: Arc<[u8]>,
    },
    /// `trusted_ca` (absent in the default half of Istio's combined context) and the names
    /// a peer's certificate must carry (exact, or a prefix ending in `*`).
    Validation {
        ca: Option<Arc<[u8]>>,
        sans: Vec<String>,
    },
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Certificate { .. } => "certificate",
            Kind::Validation { .. } => "validation context",
        };
        write!(f, "Secret({:?}, {kind}, sha256 {})", self.name, self.sha256)
    }
}

impl Secret {
    /// The bytes a config reference reads.
    pub fn part(&self, part: PemPart) -> Option<Arc<[u8]>> {
        match (&self.kind, part) {
            (Kind::Certificate { chain, .. }, PemPart::Chain) => Some(chain.clone()),
            (Kind::Certificate { key, .. }, PemPart::Key) => Some(key.clone()),
            (Kind::Validation { ca, .. }, PemPart::TrustedCa) => ca.clone(),
            _ => None,
        }
    }

    pub(super) fn reference(&self) -> Value {
        let mut t = Table::new();
        t.insert("sds".into(), Value::String(self.name.clone()));
        t.insert("sha256".into(), Value::String(self.sha256.clone()));
        Value::Table(t)
    }
}

/// The secrets a config text names, by name, as the xDS source attaches them.
pub type Secrets = BTreeMap<String, Arc<Secret>>;

/// An SDS `Secret`, validated: PEM that parses, a key that is the certificate's, CA
/// certificates rustls accepts. An expired certificate is accepted and logged, as Envoy
/// serves it.
pub fn map(bytes: &[u8]) -> Result<Secret, Rejected> {
    let s = PbSecret::decode(bytes).map_err(|e| Rejected(format!("a resource does not decode: {e}")))?;
    if s.name.is_empty() {
        return Err(Rejected("a secret without a name".into()));
    }
    let at = format!("secret {:?}", s.name);
    let kind = match &s.r#type {
        Some(secret::Type::TlsCertificate(c)) => certificate(c, &at)?,
        Some(secret::Type::ValidationContext(v)) => validation(v, &at)?,
        Some(secret::Type::SessionTicketKeys(_)) => {
            return Err(Rejected(format!("{at}: session_ticket_keys is not supported")));
        }
        Some(secret::Type::GenericSecret(_)) => return Err(Rejected(format!("{at}: generic_secret is not supported"))),
        None => {
            return Err(Rejected(format!(
                "{at}: neither tls_certificate nor validation_context"
            )));
        }
    };
    Ok(with_hash(s.name, kind))
}

/// What `/api/xds` shows of the secrets served: names, kinds, hashes, validity; no bytes.
pub fn view(secrets: &Secrets) -> serde_json::Value {
    let entries = secrets.iter().map(|(name, s)| {
        let kind = match &s.kind {
            Kind::Certificate { .. } => "certificate",
            Kind::Validation { .. } => "validation_context",
        };
        let mut v = serde_json::json!({ "kind": kind, "sha256": s.sha256 });
        if let Some(t) = &s.not_after {
            v["not_after"] = serde_json::json!(t);
        }
        (name.clone(), v)
    });
    serde_json::Value::Object(entries.collect())
}

pub(super) fn with_hash(name: String, kind: Kind) -> Secret {
    let mut h = sha2::Sha256::new();
    match &kind {
        Kind::Certificate { chain, key } => {
            h.update(b"certificate\0");
            h.update((chain.len() as u64).to_be_bytes());
            h.update(chain);
            h.update(key);
        }
        Kind::Validation { ca, sans } => {
            h.update(b"validation\0");
            h.update(ca.as_deref().unwrap_or_default());
            for s in sans {
                h.update(b"\0");
                h.update(s.as_bytes());
            }
        }
    }
    let not_after = match &kind {
        Kind::Certificate { chain, .. } => CertificateDer::pem_slice_iter(chain)
            .next()
            .and_then(Result::ok)
            .and_then(|der| {
                let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
                let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
                let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
                Some(humantime::format_rfc3339_seconds(t).to_string())
            }),
        Kind::Validation { .. } => None,
    };
    let sha256 = h.finalize().iter().fold(String::with_capacity(64), |mut s, b| {
        use std::fmt::Write as _;
        let _ = write!(s, "{b:02x}");
        s
    });
    Secret {
        name,
        sha256,
        kind,
        not_after,
    }
}

pub(super) fn certificate(c: &TlsCertificate, at: &str) -> Result<Kind, Rejected> {
    if c.private_key_provider.is_some() || c.password.is_some() {
        return Err(Rejected(format!(
            "{at}: private_key_provider and password are not supported (give the key in PEM)"
        )));
    }
    let chain = data(c.certificate_chain.as_ref(), at, "certificate_chain")?
        .ok_or_else(|| Rejected(format!("{at}: no certificate_chain")))?;
    let key =
        data(c.private_key.as_ref(), at, "private_key")?.ok_or_else(|| Rejected(format!("{at}: no private_key")))?;
    let certs = certs(&chain, at, "certificate_chain")?;
    // Never quote the key: the error names what is wrong, not the bytes.
    let der = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|_| Rejected(format!("{at}: private_key is not a PEM private key")))?;
    let leaf = certs[0].clone();
    rustls::sign::CertifiedKey::from_der(certs, der, &crate::tls::provider())
        .map_err(|e| Rejected(format!("{at}: private_key does not go with the certificate: {e}")))?;
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref())
        && !cert.validity().is_valid()
    {
        tracing::warn!(secret = at, not_after = %cert.validity().not_after, "xDS: a certificate outside its validity period (served anyway, as Envoy does)");
    }
    Ok(Kind::Certificate {
        chain: chain.into(),
        key: key.into(),
    })
}

pub(super) fn validation(v: &CertificateValidationContext, at: &str) -> Result<Kind, Rejected> {
    let unsupported = [
        (!v.verify_certificate_spki.is_empty(), "verify_certificate_spki"),
        (!v.verify_certificate_hash.is_empty(), "verify_certificate_hash"),
        (v.crl.is_some(), "crl"),
        (v.allow_expired_certificate, "allow_expired_certificate"),
        (
            v.trust_chain_verification != 0,
            "trust_chain_verification: ACCEPT_UNTRUSTED",
        ),
        (v.custom_validator_config.is_some(), "custom_validator_config"),
        (v.system_root_certs.is_some(), "system_root_certs"),
    ];
    if let Some((_, what)) = unsupported.iter().find(|(set, _)| *set) {
        return Err(Rejected(format!("{at}: {what} is not supported")));
    }
    let ca = match data(v.trusted_ca.as_ref(), at, "trusted_ca")? {
        Some(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(&pem, at, "trusted_ca")? {
                roots
                    .add(c)
                    .map_err(|e| Rejected(format!("{at}: trusted_ca: not a usable CA certificate: {e}")))?;
            }
            Some(pem.into())
        }
        None => None,
    };
    let mut sans = Vec::new();
    for m in &v.match_subject_alt_names {
        sans.push(san(m, at)?);
    }
    for m in &v.match_typed_subject_alt_names {
        match SanType::try_from(m.san_type) {
            Ok(SanType::Dns | SanType::Uri) => {}
            _ => {
                return Err(Rejected(format!(
                    "{at}: match_typed_subject_alt_names: only DNS and URI names are supported"
                )));
            }
        }
        let Some(matcher) = &m.matcher else {
            return Err(Rejected(format!(
                "{at}: a match_typed_subject_alt_names entry without a matcher"
            )));
        };
        sans.push(san(matcher, at)?);
    }
    Ok(Kind::Validation { ca, sans })
}

/// An Envoy string matcher on a SAN as Weft's pattern: exact, or a prefix ending in `*`.
fn san(m: &StringMatcher, at: &str) -> Result<String, Rejected> {
    let bad = || {
        Rejected(format!(
            "{at}: a subject alt name matcher other than exact or prefix (case-sensitive) is not supported"
        ))
    };
    if m.ignore_case {
        return Err(bad());
    }
    match &m.match_pattern {
        Some(MatchPattern::Exact(s)) if !s.is_empty() && !s.contains('*') => Ok(s.clone()),
        Some(MatchPattern::Prefix(s)) if !s.is_empty() && !s.contains('*') => Ok(format!("{s}*")),
        _ => Err(bad()),
    }
}

fn certs(pem: &[u8], at: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, Rejected> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Rejected(format!("{at}: {what} is not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(Rejected(format!("{at}: {what} holds no PEM certificate")));
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c.as_ref())
            .map_err(|e| Rejected(format!("{at}: {what}: a certificate does not parse: {e}")))?;
    }
    Ok(certs)
}

/// A data source's bytes: inline, or a file read now (relative to the working directory,
/// as Envoy reads it).
fn data(ds: Option<&DataSource>, at: &str, what: &str) -> Result<Option<Vec<u8>>, Rejected> {
    match ds.and_then(|d| d.specifier.as_ref()) {
        None => Ok(None),
        Some(data_source::Specifier::InlineBytes(b)) => Ok(Some(b.clone())),
        Some(data_source::Specifier::InlineString(s)) => Ok(Some(s.clone().into_bytes())),
        Some(data_source::Specifier::Filename(f)) => std::fs::read(f)
            .map(Some)
            .map_err(|e| Rejected(format!("{at}: {what}: cannot read {f}: {e}"))),
        Some(data_source::Specifier::EnvironmentVariable(_)) => {
            Err(Rejected(format!("{at}: {what}: environment_variable is not supported")))
        }
    }
}

#[cfg(test)]
mod tests;
