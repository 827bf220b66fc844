//! The Python and JavaScript components the tests load: the examples and the test filters
//! under `conformance/polyglot/`, built by the SDKs' own build scripts (`sdk-python/build.sh`,
//! `sdk-js/build.sh`) into `target/polyglot/`.
//!
//! Not in `build.rs` like the Rust plugins: the first build installs a toolchain from PyPI
//! or npm (`scripts/setup` does it ahead), and only the tests that load these components
//! should need it. Each build script does nothing when its component is newer than its
//! sources, so a test run builds each component at most once.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// A filter language other than Rust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Python,
    Js,
}

impl Lang {
    pub fn name(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    /// `examples/hello-filter-py` or `-js`, built.
    pub fn hello(self) -> PathBuf {
        match self {
            Lang::Python => build(self, "examples/hello-filter-py", "app", "hello_filter_py"),
            Lang::Js => build(self, "examples/hello-filter-js", "filter.js", "hello_filter_js"),
        }
    }

    /// `conformance/polyglot/noop-py` or `-js`, built: continues in both phases.
    pub fn noop(self) -> PathBuf {
        match self {
            Lang::Python => build(self, "conformance/polyglot/noop-py", "app", "noop_py"),
            Lang::Js => build(self, "conformance/polyglot/noop-js", "filter.js", "noop_js"),
        }
    }

    /// `conformance/polyglot/probe-py` or `-js`, built: the host interfaces and each
    /// misbehaviour, chosen by the request path (see its source).
    pub fn probe(self) -> PathBuf {
        match self {
            Lang::Python => build(self, "conformance/polyglot/probe-py", "app", "probe_py"),
            Lang::Js => build(self, "conformance/polyglot/probe-js", "filter.js", "probe_js"),
        }
    }
}

/// The repository root.
fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("conformance/ is inside the workspace")
}

/// The `[wasm] cache_dir` for configs that load these components: compiling an
/// interpreter takes seconds, so every test process after the first loads it from here.
pub fn cache_dir() -> PathBuf {
    root().join("target/polyglot/wasmtime-cache")
}

/// Runs the language's build script for `app` (its entry `entry`) into
/// `target/polyglot/<out>.wasm`, one build at a time.
fn build(lang: Lang, app: &str, entry: &str, out: &str) -> PathBuf {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let script = match lang {
        Lang::Python => "sdk-python/build.sh",
        Lang::Js => "sdk-js/build.sh",
    };
    let wasm = root().join("target/polyglot").join(format!("{out}.wasm"));
    let output = Command::new("sh")
        .current_dir(root())
        .arg(script)
        .arg(app)
        .arg(entry)
        .arg(&wasm)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    assert!(
        output.status.success(),
        "{script} {app} failed (run scripts/setup to install the {} toolchain):\n{}{}",
        lang.name(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    wasm
}
