//! SDS through the real binary: TLS listeners and mTLS clusters whose certificates and CAs
//! come from the ADS server (`weft_conformance::ads::sds` builds them as Istio does), with
//! rustls clients and servers on 127.0.0.1.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use weft::tls::devcert::{Authority, Issued, Usage};
use weft_conformance::ads::{bootstrap as bootstrap_yaml, *};
use weft_conformance::{ReservedPort, Upstream, Weft, echo_reply, get};

const WEFT_ID: &str = "spiffe://cluster.local/ns/default/sa/weft";
const BACKEND_ID: &str = "spiffe://cluster.local/ns/default/sa/backend";

/// Weft with nothing but `[admin]` (its audit log in the returned folder) and `[xds]`.
async fn start_weft(port: u16, api_type: &str) -> (Weft, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap = dir.path().join("bootstrap.yaml");
    let ads = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::fs::write(
        &bootstrap,
        bootstrap_yaml("{ id: weft-test, cluster: test }", api_type, ads),
    )
    .expect("bootstrap");
    let weft = Weft::start(&format!(
        "[admin]\naddress = \"{{admin}}\"\naudit_log = \"{}\"\n\n[xds]\nbootstrap = \"{}\"\n",
        dir.path().join("audit.log").display(),
        bootstrap.display()
    ))
    .await;
    (weft, dir)
}

/// `r`'s secrets become `secrets` (the type is added when missing).
fn set_secrets(r: &mut Resources, secrets: Vec<envoy_types::pb::google::protobuf::Any>) {
    match r.by_type.iter_mut().find(|(t, _)| *t == SECRET) {
        Some(entry) => entry.1 = secrets,
        None => r.by_type.push((SECRET, secrets)),
    }
}

fn server_cert(ca: &Authority) -> Issued {
    ca.issue("localhost", &["localhost"], &[], Usage::Server)
        .expect("issue")
}

fn der_hash(pem: &str) -> String {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).expect("pem");
    weft::tls::PeerIdentity::from_der(&der).expect("parse").hash
}

/// An open HTTPS/1.1 connection to `addr` (SNI `localhost`, verified against `ca_pem`) and
/// the hash of the certificate the server presented.
async fn connect(
    addr: std::net::SocketAddr,
    ca_pem: &str,
) -> Result<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, String), String> {
    connect_as(addr, ca_pem, None).await
}

/// `connect`, presenting `identity` when given.
async fn connect_as(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    identity: Option<&Issued>,
) -> Result<(hyper::client::conn::http1::SendRequest<Full<Bytes>>, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(id.cert_pem.as_bytes()).map_err(|e| e.to_string())?],
                PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?,
    };
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").map_err(|e| e.to_string())?, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no certificate")?;
    let hash = weft::tls::PeerIdentity::from_der(&der).ok_or("unparsable")?.hash;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok((sender, hash))
}

async fn send(sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>) -> Result<u16, String> {
    let req = http::Request::get("/hello")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    resp.into_body().collect().await.map_err(|e| e.to_string())?;
    Ok(status)
}

