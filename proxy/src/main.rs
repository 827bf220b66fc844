//! The `weft` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft::config::Config;
use weft::log::LogFormat;
use weft::plugin::new::{Lang, Sdk};
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
    /// `weft run`'s worker threads, over `[runtime] workers` (default: one per core).
    #[arg(long, global = true, value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with a config file (reloaded when it or a plugin changes), or with what an
    /// xDS server sends (docs/xds.md).
    Run {
        #[arg(short, long, required_unless_present = "xds_bootstrap")]
        config: Option<PathBuf>,
        /// An Envoy v3 bootstrap (JSON or YAML) naming the ADS server.
        #[arg(long)]
        xds_bootstrap: Option<PathBuf>,
        /// Once every listener is bound, write their names and bound addresses (port 0
        /// resolved) here as JSON; removed at exit.
        #[arg(long)]
        ready_file: Option<PathBuf>,
    },
    /// Validate a config file, plugins included, without serving; explain every error.
    Check {
        #[arg(short, long, required_unless_present = "xds_bootstrap")]
        config: Option<PathBuf>,
        /// Check an Envoy v3 bootstrap instead.
        #[arg(long, conflicts_with = "config")]
        xds_bootstrap: Option<PathBuf>,
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
    /// Tools for filter authors: start a filter project, test a built filter.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// Sidecar mode: the interception rules (docs/sidecar.md).
    Sidecar {
        #[command(subcommand)]
        command: SidecarCommand,
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

#[derive(Subcommand)]
enum SidecarCommand {
    /// Print the nftables ruleset that sends this network namespace's TCP traffic through
    /// the sidecar (`table inet weft`); `--apply` applies it, `--remove` deletes it.
    Rules {
        #[arg(long, default_value_t = 15006)]
        inbound_port: u16,
        #[arg(long, default_value_t = 15001)]
        outbound_port: u16,
        /// How inbound connections reach the inbound listener: `redirect` or `tproxy`
        /// (the listener's `transparent`).
        #[arg(long, value_enum, default_value = "redirect")]
        inbound_mode: Mode,
        /// The uid the proxy runs as: its connections are not redirected.
        #[arg(long)]
        proxy_uid: Option<u32>,
        /// The SO_MARK of the proxy's upstream sockets (clusters' and listeners' `mark`).
        #[arg(long, default_value = "0x539", value_parser = mark)]
        mark: u32,
        /// The mark `tproxy` gives intercepted inbound packets.
        #[arg(long, default_value = "0x53a", value_parser = mark)]
        tproxy_mark: u32,
        /// Destination ports never redirected (the admin port, ssh), comma-separated.
        #[arg(long, value_delimiter = ',')]
        exclude_ports: Vec<u16>,
        /// Inbound ports never redirected, comma-separated.
        #[arg(long, value_delimiter = ',')]
        exclude_inbound_ports: Vec<u16>,
        /// Redirect outbound connections only to these blocks (all when absent).
        #[arg(long, value_delimiter = ',')]
        include_cidrs: Vec<String>,
        /// Apply the rules in this network namespace with `nft` (root or CAP_NET_ADMIN).
        #[arg(long, conflicts_with = "remove")]
        apply: bool,
        /// Delete the rules (the whole `weft` table) instead.
        #[arg(long)]
        remove: bool,
    },
}

/// A packet mark as nft and ip write it: decimal, or hexadecimal after `0x`.
fn mark(text: &str) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|e| format!("{text:?} is not a mark (1337 or 0x539): {e}"))
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Redirect,
    Tproxy,
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Write a filter project NAME/ that builds with `./build` and tests itself.
    New {
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
        /// Where to write it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A Weft checkout, or its `sdk/` folder (default: the checkout this weft was built from).
        #[arg(long)]
        sdk_path: Option<PathBuf>,
        /// A git URL of Weft to take the SDK from instead.
        #[arg(long, conflicts_with = "sdk_path")]
        sdk_git: Option<String>,
    },
    /// Run a filter component against the cases of a CASES.toml (docs/plugin-kit.md);
    /// exits 1 with a diff when a case fails.
    Test { wasm: PathBuf, cases: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The test kit loads the filter once per case: its log says only what went wrong.
    let level = match cli.command {
        Command::Plugin { .. } => "warn",
        _ => "info",
    };
    weft::log::init(cli.log_format, level);
    match run(cli.command, cli.workers.map(usize::from)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<CasesFailed>() => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command, workers: Option<usize>) -> anyhow::Result<()> {
    match command {
        Command::Run {
            config,
            xds_bootstrap,
            ready_file,
        } => {
            let parsed = config.as_deref().map(Config::load).transpose()?;
            let bootstrap = xds_bootstrap.or_else(|| {
                parsed
                    .as_ref()
                    .and_then(|p| p.xds.as_ref())
                    .map(|x| x.bootstrap.clone())
            });
            let default_process = weft::config::ProcessConfig::default();
            let process = parsed.as_ref().map_or(&default_process, |p| &p.runtime);
            let rt = weft::server::runtime(process.scheduler, process.workers(workers))?;
            if let Some(bootstrap) = bootstrap {
                return rt.block_on(async {
                    let (parsed, source) = weft::xds::start(&bootstrap, config.as_deref()).await?;
                    weft::server::run(parsed, ConfigSource::Provided(source), ready_file.as_deref()).await
                });
            }
            let (Some(parsed), Some(config)) = (parsed, config) else {
                anyhow::bail!("weft run needs --config or --xds-bootstrap");
            };
            rt.block_on(weft::server::run(
                parsed,
                ConfigSource::File(config),
                ready_file.as_deref(),
            ))
        }
        Command::Check {
            config: None,
            xds_bootstrap: Some(bootstrap),
        } => {
            let b = weft::xds::Bootstrap::load(&bootstrap)?;
            println!(
                "{}: OK (node {:?}, ADS {} at {}, {} field(s) ignored)",
                bootstrap.display(),
                b.node.id,
                match b.api {
                    weft::xds::bootstrap::ApiType::Sotw => "GRPC",
                    weft::xds::bootstrap::ApiType::Delta => "DELTA_GRPC",
                },
                b.server.endpoints.join(", "),
                b.ignored.len()
            );
            Ok(())
        }
        Command::Check { config, .. } => {
            let config = config.ok_or_else(|| anyhow::anyhow!("weft check needs --config or --xds-bootstrap"))?;
            let parsed = Config::load(&config)?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
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
        Command::Plugin { command } => plugin(command),
        Command::Sidecar { command } => sidecar(command),
        Command::Demo { listen, admin, plugins } => {
            let runtime = weft::config::ProcessConfig::default();
            let rt = weft::server::runtime(runtime.scheduler, runtime.workers(workers))?;
            rt.block_on(async {
                let upstream = weft::demo::start_echo_upstream().await?;
                let text = weft::demo::config_text(listen, admin, upstream, &plugins);
                let origin = "<embedded demo config>".to_owned();
                let parsed = Config::parse(&origin, &text)?;
                println!(
                    "weft demo: proxying http://{listen}/ to a built-in echo upstream ({upstream}) through the hello filter\n\
                     try:  curl -i http://{listen}/hello\n      curl -i http://{listen}/private   (the filter answers 403)\n      curl http://{admin}/metrics"
                );
                weft::server::run(parsed, ConfigSource::Embedded { origin, text }, None).await
            })
        }
    }
}

/// Some test kit cases failed (the report says which): exit 1 without another message.
#[derive(Debug)]
struct CasesFailed;

impl std::fmt::Display for CasesFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("some cases failed")
    }
}

impl std::error::Error for CasesFailed {}

fn sidecar(command: SidecarCommand) -> anyhow::Result<()> {
    let SidecarCommand::Rules {
        inbound_port,
        outbound_port,
        inbound_mode,
        proxy_uid,
        mark,
        tproxy_mark,
        exclude_ports,
        exclude_inbound_ports,
        include_cidrs,
        apply,
        remove,
    } = command;
    if remove {
        weft::sidecar::remove()?;
        println!("removed table inet {}", weft::sidecar::TABLE);
        return Ok(());
    }
    let rules = weft::sidecar::Rules {
        inbound_port,
        outbound_port,
        inbound_mode: match inbound_mode {
            Mode::Redirect => weft::config::Transparent::Redirect,
            Mode::Tproxy => weft::config::Transparent::Tproxy,
        },
        proxy_uid,
        mark,
        tproxy_mark,
        exclude_ports,
        exclude_inbound_ports,
        include_cidrs,
    };
    rules.check().map_err(anyhow::Error::msg)?;
    print!("{}", rules.nft());
    for route in rules.routes() {
        println!("# and: ip {}", route.join(" "));
    }
    if apply {
        weft::sidecar::apply(&rules)?;
        eprintln!("applied table inet {}", weft::sidecar::TABLE);
    }
    Ok(())
}

fn plugin(command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::New {
            name,
            lang,
            dir,
            sdk_path,
            sdk_git,
        } => {
            let sdk = match (sdk_path, sdk_git) {
                (Some(path), _) => Sdk::from_path(&path)?,
                (None, Some(url)) => Sdk::Git(url),
                (None, None) => Sdk::from_build_checkout().ok_or_else(|| {
                    anyhow::anyhow!(
                        "weft-sdk is not on crates.io and this weft was not built from a checkout that is still here: \
                         pass --sdk-path <weft checkout> or --sdk-git <weft repository URL>"
                    )
                })?,
            };
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            weft::plugin::new::write(&name, lang, &dir, &sdk)?;
            println!(
                "wrote {dir}/ (SDK: {sdk})\nnext:  cd {dir} && ./build       # builds and checks CASES.toml\n       weft run --config weft.toml   # serves it; ./build again swaps it in",
                dir = dir.display()
            );
            Ok(())
        }
        PluginCommand::Test { wasm, cases } => {
            let report = weft::plugin::test_kit::run_cases(&wasm, &cases)?;
            println!("{report}");
            if report.passed() {
                Ok(())
            } else {
                Err(CasesFailed.into())
            }
        }
    }
}
