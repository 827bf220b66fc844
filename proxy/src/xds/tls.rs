//! The TLS contexts of listeners and clusters: a `DownstreamTlsContext` on a filter chain
//! and an `UpstreamTlsContext` on a cluster name secrets (asked for over ADS) or carry them
//! inline, and become the same `tls` tables the TOML file writes, whose PEM entries are
//! `{ sds = NAME, sha256 = … }` references (`config::Pem`). The xDS source attaches the
//! bytes after parsing, so keys never appear in a config text, a NACK, a log or `/api/xds`.
//!
//! Warming follows Envoy: a listener or cluster waits for the secrets it names until the
//! server answered for them; a listener whose secret the server does not have is not bound
//! and a cluster without its secret is left out (its routes answer 503), while the rest
//! serves.

use std::collections::BTreeSet;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{TransportSocket, transport_socket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, UpstreamTlsContext,
    common_tls_context::ValidationContextType, tls_parameters::TlsProtocol,
};
use prost::Message;
use toml::{Table, Value};

use super::Rejected;
use super::secret::{Kind, Secret, Secrets, certificate, validation, with_hash};
use super::snapshot::Snapshot;

const DOWNSTREAM: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const UPSTREAM: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const RAW_BUFFER: &str = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
/// ALPN names a listener may be asked for: Weft offers h2 and http/1.1 on every TLS
/// listener; Istio's own names (for its metadata exchange, which Weft does not do) are
/// accepted and not offered.
const ALPN: [&str; 7] = [
    "h2",
    "http/1.1",
    "http/1.0",
    "istio",
    "istio-peer-exchange",
    "istio-h2",
    "istio-http/1.1",
];

/// Where a certificate or validation context comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A secret to ask SDS for, over ADS.
    Sds(String),
    /// Carried in the listener or cluster itself (named after it, for references).
    Inline(Arc<Secret>),
}

/// A validation context: inline, by SDS, or both (Istio's combined context: the CA from
/// SDS, the names from the inline default).
#[derive(Debug, Clone, Default)]
pub struct Validation {
    pub default: Option<Arc<Secret>>,
    pub sds: Option<String>,
}

/// A listener's `DownstreamTlsContext`.
#[derive(Debug, Clone)]
pub struct DownstreamTls {
    pub certificates: Vec<Source>,
    pub validation: Option<Validation>,
    pub require_client: bool,
    pub min_version: &'static str,
}

/// A cluster's `UpstreamTlsContext`.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    pub sni: Option<String>,
    pub certificate: Option<Source>,
    pub validation: Validation,
}

/// The `DownstreamTlsContext` of a filter chain's transport socket; None for plaintext.
pub fn downstream(ts: Option<&TransportSocket>, at: &str) -> Result<Option<DownstreamTls>, Rejected> {
    let Some(any) = tls_any(ts, DOWNSTREAM, at)? else {
        return Ok(None);
    };
    let ctx = DownstreamTlsContext::decode(any)
        .map_err(|e| Rejected(format!("{at}: DownstreamTlsContext does not decode: {e}")))?;
    let common = ctx.common_tls_context.unwrap_or_default();
    if let Some(p) = common.alpn_protocols.iter().find(|p| !ALPN.contains(&p.as_str())) {
        return Err(Rejected(format!(
            "{at}: ALPN protocol {p:?} is not supported (Weft's TLS listeners speak h2 and http/1.1)"
        )));
    }
    let certificates = certificate_sources(&common, at)?;
    if certificates.is_empty() {
        return Err(Rejected(format!("{at}: a DownstreamTlsContext without a certificate")));
    }
    let validation = validation_source(&common, at)?;
    let require_client = ctx.require_client_certificate.is_some_and(|b| b.value);
    if require_client && validation.is_none() {
        return Err(Rejected(format!(
            "{at}: require_client_certificate without a validation context"
        )));
    }
    let min_version = match common
        .tls_params
        .as_ref()
        .map(|p| TlsProtocol::try_from(p.tls_minimum_protocol_version))
    {
        Some(Ok(TlsProtocol::TlSv13)) => "1.3",
        _ => "1.2",
    };
    Ok(Some(DownstreamTls {
        certificates,
        validation,
        require_client,
        min_version,
    }))
}

/// The `UpstreamTlsContext` of a cluster's transport socket; None for plaintext.
pub fn upstream(ts: Option<&TransportSocket>, at: &str) -> Result<Option<UpstreamTls>, Rejected> {
    let Some(any) = tls_any(ts, UPSTREAM, at)? else {
        return Ok(None);
    };
    let ctx = UpstreamTlsContext::decode(any)
        .map_err(|e| Rejected(format!("{at}: UpstreamTlsContext does not decode: {e}")))?;
    let common = ctx.common_tls_context.unwrap_or_default();
    let mut certificates = certificate_sources(&common, at)?;
    if certificates.len() > 1 {
        return Err(Rejected(format!("{at}: more than one client certificate")));
    }
    // Weft verifies every upstream: a context that would trust anything is refused.
    let validation = validation_source(&common, at)?.ok_or_else(|| {
        Rejected(format!(
            "{at}: an UpstreamTlsContext without a validation context (Weft verifies every upstream's certificate)"
        ))
    })?;
    Ok(Some(UpstreamTls {
        sni: Some(ctx.sni).filter(|s| !s.is_empty()),
        certificate: certificates.pop(),
        validation,
    }))
}

