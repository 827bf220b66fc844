//! docs/sidecar.md "Over xDS": Istio's sidecar shape, sent by a real ADS server, serving a
//! real redirect. Weft runs in pod `a` (a network namespace, see `sidecar.rs`) with nothing
//! but `[admin]`, an access log and `[xds]` in its TOML file; the nftables rules of
//! `weft sidecar rules --apply` send what an app in pod `a` dials to the virtual listener
//! (`use_original_dst`, 15001) the ADS server sent; the app in pod `b` answers with the
//! port it was reached on. The ADS server runs in the test on a Unix socket, which a relay
//! inside pod `a` serves on 127.0.0.1. Needs root: without it the namespaces cannot be made
//! and the test fails.

use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost, route, route_action, route_match,
};
use weft_conformance::Weft;
use weft_conformance::ads::{bootstrap as bootstrap_yaml, *};

// The sidecar tests' namespaces, compiled again here: `sidecar.rs` keeps its module private.
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "sidecar/netns.rs"]
mod netns;

use netns::{B4, Pods};

const OUTBOUND: u16 = 15001;
const INBOUND: u16 = 15006;
const ADMIN: u16 = 15000;
const ADS_PORT: u16 = 15010;
/// An uid with no exemption from the rules: the app's.
const APP_UID: &str = "65534";

/// TCP on 127.0.0.1:PORT relayed to the Unix socket PATH; touches READY once listening.
const RELAY: &str = r#"
import asyncio, sys
async def pipe(r, w):
    try:
        while True:
            data = await r.read(65536)
            if not data:
                break
            w.write(data)
            await w.drain()
    except Exception:
        pass
    finally:
        w.close()
async def handle(r, w):
    ur, uw = await asyncio.open_unix_connection(sys.argv[2])
    await asyncio.gather(pipe(r, uw), pipe(ur, w))
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    open(sys.argv[3], "w").close()
    await server.serve_forever()
asyncio.run(main())
"#;

/// A route configuration `name`: paths under `prefix` to `cluster`, the rest to `rest`.
fn routes_to(name: &str, prefix: &str, cluster: &str, rest: &str) -> envoy_types::pb::google::protobuf::Any {
    let to = |path: &str, c: &str| Route {
        name: format!("{path}->{c}"),
        r#match: Some(RouteMatch {
            path_specifier: Some(route_match::PathSpecifier::Prefix(path.into())),
            ..RouteMatch::default()
        }),
        action: Some(route::Action::Route(RouteAction {
            cluster_specifier: Some(route_action::ClusterSpecifier::Cluster(c.into())),
            ..RouteAction::default()
        })),
        ..Route::default()
    };
    let rc = RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: "allow_any".into(),
            domains: vec!["*".into()],
            routes: vec![to(prefix, cluster), to("/", rest)],
            ..VirtualHost::default()
        }],
        ..RouteConfiguration::default()
    };
    any(ROUTE, &rc)
}

/// Istio's shape: `virtualOutbound` passing through to `PassthroughCluster`; `0.0.0.0_8080`
/// (any address, port 8080) sending `/orders` to a cluster of the app's port 8081 and the
/// rest through; `10.77.0.2_8082` (that address only) sending everything to 8081.
fn istio(b: std::net::SocketAddr) -> Resources {
    let passthrough = "PassthroughCluster";
    let orders = "outbound|8080||orders.default.svc.cluster.local";
    Resources {
        version: 1,
        by_type: vec![
            (
                CLUSTER,
                vec![original_dst_cluster(passthrough), static_cluster(orders, b)],
            ),
            (ENDPOINT, Vec::new()),
            (
                LISTENER,
                vec![
                    any(LISTENER, &virtual_outbound(OUTBOUND, passthrough)),
                    any(LISTENER, &handed_listener("0.0.0.0", 8080, "8080", passthrough)),
                    any(LISTENER, &handed_listener(B4, 8082, "exact", passthrough)),
                ],
            ),
            (
                ROUTE,
                vec![
                    routes_to("8080", "/orders", orders, passthrough),
                    routes_to("exact", "/", orders, passthrough),
                ],
            ),
        ],
    }
}

struct Sidecar {
    // Dropped last: Weft goes first, then the namespaces.
    pods: Pods,
    dir: tempfile::TempDir,
    weft: Weft,
}

