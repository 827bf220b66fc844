//! The Envoy v3 bootstrap (`envoy -c FILE`), JSON or YAML: who this proxy is (`node`), where
//! its admin listener goes, and which ADS server to ask for everything else. Only the fields
//! Weft acts on are read; every other field is named once in a warning, and a field Weft
//! reads but cannot honour is an error at its path (`dynamic_resources.ads_config.api_type`).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

/// The ADS flavour: State of the World or Delta (incremental).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiType {
    Sotw,
    Delta,
}

/// The `node` Weft says it is on the first request of each stream.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub id: String,
    pub cluster: String,
    /// `node.metadata` as written (istiod reads e.g. `ISTIO_VERSION`, `CLUSTER_ID`).
    pub metadata: Value,
}

/// The ADS server's cluster from `static_resources.clusters`.
#[derive(Debug, Clone)]
pub struct AdsServer {
    pub cluster: String,
    /// `host:port` of each endpoint, tried in turn.
    pub endpoints: Vec<String>,
    pub connect_timeout: Duration,
    /// TLS to the server (`transport_socket` with an `UpstreamTlsContext`).
    pub tls: Option<AdsTls>,
}

/// Files are relative to the bootstrap's folder.
#[derive(Debug, Clone)]
pub struct AdsTls {
    /// CA bundle the server's certificate must chain to (`validation_context.trusted_ca`).
    pub ca: std::path::PathBuf,
    /// Name verified and sent as SNI (`sni`; else the endpoint's host).
    pub sni: Option<String>,
    /// Weft's certificate chain and key, for a server that requires mutual TLS.
    pub identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub origin: String,
    pub node: Node,
    pub admin: Option<SocketAddr>,
    pub api: ApiType,
    pub server: AdsServer,
    /// Fields Weft does not read, one line each, in file order.
    pub ignored: Vec<String>,
}

/// A bootstrap that cannot be used: the file, the field's path, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapError {
    pub origin: String,
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for BootstrapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.path, self.message)
        }
    }
}

impl std::error::Error for BootstrapError {}

impl Bootstrap {
    /// Reads a bootstrap file and logs one warning per field Weft ignores.
    pub fn load(path: &Path) -> Result<Bootstrap, BootstrapError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| BootstrapError {
            origin: origin.clone(),
            path: String::new(),
            message: format!("cannot read the bootstrap: {e}"),
        })?;
        let mut bootstrap = Bootstrap::parse(&origin, &text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if let Some(tls) = &mut bootstrap.server.tls {
            let files = std::iter::once(&mut tls.ca).chain(tls.identity.iter_mut().flat_map(|(c, k)| [c, k]));
            for file in files.filter(|f| f.is_relative()) {
                *file = base.join(&*file);
            }
        }
        for field in &bootstrap.ignored {
            tracing::warn!(bootstrap = %origin, field = %field, "bootstrap field ignored: Weft does not use it");
        }
        Ok(bootstrap)
    }

    /// Parses bootstrap text: JSON when it starts with `{`, YAML otherwise (YAML is a
    /// superset of JSON, but serde_json's errors name the line and column better).
    pub fn parse(origin: &str, text: &str) -> Result<Bootstrap, BootstrapError> {
        let fail = |path: &str, message: String| BootstrapError {
            origin: origin.to_owned(),
            path: path.to_owned(),
            message,
        };
        let value: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| fail("", format!("invalid JSON: {e}")))?
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| fail("", format!("invalid YAML: {e}")))?
        };
        let mut walk = Walk {
            origin,
            ignored: Vec::new(),
        };
        let root = walk.object(&value, "")?;
        let mut root = Fields::new(root, "");

        let node = match root.take("node") {
            Some(v) => walk.node(v)?,
            None => return Err(fail("node", "missing: an ADS server needs node.id".into())),
        };
        let admin = root.take("admin").map(|v| walk.admin(v)).transpose()?;
        let dynamic = root.take("dynamic_resources").ok_or_else(|| {
            fail(
                "dynamic_resources",
                "missing: Weft needs dynamic_resources.ads_config".into(),
            )
        })?;
        let (api, cluster) = walk.dynamic(dynamic)?;
        let statics = root.take("static_resources").ok_or_else(|| {
            fail(
                "static_resources",
                format!("missing: the ADS server's cluster {cluster:?}"),
            )
        })?;
        let server = walk.statics(statics, &cluster)?;
        walk.rest(root);
        Ok(Bootstrap {
            origin: origin.to_owned(),
            node,
            admin,
            api,
            server,
            ignored: walk.ignored,
        })
    }
}

