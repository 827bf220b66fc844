//! The TOML configuration: serde types, parsed once and validated with errors that point
//! at the offending line. Building a running version from it is `state`'s job.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use toml::Spanned;

mod admin;
mod cluster;
mod door;
mod kv;
mod limits;
mod observe;
mod pem;
pub(crate) mod redact;
mod route;
mod sidecar;

pub use admin::{AdminConfig, MIN_TOKEN_LEN, Secret};
pub use cluster::{
    BreakerConfig, ClusterConfig, ClusterKind, EndpointConfig, HashOnConfig, HealthCheckConfig, LbPolicy, MAX_WEIGHT,
    OutlierConfig, RetryConfig, UpstreamProtocol, UpstreamTlsConfig, split_host_port,
};
pub use door::{FrontDoor, PathPolicy};
pub use kv::check_redis_url;
pub use limits::{DEFAULT_MEMORY, LimitsConfig};
pub use observe::{
    ACCESS_LOG_FIELDS, AccessLogConfig, AccessLogFormat, AccessLogPiece, OtlpProtocol, QueryShown, TracingConfig,
};
pub use pem::{FindSecret, Pem, PemPart, SecretRef};
pub use redact::secret_name;
pub use redact::urls as redact_urls;
pub use route::{
    CorsConfig, DirectResponseConfig, HeaderEditsConfig, MatchConfig, MirrorConfig, MirrorsConfig, PatternConfig,
    RedirectConfig, RouteConfig, ValueMatchConfig,
};
pub use sidecar::{Cidr, Direction, PeerTls, TlsRouteConfig, Transparent};

/// A configuration file, parsed and validated.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub runtime: ProcessConfig,
    pub admin: Option<AdminConfig>,
    #[serde(default)]
    pub wasm: WasmConfig,
    /// The store behind filters' `kv` interface; in-process when absent.
    pub kv: Option<Spanned<KvConfig>>,
    pub access_log: Option<Spanned<AccessLogConfig>>,
    pub tracing: Option<Spanned<TracingConfig>>,
    #[serde(default)]
    pub listeners: Vec<Spanned<ListenerConfig>>,
    #[serde(default)]
    pub clusters: Vec<Spanned<ClusterConfig>>,
    #[serde(default)]
    pub filters: Vec<Spanned<FilterConfig>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RouteConfig>>,
    /// Sidecar listeners' TLS passed through by its SNI to a cluster (docs/sidecar.md).
    #[serde(default)]
    pub tls_routes: Vec<Spanned<TlsRouteConfig>>,
    /// Listeners, routes and clusters also come from an xDS server (`docs/xds.md`).
    pub xds: Option<XdsConfig>,
    /// Where the config came from and its text, to point errors found later at a line.
    #[serde(skip)]
    pub source: Source,
}

/// `[xds]`: the Envoy bootstrap naming the ADS server whose listeners, routes and clusters
/// join this file's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XdsConfig {
    pub bootstrap: PathBuf,
    /// An ed25519 public key (64 hex digits): Wasm components delivered by xDS must be
    /// signed by it (`docs/xds.md`).
    #[serde(default)]
    pub wasm_public_key: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
/// `[runtime]`: settings of the process (threads, draining, watching files) rather than
/// of one config version.
pub struct ProcessConfig {
    /// Worker threads; defaults to the number of cores (`weft run --workers` overrides).
    pub workers: Option<usize>,
    /// How the workers share connections (docs/performance.md, "Thread per core").
    #[serde(default)]
    pub scheduler: Scheduler,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(default = "defaults::drain_timeout", deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// Reload when the config file or a plugin file changes.
    #[serde(default = "defaults::yes")]
    pub watch: bool,
}

/// `[runtime] scheduler`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheduler {
    /// One single-threaded runtime per worker, each accepting on its own `SO_REUSEPORT`
    /// socket: a connection and everything its requests do stay on one thread.
    #[default]
    PerCore,
    /// One tokio runtime whose worker threads steal tasks from each other, on one socket
    /// per listener: for a few connections carrying most of the load (one HTTP/2
    /// connection from a load balancer), whose streams per-core workers cannot spread.
    WorkStealing,
}