/// The TLS context's bytes when `ts` is the TLS transport socket with a context of `want`.
fn tls_any<'a>(ts: Option<&'a TransportSocket>, want: &str, at: &str) -> Result<Option<&'a [u8]>, Rejected> {
    let Some(ts) = ts else { return Ok(None) };
    match &ts.config_type {
        Some(transport_socket::ConfigType::TypedConfig(any)) if any.type_url == want => Ok(Some(any.value.as_slice())),
        Some(transport_socket::ConfigType::TypedConfig(any)) if any.type_url == RAW_BUFFER => Ok(None),
        Some(transport_socket::ConfigType::TypedConfig(any)) => Err(Rejected(format!(
            "{at}: transport socket {:?} ({}) is not supported",
            ts.name, any.type_url
        ))),
        None if ts.name == "envoy.transport_sockets.raw_buffer" => Ok(None),
        None => Err(Rejected(format!(
            "{at}: transport socket {:?} without typed_config",
            ts.name
        ))),
    }
}

fn certificate_sources(common: &CommonTlsContext, at: &str) -> Result<Vec<Source>, Rejected> {
    let mut out = Vec::new();
    for (i, c) in common.tls_certificates.iter().enumerate() {
        let name = format!("{at} tls_certificates[{i}]");
        out.push(Source::Inline(Arc::new(with_hash(
            name.clone(),
            certificate(c, &name)?,
        ))));
    }
    for c in &common.tls_certificate_sds_secret_configs {
        out.push(Source::Sds(sds_name(c, at)?));
    }
    Ok(out)
}

fn validation_source(common: &CommonTlsContext, at: &str) -> Result<Option<Validation>, Rejected> {
    let inline = |v: &CertificateValidationContext| -> Result<Arc<Secret>, Rejected> {
        let name = format!("{at} validation_context");
        Ok(Arc::new(with_hash(name.clone(), validation(v, &name)?)))
    };
    Ok(match &common.validation_context_type {
        None => None,
        Some(ValidationContextType::ValidationContext(v)) => Some(Validation {
            default: Some(inline(v)?),
            sds: None,
        }),
        Some(ValidationContextType::ValidationContextSdsSecretConfig(c)) => Some(Validation {
            default: None,
            sds: Some(sds_name(c, at)?),
        }),
        Some(ValidationContextType::CombinedValidationContext(c)) => {
            let sds = c.validation_context_sds_secret_config.as_ref().ok_or_else(|| {
                Rejected(format!(
                    "{at}: combined_validation_context without validation_context_sds_secret_config"
                ))
            })?;
            Some(Validation {
                default: c.default_validation_context.as_ref().map(inline).transpose()?,
                sds: Some(sds_name(sds, at)?),
            })
        }
        Some(_) => return Err(Rejected(format!("{at}: a certificate provider is not supported"))),
    })
}

/// A secret's name; it must be fetched over ADS (Weft holds one stream).
fn sds_name(c: &SdsSecretConfig, at: &str) -> Result<String, Rejected> {
    if c.name.is_empty() {
        return Err(Rejected(format!("{at}: an SDS secret config without a name")));
    }
    match c.sds_config.as_ref().and_then(|s| s.config_source_specifier.as_ref()) {
        None | Some(ConfigSourceSpecifier::Ads(_)) => Ok(c.name.clone()),
        Some(_) => Err(Rejected(format!(
            "{at}: secret {:?}: sds_config other than ads is not supported (an SDS server of its own, such as \
             Istio's agent socket): serve secrets on the ADS stream",
            c.name
        ))),
    }
}

/// The secret names a snapshot's listeners and clusters ask SDS for.
pub fn sds_names(s: &Snapshot) -> BTreeSet<String> {
    let listeners = s.listeners.values().filter_map(|l| l.tls.as_ref()).flat_map(|t| {
        t.certificates
            .iter()
            .filter_map(|c| match c {
                Source::Sds(n) => Some(n.clone()),
                Source::Inline(_) => None,
            })
            .chain(t.validation.iter().filter_map(|v| v.sds.clone()))
    });
    let clusters = s.clusters.values().filter_map(|c| c.tls.as_ref()).flat_map(|t| {
        let cert = match &t.certificate {
            Some(Source::Sds(n)) => Some(n.clone()),
            _ => None,
        };
        cert.into_iter().chain(t.validation.sds.clone())
    });
    listeners.chain(clusters).collect()
}

