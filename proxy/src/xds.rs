//! Weft as an Envoy xDS client: a config source beside the TOML file. The ADS server's
//! listeners, routes, clusters and endpoints become the same `config::Config` the TOML file
//! builds, validated by the same checks and swapped in by `State::reload`; nothing here
//! touches a stage.
//!
//! - `bootstrap`: the Envoy v3 bootstrap (node, admin, ADS server);
//! - `ads`: the ADS stream (State of the World): subscriptions, ACK and NACK, reconnects;
//! - `delta`: the same over Delta xDS (`DELTA_GRPC`);
//! - `listener`, `route`, `cluster`: one resource type each, mapped onto Weft's tables;
//! - `sidecar`: Istio's sidecar listeners (`use_original_dst`, `bind_to_port: false`);
//! - `secret`: SDS secrets, validated and held in memory; `tls`: the TLS contexts of
//!   listeners and clusters that name them;
//! - `snapshot`: the resources held, and the whole config assembled from them once warm;
//! - `source`: the `state::ConfigProvider` the running state reloads from;
//! - `wasm`: Wasm filters named in an HTTP connection manager, fetched by hash.

// Control planes still send fields Envoy deprecated (header `exact_match`, a cluster's
// `http2_protocol_options`): reading them is on purpose.
#[allow(deprecated)]
pub mod ads;
pub mod bootstrap;
#[allow(deprecated)]
pub mod cluster;
pub mod delta;
pub mod listener;
#[allow(deprecated)]
pub mod route;
#[allow(deprecated)]
pub mod secret;
pub mod sidecar;
pub mod snapshot;
pub mod source;
pub mod tls;
pub mod wasm;

pub use bootstrap::Bootstrap;
pub use source::XdsSource;

/// Why a response is NACKed: the text goes to the server in `error_detail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected(pub String);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A protobuf duration as Weft's config writes one (`1500ms`); None when negative.
pub(crate) fn duration_text(seconds: i64, nanos: i32) -> Option<String> {
    let seconds = u64::try_from(seconds).ok()?;
    let nanos = u32::try_from(nanos).ok()?;
    let d = std::time::Duration::new(seconds, nanos);
    Some(format!("{}ms", d.as_millis().max(1)))
}

/// Starts the ADS client for `bootstrap` and waits for the first config it accepts (Weft
/// binds listeners only once the routes and endpoints they need have arrived). `toml` is
/// the TOML file whose other tables (Wasm, KV, tracing…) the xDS resources join.
pub async fn start(
    bootstrap: &std::path::Path,
    toml: Option<&std::path::Path>,
) -> anyhow::Result<(crate::config::Config, std::sync::Arc<XdsSource>)> {
    let bootstrap = Bootstrap::load(bootstrap)?;
    let (base, base_dir) = match toml {
        Some(path) => {
            let text = std::fs::read_to_string(path)?;
            let table: toml::Table = toml::from_str(&text)?;
            (table, path.parent().unwrap_or(std::path::Path::new(".")).to_owned())
        }
        None => (toml::Table::new(), std::path::PathBuf::from(".")),
    };
    // Wasm components must be signed when a key is configured: TOML first, then the node's
    // metadata (where a control plane's injector can put it).
    let key = base
        .get("xds")
        .and_then(|x| x.get("wasm_public_key"))
        .and_then(toml::Value::as_str)
        .map(|k| ("[xds] wasm_public_key", k.to_owned()))
        .or_else(|| {
            bootstrap.node.metadata[wasm::PUBLIC_KEY_METADATA]
                .as_str()
                .map(|k| ("node.metadata.WEFT_WASM_PUBLIC_KEY", k.to_owned()))
        });
    let key = match key {
        Some((at, text)) => Some(wasm::public_key(&text).map_err(|e| anyhow::anyhow!("{at}: {e}"))?),
        None => None,
    };
    let source = XdsSource::new(base_dir);
    tracing::info!(servers = ?bootstrap.server.endpoints, node = %bootstrap.node.id, "waiting for the first config from the ADS server");
    tokio::spawn(ads::Client::new(bootstrap, base, source.clone(), key).run());
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(20));
    while !source.has_config() {
        tick.tick().await;
    }
    let config = crate::state::ConfigProvider::load(&*source)?;
    Ok((config, source))
}

#[cfg(test)]
mod tests;
