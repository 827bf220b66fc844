//! Wasm filters delivered by xDS: an HTTP connection manager's
//! `envoy.extensions.filters.http.wasm.v3.Wasm` filter becomes a `[[filters]]` entry on every
//! route. Its component comes from `vm_config.code`: `remote` (fetched through a CDS
//! cluster, bounded in size and time, its SHA-256 checked) or `local` (a file). Modules are
//! kept by hash, so a push that names the same one again neither fetches nor compiles it;
//! the engine compiles it during the reload, in the ADS task, never on a request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{async_data_source, data_source, http_uri};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::plugin_config;
use envoy_types::pb::google::protobuf::{Any, StringValue, Struct};
use http_body_util::BodyExt;
use prost::Message;
use sha2::{Digest, Sha256};
use toml::Value;

use super::Rejected;
use super::cluster::Endpoints;
use super::snapshot::Snapshot;

pub const WASM: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const STRING_VALUE: &str = "type.googleapis.com/google.protobuf.StringValue";
const STRUCT: &str = "type.googleapis.com/google.protobuf.Struct";
/// Largest component fetched or read.
pub const MAX_MODULE_BYTES: usize = 64 << 20;
/// A fetch without `http_uri.timeout`; a longer one is capped at [`MAX_TIMEOUT`].
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// One Wasm filter of a listener's HTTP connection manager.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmFilter {
    pub name: String,
    pub code: Code,
    /// `configuration` (JSON in a `StringValue`, or a `Struct`): the filter's `config`.
    pub config: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Code {
    Remote {
        uri: String,
        cluster: String,
        timeout: Duration,
        sha256: String,
    },
    Local(PathBuf),
}

/// Reads one HTTP filter's `Wasm` config; `at` locates it in errors.
pub fn map(filter_name: &str, any: &Any, at: &str) -> Result<WasmFilter, Rejected> {
    let at = format!("{at}: Wasm filter {filter_name:?}");
    let no = |what: String| Rejected(format!("{at}: {what}"));
    let wasm = Wasm::decode(any.value.as_slice()).map_err(|e| no(format!("does not decode: {e}")))?;
    let plugin = wasm.config.ok_or_else(|| no("has no config".into()))?;
    let name = if plugin.name.is_empty() {
        filter_name.to_owned()
    } else {
        plugin.name.clone()
    };
    let vm = match plugin.vm {
        Some(plugin_config::Vm::VmConfig(vm)) => vm,
        None => return Err(no("has no vm_config".into())),
    };
    let code = match vm.code.and_then(|c| c.specifier) {
        Some(async_data_source::Specifier::Remote(remote)) => {
            let uri = remote
                .http_uri
                .ok_or_else(|| no("remote code without http_uri".into()))?;
            let cluster = match uri.http_upstream_type {
                Some(http_uri::HttpUpstreamType::Cluster(c)) if !c.is_empty() => c,
                _ => return Err(no("remote http_uri without a cluster".into())),
            };
            let sha256 = remote.sha256.to_ascii_lowercase();
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(no(format!(
                    "remote code needs sha256 (64 hex digits), got {:?}",
                    remote.sha256
                )));
            }
            let parsed: http::Uri = uri
                .uri
                .parse()
                .map_err(|e| no(format!("http_uri {:?} is not a URI: {e}", uri.uri)))?;
            if parsed.scheme_str() != Some("http") || parsed.authority().is_none() {
                return Err(no(format!(
                    "http_uri {:?} is not an http:// URI (the fetch goes through cluster {cluster:?} in plain HTTP)",
                    uri.uri
                )));
            }
            let timeout = match uri.timeout {
                Some(d) => match (u64::try_from(d.seconds), u32::try_from(d.nanos)) {
                    (Ok(s), Ok(n)) => Duration::new(s.min(MAX_TIMEOUT.as_secs()), n).min(MAX_TIMEOUT),
                    _ => return Err(no("http_uri has a negative timeout".into())),
                },
                None => DEFAULT_TIMEOUT,
            };
            Code::Remote {
                uri: uri.uri,
                cluster,
                timeout,
                sha256,
            }
        }
        Some(async_data_source::Specifier::Local(local)) => match local.specifier {
            Some(data_source::Specifier::Filename(f)) if !f.is_empty() => Code::Local(PathBuf::from(f)),
            _ => return Err(no("local code other than a filename".into())),
        },
        None => return Err(no("vm_config has no code".into())),
    };
    let config = match plugin.configuration {
        None => None,
        Some(c) if c.type_url == STRING_VALUE => {
            let text = StringValue::decode(c.value.as_slice())
                .map_err(|e| no(format!("configuration does not decode: {e}")))?
                .value;
            if text.trim().is_empty() {
                None
            } else {
                let json: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| no(format!("configuration is not JSON: {e}")))?;
                Some(json_to_toml(&json).map_err(|e| no(format!("configuration: {e}")))?)
            }
        }
        Some(c) if c.type_url == STRUCT => {
            let s =
                Struct::decode(c.value.as_slice()).map_err(|e| no(format!("configuration does not decode: {e}")))?;
            Some(json_to_toml(&struct_to_json(&s)).map_err(|e| no(format!("configuration: {e}")))?)
        }
        Some(c) => {
            return Err(no(format!(
                "configuration of type {:?} (a StringValue holding JSON, or a Struct)",
                c.type_url
            )));
        }
    };
    Ok(WasmFilter { name, code, config })
}

