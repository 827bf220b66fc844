//! Which `weft:filter` versions this host runs, and the check that names both versions
//! when a plugin targets another one.

use anyhow::bail;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The WIT package version the host's bindings were generated from, read from
/// `wit/filter.wit` by `build.rs` so the two cannot disagree.
pub const WIT_VERSION: &str = env!("WEFT_WIT_VERSION");
const PACKAGE: &str = "weft:filter/";

/// Whether a guest built against `theirs` links with this host. The same rule as the
/// component model's semver matching: for `0.x` the minor version must match, from
/// `1.0` the major.
fn compatible(theirs: &str) -> bool {
    let key = |v: &str| -> Option<(u64, u64)> {
        let mut parts = v.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(if major == 0 { (0, minor) } else { (major, 0) })
    };
    key(theirs).is_some() && key(theirs) == key(WIT_VERSION)
}

/// The weft-sdk release line that targets this WIT version (`0.2` for `0.2.x`).
fn sdk_version() -> &'static str {
    WIT_VERSION.rsplit_once('.').map_or(WIT_VERSION, |(line, _)| line)
}

/// Returns the version the component targets, or an error naming it and ours.
pub(crate) fn check(component: &Component, engine: &Engine) -> anyhow::Result<String> {
    let ty = component.component_type();
    let names = ty
        .exports(engine)
        .map(|(n, _)| n)
        .chain(ty.imports(engine).map(|(n, _)| n));
    let mut found: Option<String> = None;
    for name in names {
        let Some(rest) = name.strip_prefix(PACKAGE) else {
            continue;
        };
        let version = rest.split_once('@').map_or("unversioned", |(_, v)| v);
        if !compatible(version) {
            bail!(
                "targets weft:filter@{version}, but this host supports weft:filter@{WIT_VERSION}: \
                 rebuild the plugin against weft:filter {WIT_VERSION} (weft-sdk {sdk}, `cargo build --release \
                 --target wasm32-wasip2`); docs/filters.md lists what changed between versions",
                sdk = sdk_version()
            );
        }
        found.get_or_insert_with(|| version.to_owned());
    }
    let exports_hooks = ty.exports(engine).any(|(n, _)| n.starts_with("weft:filter/hooks"));
    if !exports_hooks {
        let exports: Vec<&str> = ty.exports(engine).map(|(n, _)| n).collect();
        bail!(
            "is not a Weft filter: it does not export weft:filter/hooks@{WIT_VERSION} (it exports: {})",
            if exports.is_empty() {
                "nothing".to_owned()
            } else {
                exports.join(", ")
            }
        );
    }
    Ok(found.unwrap_or_else(|| WIT_VERSION.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::compatible;

    #[test]
    fn zero_x_versions_match_on_minor() {
        assert!(compatible("0.2.0"));
        assert!(compatible("0.2.7"));
        assert!(!compatible("0.1.0"), "0.1 components are refused, not adapted");
        assert!(!compatible("0.3.0"));
        assert!(!compatible("1.2.0"));
        assert!(!compatible("unversioned"));
    }
}
