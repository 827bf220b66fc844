//! TLS: listener configs (SNI, ALPN, client verification), QUIC server configs (`quic`),
//! upstream client configs, identities read from certificates, and development
//! certificates.

use std::fmt::Write as _;
use std::sync::Arc;

use http::HeaderValue;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use sha2::Digest;

use crate::config::{ClientAuth, ListenerTlsConfig, Pem, UpstreamTlsConfig};
use crate::conn::ServerBlocks;

pub mod devcert;
pub mod quic;
mod san;

/// ring: quick to build, no cmake; every TLS config of the process uses it.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file or SDS secret.
pub fn load_certs(pem: &Pem) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = pem.read()?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("cannot read certificates from {pem}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{pem} holds no PEM certificate"));
    }
    Ok(certs)
}

/// The private key of a PEM file or SDS secret. Errors never quote the key.
pub fn load_key(pem: &Pem) -> Result<PrivateKeyDer<'static>, String> {
    let text = pem.read()?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| format!("cannot read a private key from {pem}: {e}"))
}

pub fn roots(pem: &Pem) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(pem)? {
        roots
            .add(cert)
            .map_err(|e| format!("{pem}: not a usable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// The server side of a TLS listener, and its server blocks (the names of each
/// certificate). `alpn` is `["h2", "http/1.1"]` for TCP and `["h3"]` for QUIC (which also
/// needs TLS 1.3 only).
pub fn server_config(
    tls: &ListenerTlsConfig,
    alpn: &[&[u8]],
    tls13_only: bool,
) -> Result<(ServerConfig, Arc<ServerBlocks>), String> {
    let provider = provider();
    let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only || tls.min_version == "1.3" {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS12, &rustls::version::TLS13]
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider.clone());
            let verifier = match tls.client_auth {
                ClientAuth::Required => verifier,
                ClientAuth::Optional => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| format!("client_ca {ca}: {e}"))?;
            if tls.subject_alt_names.is_empty() {
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_client_cert_verifier(Arc::new(san::ClientSanVerifier::new(
                    verifier,
                    tls.subject_alt_names.clone(),
                )))
            }
        }
    };
    let mut names = Vec::with_capacity(tls.certificates.len());
    let mut keys = Vec::with_capacity(tls.certificates.len());
    for pair in &tls.certificates {
        let chain = load_certs(&pair.cert)?;
        let cert_names = PeerIdentity::from_der(&chain[0])
            .map(|id| id.dns.into_iter().map(|n| n.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        let key = CertifiedKey::from_der(chain, load_key(&pair.key)?, &provider)
            .map_err(|e| format!("{} and {} do not make a usable pair: {e}", pair.cert, pair.key))?;
        names.push(cert_names);
        keys.push(Arc::new(key));
    }
    let blocks = Arc::new(ServerBlocks::new(names));
    let resolver = SniResolver {
        blocks: blocks.clone(),
        keys,
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok((config, blocks))
}

/// Picks the certificate whose DNS names match the client's SNI; the first one otherwise.
#[derive(Debug)]
struct SniResolver {
    blocks: Arc<ServerBlocks>,
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.keys.get(self.blocks.chosen(hello.server_name())).cloned()
    }
}

/// The client side of TLS to a cluster: the upstream's certificate chains to `ca` and
/// names `server_name` (or, with `subject_alt_names`, one of those).
pub fn client_config(tls: &UpstreamTlsConfig, http2: bool) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let roots = roots(&tls.ca)?;
    let builder = if tls.subject_alt_names.is_empty() {
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(san::SanVerifier::new(
                roots,
                tls.subject_alt_names.clone(),
                provider,
            )))
    };
    let mut config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| format!("client certificate {cert}: {e}"))?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![if http2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    Ok(config)
}

/// What a connection keeps of its client's verified certificate: the identity routes and
/// policies use, and the XFCC element to forward when the listener forwards it.
pub fn client_facts(peer: Option<&PeerIdentity>, forward_client_cert: bool) -> (Option<Arc<str>>, Option<HeaderValue>) {
    let Some(id) = peer else { return (None, None) };
    let xfcc = if forward_client_cert {
        HeaderValue::try_from(id.xfcc()).ok()
    } else {
        None
    };
    (Some(id.primary().into()), xfcc)
}

/// Who a verified certificate says its holder is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// URI SANs, e.g. `spiffe://example.org/ns/default/sa/web`.
    pub uris: Vec<String>,
    pub dns: Vec<String>,
    pub subject: String,
    /// SHA-256 of the certificate, hex.
    pub hash: String,
}

impl PeerIdentity {
    pub fn from_der(der: &CertificateDer<'_>) -> Option<PeerIdentity> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
        let (mut uris, mut dns) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                    GeneralName::DNSName(name) => dns.push((*name).to_owned()),
                    _ => {}
                }
            }
        }
        let hash = sha2::Sha256::digest(der.as_ref())
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            });
        Some(PeerIdentity {
            uris,
            dns,
            subject: cert.subject().to_string(),
            hash,
        })
    }

    /// The one name routing and policies use: the SPIFFE ID when there is one, else the
    /// first URI, else the first DNS name, else the subject.
    pub fn primary(&self) -> &str {
        self.uris
            .iter()
            .find(|u| u.starts_with("spiffe://"))
            .or(self.uris.first())
            .or(self.dns.first())
            .map_or(self.subject.as_str(), String::as_str)
    }

    /// The element Envoy puts in `x-forwarded-client-cert` for this certificate.
    pub fn xfcc(&self) -> String {
        let mut out = format!("Hash={};Subject=\"{}\"", self.hash, self.subject.replace('"', "\\\""));
        for uri in &self.uris {
            let _ = write!(out, ";URI={uri}");
        }
        for dns in &self.dns {
            let _ = write!(out, ";DNS={dns}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_prefers_spiffe_and_formats_xfcc() {
        let ca = devcert::Authority::new("Test CA").expect("ca");
        let leaf = ca
            .issue(
                "web",
                &["web.internal"],
                &["spiffe://example.org/ns/default/sa/web"],
                devcert::Usage::Client,
            )
            .expect("leaf");
        let der = CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).expect("pem");
        let id = PeerIdentity::from_der(&der).expect("parse");
        assert_eq!(id.primary(), "spiffe://example.org/ns/default/sa/web");
        assert_eq!(id.dns, ["web.internal"]);
        assert_eq!(id.subject, "CN=web");
        assert_eq!(
            id.xfcc(),
            format!(
                "Hash={};Subject=\"CN=web\";URI=spiffe://example.org/ns/default/sa/web;DNS=web.internal",
                id.hash
            )
        );
        assert_eq!(id.hash.len(), 64);
    }
}