impl Sidecar {
    /// curl in pod `a` as the app's uid; the JSON the app answered with.
    fn curl(&self, url: &str) -> serde_json::Value {
        let out = self.pods.a.run(&[
            "setpriv",
            "--reuid",
            APP_UID,
            "--regid",
            APP_UID,
            "--clear-groups",
            "curl",
            "-sS",
            "--max-time",
            "20",
            url,
        ]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{url}: {e}: {}{}\nsidecar:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.weft.log()
            )
        })
    }

    /// The access-log record of `path`, waiting for the writer thread.
    async fn logged(&self, path: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default();
            let found = text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|r| r["path"] == path);
            if let Some(record) = found {
                return record;
            }
            assert!(Instant::now() < deadline, "no access-log record of {path}: {text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn istios_sidecar_shape_over_xds_serves_a_real_redirect() {
    let mut pods = Pods::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/sidecar/app.py");
    let state = dir.path().join("app-b");
    std::fs::create_dir(&state).expect("state dir");
    pods.b.spawn(&[
        "python3",
        app.to_str().expect("path"),
        "serve",
        "b",
        state.to_str().expect("path"),
    ]);

    let ads = Ads::new(istio(format!("{B4}:8081").parse().expect("addr")));
    let socket = dir.path().join("ads.sock");
    let _server = ads.serve_unix(&socket).await;
    let relay_ready = dir.path().join("relay-ready");
    pods.a.spawn(&[
        "python3",
        "-c",
        RELAY,
        &ADS_PORT.to_string(),
        socket.to_str().expect("path"),
        relay_ready.to_str().expect("path"),
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(relay_ready.exists() && state.join("ready").exists()) {
        assert!(Instant::now() < deadline, "the relay or the app did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bootstrap = dir.path().join("bootstrap.yaml");
    let node = "{ id: sidecar~10.77.0.1~orders-client.default~default.svc.cluster.local, cluster: client }";
    let server = std::net::SocketAddr::from(([127, 0, 0, 1], ADS_PORT));
    std::fs::write(&bootstrap, bootstrap_yaml(node, "GRPC", server)).expect("bootstrap");
    let config = format!(
        "[runtime]\nwatch = false\n\n[admin]\naddress = \"127.0.0.1:{ADMIN}\"\n\n\
         [access_log]\npath = \"{}\"\nformat = \"json\"\n\n[xds]\nbootstrap = \"{}\"\n",
        dir.path().join("access.log").display(),
        bootstrap.display()
    );
    let weft = Weft::start_in_netns(&config, &pods.a.name).await;
    let bin = weft_conformance::weft_bin();
    pods.a.must(&[
        bin.to_str().expect("path"),
        "sidecar",
        "rules",
        "--inbound-port",
        &INBOUND.to_string(),
        "--outbound-port",
        &OUTBOUND.to_string(),
        // Weft runs as root here: its own connections are let out by uid.
        "--proxy-uid",
        "0",
        "--exclude-ports",
        &format!("{ADMIN},{ADS_PORT}"),
        "--apply",
    ]);
    let sidecar = Sidecar { pods, dir, weft };

    // Port 8080: the `bind_to_port: false` listener for any address takes it; its routes
    // send /orders to the cluster (the app's 8081) and the rest through.
    let orders = sidecar.curl(&format!("http://{B4}:8080/orders/7"));
    assert_eq!(orders["port"], 8081, "{orders}");
    let record = sidecar.logged("/orders/7").await;
    assert_eq!(record["listener"], "virtualOutbound", "{record}");
    assert!(
        record["route"].as_str().is_some_and(|r| r.starts_with("0.0.0.0_8080/")),
        "{record}"
    );
    let rest = sidecar.curl(&format!("http://{B4}:8080/else"));
    assert_eq!(rest["port"], 8080, "PassthroughCluster: where the app dialled: {rest}");
    // Port 8082 at B's address: the listener for that address, not a passthrough.
    let exact = sidecar.curl(&format!("http://{B4}:8082/x"));
    assert_eq!(exact["port"], 8081, "{exact}");
    // Port 8081: no listener for it, the virtual listener's passthrough.
    let through = sidecar.curl(&format!("http://{B4}:8081/through"));
    assert_eq!(through["port"], 8081, "{through}");
    let record = sidecar.logged("/through").await;
    assert_eq!(record["listener"], "virtualOutbound", "{record}");
    // Not HTTP: passed byte for byte to the original destination (the app's TCP echo).
    let out = sidecar.pods.a.run(&[
        "setpriv",
        "--reuid",
        APP_UID,
        "--regid",
        APP_UID,
        "--clear-groups",
        // The system's Python: the app's uid may not read an interpreter under /root.
        "env",
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "python3",
        app.to_str().expect("path"),
        "tcp",
        B4,
        "9000",
        "ping over xds",
    ]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ping over xds"),
        "{}{}\nsidecar:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        sidecar.weft.log()
    );

    // A push moves /orders on 8080 to the passthrough: the routes of a handed-over
    // listener change like any route configuration.
    ads.push(|r| {
        set(
            r,
            ROUTE,
            vec![
                routes_to("8080", "/orders", "PassthroughCluster", "PassthroughCluster"),
                routes_to("exact", "/", "PassthroughCluster", "PassthroughCluster"),
            ],
        )
    });
    ads.wait_request(ROUTE, |r| r.version_info == "2" && r.error_detail.is_none())
        .await;
    let moved = sidecar.curl(&format!("http://{B4}:8080/orders/8"));
    assert_eq!(moved["port"], 8080, "{moved}");

    // A listener for port 8081 added after start: what the app dials there now takes its
    // routes (to a cluster of the app's 8080) instead of passing through.
    let to_8080 = format!("{B4}:8080").parse().expect("addr");
    ads.push(|r| {
        set(
            r,
            CLUSTER,
            vec![
                original_dst_cluster("PassthroughCluster"),
                static_cluster("outbound|8080||web", to_8080),
            ],
        );
        set(
            r,
            LISTENER,
            vec![
                any(LISTENER, &virtual_outbound(OUTBOUND, "PassthroughCluster")),
                any(
                    LISTENER,
                    &handed_listener("0.0.0.0", 8081, "8081", "PassthroughCluster"),
                ),
            ],
        );
        set(
            r,
            ROUTE,
            vec![routes_to("8081", "/", "outbound|8080||web", "PassthroughCluster")],
        );
    });
    ads.wait_request(ROUTE, |r| r.version_info == "3" && r.error_detail.is_none())
        .await;
    let added = sidecar.curl(&format!("http://{B4}:8081/added"));
    assert_eq!(added["port"], 8080, "{added}");
    // And 8080's listener, dropped by the same update: passed through now.
    let dropped = sidecar.curl(&format!("http://{B4}:8080/orders/9"));
    assert_eq!(dropped["port"], 8080, "{dropped}");
    let record = sidecar.logged("/orders/9").await;
    assert_eq!(record["route"], "virtualOutbound/passthrough", "{record}");
}