/// The fields of one object, taken one by one; what is left is ignored.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: String,
    taken: Vec<&'a str>,
}

impl<'a> Fields<'a> {
    fn new(map: &'a Map<String, Value>, path: &str) -> Fields<'a> {
        Fields {
            map,
            path: path.to_owned(),
            taken: Vec::new(),
        }
    }

    fn take(&mut self, key: &'a str) -> Option<&'a Value> {
        self.taken.push(key);
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

struct Walk<'o> {
    origin: &'o str,
    ignored: Vec<String>,
}

impl Walk<'_> {
    fn fail(&self, path: &str, message: impl Into<String>) -> BootstrapError {
        BootstrapError {
            origin: self.origin.to_owned(),
            path: path.to_owned(),
            message: message.into(),
        }
    }

    fn rest(&mut self, fields: Fields<'_>) {
        for key in fields.map.keys() {
            if !fields.taken.contains(&key.as_str()) {
                self.ignored.push(fields.at(key));
            }
        }
    }

    fn object<'v>(&self, v: &'v Value, path: &str) -> Result<&'v Map<String, Value>, BootstrapError> {
        v.as_object()
            .ok_or_else(|| self.fail(path, format!("expected an object, found {}", kind(v))))
    }

    fn string(&self, v: &Value, path: &str) -> Result<String, BootstrapError> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.fail(path, format!("expected a string, found {}", kind(v))))
    }

    fn node(&mut self, v: &Value) -> Result<Node, BootstrapError> {
        let mut f = Fields::new(self.object(v, "node")?, "node");
        let id = match f.take("id") {
            Some(v) => self.string(v, "node.id")?,
            None => String::new(),
        };
        if id.is_empty() {
            return Err(self.fail("node.id", "missing or empty: ADS servers key their snapshots on it"));
        }
        let cluster = f.take("cluster").map(|v| self.string(v, "node.cluster")).transpose()?;
        let metadata = match f.take("metadata") {
            Some(v) => Value::Object(self.object(v, "node.metadata")?.clone()),
            None => Value::Object(Map::new()),
        };
        self.rest(f);
        Ok(Node {
            id,
            cluster: cluster.unwrap_or_default(),
            metadata,
        })
    }

    fn admin(&mut self, v: &Value) -> Result<SocketAddr, BootstrapError> {
        let mut f = Fields::new(self.object(v, "admin")?, "admin");
        let address = f
            .take("address")
            .ok_or_else(|| self.fail("admin.address", "missing: where the admin listener binds"))?;
        let address = self.socket_address(address, "admin.address")?;
        self.rest(f);
        let (host, port) = address;
        format!("{host}:{port}")
            .parse::<SocketAddr>()
            .or_else(|_| format!("[{host}]:{port}").parse())
            .map_err(|_| {
                self.fail(
                    "admin.address.socket_address.address",
                    format!("{host:?} is not an IP address"),
                )
            })
    }

    /// `{ socket_address: { address, port_value } }` as (host, port).
    fn socket_address(&mut self, v: &Value, path: &str) -> Result<(String, u16), BootstrapError> {
        let mut f = Fields::new(self.object(v, path)?, path);
        let sa_path = f.at("socket_address");
        let sa = f
            .take("socket_address")
            .ok_or_else(|| self.fail(&sa_path, "missing (pipes and internal addresses are not supported)"))?;
        self.rest(f);
        let mut s = Fields::new(self.object(sa, &sa_path)?, &sa_path);
        let host_path = s.at("address");
        let host = s
            .take("address")
            .ok_or_else(|| self.fail(&host_path, "missing"))
            .and_then(|v| self.string(v, &host_path))?;
        let port_path = s.at("port_value");
        let port = s.take("port_value").ok_or_else(|| self.fail(&port_path, "missing"))?;
        // proto3 JSON writes integers as numbers or strings.
        let port = port
            .as_u64()
            .or_else(|| port.as_str().and_then(|p| p.parse().ok()))
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| self.fail(&port_path, format!("{port} is not a port (0 to 65535)")))?;
        if let Some(protocol) = s.take("protocol")
            && protocol.as_str() != Some("TCP")
        {
            return Err(self.fail(&s.at("protocol"), format!("{protocol}: only TCP is supported")));
        }
        self.rest(s);
        Ok((host, port))
    }

    fn dynamic(&mut self, v: &Value) -> Result<(ApiType, String), BootstrapError> {
        let path = "dynamic_resources";
        let mut f = Fields::new(self.object(v, path)?, path);
        let ads = f
            .take("ads_config")
            .ok_or_else(|| self.fail("dynamic_resources.ads_config", "missing: Weft speaks ADS only"))?;
        for source in ["lds_config", "cds_config"] {
            let at = f.at(source);
            let Some(config) = f.take(source) else {
                return Err(self.fail(&at, "missing: write { ads: {} }"));
            };
            let mut c = Fields::new(self.object(config, &at)?, &at);
            if c.take("ads").is_none() {
                return Err(self.fail(&c.at("ads"), "missing: Weft takes listeners and clusters over ADS only"));
            }
            if let Some(version) = c.take("resource_api_version")
                && version.as_str() != Some("V3")
            {
                return Err(self.fail(&c.at("resource_api_version"), format!("{version}: only V3")));
            }
            self.rest(c);
        }
        let mut a = Fields::new(
            self.object(ads, "dynamic_resources.ads_config")?,
            "dynamic_resources.ads_config",
        );
        let api = match a.take("api_type").and_then(Value::as_str) {
            Some("GRPC") => ApiType::Sotw,
            Some("DELTA_GRPC") => ApiType::Delta,
            other => {
                return Err(self.fail(
                    &a.at("api_type"),
                    format!("{}: write GRPC or DELTA_GRPC", other.unwrap_or("missing")),
                ));
            }
        };
        match a.take("transport_api_version").and_then(Value::as_str) {
            None | Some("V3") => {}
            Some(other) => return Err(self.fail(&a.at("transport_api_version"), format!("{other}: only V3"))),
        }
        let services_path = a.at("grpc_services");
        let services = a
            .take("grpc_services")
            .and_then(Value::as_array)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| self.fail(&services_path, "missing: one { envoy_grpc: { cluster_name } }"))?;
        if services.len() > 1 {
            return Err(self.fail(&services_path, "Weft takes one grpc_service (the ADS server's cluster)"));
        }
        let first_path = format!("{services_path}[0]");
        let mut s = Fields::new(self.object(&services[0], &first_path)?, &first_path);
        if s.take("google_grpc").is_some() {
            return Err(self.fail(
                &s.at("google_grpc"),
                "not supported: use envoy_grpc with a static cluster",
            ));
        }
        let eg_path = s.at("envoy_grpc");
        let eg = s.take("envoy_grpc").ok_or_else(|| self.fail(&eg_path, "missing"))?;
        self.rest(s);
        let mut e = Fields::new(self.object(eg, &eg_path)?, &eg_path);
        let name_path = e.at("cluster_name");
        let cluster = e
            .take("cluster_name")
            .ok_or_else(|| self.fail(&name_path, "missing"))
            .and_then(|v| self.string(v, &name_path))?;
        self.rest(e);
        self.rest(a);
        self.rest(f);
        Ok((api, cluster))
    }

    fn statics(&mut self, v: &Value, cluster: &str) -> Result<AdsServer, BootstrapError> {
        let path = "static_resources";
        let mut f = Fields::new(self.object(v, path)?, path);
        if f.take("listeners")
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty())
        {
            return Err(self.fail(
                "static_resources.listeners",
                "not supported: listeners come from LDS (or the TOML file)",
            ));
        }
        let clusters_path = f.at("clusters");
        let clusters = f
            .take("clusters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        self.rest(f);
        let mut found = None;
        for (i, c) in clusters.iter().enumerate() {
            let at = format!("{clusters_path}[{i}]");
            let name = self.object(c, &at)?.get("name").and_then(Value::as_str);
            if name == Some(cluster) {
                found = Some(self.ads_cluster(c, &at, cluster)?);
            } else {
                self.ignored.push(format!("{at} ({})", name.unwrap_or("unnamed")));
            }
        }
        found.ok_or_else(|| {
            self.fail(
                &clusters_path,
                format!("no cluster named {cluster:?} (the one ads_config's envoy_grpc names)"),
            )
        })
    }

    fn ads_cluster(&mut self, v: &Value, path: &str, name: &str) -> Result<AdsServer, BootstrapError> {
        let mut f = Fields::new(self.object(v, path)?, path);
        f.take("name");
        match f.take("type").and_then(Value::as_str) {
            None | Some("STATIC" | "STRICT_DNS" | "LOGICAL_DNS") => {}
            Some(other) => {
                return Err(self.fail(&f.at("type"), format!("{other}: write STATIC or STRICT_DNS")));
            }
        }
        let connect_timeout = match f.take("connect_timeout") {
            Some(v) => self.duration(v, &f.at("connect_timeout"))?,
            None => Duration::from_secs(5),
        };
        let ts_path = f.at("transport_socket");
        let tls = f
            .take("transport_socket")
            .map(|ts| self.tls(ts, &ts_path))
            .transpose()?;
        // h2 is how gRPC is spoken: the options that say so are read and need nothing more.
        f.take("http2_protocol_options");
        f.take("typed_extension_protocol_options");
        let la_path = f.at("load_assignment");
        let la = f
            .take("load_assignment")
            .ok_or_else(|| self.fail(&la_path, "missing: the ADS server's addresses"))?;
        self.rest(f);
        let mut l = Fields::new(self.object(la, &la_path)?, &la_path);
        l.take("cluster_name");
        let eps_path = l.at("endpoints");
        let localities = l
            .take("endpoints")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        self.rest(l);
        let mut endpoints = Vec::new();
        for (i, loc) in localities.iter().enumerate() {
            let at = format!("{eps_path}[{i}]");
            let mut lf = Fields::new(self.object(loc, &at)?, &at);
            let lbs_path = lf.at("lb_endpoints");
            let lbs = lf
                .take("lb_endpoints")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            self.rest(lf);
            for (j, lb) in lbs.iter().enumerate() {
                let at = format!("{lbs_path}[{j}]");
                let mut ef = Fields::new(self.object(lb, &at)?, &at);
                let ep_path = ef.at("endpoint");
                let ep = ef.take("endpoint").ok_or_else(|| self.fail(&ep_path, "missing"))?;
                self.rest(ef);
                let mut e = Fields::new(self.object(ep, &ep_path)?, &ep_path);
                let addr_path = e.at("address");
                let addr = e.take("address").ok_or_else(|| self.fail(&addr_path, "missing"))?;
                self.rest(e);
                let (host, port) = self.socket_address(addr, &addr_path)?;
                endpoints.push(if host.contains(':') {
                    format!("[{host}]:{port}")
                } else {
                    format!("{host}:{port}")
                });
            }
        }
        if endpoints.is_empty() {
            return Err(self.fail(&eps_path, format!("cluster {name:?} has no endpoints")));
        }
        Ok(AdsServer {
            cluster: name.to_owned(),
            endpoints,
            connect_timeout,
            tls,
        })
    }

    /// `{ name: envoy.transport_sockets.tls, typed_config: { "@type": …UpstreamTlsContext,
    /// sni, common_tls_context: { validation_context: { trusted_ca: { filename } },
    /// tls_certificates: [{ certificate_chain: { filename }, private_key: { filename } }] } } }`
    fn tls(&mut self, v: &Value, path: &str) -> Result<AdsTls, BootstrapError> {
        let mut f = Fields::new(self.object(v, path)?, path);
        f.take("name");
        let tc_path = f.at("typed_config");
        let tc = f.take("typed_config").ok_or_else(|| self.fail(&tc_path, "missing"))?;
        self.rest(f);
        let mut t = Fields::new(self.object(tc, &tc_path)?, &tc_path);
        const UPSTREAM: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
        if t.take("@type").and_then(Value::as_str) != Some(UPSTREAM) {
            return Err(self.fail(&t.at("@type"), format!("write {UPSTREAM}")));
        }
        let sni = t
            .take("sni")
            .map(|v| self.string(v, &format!("{tc_path}.sni")))
            .transpose()?;
        let ctx_path = t.at("common_tls_context");
        let ctx = t
            .take("common_tls_context")
            .ok_or_else(|| self.fail(&ctx_path, "missing"))?;
        self.rest(t);
        let mut c = Fields::new(self.object(ctx, &ctx_path)?, &ctx_path);
        let vc_path = c.at("validation_context");
        let vc = c
            .take("validation_context")
            .ok_or_else(|| self.fail(&vc_path, "missing: the CA the ADS server's certificate chains to"))?;
        let certs_path = c.at("tls_certificates");
        let certs = c
            .take("tls_certificates")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        self.rest(c);
        let mut vf = Fields::new(self.object(vc, &vc_path)?, &vc_path);
        let ca_path = vf.at("trusted_ca");
        let ca = vf.take("trusted_ca").ok_or_else(|| self.fail(&ca_path, "missing"))?;
        let ca = self.filename(ca, &ca_path)?;
        self.rest(vf);
        let identity = match certs.as_slice() {
            [] => None,
            [one] => {
                let at = format!("{certs_path}[0]");
                let mut cf = Fields::new(self.object(one, &at)?, &at);
                let chain_path = cf.at("certificate_chain");
                let chain = cf
                    .take("certificate_chain")
                    .ok_or_else(|| self.fail(&chain_path, "missing"))?;
                let chain = self.filename(chain, &chain_path)?;
                let key_path = cf.at("private_key");
                let key = cf.take("private_key").ok_or_else(|| self.fail(&key_path, "missing"))?;
                let key = self.filename(key, &key_path)?;
                self.rest(cf);
                Some((chain, key))
            }
            _ => return Err(self.fail(&certs_path, "at most one certificate")),
        };
        Ok(AdsTls { ca, sni, identity })
    }

    /// `{ filename }`: inline data and SDS are not read here.
    fn filename(&mut self, v: &Value, path: &str) -> Result<std::path::PathBuf, BootstrapError> {
        let mut f = Fields::new(self.object(v, path)?, path);
        let name_path = f.at("filename");
        let name = f
            .take("filename")
            .ok_or_else(|| {
                self.fail(
                    &name_path,
                    "missing (inline certificates and SDS are not supported here)",
                )
            })
            .and_then(|v| self.string(v, &name_path))?;
        self.rest(f);
        Ok(std::path::PathBuf::from(name))
    }

    /// proto3 JSON durations: `"5s"`, `"0.25s"`.
    fn duration(&self, v: &Value, path: &str) -> Result<Duration, BootstrapError> {
        v.as_str()
            .and_then(|s| s.strip_suffix('s'))
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0 && *s < 3600.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| self.fail(path, format!("{v}: write a duration such as \"5s\" or \"0.25s\"")))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests;