/// Every secret a config text assembled from `s` may name: SDS and inline ones.
pub fn held(s: &Snapshot) -> Secrets {
    let mut out: Secrets = s.secrets.clone();
    let mut inline = |src: &Source| {
        if let Source::Inline(secret) = src {
            out.insert(secret.name.clone(), secret.clone());
        }
    };
    for t in s.listeners.values().filter_map(|l| l.tls.as_ref()) {
        t.certificates.iter().for_each(&mut inline);
        if let Some(d) = t.validation.as_ref().and_then(|v| v.default.clone()) {
            inline(&Source::Inline(d));
        }
    }
    for t in s.clusters.values().filter_map(|c| c.tls.as_ref()) {
        t.certificate.iter().for_each(&mut inline);
        if let Some(d) = t.validation.default.clone() {
            inline(&Source::Inline(d));
        }
    }
    out
}

/// A `tls` table once every secret it names is held.
pub enum Resolved {
    Ready(Table),
    /// A secret not answered for yet: the snapshot warms.
    Warming,
    /// The server answered without this secret: the listener or cluster is left out.
    Missing(String),
}

fn find(src: &Source, s: &Snapshot) -> Result<Arc<Secret>, Resolved> {
    match src {
        Source::Inline(secret) => Ok(secret.clone()),
        Source::Sds(name) => sds(name, s),
    }
}

fn sds(name: &str, s: &Snapshot) -> Result<Arc<Secret>, Resolved> {
    match s.secrets.get(name) {
        Some(secret) => Ok(secret.clone()),
        None if s.sds_answered.contains(name) => Err(Resolved::Missing(name.to_owned())),
        None => Err(Resolved::Warming),
    }
}

/// A certificate's `{ cert, key }` references.
fn cert_key(secret: &Secret, at: &str) -> Result<Table, Rejected> {
    if !matches!(secret.kind, Kind::Certificate { .. }) {
        return Err(Rejected(format!(
            "{at}: secret {:?} is a validation context, not a certificate",
            secret.name
        )));
    }
    let mut t = Table::new();
    t.insert("cert".into(), secret.reference());
    t.insert("key".into(), secret.reference());
    Ok(t)
}

/// The CA reference and the names of a validation context, merged as Envoy merges a
/// combined one (the SDS half's CA wins, the names add up).
fn validation_refs(v: &Validation, s: &Snapshot, at: &str) -> Result<Result<(Value, Vec<String>), Resolved>, Rejected> {
    let dynamic = match &v.sds {
        Some(name) => match sds(name, s) {
            Ok(secret) => Some(secret),
            Err(r) => return Ok(Err(r)),
        },
        None => None,
    };
    let (mut ca, mut sans) = (None, Vec::new());
    for secret in v.default.iter().chain(dynamic.iter()) {
        let Kind::Validation { ca: c, sans: n } = &secret.kind else {
            return Err(Rejected(format!(
                "{at}: secret {:?} is a certificate, not a validation context",
                secret.name
            )));
        };
        if c.is_some() {
            ca = Some(secret.reference());
        }
        sans.extend(n.iter().cloned());
    }
    let ca = ca.ok_or_else(|| Rejected(format!("{at}: the validation context has no trusted_ca")))?;
    Ok(Ok((ca, sans)))
}

/// The listener's `tls` table.
pub fn listener_tls(tls: &DownstreamTls, s: &Snapshot, at: &str) -> Result<Resolved, Rejected> {
    let mut certificates = Vec::new();
    for c in &tls.certificates {
        match find(c, s) {
            Ok(secret) => certificates.push(Value::Table(cert_key(&secret, at)?)),
            Err(r) => return Ok(r),
        }
    }
    let mut t = Table::new();
    t.insert("certificates".into(), Value::Array(certificates));
    t.insert("min_version".into(), Value::String(tls.min_version.into()));
    if let Some(v) = &tls.validation {
        let (ca, sans) = match validation_refs(v, s, at)? {
            Ok(refs) => refs,
            Err(r) => return Ok(r),
        };
        t.insert("client_ca".into(), ca);
        if !sans.is_empty() {
            t.insert(
                "subject_alt_names".into(),
                Value::Array(sans.into_iter().map(Value::String).collect()),
            );
        }
        let auth = if tls.require_client { "required" } else { "optional" };
        t.insert("client_auth".into(), Value::String(auth.into()));
    }
    Ok(Resolved::Ready(t))
}

/// The cluster's `tls` table.
pub fn cluster_tls(tls: &UpstreamTls, s: &Snapshot, at: &str) -> Result<Resolved, Rejected> {
    let mut t = Table::new();
    let (ca, sans) = match validation_refs(&tls.validation, s, at)? {
        Ok(refs) => refs,
        Err(r) => return Ok(r),
    };
    t.insert("ca".into(), ca);
    if !sans.is_empty() {
        t.insert(
            "subject_alt_names".into(),
            Value::Array(sans.into_iter().map(Value::String).collect()),
        );
    }
    if let Some(sni) = &tls.sni {
        t.insert("server_name".into(), Value::String(sni.clone()));
    }
    if let Some(c) = &tls.certificate {
        match find(c, s) {
            Ok(secret) => t.extend(cert_key(&secret, at)?),
            Err(r) => return Ok(r),
        }
    }
    Ok(Resolved::Ready(t))
}
