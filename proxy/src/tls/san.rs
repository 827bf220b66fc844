//! Verifying a peer by its subject alternative names. Upstream, instead of the name
//! dialled: a mesh peer's certificate carries a SPIFFE ID (a URI SAN) and no DNS name for
//! the SNI the client sends (Istio's `outbound_.8080_._.reviews…`), so the chain is checked
//! against the CA as usual and the name check is one of the allowed SANs. Downstream, on
//! top of the chain: a client certificate must carry one of the allowed names (Istio's
//! trust domain prefix).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, RootCertStore, SignatureScheme};

use super::PeerIdentity;

#[derive(Debug)]
pub struct SanVerifier {
    roots: RootCertStore,
    /// Exact names, or prefixes ending in `*`.
    allowed: Vec<String>,
    provider: Arc<CryptoProvider>,
}

impl SanVerifier {
    pub fn new(roots: RootCertStore, allowed: Vec<String>, provider: Arc<CryptoProvider>) -> SanVerifier {
        SanVerifier {
            roots,
            allowed,
            provider,
        }
    }
}

/// Whether `name` is one of `allowed` (exact, or a prefix ending in `*`).
pub fn matches(allowed: &[String], name: &str) -> bool {
    allowed.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

impl ServerCertVerifier for SanVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        names_allowed(end_entity, &self.allowed).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// One of the certificate's URI or DNS names is allowed, or an error listing them.
fn names_allowed(cert: &CertificateDer<'_>, allowed: &[String]) -> Result<(), Error> {
    let id =
        PeerIdentity::from_der(cert).ok_or_else(|| Error::General("the certificate's names do not parse".into()))?;
    if id.uris.iter().chain(&id.dns).any(|n| matches(allowed, n)) {
        return Ok(());
    }
    Err(Error::General(format!(
        "the certificate's subject alt names {:?} match none of {allowed:?}",
        id.uris.iter().chain(&id.dns).collect::<Vec<_>>(),
    )))
}

/// A client verifier (the CA's) that also wants one of the allowed names.
#[derive(Debug)]
pub struct ClientSanVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientSanVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, allowed: Vec<String>) -> ClientSanVerifier {
        ClientSanVerifier { inner, allowed }
    }
}

impl ClientCertVerifier for ClientSanVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        names_allowed(end_entity, &self.allowed).map(|()| verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn exact_names_and_prefixes() {
        let allowed = ["spiffe://a/ns/x/sa/web".to_owned(), "spiffe://b/ns/*".to_owned()];
        assert!(matches(&allowed, "spiffe://a/ns/x/sa/web"));
        assert!(!matches(&allowed, "spiffe://a/ns/x/sa/web2"));
        assert!(matches(&allowed, "spiffe://b/ns/y/sa/z"));
        assert!(!matches(&allowed, "spiffe://b/n"));
    }
}
