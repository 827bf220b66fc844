//! Pingora as a peer in `bench/run`: every request goes to one origin over HTTP/1.1
//! keep-alive (pingora's upstream connection pool), nothing else.
//!
//! pingora-bench --listen 127.0.0.1:PORT --origin 127.0.0.1:PORT [--threads 1] [--h2c]
//!               [--cert server.pem --key server-key.pem] [--dir RUN_DIR]
use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct Bench {
    origin: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bench {
    type CTX = ();
    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.origin, false, String::new())))
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: pingora-bench --listen ADDR --origin ADDR [--threads N] [--h2c] [--cert PEM --key PEM] [--dir DIR]"
    );
    std::process::exit(2)
}

fn main() {
    let (mut listen, mut origin, mut threads, mut h2c) = (None, None, 1usize, false);
    let (mut cert, mut key, mut dir) = (None, None, std::env::temp_dir().display().to_string());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--listen" => listen = Some(val()),
            "--origin" => origin = Some(val().parse::<SocketAddr>().unwrap_or_else(|_| usage())),
            "--threads" => threads = val().parse().unwrap_or_else(|_| usage()),
            "--h2c" => h2c = true,
            "--cert" => cert = Some(val()),
            "--key" => key = Some(val()),
            "--dir" => dir = val(),
            _ => usage(),
        }
    }
    let (Some(listen), Some(origin)) = (listen, origin) else {
        usage()
    };

    let conf = ServerConf {
        threads,
        work_stealing: false,
        pid_file: format!("{dir}/pingora.pid"),
        upgrade_sock: format!("{dir}/pingora-upgrade.sock"),
        upstream_keepalive_pool_size: 128,
        // bench/run stops it with SIGTERM: exit at once rather than after pingora's
        // graceful-shutdown defaults (5 min grace period).
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut svc = http_proxy_service(&server.configuration, Bench { origin });
    if h2c {
        let mut opts = HttpServerOptions::default();
        opts.h2c = true;
        svc.app_logic_mut().expect("proxy app").server_options = Some(opts);
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let mut tls = TlsSettings::intermediate(&cert, &key).expect("TLS certificate and key");
            tls.enable_h2();
            svc.add_tls_with_settings(&listen, None, tls);
        }
        (None, None) => svc.add_tcp(&listen),
        _ => usage(),
    }
    server.add_service(svc);
    server.run_forever();
}
