//! A small builder for the TOML configs tests start `weft` with, so no test copies a
//! config template. It writes text (what a user writes), with the harness's
//! `{listen}`/`{admin}` placeholders filled by [`crate::Weft::start`].
//!
//! The shorthands (`cluster`, `wasm_filter`, `route`, `proxy_to`…) write what most tests
//! need; a table whose own text is what a test is about (a weighted endpoint list, a quoted
//! name, a redirect) goes in whole through `clusters`, `filters` or `routes`. A test writes
//! raw TOML without the builder only where the file's text itself is the subject (a line
//! number, a broken file, a documented block), and says so.
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
    listeners: String,
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

    /// Another listener, `name`, on `{listen}` (a port of its own), with extra lines
    /// (`trust_forwarded = true`, `[listeners.tls]`…); [`crate::Weft::listener`] finds it.
    pub fn another_listener(mut self, name: &str, lines: &str) -> Config {
        let _ = write!(
            self.listeners,
            "\n[[listeners]]\nname = \"{name}\"\naddress = \"{{listen}}\"\n{lines}\n"
        );
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

    /// One cluster, `up`, over `endpoints`, and a route, `all`, sending every request to it.
    pub fn proxy_to(self, endpoints: &[SocketAddr]) -> Config {
        self.cluster("up", endpoints)
            .route("all", "path_prefix = \"/\"", "up", &[], "")
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

    /// Clusters written out as TOML (`[[clusters]]` tables with their keys), after those
    /// [`Config::cluster`] wrote: for endpoints its shorthand does not say (weights, host
    /// names).
    pub fn clusters(mut self, text: &str) -> Config {
        written(&mut self.clusters, text);
        self
    }

    /// Filters written out as TOML (`[[filters]]` tables with their keys), after those
    /// [`Config::wasm_filter`] and [`Config::native_filter`] wrote: for a filter table that
    /// is itself what the test is about (a quoted name, no `config`, sub-tables).
    pub fn filters(mut self, text: &str) -> Config {
        written(&mut self.filters, text);
        self
    }

    /// Routes written out as TOML (`[[routes]]` tables with their keys), after those
    /// [`Config::route`] wrote: for what its shorthand does not say (redirects, direct
    /// responses, splits, mirrors, routes without a name), where the route's text is what
    /// the test is about.
    pub fn routes(mut self, text: &str) -> Config {
        written(&mut self.routes, text);
        self
    }
}

/// Appends tables a test wrote out to a section, on lines of their own.
fn written(section: &mut String, text: &str) {
    section.push('\n');
    section.push_str(text);
    section.push('\n');
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n[admin]\naddress = \"{{admin}}\"\n{}\n[[listeners]]\nname = \"main\"\naddress = \"{{listen}}\"\n{}{}{}{}{}",
            self.top, self.admin, self.listener, self.listeners, self.clusters, self.filters, self.routes
        )
    }
}
