//! Config reloads while serving: a good config replaces the running one atomically, a bad
//! one is rejected with the reason and the old one keeps serving.

use std::time::{Duration, Instant};

use weft_conformance::*;

/// One cluster, `up`, and a route to it for the paths under `prefix`.
fn base(up: &Upstream, prefix: &str) -> Config {
    Config::new()
        .cluster("up", &[up.addr])
        .route("all", &format!("path_prefix = \"{prefix}\""), "up", &[], "")
}

fn config(up: &Upstream, prefix: &str) -> String {
    base(up, prefix).to_string()
}

#[tokio::test]
async fn admin_reload_swaps_in_a_good_config_and_rejects_a_bad_one() {
    let up = Upstream::echo("a").await;
    let mut text = base(&up, "/v1").top("[runtime]\nwatch = false").to_string();
    let weft = Weft::start(&text).await;
    assert_eq!(get(&weft.url("/v2/x")).await.status, 404);
    assert_eq!(weft.admin("GET", "/version").await, (200, "1\n".to_owned()));

    text = text.replace("/v1", "/v2");
    weft.write_config(&text);
    let (status, body) = weft.admin("POST", "/reload").await;
    assert_eq!((status, body.as_str()), (200, "reloaded: config version 2\n"));
    assert_eq!(get(&weft.url("/v2/x")).await.status, 200);
    assert_eq!(get(&weft.url("/v1/x")).await.status, 404);

    weft.write_config(&text.replace("cluster = \"up\"", "cluster = \"gone\""));
    let (status, body) = weft.admin("POST", "/reload").await;
    assert_eq!(status, 409);
    assert!(body.contains("unknown cluster \"gone\""), "{body}");
    assert_eq!(
        get(&weft.url("/v2/x")).await.status,
        200,
        "the old config keeps serving"
    );
    assert_eq!(weft.admin("GET", "/version").await, (200, "2\n".to_owned()));

    let metrics = weft.admin("GET", "/metrics").await.1;
    assert!(
        metrics.contains("weft_reloads_total{what=\"admin\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weft_reloads_total{what=\"admin\",outcome=\"rejected\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn listener_changes_are_refused_on_reload() {
    let up = Upstream::echo("a").await;
    let text = config(&up, "/");
    let weft = Weft::start(&text).await;
    weft.write_config(&text.replace("name = \"main\"", "name = \"renamed\""));
    let (status, body) = weft.admin("POST", "/reload").await;
    assert_eq!(status, 409);
    assert!(body.contains("changing listeners needs a restart"), "{body}");
}

#[tokio::test]
async fn a_changed_config_file_is_picked_up_by_the_watcher() {
    let up = Upstream::echo("a").await;
    let text = config(&up, "/old");
    let weft = Weft::start(&text).await;
    weft.write_config(&text.replace("/old", "/new"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&weft.url("/new")).await.status != 200 {
        assert!(Instant::now() < deadline, "the watcher did not reload:\n{}", weft.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broken edit is rejected and logged; the last good config stays.
    // Raw text: a file that is not TOML is the subject.
    weft.write_config("this is not toml [");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !weft.log().contains("reload rejected") {
        assert!(
            Instant::now() < deadline,
            "the broken edit was not reported:\n{}",
            weft.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&weft.url("/new")).await.status, 200);
}
