//! Builds the Wasm plugins the tests load (the test plugins under `plugins/` and the
//! example filter) with the same command as `cargo plugins`, and exposes each artifact's
//! path as an env var `WEFT_PLUGIN_<NAME>` for `src/plugins.rs`.
//!
//! The nested cargo uses its own target dir (`target/wasm`), so it neither waits on nor
//! deadlocks with the outer build's lock. Nothing pre-built is committed.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("conformance/ is inside the workspace")
        .to_path_buf();
    for dir in [
        "wit",
        "sdk/src",
        "sdk/Cargo.toml",
        "examples/hello-filter",
        "conformance/plugins",
        "plugins",
        ".cargo/config.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(&root)
        .arg("plugins")
        // Flags meant for the native build must not leak into the wasm32 one.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("cannot run cargo to build the Wasm plugins");
    if !output.status.success() {
        panic!(
            "building the Wasm plugins failed (`cargo plugins`; is the wasm32-wasip2 target installed? \
             `rustup target add wasm32-wasip2`):\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let out = root.join("target/wasm/wasm32-wasip2/release");
    // Test plugins are `plugin-<dir>` crates; first-party plugins keep their crate name.
    // Library crates (plugins/plugin-common) build no component: only a `cdylib` has a .wasm.
    let mut crates: Vec<(String, PathBuf)> = Vec::new();
    for (folder, prefix) in [("conformance/plugins", "plugin_"), ("plugins", "")] {
        let Ok(entries) = std::fs::read_dir(root.join(folder)) else {
            continue;
        };
        for entry in entries {
            let dir = entry.expect("readable plugins dir").path();
            if builds_component(&dir.join("Cargo.toml")) {
                let name = dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .expect("UTF-8 plugin dir name")
                    .to_owned();
                let file = format!("{prefix}{}.wasm", name.replace('-', "_"));
                crates.push((name, out.join(file)));
            }
        }
    }
    crates.push(("hello-filter".to_owned(), out.join("hello_filter.wasm")));
    for (name, artifact) in crates {
        assert!(
            exists(&artifact),
            "`cargo plugins` did not produce {}",
            artifact.display()
        );
        let var = format!("WEFT_PLUGIN_{}", name.replace('-', "_").to_uppercase());
        println!("cargo:rustc-env={var}={}", artifact.display());
    }
}

/// Whether the crate of this manifest is a component (`crate-type` lists `cdylib`). A
/// text search, not a TOML parse: the build script has no dependencies, and the manifests
/// are ours.
fn builds_component(manifest: &Path) -> bool {
    std::fs::read_to_string(manifest).is_ok_and(|text| text.contains("\"cdylib\""))
}

fn exists(path: &Path) -> bool {
    path.is_file()
}
