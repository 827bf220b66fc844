//! Development certificates (`weft cert`): a CA and the server and client certificates it
//! signs, so the demo and the tests need nothing from outside. Not for production keys.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A certificate authority that can issue leaf certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A leaf certificate and its key, PEM-encoded.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Server,
    Client,
}

impl Authority {
    pub fn new(common_name: &str) -> Result<Authority, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        Ok(Authority {
            issuer: Issuer::new(params, key),
            cert_pem,
            key_pem,
        })
    }

    /// Issues a certificate for `dns` names (IP addresses are accepted too) and `uris`
    /// (e.g. SPIFFE IDs), valid from now for a year.
    pub fn issue(&self, common_name: &str, dns: &[&str], uris: &[&str], usage: Usage) -> Result<Issued, rcgen::Error> {
        let now = time::OffsetDateTime::now_utc();
        self.issue_between(
            common_name,
            dns,
            uris,
            usage,
            now - time::Duration::minutes(5),
            now + time::Duration::days(365),
        )
    }

    /// Like [`Authority::issue`], valid between the given instants (tests use this for
    /// expired and not-yet-valid certificates).
    pub fn issue_between(
        &self,
        common_name: &str,
        dns: &[&str],
        uris: &[&str],
        usage: Usage,
        not_before: time::OffsetDateTime,
        not_after: time::OffsetDateTime,
    ) -> Result<Issued, rcgen::Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name);
        for d in dns {
            params.subject_alt_names.push(match d.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*d).try_into()?),
            });
        }
        for u in uris {
            params.subject_alt_names.push(SanType::URI((*u).try_into()?));
        }
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = not_before;
        params.not_after = not_after;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Writes `ca.pem`, `ca-key.pem`, `server.pem`, `server-key.pem`, `client.pem`,
/// `client-key.pem` into `dir`: the server certificate for `hosts`, the client certificate
/// for the SPIFFE ID `client_id`.
pub fn write_bundle(dir: &Path, hosts: &[&str], client_id: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ca = Authority::new("Weft development CA")?;
    let server = ca.issue(hosts.first().copied().unwrap_or("localhost"), hosts, &[], Usage::Server)?;
    let client = ca.issue("weft-client", &[], &[client_id], Usage::Client)?;
    for (file, text) in [
        ("ca.pem", &ca.cert_pem),
        ("ca-key.pem", &ca.key_pem),
        ("server.pem", &server.cert_pem),
        ("server-key.pem", &server.key_pem),
        ("client.pem", &client.cert_pem),
        ("client-key.pem", &client.key_pem),
    ] {
        std::fs::write(dir.join(file), text)?;
    }
    Ok(())
}
