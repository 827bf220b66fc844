//! The `weft` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft::config::Config;
use weft::log::LogFormat;
use weft::state::ConfigSource;

// glibc malloc was ~6% of the proxy's user-space instructions per request (callgrind);
// mimalloc's thread-local free lists make the small, short-lived allocations of a request cheap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "weft", version, about = "A WebAssembly-extensible programmable proxy")]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file (reloaded when it or a plugin changes).
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Validate a config file, plugins included, without serving; explain every error.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Write a development CA with server and client certificates (for tests and demos,
    /// not production): ca.pem, server.pem, client.pem and their keys.
    Cert {
        /// Where to write the files.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Names (DNS or IP) the server certificate is for.
        #[arg(long = "host", default_values = ["localhost", "127.0.0.1", "::1"])]
        hosts: Vec<String>,
        /// The client certificate's SPIFFE ID.
        #[arg(long, default_value = "spiffe://weft.local/ns/default/sa/client")]
        client_id: String,
    },
    /// Serve the embedded demo: a built-in upstream behind the example plugin.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9901")]
        admin: SocketAddr,
        /// Where the built plugins are (`cargo plugins` puts them here).
        #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/wasm/wasm32-wasip2/release"))]
        plugins: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    weft::log::init(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let parsed = Config::load(&config)?;
            let rt = weft::server::tokio_runtime(parsed.runtime.workers)?;
            rt.block_on(weft::server::run(parsed, ConfigSource::File(config)))
        }
        Command::Check { config } => {
            let parsed = Config::load(&config)?;
            let rt = weft::server::tokio_runtime(Some(1))?;
            let summary = rt.block_on(weft::state::check(&parsed))?;
            println!("{}: OK ({summary})", config.display());
            Ok(())
        }
        Command::Cert { out, hosts, client_id } => {
            let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
            weft::tls::devcert::write_bundle(&out, &hosts, &client_id)?;
            println!(
                "wrote ca.pem, server.pem, client.pem and their keys to {}",
                out.display()
            );
            Ok(())
        }
        Command::Demo { listen, admin, plugins } => {
            let rt = weft::server::tokio_runtime(None)?;
            rt.block_on(async {
                let upstream = weft::demo::start_echo_upstream().await?;
                let text = weft::demo::config_text(listen, admin, upstream, &plugins);
                let origin = "<embedded demo config>".to_owned();
                let parsed = Config::parse(&origin, &text)?;
                println!(
                    "weft demo: proxying http://{listen}/ to a built-in echo upstream ({upstream}) through the hello filter\n\
                     try:  curl -i http://{listen}/hello\n      curl -i http://{listen}/private   (the filter answers 403)\n      curl http://{admin}/metrics"
                );
                weft::server::run(parsed, ConfigSource::Embedded { origin, text }).await
            })
        }
    }
}