fn struct_to_json(s: &Struct) -> serde_json::Value {
    use envoy_types::pb::google::protobuf::value::Kind;
    fn value(v: &envoy_types::pb::google::protobuf::Value) -> serde_json::Value {
        match &v.kind {
            None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
            Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
            Some(Kind::NumberValue(n)) => serde_json::json!(n),
            Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
            Some(Kind::ListValue(l)) => serde_json::Value::Array(l.values.iter().map(value).collect()),
            Some(Kind::StructValue(s)) => struct_to_json(s),
        }
    }
    serde_json::Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), value(v))).collect())
}

fn json_to_toml(v: &serde_json::Value) -> Result<Value, String> {
    Value::try_from(v).map_err(|e| format!("cannot be a filter config ({e}; TOML has no null)"))
}

/// The node metadata key that may carry the public key (hex), as `[xds] wasm_public_key`.
pub const PUBLIC_KEY_METADATA: &str = "WEFT_WASM_PUBLIC_KEY";
/// Components kept beyond those in use; older unused ones are deleted.
const MAX_KEPT: usize = 16;
/// Largest signature file read (a signature is 64 bytes, or 128 hex digits).
const MAX_SIGNATURE_BYTES: usize = 1024;

/// An ed25519 public key written as 64 hex digits.
pub fn public_key(text: &str) -> Result<ed25519_dalek::VerifyingKey, String> {
    let bytes: [u8; 32] = unhex(text.trim())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| "an ed25519 public key is 64 hex digits".to_owned())?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| format!("not an ed25519 public key: {e}"))
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Checks the detached signature `sig` (64 bytes, or 128 hex digits) of `bytes`.
fn verify(key: &ed25519_dalek::VerifyingKey, bytes: &[u8], sig: &[u8]) -> Result<(), String> {
    let raw: Vec<u8> = if sig.len() == 64 {
        sig.to_vec()
    } else {
        std::str::from_utf8(sig)
            .ok()
            .and_then(|t| unhex(t.trim()))
            .ok_or_else(|| "its signature is neither 64 bytes nor 128 hex digits".to_owned())?
    };
    let raw: [u8; 64] = raw
        .try_into()
        .map_err(|_| "its signature is neither 64 bytes nor 128 hex digits".to_owned())?;
    key.verify_strict(bytes, &ed25519_dalek::Signature::from_bytes(&raw))
        .map_err(|_| "its signature does not verify with the configured wasm_public_key".to_owned())
}

/// Components held by their SHA-256, in a private folder of this process.
pub struct Modules {
    dir: PathBuf,
    by_sha: HashMap<String, PathBuf>,
    /// Where a `local` filename that is relative is read from.
    base_dir: PathBuf,
    /// When set, every component must come with a signature by this key.
    key: Option<ed25519_dalek::VerifyingKey>,
}