impl ProcessConfig {
    /// The number of workers: `flag` (the command line's) over the config's, else one per
    /// core.
    pub fn workers(&self, flag: Option<usize>) -> usize {
        flag.or(self.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            workers: None,
            scheduler: Scheduler::default(),
            drain_timeout: defaults::drain_timeout(),
            watch: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmConfig {
    /// Where compiled plugins are cached by content hash; off when unset.
    pub cache_dir: Option<PathBuf>,
    /// Instances of all filters together that the engine's pool holds (in use or idle).
    /// Each reserves virtual address space only (see `wasm/DESIGN.md`); a request that
    /// needs an instance when all are taken fails with a 5xx, never skipping its filter.
    #[serde(default = "defaults::max_instances")]
    pub max_instances: u32,
}

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            cache_dir: None,
            max_instances: defaults::max_instances(),
        }
    }
}

/// `[kv]`: where filters' shared key-value store lives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvConfig {
    #[serde(default)]
    pub backend: KvBackend,
    /// `redis://[user:password@]host:port[/db]`, for `backend = "redis"`.
    pub url: Option<String>,
    /// Longest a store operation may take before the filter gets an error.
    #[serde(default = "defaults::kv_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackend {
    /// In this process: counters are per proxy.
    #[default]
    Local,
    /// In Redis: every proxy using the same server shares counters.
    Redis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    pub address: SocketAddr,
    /// Keep the X-Forwarded-* and Forwarded headers a client sends (behind a trusted load
    /// balancer); otherwise they are replaced, so a client cannot spoof its address.
    #[serde(default)]
    pub trust_forwarded: bool,
    /// Serve TLS (HTTP/1.1 and HTTP/2 by ALPN) instead of cleartext.
    pub tls: Option<ListenerTlsConfig>,
    /// Also serve HTTP/3 on the same port number over UDP (needs `tls`); TCP answers
    /// advertise it with `Alt-Svc`.
    #[serde(default)]
    pub http3: bool,
    /// Send the verified client certificate's details upstream in
    /// `x-forwarded-client-cert` (Envoy's format). A client's own such header is removed
    /// unless `trust_forwarded` is set.
    #[serde(default)]
    pub forward_client_cert: bool,
    /// Collapse `//` in request paths before routing (dot segments and encoded unreserved
    /// characters are always resolved).
    #[serde(default = "defaults::yes")]
    pub merge_slashes: bool,
    /// Refuse paths with an encoded `/` or `\` (`%2F`, `%5C`) with 400; when off they are
    /// passed on still encoded.
    #[serde(default = "defaults::yes")]
    pub reject_encoded_slashes: bool,
    #[serde(default)]
    pub limits: ListenerLimits,
    #[serde(default)]
    pub timeouts: ListenerTimeouts,
    /// Sidecar mode: take connections the kernel redirected here (`"redirect"` or
    /// `"tproxy"`) and serve them for the address the client dialled (docs/sidecar.md).
    pub transparent: Option<Transparent>,
    /// On a transparent listener: original destination ports whose traffic is passed on
    /// byte for byte at once, without waiting for the client to speak (server-speaks-first
    /// protocols: SMTP, MySQL...).
    #[serde(default)]
    pub opaque_ports: Vec<u16>,
    /// On a transparent listener: how long to wait for the client's first bytes to tell
    /// HTTP from anything else; a client still silent then is passed through opaque.
    #[serde(default = "defaults::detect_timeout", deserialize_with = "duration")]
    pub detect_timeout: Duration,
    /// `SO_MARK` on the connections a transparent listener opens to pass traffic through,
    /// so that the interception rules let them out (`weft sidecar rules --mark`).
    pub passthrough_mark: Option<u32>,
    /// On a transparent listener with `tls`: `"permissive"` (the default) takes plaintext
    /// beside TLS; `"strict"` closes plaintext connections.
    #[serde(default)]
    pub peer_tls: PeerTls,
    /// On a transparent listener with `tls`: original destination ports where plaintext is
    /// refused even when `peer_tls` is permissive.
    #[serde(default)]
    pub strict_ports: Vec<u16>,
    /// On a transparent listener: which way its connections go, `"inbound"` (to this
    /// workload) or `"outbound"` (from it), labelling its metrics and access-log records.
    pub direction: Option<Direction>,
}

