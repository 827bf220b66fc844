//! A small builder for the TOML configs tests start `weft` with, so no test copies a
//! config template. It writes text (what a user writes), with the harness's
//! `{listen}`/`{admin}` placeholders filled by [`crate::Weft::start`].
//!
//! ```
//! use weft_conformance::Config;
//! let toml = Config::new()
//!     .listener("merge_slashes = false")
//!     .cluster("up", &["127.0.0.1:9000".parse().unwrap()])
//!     .wasm_filter("auth", "/tmp/auth.wasm", "header = \"x-key\"", "")
//!     .route("admin", "path_prefix = \"/admin\"", "up", &["auth"], "")
//!     .route("rest", "path_prefix = \"/\"", "up", &[], "")
//!     .to_string();
//! assert!(toml.contains("[[routes]]"));
//! ```

use std::fmt::{self, Write};
use std::net::SocketAddr;
use std::path::Path;

/// A config being written. Sections come out in the order TOML needs: top-level tables,
/// then the listener, clusters, filters and routes.
#[derive(Default, Clone)]
pub struct Config {
    top: String,
    admin: String,
    listener: String,
    clusters: String,
    filters: String,
    routes: String,
}

impl Config {
    /// One listener named `main` on `{listen}` and the admin API on `{admin}`.
    pub fn new() -> Config {
        Config::default()
    }

    /// Extra `key = value` lines for the `main` listener.
    pub fn listener(mut self, lines: &str) -> Config {
        self.listener.push_str(lines);
        self.listener.push('\n');
        self
    }

    /// Extra lines for `[admin]` (`token = …`).
    pub fn admin(mut self, lines: &str) -> Config {
        self.admin.push_str(lines);
        self.admin.push('\n');
        self
    }

    /// Raw top-level text (`[runtime]`, `[kv]`, `[admin]` keys…), placed before the arrays.
    pub fn top(mut self, text: &str) -> Config {
        self.top.push_str(text);
        self.top.push('\n');
        self
    }

    /// A cluster over `endpoints`.
    pub fn cluster(self, name: &str, endpoints: &[SocketAddr]) -> Config {
        self.cluster_with(name, endpoints, "")
    }

    /// A cluster with extra lines (`protocol = "http2"`, `[clusters.tls]`…).
    pub fn cluster_with(mut self, name: &str, endpoints: &[SocketAddr], extra: &str) -> Config {
        let list: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let _ = write!(
            self.clusters,
            "\n[[clusters]]\nname = \"{name}\"\nendpoints = [{}]\n{extra}\n",
            list.join(", ")
        );
        self
    }

    /// A Wasm filter loaded from `path`, with its `config` table given as inline TOML
    /// key/values and extra lines for the filter (`on_error`, `limits`…).
    pub fn wasm_filter(mut self, name: &str, path: impl AsRef<Path>, config: &str, extra: &str) -> Config {
        let _ = write!(
            self.filters,
            "\n[[filters]]\nname = \"{name}\"\nwasm = \"{}\"\nconfig = {{ {config} }}\n{extra}\n",
            path.as_ref().display()
        );
        self
    }

    /// A native filter (`headers`, `identity`) with its `config` as inline TOML.
    pub fn native_filter(mut self, name: &str, kind: &str, config: &str) -> Config {
        let _ = write!(
            self.filters,
            "\n[[filters]]\nname = \"{name}\"\nnative = \"{kind}\"\nconfig = {{ {config} }}\n"
        );
        self
    }

    /// A route: `matches` is the inside of the `match = { … }` table.
    pub fn route(mut self, name: &str, matches: &str, cluster: &str, filters: &[&str], extra: &str) -> Config {
        let filters: Vec<String> = filters.iter().map(|f| format!("\"{f}\"")).collect();
        let _ = write!(
            self.routes,
            "\n[[routes]]\nname = \"{name}\"\nmatch = {{ {matches} }}\ncluster = \"{cluster}\"\nfilters = [{}]\n{extra}\n",
            filters.join(", ")
        );
        self
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n[admin]\naddress = \"{{admin}}\"\n{}\n[[listeners]]\nname = \"main\"\naddress = \"{{listen}}\"\n{}{}{}{}",
            self.top, self.admin, self.listener, self.clusters, self.filters, self.routes
        )
    }
}