/// A new connection's certificate hash once it is `want` (a push applies before its ACK,
/// but a test must not depend on timing).
async fn wait_for_certificate(addr: std::net::SocketAddr, ca_pem: &str, want: &str) -> bool {
    for _ in 0..200 {
        if let Ok((mut sender, hash)) = connect(addr, ca_pem).await
            && hash == want
        {
            return send(&mut sender).await == Ok(200);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn tls_resources(a: &Upstream, b: &Upstream, cert: &Issued) -> Resources {
    let mut r = base(a, b);
    set(
        &mut r,
        LISTENER,
        vec![sds::with_listener_tls(
            listener("main", Vec::new()),
            sds::downstream("default", None, &["h2", "http/1.1"]),
        )],
    );
    set_secrets(&mut r, vec![sds::certificate("default", &cert.cert_pem, &cert.key_pem)]);
    r
}

#[tokio::test]
async fn a_tls_listener_from_lds_and_sds_serves_https_and_a_rotated_certificate_reaches_new_connections_only() {
    let ca = Authority::new("Mesh CA").expect("ca");
    let (first, second) = (server_cert(&ca), server_cert(&ca));
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let ads = Ads::new(tls_resources(&a, &b, &first));
    let port = ReservedPort::new();
    let _server = ads.serve(port.port).await;
    let (weft, _dir) = start_weft(port.port, "GRPC").await;
    let addr = weft.listener("main");

    let (mut open, hash) = connect(addr, &ca.cert_pem).await.expect("TLS to the listener");
    assert_eq!(hash, der_hash(&first.cert_pem), "the certificate SDS sent");
    assert_eq!(send(&mut open).await, Ok(200), "{}", weft.log());
    let ack = ads
        .wait_request(SECRET, |r| r.version_info == "1" && r.error_detail.is_none())
        .await;
    assert_eq!(
        ack.resource_names,
        ["default"],
        "SDS asks for the names the listener uses"
    );

    // Rotation: new connections get the new certificate, the open one carries on.
    let pushed = std::time::Instant::now();
    ads.push(|r| set_secrets(r, vec![sds::certificate("default", &second.cert_pem, &second.key_pem)]));
    ads.wait_request(SECRET, |r| r.version_info == "2" && r.error_detail.is_none())
        .await;
    assert!(
        wait_for_certificate(addr, &ca.cert_pem, &der_hash(&second.cert_pem)).await,
        "the rotated certificate never reached a new connection:\n{}",
        weft.log()
    );
    assert_eq!(
        send(&mut open).await,
        Ok(200),
        "the connection opened before the rotation"
    );
    // Reported, not asserted (numbers come from benchmarks).
    println!(
        "sds: a rotated certificate reached a new connection {} ms after the push",
        pushed.elapsed().as_millis()
    );

    // No private key anywhere a user can read.
    let (_, xds) = weft.admin("GET", "/api/xds").await;
    let view: serde_json::Value = serde_json::from_str(&xds).expect("json");
    assert_eq!(view["types"]["sds"]["version"], "2", "{xds}");
    let served = &view["secrets"]["default"];
    assert_eq!(served["kind"], "certificate", "{xds}");
    assert!(served["sha256"].as_str().is_some_and(|h| h.len() == 64), "{xds}");
    assert!(served["not_after"].as_str().is_some(), "{xds}");
    println!(
        "sds: applying the rotation took {} ms",
        view["types"]["sds"]["apply_ms"]
    );
    let (_, config) = weft.admin("GET", "/api/config").await;
    let key_body = |k: &str| k.lines().nth(1).unwrap_or_default().to_owned();
    for (what, text) in [("/api/xds", &xds), ("/api/config", &config), ("the log", &weft.log())] {
        for key in [&first.key_pem, &second.key_pem] {
            assert!(!text.contains(&key_body(key)), "{what} shows a private key");
        }
        assert!(!text.contains("PRIVATE KEY"), "{what}: {text}");
    }
}

#[tokio::test]
async fn each_kind_of_bad_secret_or_tls_context_is_nacked_and_the_old_certificate_keeps_serving() {
    let ca = Authority::new("Mesh CA").expect("ca");
    let good = server_cert(&ca);
    let other = server_cert(&ca);
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let ads = Ads::new(tls_resources(&a, &b, &good));
    let port = ReservedPort::new();
    let _server = ads.serve(port.port).await;
    let (weft, dir) = start_weft(port.port, "GRPC").await;
    let addr = weft.listener("main");
    let good_hash = der_hash(&good.cert_pem);

    let cert = |c: &str, k: &str| vec![sds::certificate("default", c, k)];
    let garbage = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n";
    let bad_secrets: Vec<(&str, Vec<envoy_types::pb::google::protobuf::Any>, &str)> = vec![
        ("unparseable PEM", cert(garbage, &good.key_pem), "certificate_chain"),
        (
            "no certificate",
            cert("nothing here", &good.key_pem),
            "certificate_chain holds no PEM certificate",
        ),
        (
            "another certificate's key",
            cert(&good.cert_pem, &other.key_pem),
            "private_key does not go with the certificate",
        ),
        (
            "a key that is not PEM",
            cert(
                &good.cert_pem,
                "-----BEGIN PRIVATE KEY-----\n!!\n-----END PRIVATE KEY-----\n",
            ),
            "private_key is not a PEM private key",
        ),
        (
            "a bad CA",
            vec![
                sds::certificate("default", &good.cert_pem, &good.key_pem),
                sds::validation("ROOTCA", garbage),
            ],
            "secret \"ROOTCA\": trusted_ca",
        ),
    ];
    for type_url in [CLUSTER, LISTENER, SECRET] {
        ads.wait_request(type_url, |r| r.version_info == "1" && r.error_detail.is_none())
            .await;
    }
    for (what, secrets, reason) in bad_secrets {
        let before = ads.requests(SECRET).len();
        ads.push(|r| set_secrets(r, secrets));
        let nack = answer_after(&ads, SECRET, before).await;
        let detail = nack
            .error_detail
            .unwrap_or_else(|| panic!("{what} was accepted"))
            .message;
        assert!(
            detail.contains("secret \"default\"") || detail.contains("secret \"ROOTCA\""),
            "{what}: the NACK names the secret: {detail}"
        );
        assert!(detail.contains(reason), "{what}: {detail}");
        assert!(
            !detail.contains("PRIVATE KEY") && !detail.contains(&good.key_pem[40..80]),
            "{what}: {detail}"
        );
        let (mut sender, hash) = connect(addr, &ca.cert_pem).await.expect("still TLS");
        assert_eq!(hash, good_hash, "{what}: the old certificate serves");
        assert_eq!(send(&mut sender).await, Ok(200));
    }

    // An expired certificate is served (as Envoy does) and logged.
    let now = time::OffsetDateTime::now_utc();
    let expired = ca
        .issue_between(
            "localhost",
            &["localhost"],
            &[],
            Usage::Server,
            now - time::Duration::days(30),
            now - time::Duration::days(1),
        )
        .expect("issue");
    let before = ads.requests(SECRET).len();
    ads.push(|r| set_secrets(r, cert(&expired.cert_pem, &expired.key_pem)));
    let ack = answer_after(&ads, SECRET, before).await;
    assert!(ack.error_detail.is_none(), "{ack:?}");
    assert!(weft.log().contains("outside its validity period"), "{}", weft.log());

    // Bad TLS contexts NACK their listener or cluster, naming what is wrong.
    let before = ads.requests(LISTENER).len();
    ads.push(|r| {
        set_secrets(r, cert(&good.cert_pem, &good.key_pem));
        set(
            r,
            LISTENER,
            vec![sds::with_listener_tls(
                listener("main", Vec::new()),
                sds::downstream("default", None, &["spdy/3"]),
            )],
        );
    });
    let nack = answer_after(&ads, LISTENER, before).await;
    assert!(
        nack.error_detail
            .expect("a NACK")
            .message
            .contains("ALPN protocol \"spdy/3\"")
    );
    let before = ads.requests(CLUSTER).len();
    ads.push(|r| {
        set(
            r,
            LISTENER,
            vec![sds::with_listener_tls(
                listener("main", Vec::new()),
                sds::downstream("default", None, &[]),
            )],
        );
        set(
            r,
            CLUSTER,
            vec![
                sds::with_cluster_tls(
                    eds_cluster("a"),
                    envoy_types::pb::envoy::config::core::v3::TransportSocket {
                        name: "envoy.transport_sockets.alts".into(),
                        config_type: None,
                    },
                ),
                eds_cluster("b"),
            ],
        );
    });
    let nack = answer_after(&ads, CLUSTER, before).await;
    let detail = nack.error_detail.expect("a NACK").message;
    assert!(detail.contains("cluster \"a\"") && detail.contains("alts"), "{detail}");
    assert!(
        wait_for_certificate(addr, &ca.cert_pem, &good_hash).await,
        "the good certificate serves again:\n{}",
        weft.log()
    );

    // The audit log has every NACK with its reason, and no key.
    let audit = std::fs::read_to_string(dir.path().join("audit.log")).expect("audit log");
    assert!(
        audit.contains("private_key does not go with the certificate"),
        "{audit}"
    );
    for key in [&good.key_pem, &other.key_pem, &expired.key_pem] {
        let body = key.lines().nth(1).expect("a key line");
        assert!(
            !audit.contains(body) && !weft.log().contains(body),
            "a private key was written"
        );
    }
    assert!(!audit.contains("PRIVATE KEY"), "{audit}");
}

/// Whether Weft logs `text` (a refused handshake is logged after the peer saw it fail).
async fn logged(weft: &Weft, text: &str) -> bool {
    for _ in 0..250 {
        if weft.log().contains(text) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// The first answer (ACK or NACK) of `type_url` after the first `before` requests: the
/// answer to the response a push sent.
async fn answer_after(ads: &Ads, type_url: &str, before: usize) -> DiscoveryRequest {
    for _ in 0..1000 {
        let requests = ads.requests(type_url);
        if let Some(r) = requests.into_iter().skip(before).find(|r| !r.response_nonce.is_empty()) {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "no answer of {type_url} after request {before}: {:#?}",
        ads.requests(type_url)
    );
}

/// A TLS upstream that requires a client certificate from `ca` and presents `cert`;
/// records each client identity it saw and counts the requests that reached it.
async fn mtls_upstream(ca: &Authority, cert: &Issued) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let acceptor = weft_conformance::mtls_acceptor(
        cert.cert_pem.as_bytes(),
        cert.key_pem.as_bytes(),
        ca.cert_pem.as_bytes(),
        &[b"http/1.1"],
    );
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let requests = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let (acceptor, requests) = (acceptor.clone(), requests.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let id = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .and_then(|d| weft::tls::PeerIdentity::from_der(d))
                    .map(|p| p.primary().to_owned())
                    .unwrap_or_default();
                let service = hyper::service::service_fn(move |req| {
                    let (requests, id) = (requests.clone(), id.clone());
                    async move {
                        requests.lock().expect("seen").push(id);
                        Ok::<_, std::convert::Infallible>(echo_reply("backend", req).await)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn an_mtls_cluster_from_cds_and_sds_verifies_the_spiffe_id_and_a_wrong_one_never_reaches_the_upstream() {
    let ca = Authority::new("Mesh CA").expect("ca");
    let backend_cert = ca.issue("backend", &[], &[BACKEND_ID], Usage::Server).expect("issue");
    let weft_cert = ca.issue("weft", &[], &[WEFT_ID], Usage::Client).expect("issue");
    let (backend, requests) = mtls_upstream(&ca, &backend_cert).await;
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let secure = |id: &str| {
        sds::with_cluster_tls(
            eds_cluster("secure"),
            sds::upstream(
                "outbound_.8080_._.backend.default.svc.cluster.local",
                Some("default"),
                "ROOTCA",
                &[id],
            ),
        )
    };
    let mut r = base(&a, &b);
    set(
        &mut r,
        CLUSTER,
        vec![eds_cluster("a"), eds_cluster("b"), secure(BACKEND_ID)],
    );
    set(
        &mut r,
        ENDPOINT,
        vec![
            assignment("a", &[a.addr]),
            assignment("b", &[b.addr]),
            assignment("secure", &[backend]),
        ],
    );
    set(&mut r, ROUTE, vec![routes("secure", "/re+gex")]);
    set_secrets(&mut r, Vec::new());
    let ads = Ads::new(r);
    let port = ReservedPort::new();
    let _server = ads.serve(port.port).await;
    // Delta, as istiod speaks to Envoy.
    let (weft, _dir) = start_weft(port.port, "DELTA_GRPC").await;
    let url = format!("http://{}/hello", weft.listener("main"));

    // The server has no secrets yet: the cluster is left out and its route answers 503.
    let reply = get(&url).await;
    assert_eq!(reply.status, 503, "{}\n{}", reply.text(), weft.log());
    assert!(requests.lock().expect("seen").is_empty());

    // The secrets arrive: mutual TLS, the upstream verified by its SPIFFE ID and seeing Weft's.
    ads.push(|r| {
        set_secrets(
            r,
            vec![
                sds::certificate("default", &weft_cert.cert_pem, &weft_cert.key_pem),
                sds::validation("ROOTCA", &ca.cert_pem),
            ],
        )
    });
    let mut status = 0;
    for _ in 0..200 {
        status = get(&url).await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "{}", weft.log());
    assert_eq!(
        requests.lock().expect("seen").first().map(String::as_str),
        Some(WEFT_ID)
    );
    let subscribed = ads.delta_requests.lock().expect("requests").clone();
    let mut names: Vec<String> = subscribed
        .iter()
        .filter(|q| q.type_url == SECRET)
        .flat_map(|q| q.resource_names_subscribe.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["ROOTCA", "default"], "SDS asked for what the cluster names");

    // Another SPIFFE ID expected: the handshake fails, 503, and no request reaches it.
    let before = ads.delta_requests.lock().expect("requests").len();
    ads.push(|r| {
        set(
            r,
            CLUSTER,
            vec![
                eds_cluster("a"),
                eds_cluster("b"),
                secure("spiffe://cluster.local/ns/default/sa/impostor"),
            ],
        )
    });
    // Applied before it is ACKed.
    let mut acked = false;
    for _ in 0..500 {
        let requests = ads.delta_requests.lock().expect("requests").clone();
        if let Some(r) = requests[before..]
            .iter()
            .find(|r| r.type_url == CLUSTER && !r.response_nonce.is_empty())
        {
            assert!(r.error_detail.is_none(), "{r:?}");
            acked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(acked, "the cluster push was never answered");
    let reached = requests.lock().expect("seen").len();
    for _ in 0..3 {
        let reply = get(&url).await;
        assert_eq!(reply.status, 503, "{}\n{}", reply.text(), weft.log());
    }
    assert_eq!(
        requests.lock().expect("seen").len(),
        reached,
        "no request reached the upstream"
    );
    assert!(logged(&weft, "match none of").await, "{}", weft.log());
}

#[tokio::test]
async fn a_listener_naming_a_secret_the_server_does_not_have_stays_unbound_while_the_rest_serves() {
    let ca = Authority::new("Mesh CA").expect("ca");
    let cert = server_cert(&ca);
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let mut r = base(&a, &b);
    set(
        &mut r,
        LISTENER,
        vec![
            listener("main", Vec::new()),
            sds::with_listener_tls(
                listener("gateway", Vec::new()),
                sds::downstream("kubernetes://missing", None, &[]),
            ),
        ],
    );
    set_secrets(&mut r, vec![sds::certificate("default", &cert.cert_pem, &cert.key_pem)]);
    let ads = Ads::new(r);
    let port = ReservedPort::new();
    let _server = ads.serve(port.port).await;
    let (weft, _dir) = start_weft(port.port, "GRPC").await;

    let reply = get(&format!("http://{}/hello", weft.listener("main"))).await;
    assert_eq!(reply.status, 200, "{}", weft.log());
    let ack = ads
        .wait_request(SECRET, |r| r.error_detail.is_none() && !r.response_nonce.is_empty())
        .await;
    assert_eq!(ack.resource_names, ["kubernetes://missing"]);
    let (_, config) = weft.admin("GET", "/api/config").await;
    assert!(config.contains("main") && !config.contains("gateway"), "{config}");
    assert!(
        weft.log().contains("not bound") && weft.log().contains("kubernetes://missing"),
        "{}",
        weft.log()
    );

    // The secret arrives: the listener is then one added after start, bound and serving
    // with it.
    ads.push(|r| {
        set_secrets(
            r,
            vec![
                sds::certificate("default", &cert.cert_pem, &cert.key_pem),
                sds::certificate("kubernetes://missing", &cert.cert_pem, &cert.key_pem),
            ],
        )
    });
    let mut gateway = None;
    for _ in 0..500 {
        gateway = bound_listener(&weft, "gateway");
        if gateway.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let gateway = gateway.unwrap_or_else(|| panic!("the listener was not bound once its secret came:\n{}", weft.log()));
    assert!(
        wait_for_certificate(gateway, &ca.cert_pem, &der_hash(&cert.cert_pem)).await,
        "HTTPS on the late listener with its secret's certificate"
    );
}

/// The address the ready file names for listener `name` now (it is rewritten as
/// listeners come and go).
fn bound_listener(weft: &Weft, name: &str) -> Option<std::net::SocketAddr> {
    let text = std::fs::read_to_string(weft.dir.path().join("ready.json")).ok()?;
    let ready: serde_json::Value = serde_json::from_str(&text).ok()?;
    let listeners = ready["listeners"].as_array()?;
    let l = listeners.iter().find(|l| l["name"] == name)?;
    l["address"].as_str()?.parse().ok()
}

#[tokio::test]
async fn a_listener_with_an_inline_certificate_admits_only_clients_of_its_sds_ca_and_trust_domain() {
    let ca = Authority::new("Mesh CA").expect("ca");
    let stranger_ca = Authority::new("Other CA").expect("ca");
    let cert = server_cert(&ca);
    let client = ca.issue("client", &[], &[WEFT_ID], Usage::Client).expect("issue");
    let outsider = ca
        .issue(
            "outsider",
            &[],
            &["spiffe://other.domain/ns/default/sa/weft"],
            Usage::Client,
        )
        .expect("issue");
    let stranger = stranger_ca
        .issue("client", &[], &[WEFT_ID], Usage::Client)
        .expect("issue");
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let mut r = base(&a, &b);
    set(
        &mut r,
        LISTENER,
        vec![sds::with_listener_tls(
            listener("main", Vec::new()),
            sds::downstream_inline(&cert.cert_pem, &cert.key_pem, "ROOTCA", "spiffe://cluster.local/"),
        )],
    );
    set_secrets(&mut r, vec![sds::validation("ROOTCA", &ca.cert_pem)]);
    let ads = Ads::new(r);
    let port = ReservedPort::new();
    let _server = ads.serve(port.port).await;
    let (weft, _dir) = start_weft(port.port, "DELTA_GRPC").await;
    let addr = weft.listener("main");

    let (mut sender, hash) = connect_as(addr, &ca.cert_pem, Some(&client)).await.expect("mutual TLS");
    assert_eq!(hash, der_hash(&cert.cert_pem), "the inline certificate");
    assert_eq!(send(&mut sender).await, Ok(200), "{}", weft.log());
    for (who, identity) in [
        ("no certificate", None),
        ("another CA's", Some(&stranger)),
        ("another trust domain's", Some(&outsider)),
    ] {
        // TLS 1.3: the server's refusal of the client's certificate arrives after the
        // client's handshake completes, so the request is where it shows.
        let refused = match connect_as(addr, &ca.cert_pem, identity).await {
            Err(_) => true,
            Ok((mut sender, _)) => send(&mut sender).await.is_err(),
        };
        assert!(refused, "{who}: served");
    }
    assert!(logged(&weft, "match none of").await, "{}", weft.log());
}
