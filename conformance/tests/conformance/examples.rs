//! The example configs a newcomer starts from stay valid: `weft check` accepts them once
//! their certificates exist (made by `weft cert`, as their comments say).

use std::path::Path;
use std::process::Command;

use weft_conformance::weft_bin;

fn check_example(name: &str) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let dir = tempfile::tempdir().expect("tempdir");
    let status = Command::new(weft_bin())
        .args(["cert", "--out"])
        .arg(dir.path().join("certs"))
        .status()
        .expect("weft cert");
    assert!(status.success());
    // Same relative layout as in the repository: certs/ beside the config, plugins under ../target.
    let text = std::fs::read_to_string(repo.join("examples").join(name)).expect("example");
    let text = text.replace("../target/", &format!("{}/target/", repo.display()));
    let config = dir.path().join(name);
    std::fs::write(&config, text).expect("write");
    let out = Command::new(weft_bin())
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("weft check");
    assert!(
        out.status.success(),
        "{name}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sidecar_example_is_valid() {
    check_example("sidecar.toml");
}

#[test]
fn edge_example_is_valid() {
    // The edge example loads the hello filter, which the conformance build script built.
    let _ = weft_conformance::plugins::HELLO_FILTER;
    check_example("edge.toml");
}
