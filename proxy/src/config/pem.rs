//! Where a certificate, key or CA bundle comes from: a file the TOML file names, or an SDS
//! secret an xDS control plane sent. A secret is held in memory only: the config text names
//! it (`{ sds = "default", sha256 = "…" }`) and the xDS source attaches its bytes after
//! parsing, so no key is ever in a config text, an error, `/api/config` or a log.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

/// A PEM source.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "toml::Value")]
pub enum Pem {
    File(PathBuf),
    Secret(SecretRef),
}

/// An SDS secret by name and content hash. The hash makes a rotated secret a new config
/// text (so it is applied), and ties the text to the bytes attached to it.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    pub sds: String,
    pub sha256: String,
    #[serde(skip)]
    pub bytes: Option<Arc<[u8]>>,
}

/// Finds a secret's part by (name, sha256, part): the xDS source's secrets.
pub type FindSecret<'a> = &'a dyn Fn(&str, &str, PemPart) -> Option<Arc<[u8]>>;

/// Which part of a secret a reference reads; the field it stands in says which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PemPart {
    /// A `tls_certificate`'s `certificate_chain`.
    Chain,
    /// A `tls_certificate`'s `private_key`.
    Key,
    /// A `validation_context`'s `trusted_ca`.
    TrustedCa,
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretRef")
            .field("sds", &self.sds)
            .field("sha256", &self.sha256)
            .field("attached", &self.bytes.is_some())
            .finish()
    }
}

impl TryFrom<toml::Value> for Pem {
    type Error = String;

    fn try_from(v: toml::Value) -> Result<Pem, String> {
        match v {
            toml::Value::String(path) => Ok(Pem::File(PathBuf::from(path))),
            t @ toml::Value::Table(_) => t.try_into().map(Pem::Secret).map_err(|e| e.message().to_owned()),
            _ => Err("a file path, or an SDS secret { sds = NAME, sha256 = HASH }".into()),
        }
    }
}

impl Pem {
    /// The file, when it is one (watched for rotation).
    pub fn file(&self) -> Option<&PathBuf> {
        match self {
            Pem::File(p) => Some(p),
            Pem::Secret(_) => None,
        }
    }

    pub(super) fn file_mut(&mut self) -> Option<&mut PathBuf> {
        match self {
            Pem::File(p) => Some(p),
            Pem::Secret(_) => None,
        }
    }

    /// The PEM text: the file read now, or the secret's bytes.
    pub fn read(&self) -> Result<std::borrow::Cow<'_, [u8]>, String> {
        match self {
            Pem::File(p) => std::fs::read(p)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| format!("cannot read {}: {e}", p.display())),
            Pem::Secret(s) => s.bytes.as_deref().map(std::borrow::Cow::Borrowed).ok_or_else(|| {
                format!(
                    "SDS secret {:?} has not arrived (SDS secrets come only from an xDS control plane)",
                    s.sds
                )
            }),
        }
    }

    /// Fills a secret's bytes from `find(name, sha256, part)`; false when it has none.
    pub(super) fn attach(&mut self, part: PemPart, find: FindSecret<'_>) -> bool {
        match self {
            Pem::File(_) => true,
            Pem::Secret(s) => {
                s.bytes = find(&s.sds, &s.sha256, part);
                s.bytes.is_some()
            }
        }
    }
}

/// A file's path, or `SDS secret "NAME"`: for messages.
impl fmt::Display for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(p) => write!(f, "{}", p.display()),
            Pem::Secret(s) => write!(f, "SDS secret {:?}", s.sds),
        }
    }
}
