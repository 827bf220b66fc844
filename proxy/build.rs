//! Reads the `weft:filter` version from `wit/filter.wit`, so the host's version constant
//! is generated from the same file its bindings are.

fn main() {
    let wit = concat!(env!("CARGO_MANIFEST_DIR"), "/../wit/filter.wit");
    println!("cargo:rerun-if-changed={wit}");
    let text = std::fs::read_to_string(wit).unwrap_or_else(|e| panic!("cannot read {wit}: {e}"));
    let version = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("package weft:filter@"))
        .and_then(|rest| rest.strip_suffix(';'))
        .unwrap_or_else(|| panic!("{wit} has no `package weft:filter@<version>;` line"));
    println!("cargo:rustc-env=WEFT_WIT_VERSION={version}");
}