/// `[listeners.limits]`: what one client may make the proxy hold. Each refusal has its
/// status and a `weft_downstream_refused_total{listener,reason}` count.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerLimits {
    /// Request target (path and query) length; 414 past it.
    pub max_uri_bytes: usize,
    /// All request header lines together (HTTP/2 and HTTP/3: the header list); 431.
    pub max_header_bytes: usize,
    /// Number of request header lines; 431.
    pub max_headers: usize,
    /// Request body size; 413.
    pub max_request_body_bytes: u64,
    /// Open connections on this listener; more are closed at accept.
    pub max_connections: usize,
    /// Open connections from one client address; more are closed at accept.
    pub max_connections_per_client: usize,
    /// Concurrent streams on one HTTP/2 or HTTP/3 connection.
    pub max_concurrent_streams: u32,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_uri_bytes: 8 << 10,
            max_header_bytes: 64 << 10,
            max_headers: 100,
            max_request_body_bytes: 100 << 20,
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            max_concurrent_streams: 100,
        }
    }
}

/// `[listeners.timeouts]`: how long a client may keep the proxy waiting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerTimeouts {
    /// TLS handshake.
    #[serde(deserialize_with = "duration")]
    pub handshake: Duration,
    /// From accept (or the end of the previous request) to a complete request head.
    #[serde(deserialize_with = "duration")]
    pub header_read: Duration,
    /// A connection with no request in flight is closed after this long (HTTP/2: GOAWAY).
    #[serde(deserialize_with = "duration")]
    pub idle: Duration,
    /// Longest gap between two pieces of a request body; 408 past it.
    #[serde(deserialize_with = "duration")]
    pub body_idle: Duration,
    /// Longest a write to the client may stay blocked (a client that stops reading).
    #[serde(deserialize_with = "duration")]
    pub send_idle: Duration,
    /// HTTP/2 PING interval on a connection; one unanswered for `keepalive_timeout` closes it.
    #[serde(deserialize_with = "duration")]
    pub keepalive_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub keepalive_timeout: Duration,
}

impl Default for ListenerTimeouts {
    fn default() -> Self {
        ListenerTimeouts {
            handshake: Duration::from_secs(10),
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            body_idle: Duration::from_secs(30),
            send_idle: Duration::from_secs(30),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// Certificate chains with their keys; chosen by SNI against each certificate's names,
    /// the first one when nothing matches.
    pub certificates: Vec<CertKeyConfig>,
    /// Verify client certificates against this CA bundle (mutual TLS).
    pub client_ca: Option<Pem>,
    /// With `client_ca`: `required` (the default) refuses clients without a certificate,
    /// `optional` lets them in without an identity.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// With `client_ca`: a client certificate must also carry one of these URI or DNS names
    /// (exact, or a prefix ending in `*`), as a mesh admits its own trust domain.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// Oldest TLS version accepted: "1.2" (the default) or "1.3".
    #[serde(default = "defaults::tls_min")]
    pub min_version: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertKeyConfig {
    pub cert: Pem,
    pub key: Pem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Required,
    Optional,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    pub name: String,
    /// A Wasm component implementing the `weft:filter` world.
    pub wasm: Option<PathBuf>,
    /// A filter built into the proxy (`headers`).
    pub native: Option<String>,
    /// Handed to the filter's `init` (as JSON for Wasm filters).
    #[serde(default = "defaults::empty_table")]
    pub config: toml::Value,
    #[serde(default)]
    pub on_error: FailureMode,
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// What happens to a request when one of its filters fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Answer 500 with a generic body (the default: a broken auth filter must not let
    /// requests through).
    #[default]
    Closed,
    /// Log, count, and carry on as if the filter had continued — for the filter's own
    /// faults only (a trap, a limit hit, an invalid decision). A host-side failure
    /// (`FilterError::is_guest_fault` false) still fails the request.
    Open,
}

mod defaults {
    use std::time::Duration;
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(15)
    }
    pub fn max_instances() -> u32 {
        1000
    }
    pub fn detect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn kv_timeout() -> Duration {
        Duration::from_millis(50)
    }
    pub fn tls_min() -> String {
        "1.2".to_owned()
    }
    pub fn empty_table() -> toml::Value {
        toml::Value::Table(toml::Table::new())
    }
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); write e.g. \"250ms\" or \"15s\""
        ))
    })
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// The text a config was read from, kept to point errors at lines.
#[derive(Debug, Default, Clone)]
pub struct Source {
    pub origin: String,
    pub text: String,
}

