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
async fn a_reload_binds_a_listener_on_its_new_address_and_closes_the_old_one() {
    let up = Upstream::echo("a").await;
    let text = base(&up, "/").top("[runtime]\nwatch = false").to_string();
    let weft = Weft::start(&text).await;
    let new = ReservedPort::new();
    let moved = text.replace("{listen}", &format!("127.0.0.1:{}", new.port));
    assert_ne!(moved, text);
    weft.write_config(&moved);
    let (status, body) = weft.admin("POST", "/reload").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&format!("http://127.0.0.1:{}/x", new.port)).await.status, 200);
    assert!(
        tokio::net::TcpStream::connect(weft.addr).await.is_err(),
        "the old address still accepts"
    );
    // Another listener taking the address `main` would leave (and drain from): refused
    // with the reason, and nothing changes.
    let other = ReservedPort::new();
    let taking = text.replace("{listen}", &format!("127.0.0.1:{}", other.port)).replacen(
        "[[clusters]]",
        &format!(
            "[[listeners]]\nname = \"back\"\naddress = \"127.0.0.1:{}\"\n\n[[clusters]]",
            new.port
        ),
        1,
    );
    weft.write_config(&taking);
    let (status, body) = weft.admin("POST", "/reload").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains(&format!(
            "listener \"back\" would take 127.0.0.1:{} from listener \"main\"",
            new.port
        )),
        "{body}"
    );
    assert_eq!(get(&format!("http://127.0.0.1:{}/x", new.port)).await.status, 200);
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

#[tokio::test]
async fn files_written_beside_the_config_do_not_reload_it_and_a_renamed_config_does() {
    let up = Upstream::echo("a").await;
    let text = config(&up, "/old");
    let weft = Weft::start(&text).await;
    let reloads = r#"weft_reloads_total{what="watch",outcome="ok"}"#;
    // A log, an editor's swap file, a file named like the config in a subdirectory: the
    // watched directory's other files.
    let beside = weft.dir.path();
    std::fs::create_dir_all(beside.join("sub")).expect("mkdir");
    for n in 0..50 {
        std::fs::write(beside.join("access.log"), format!("line {n}\n")).expect("write");
        std::fs::write(beside.join(".weft.toml.swp"), "x").expect("write");
        std::fs::write(beside.join("sub").join("weft.toml"), "not a config").expect("write");
    }
    // Longer than the watcher's settling time: a reload would have been counted.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(weft.metric(reloads).await, 0.0, "{}", weft.log());
    // A deploy tool writes aside and renames over the config: the rename is an event on
    // the config's name, so it reloads.
    let aside = beside.join("next.toml.tmp");
    std::fs::write(&aside, fill(&text.replace("/old", "/new"))).expect("write aside");
    std::fs::rename(&aside, &weft.config_path).expect("rename");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&weft.url("/new")).await.status != 200 {
        assert!(Instant::now() < deadline, "the watcher did not reload:\n{}", weft.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(weft.metric(reloads).await, 1.0, "{}", weft.log());
}
