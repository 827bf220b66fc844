//! Writes `wit/filter.wit` with its minor version bumped into `OUT_DIR`: the fixture for
//! "a plugin built for a newer contract" follows the real WIT instead of a stale copy.

use std::path::PathBuf;

fn main() {
    let wit = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../wit/filter.wit");
    println!("cargo:rerun-if-changed={wit}");
    let text = std::fs::read_to_string(wit).unwrap_or_else(|e| panic!("cannot read {wit}: {e}"));
    let line = text
        .lines()
        .find(|l| l.starts_with("package weft:filter@"))
        .expect("a package line");
    let version = line.trim_start_matches("package weft:filter@").trim_end_matches(';');
    let mut parts = version.split('.').map(|p| p.parse::<u64>().expect("numeric version"));
    let (major, minor) = (parts.next().expect("major"), parts.next().expect("minor"));
    let next = format!("package weft:filter@{major}.{}.0;", minor + 1);
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("wit");
    std::fs::create_dir_all(&out).expect("create OUT_DIR/wit");
    std::fs::write(out.join("filter.wit"), text.replace(line, &next)).expect("write the bumped WIT");
}