/// A config error, located in the file when it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub origin: String,
    /// 1-based line and column.
    pub position: Option<(usize, usize)>,
    pub message: String,
    snippet: Option<String>,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => write!(f, "{}:{line}:{col}: {}", self.origin, self.message)?,
            None => write!(f, "{}: {}", self.origin, self.message)?,
        }
        if let Some(snippet) = &self.snippet {
            write!(f, "\n{snippet}")?;
        }
        Ok(())
    }
}

impl Source {
    /// An error at `span` (byte offsets into the text), with the line shown and marked.
    pub fn error_at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..].find('\n').map_or(self.text.len(), |i| start + i);
        let line_no = self.text[..start].matches('\n').count() + 1;
        let col = self.text[line_start..start].chars().count() + 1;
        // The line as the whole text masks it: a credential's line may not name it (the
        // `exact` of a `[[routes.match.headers]]` table whose `name` is on another line).
        let masked = redact::text(&self.text);
        let line = masked.split('\n').nth(line_no - 1).unwrap_or_default();
        let width = span.end.min(line_end).saturating_sub(start).max(1);
        let gutter = " ".repeat(line_no.to_string().len());
        let snippet = format!(
            "{gutter} |\n{line_no} | {line}\n{gutter} | {}{}",
            " ".repeat(col - 1),
            "^".repeat(width)
        );
        ConfigError {
            origin: self.origin.clone(),
            position: Some((line_no, col)),
            message: redact::message(&self.text, &message.into()).into_owned(),
            snippet: Some(snippet),
        }
    }

    /// An error about the file as a whole.
    pub fn error(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.origin.clone(),
            position: None,
            message: redact::message(&self.text, &message.into()).into_owned(),
            snippet: None,
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: origin.clone(),
            position: None,
            message: format!("cannot read the config file: {e}"),
            snippet: None,
        })?;
        let mut config = Config::parse(&origin, &text)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    /// Parses and validates config text. `origin` names it in errors.
    pub fn parse(origin: &str, text: &str) -> Result<Config, ConfigError> {
        let source = Source {
            origin: origin.to_owned(),
            text: text.to_owned(),
        };
        let mut config: Config = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => source.error_at(span, e.message().to_owned()),
            None => source.error(e.message().to_owned()),
        })?;
        config.source = source;
        config.validate()?;
        Ok(config)
    }

    /// Parses and validates config text whose relative paths are relative to `base` (the
    /// folder of the file it came from).
    pub fn parse_in(origin: &str, text: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::parse(origin, text)?;
        config.resolve_paths(base);
        Ok(config)
    }

    /// Plugin paths in a file are relative to that file, like `include` in nginx.
    fn resolve_paths(&mut self, base: &Path) {
        for filter in &mut self.filters {
            if let Some(path) = filter.get_mut().wasm.as_mut().filter(|p| p.is_relative()) {
                *path = base.join(&*path);
            }
        }
        let mut paths: Vec<&mut PathBuf> = self.wasm.cache_dir.iter_mut().collect();
        paths.extend(self.xds.as_mut().map(|x| &mut x.bootstrap));
        if let Some(admin) = &mut self.admin {
            paths.extend(admin.token_file.iter_mut().chain(admin.audit_log.iter_mut()));
        }
        paths.extend(self.access_log.iter_mut().filter_map(|a| a.get_mut().path.as_mut()));
        for listener in &mut self.listeners {
            if let Some(tls) = &mut listener.get_mut().tls {
                paths.extend(
                    tls.certificates
                        .iter_mut()
                        .flat_map(|c| [c.cert.file_mut(), c.key.file_mut()])
                        .flatten(),
                );
                paths.extend(tls.client_ca.as_mut().and_then(Pem::file_mut));
            }
        }
        for cluster in &mut self.clusters {
            let cluster = cluster.get_mut();
            paths.extend(cluster.endpoints_file.as_mut().map(|f| f.get_mut()));
            if let Some(tls) = &mut cluster.tls {
                paths.extend(tls.ca.file_mut());
                paths.extend(tls.cert.iter_mut().chain(tls.key.iter_mut()).filter_map(Pem::file_mut));
            }
        }
        for path in paths.into_iter().filter(|p| p.is_relative()) {
            *path = base.join(&*path);
        }
    }

    /// Attaches the bytes of every SDS secret the config names, from `find(name, sha256,
    /// part)` (the xDS source's secrets); an error names the first it lacks.
    pub fn attach_secrets(&mut self, find: FindSecret<'_>) -> Result<(), ConfigError> {
        let mut wanted: Vec<(&mut Pem, PemPart)> = Vec::new();
        for listener in &mut self.listeners {
            if let Some(tls) = &mut listener.get_mut().tls {
                for c in &mut tls.certificates {
                    wanted.push((&mut c.cert, PemPart::Chain));
                    wanted.push((&mut c.key, PemPart::Key));
                }
                wanted.extend(tls.client_ca.as_mut().map(|ca| (ca, PemPart::TrustedCa)));
            }
        }
        for cluster in &mut self.clusters {
            if let Some(tls) = &mut cluster.get_mut().tls {
                wanted.push((&mut tls.ca, PemPart::TrustedCa));
                wanted.extend(tls.cert.as_mut().map(|c| (c, PemPart::Chain)));
                wanted.extend(tls.key.as_mut().map(|k| (k, PemPart::Key)));
            }
        }
        for (pem, part) in wanted {
            if !pem.attach(part, find) {
                return Err(self
                    .source
                    .error(format!("{pem} is not held (or not at the version named)")));
            }
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let src = &self.source;
        if self.listeners.is_empty() && self.xds.is_none() {
            return Err(src.error("no [[listeners]]: the proxy would accept no connections"));
        }
        unique_names(src, &self.listeners, "listener", |l| &l.name)?;
        unique_names(src, &self.clusters, "cluster", |c| &c.name)?;
        unique_names(src, &self.filters, "filter", |f| &f.name)?;
        if let Some(key) = self.xds.as_ref().and_then(|x| x.wasm_public_key.as_deref())
            && (key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(src.error(format!(
                "[xds] wasm_public_key must be an ed25519 public key in 64 hex digits, got {} characters",
                key.len()
            )));
        }
        if self.wasm.max_instances == 0 {
            return Err(src.error("[wasm] max_instances must be more than zero"));
        }
        if self.runtime.workers == Some(0) {
            return Err(src.error("[runtime] workers must be more than zero (leave it out for one per core)"));
        }
        if let Some(admin) = &self.admin {
            admin.check().map_err(|problem| src.error(problem))?;
        }
        if let Some(kv) = &self.kv {
            let k = kv.get_ref();
            let problem = match (k.backend, &k.url) {
                (KvBackend::Redis, None) => Some("backend = \"redis\" needs url = \"redis://host:port\"".to_owned()),
                (KvBackend::Redis, Some(url)) => check_redis_url(url).err(),
                (KvBackend::Local, Some(_)) => Some("url is only for backend = \"redis\"".to_owned()),
                (KvBackend::Local, None) => None,
            };
            let problem = problem.or_else(|| k.timeout.is_zero().then(|| "timeout must be more than zero".to_owned()));
            if let Some(problem) = problem {
                return Err(src.error_at(kv.span(), format!("[kv]: {problem}")));
            }
        }

        observe::check(self)?;

        let mut addresses = HashSet::new();
        for listener in &self.listeners {
            // Port 0 is no address yet: each such listener gets a port of its own at bind.
            let address = listener.get_ref().address;
            if address.port() != 0 && !addresses.insert(address) {
                return Err(src.error_at(
                    listener.span(),
                    format!("listener address {} is used twice", listener.get_ref().address),
                ));
            }
        }
        for listener in &self.listeners {
            let l = listener.get_ref();
            let problem = match &l.tls {
                None if l.http3 => Some("http3 needs tls (QUIC is always encrypted)"),
                None if l.forward_client_cert => Some("forward_client_cert needs tls with a client_ca"),
                Some(tls) if tls.certificates.is_empty() => Some("tls needs at least one certificate"),
                Some(tls) if !matches!(tls.min_version.as_str(), "1.2" | "1.3") => {
                    Some("tls.min_version is \"1.2\" or \"1.3\"")
                }
                Some(tls) if !tls.subject_alt_names.is_empty() && tls.client_ca.is_none() => {
                    Some("tls.subject_alt_names needs client_ca (they are checked on client certificates)")
                }
                Some(tls) if cluster::bad_san_pattern(&tls.subject_alt_names).is_some() => {
                    Some("tls.subject_alt_names: each is a name, or a prefix ending in * (no other *)")
                }
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(src.error_at(listener.span(), format!("listener {:?}: {problem}", l.name)));
            }
            sidecar::check(l, listener.span(), src)?;
        }
        for listener in &self.listeners {
            let l = listener.get_ref();
            let (limits, t) = (&l.limits, &l.timeouts);
            let zero = [
                ("limits.max_uri_bytes", limits.max_uri_bytes == 0),
                ("limits.max_header_bytes", limits.max_header_bytes < 1024),
                ("limits.max_headers", limits.max_headers == 0),
                ("limits.max_connections", limits.max_connections == 0),
                (
                    "limits.max_connections_per_client",
                    limits.max_connections_per_client == 0,
                ),
                ("limits.max_concurrent_streams", limits.max_concurrent_streams == 0),
                ("timeouts.handshake", t.handshake.is_zero()),
                ("timeouts.header_read", t.header_read.is_zero()),
                ("timeouts.idle", t.idle.is_zero()),
                ("timeouts.body_idle", t.body_idle.is_zero()),
                ("timeouts.send_idle", t.send_idle.is_zero()),
                ("timeouts.keepalive_interval", t.keepalive_interval.is_zero()),
                ("timeouts.keepalive_timeout", t.keepalive_timeout.is_zero()),
            ];
            if let Some((key, _)) = zero.iter().find(|(_, bad)| *bad) {
                let least = if *key == "limits.max_header_bytes" {
                    "at least 1024"
                } else {
                    "more than zero"
                };
                return Err(src.error_at(listener.span(), format!("listener {:?}: {key} must be {least}", l.name)));
            }
        }
        for cluster in &self.clusters {
            cluster.get_ref().check(cluster.span(), src)?;
        }
        for filter in &self.filters {
            let f = filter.get_ref();
            if let Err(problem) = f.limits.check() {
                return Err(src.error_at(filter.span(), format!("filter {:?}: {problem}", f.name)));
            }
            match (&f.wasm, &f.native) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(src.error_at(
                        filter.span(),
                        format!(
                            "filter {:?} needs exactly one of `wasm = \"file.wasm\"` or `native = \"name\"`",
                            f.name
                        ),
                    ));
                }
            }
        }
        let clusters: Vec<&str> = self.clusters.iter().map(|c| c.get_ref().name.as_str()).collect();
        let filters: Vec<&str> = self.filters.iter().map(|f| f.get_ref().name.as_str()).collect();
        let listeners: Vec<&str> = self.listeners.iter().map(|l| l.get_ref().name.as_str()).collect();
        for route in &self.routes {
            route::check(route, src, &clusters, &filters)?;
            let r = route.get_ref();
            if let Some(unknown) = r.matches.listeners.iter().find(|l| !listeners.contains(&l.as_str())) {
                return Err(src.error_at(
                    route.span(),
                    format!(
                        "match.listeners names {unknown:?}, which is no listener (listeners: {})",
                        list(&listeners)
                    ),
                ));
            }
            if let Some(d) = &r.matches.destination
                && let Err(e) = Cidr::parse(d)
            {
                return Err(src.error_at(route.span(), format!("match.destination: {e}")));
            }
        }
        sidecar::check_tls_routes(self)?;
        Ok(())
    }
}

pub(crate) fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn unique_names<T>(
    src: &Source,
    items: &[Spanned<T>],
    what: &str,
    name: impl Fn(&T) -> &String,
) -> Result<(), ConfigError> {
    let mut seen = HashSet::new();
    for item in items {
        let n = name(item.get_ref());
        if n.is_empty() {
            return Err(src.error_at(item.span(), format!("a {what} needs a non-empty name")));
        }
        if !seen.insert(n.as_str()) {
            return Err(src.error_at(item.span(), format!("{what} name {n:?} is used twice")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