impl Modules {
    pub fn new(base_dir: PathBuf, key: Option<ed25519_dalek::VerifyingKey>) -> Modules {
        Modules {
            dir: std::env::temp_dir().join(format!("weft-xds-wasm-{}", std::process::id())),
            by_sha: HashMap::new(),
            base_dir,
            key,
        }
    }

    /// The file the filter's `wasm` names; `Ok(None)` while the cluster it is fetched
    /// through waits for its endpoints.
    pub async fn resolve(&mut self, f: &WasmFilter, snapshot: &Snapshot) -> Result<Option<PathBuf>, Rejected> {
        let at = format!("Wasm filter {:?}", f.name);
        match &f.code {
            Code::Local(path) => {
                let path = self.base_dir.join(path);
                let bytes = read_bounded(&path).await.map_err(|e| Rejected(format!("{at}: {e}")))?;
                check_component(&bytes).map_err(|e| Rejected(format!("{at}: {} {e}", path.display())))?;
                if let Some(key) = &self.key {
                    let mut sig_path = path.clone().into_os_string();
                    sig_path.push(".sig");
                    let sig_path = PathBuf::from(sig_path);
                    let sig = read_signature(&sig_path)
                        .await
                        .map_err(|e| Rejected(format!("{at}: {} is unsigned: {e}", path.display())))?;
                    verify(key, &bytes, &sig).map_err(|e| Rejected(format!("{at}: {} {e}", path.display())))?;
                }
                Ok(Some(path))
            }
            Code::Remote {
                uri,
                cluster,
                timeout,
                sha256,
            } => {
                if let Some(path) = self.by_sha.get(sha256) {
                    return Ok(Some(path.clone()));
                }
                let c = snapshot.clusters.get(cluster).ok_or_else(|| {
                    Rejected(format!(
                        "{at}: its code's cluster {cluster:?} is not among the clusters CDS sent"
                    ))
                })?;
                let endpoints = match &c.endpoints {
                    Endpoints::Static(e) => e,
                    Endpoints::Eds(n) => match snapshot.assignments.get(n) {
                        Some(e) => e,
                        None => return Ok(None),
                    },
                    Endpoints::Original => {
                        return Err(Rejected(format!(
                            "{at}: its code's cluster {cluster:?} is ORIGINAL_DST: it has no endpoint to fetch from"
                        )));
                    }
                };
                let Some(address) = endpoints.iter().find_map(|e| e.get("address").and_then(Value::as_str)) else {
                    return Err(Rejected(format!(
                        "{at}: cluster {cluster:?} has no endpoint to fetch its code from"
                    )));
                };
                let bytes = match tokio::time::timeout(*timeout, fetch(address, uri, MAX_MODULE_BYTES)).await {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return Err(Rejected(format!("{at}: fetching {uri} from {address}: {e}"))),
                    Err(_) => {
                        return Err(Rejected(format!(
                            "{at}: fetching {uri} from {address} took more than {timeout:?}"
                        )));
                    }
                };
                let got = hex(&Sha256::digest(&bytes));
                if &got != sha256 {
                    return Err(Rejected(format!(
                        "{at}: {uri} has sha256 {got}, not the {sha256} the filter names"
                    )));
                }
                check_component(&bytes).map_err(|e| Rejected(format!("{at}: {uri} {e}")))?;
                if let Some(key) = &self.key {
                    let sig_uri = format!("{uri}.sig");
                    let sig = match tokio::time::timeout(*timeout, fetch(address, &sig_uri, MAX_SIGNATURE_BYTES)).await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return Err(Rejected(format!("{at}: {uri} is unsigned: {sig_uri}: {e}"))),
                        Err(_) => {
                            return Err(Rejected(format!(
                                "{at}: {uri} is unsigned: {sig_uri} took more than {timeout:?}"
                            )));
                        }
                    };
                    verify(key, &bytes, &sig).map_err(|e| Rejected(format!("{at}: {uri} {e}")))?;
                }
                let path = self
                    .store(sha256, &bytes)
                    .map_err(|e| Rejected(format!("{at}: cannot keep the fetched code: {e}")))?;
                tracing::info!(filter = %f.name, %uri, bytes = bytes.len(), "xDS: Wasm filter fetched");
                self.by_sha.insert(sha256.clone(), path.clone());
                Ok(Some(path))
            }
        }
    }

    /// Once more than [`MAX_KEPT`] are held, forgets (and deletes) those `in_use` does not
    /// name: a control plane cycling through components cannot fill the disk.
    pub fn keep<'a>(&mut self, in_use: impl IntoIterator<Item = &'a WasmFilter>) {
        if self.by_sha.len() <= MAX_KEPT {
            return;
        }
        let used: Vec<&str> = in_use
            .into_iter()
            .filter_map(|f| match &f.code {
                Code::Remote { sha256, .. } => Some(sha256.as_str()),
                Code::Local(_) => None,
            })
            .collect();
        self.by_sha.retain(|sha, path| {
            let keep = used.contains(&sha.as_str());
            if !keep {
                let _ = std::fs::remove_file(path);
            }
            keep
        });
    }

    fn store(&self, sha256: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(&self.dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let path = self.dir.join(format!("{sha256}.wasm"));
        let tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::fs::write(tmp.path(), bytes)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(path)
    }
}

async fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_MODULE_BYTES as u64 {
        return Err(format!(
            "{} has {} bytes (at most {MAX_MODULE_BYTES})",
            path.display(),
            meta.len()
        ));
    }
    tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A component, not a core module (a proxy-wasm filter is one) nor anything else.
fn check_component(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err("is not WebAssembly (no `\\0asm` header)".into());
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(
            "is a core Wasm module (a proxy-wasm filter?): Weft runs Wasm components \
                    (weft:filter, built for wasm32-wasip2), not proxy-wasm modules"
                .into(),
        );
    }
    if bytes[6..8] != [1, 0] {
        return Err(format!("has an unknown Wasm encoding (header {:02x?})", &bytes[4..8]));
    }
    Ok(())
}

async fn read_signature(path: &Path) -> Result<Vec<u8>, String> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_SIGNATURE_BYTES as u64 {
        return Err(format!("{} is larger than {MAX_SIGNATURE_BYTES} bytes", path.display()));
    }
    tokio::fs::read(path)
        .await
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// GET `uri` from `address` (the cluster's endpoint) over HTTP/1.1, at most `limit` bytes
/// of body.
async fn fetch(address: &str, uri: &str, limit: usize) -> Result<Vec<u8>, String> {
    let parsed: http::Uri = uri.parse().map_err(|e| format!("{e}"))?;
    let host = parsed.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
    let path = parsed.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, http_body_util::Empty<bytes::Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| format!("{e}"))?;
    let conn = tokio::spawn(conn);
    let request = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::USER_AGENT, "weft-xds")
        .body(http_body_util::Empty::new())
        .map_err(|e| format!("{e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("{e}"))?;
    let status = response.status();
    if status != http::StatusCode::OK {
        conn.abort();
        return Err(format!("answered {status}"));
    }
    let body = http_body_util::Limited::new(response.into_body(), limit)
        .collect()
        .await;
    conn.abort();
    match body {
        Ok(b) => Ok(b.to_bytes().to_vec()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(format!("the body is larger than {limit} bytes")),
        Err(e) => Err(format!("{e}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::{
        AsyncDataSource, DataSource, HttpUri, RemoteDataSource, async_data_source, data_source, http_uri,
    };
    use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
    use envoy_types::pb::envoy::extensions::wasm::v3::{PluginConfig, VmConfig, plugin_config};
    use envoy_types::pb::google::protobuf::{Any, StringValue};
    use prost::Message;

    use super::*;

    fn any_wasm(code: async_data_source::Specifier, configuration: Option<Any>) -> Any {
        let w = Wasm {
            config: Some(PluginConfig {
                configuration,
                vm: Some(plugin_config::Vm::VmConfig(VmConfig {
                    code: Some(AsyncDataSource { specifier: Some(code) }),
                    ..VmConfig::default()
                })),
                ..PluginConfig::default()
            }),
        };
        Any {
            type_url: WASM.into(),
            value: w.encode_to_vec(),
        }
    }

    fn remote(uri: &str, sha256: &str) -> async_data_source::Specifier {
        async_data_source::Specifier::Remote(RemoteDataSource {
            http_uri: Some(HttpUri {
                uri: uri.into(),
                timeout: None,
                http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster("plugins".into())),
            }),
            sha256: sha256.into(),
            ..RemoteDataSource::default()
        })
    }

    #[test]
    fn remote_and_local_code_and_a_json_configuration_map() {
        let sha = "AB".repeat(32);
        let config = Any {
            type_url: STRING_VALUE.into(),
            value: StringValue {
                value: r#"{"a": 1, "b": ["x"]}"#.into(),
            }
            .encode_to_vec(),
        };
        let f = map(
            "envoy.filters.http.wasm",
            &any_wasm(remote("http://p/x.wasm", &sha), Some(config)),
            "l",
        )
        .expect("maps");
        assert_eq!(f.name, "envoy.filters.http.wasm");
        assert_eq!(
            f.code,
            Code::Remote {
                uri: "http://p/x.wasm".into(),
                cluster: "plugins".into(),
                timeout: DEFAULT_TIMEOUT,
                sha256: "ab".repeat(32),
            }
        );
        assert_eq!(f.config.and_then(|c| c.get("a").and_then(Value::as_integer)), Some(1));
        let local = async_data_source::Specifier::Local(DataSource {
            specifier: Some(data_source::Specifier::Filename("f.wasm".into())),
            ..DataSource::default()
        });
        assert_eq!(
            map("w", &any_wasm(local, None), "l").expect("maps").code,
            Code::Local("f.wasm".into())
        );
    }

    #[test]
    fn bad_code_is_refused_with_what_is_wrong() {
        let cases = [
            (remote("http://p/x.wasm", ""), "needs sha256"),
            (remote("http://p/x.wasm", &"g".repeat(64)), "needs sha256"),
            (remote("https://p/x.wasm", &"a".repeat(64)), "is not an http:// URI"),
            (
                async_data_source::Specifier::Local(DataSource {
                    specifier: Some(data_source::Specifier::InlineBytes(vec![0])),
                    ..DataSource::default()
                }),
                "local code other than a filename",
            ),
        ];
        for (code, reason) in cases {
            let err = map("w", &any_wasm(code, None), "listener \"l\"").expect_err(reason);
            assert!(err.0.contains(reason) && err.0.contains("listener \"l\""), "{err}");
        }
        let null = Any {
            type_url: STRING_VALUE.into(),
            value: StringValue {
                value: "{\"a\": null}".into(),
            }
            .encode_to_vec(),
        };
        let err = map("w", &any_wasm(remote("http://p/x", &"a".repeat(64)), Some(null)), "l").expect_err("null");
        assert!(err.0.contains("TOML has no null"), "{err}");
    }

    #[test]
    fn core_modules_and_other_files_are_not_components() {
        assert!(
            check_component(b"\0asm\x01\0\0\0")
                .expect_err("core")
                .contains("proxy-wasm")
        );
        assert!(
            check_component(b"hello world")
                .expect_err("text")
                .contains("not WebAssembly")
        );
        assert!(check_component(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn signatures_verify_raw_or_hex_and_nothing_else() {
        use ed25519_dalek::Signer;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[1u8; 32]);
        let key = public_key(&hex(signing.verifying_key().as_bytes())).expect("key");
        let sig = signing.sign(b"component").to_bytes();
        assert!(verify(&key, b"component", &sig).is_ok());
        assert!(verify(&key, b"component", format!("{}\n", hex(&sig)).as_bytes()).is_ok());
        assert!(
            verify(&key, b"another", &sig)
                .expect_err("other bytes")
                .contains("does not verify")
        );
        assert!(
            verify(&key, b"component", &sig[..63])
                .expect_err("short")
                .contains("neither")
        );
        assert!(public_key("abc").is_err());
        assert!(public_key(&"zz".repeat(32)).is_err());
    }
}
