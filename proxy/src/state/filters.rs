//! The filters built into the proxy, by the name `native = "..."` gives them.

use std::sync::Arc;

use crate::filter::Filter;
use crate::filter::headers::HeadersFilter;
use crate::filter::identity::IdentityFilter;

/// The native filter `kind`, named `name` and configured with `config`.
pub(super) fn native(name: &str, kind: &str, config: toml::Value) -> Result<Arc<dyn Filter>, String> {
    Ok(match kind {
        "headers" => Arc::new(HeadersFilter::new(name, config)?),
        "identity" => Arc::new(IdentityFilter::new(name, config)?),
        other => return Err(format!("unknown native filter {other:?} (known: headers, identity)")),
    })
}
