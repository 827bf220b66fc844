//! The command line a platform engineer uses: `weft check` explains a broken config,
//! `weft run` refuses to start on one, logs can be JSON.

use std::process::Command;

use weft_conformance::*;

/// Writes `config` to a temp file and runs `weft <command> --config <file>` to its end;
/// returns whether it succeeded, its stdout and its stderr, the temp path shown as `weft.toml`.
fn weft(command: &str, config: &str) -> (bool, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weft.toml");
    std::fs::write(&path, config).expect("write");
    let out = Command::new(weft_bin())
        .arg(command)
        .arg("--config")
        .arg(&path)
        .output()
        .expect("run weft");
    let shown = |bytes: &[u8]| String::from_utf8_lossy(bytes).replace(&path.display().to_string(), "weft.toml");
    (out.status.success(), shown(&out.stdout), shown(&out.stderr))
}

fn check(config: &str) -> (bool, String) {
    let (ok, stdout, stderr) = weft("check", config);
    (ok, stdout + &stderr)
}

// Raw text: what `weft check` and `weft run` say of a file a user wrote (its summary, the
// lines errors point at, a fixed address to find taken) is what these tests check.
const GOOD: &str = FILE_CONFIG;

#[test]
fn check_accepts_a_good_config_and_summarises_it() {
    let (ok, text) = check(GOOD);
    assert!(ok, "{text}");
    assert!(
        text.contains("weft.toml: OK (1 listener, 1 cluster, 0 filters, 1 route)"),
        "{text}"
    );
    let two = GOOD.replace(
        "[[routes]]",
        "[[clusters]]\nname = \"api\"\nendpoints = [\"127.0.0.1:3001\"]\n\n[[routes]]",
    );
    let (ok, text) = check(&two);
    assert!(ok, "{text}");
    assert!(
        text.contains("OK (1 listener, 2 clusters, 0 filters, 1 route)"),
        "{text}"
    );
}

#[test]
fn check_explains_an_unknown_cluster_with_its_location() {
    let (ok, text) = check(&GOOD.replace("cluster = \"web\"", "cluster = \"api\""));
    assert!(!ok);
    assert!(
        text.contains("weft.toml:11:11: unknown cluster \"api\" (defined: web)"),
        "{text}"
    );
    assert!(text.contains("11 | cluster = \"api\""), "{text}");
}

#[test]
fn check_explains_type_errors_and_unknown_fields() {
    let (ok, text) = check(&GOOD.replace("address = \"127.0.0.1:8080\"", "address = \"localhost\""));
    assert!(!ok);
    assert!(text.contains("weft.toml:3:"), "{text}");
    let (ok, text) = check(&GOOD.replace("[[routes]]", "[[routes]]\nretries = 3"));
    assert!(!ok);
    assert!(text.contains("unknown field `retries`"), "{text}");
}

#[test]
fn check_rejects_an_unresolvable_endpoint() {
    let (ok, text) = check(&GOOD.replace("127.0.0.1:3000", "no-such-host.invalid:80"));
    assert!(!ok);
    // Named with its line, its cluster and the resolver's own reason.
    assert!(
        text.contains("weft.toml:7:") && text.contains("cluster \"web\": cannot resolve \"no-such-host.invalid\""),
        "{text}"
    );
}

#[test]
fn check_reports_a_missing_file() {
    let out = Command::new(weft_bin())
        .args(["check", "--config", "/nonexistent/weft.toml"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the config file"));
}

#[test]
fn run_refuses_to_start_on_a_bad_config() {
    let (ok, _, stderr) = weft("run", &GOOD.replace("cluster = \"web\"", "cluster = \"nope\""));
    assert!(!ok);
    assert!(stderr.contains("unknown cluster \"nope\""), "{stderr}");
}

#[test]
fn run_reports_a_port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let (ok, _, stderr) = weft("run", &GOOD.replace("127.0.0.1:8080", &addr.to_string()));
    assert!(!ok);
    assert!(
        stderr.contains(&format!("listener \"main\" cannot bind {addr}")),
        "{stderr}"
    );
}

#[tokio::test]
async fn json_logs_on_request() {
    let up = Upstream::echo("a").await;
    let config = Config::new().proxy_to(&[up.addr]).to_string();
    let weft = Weft::start_with(&config, &["--log-format", "json"]).await;
    let log = weft.log();
    let first = log.lines().next().expect("a log line");
    let line: serde_json::Value = serde_json::from_str(first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "listening");
}

#[tokio::test]
async fn the_ready_file_names_every_bound_address_and_goes_at_exit() {
    let up = Upstream::echo("a").await;
    let config = Config::new()
        .proxy_to(&[up.addr])
        .another_listener("second", "")
        .to_string();
    let mut weft = Weft::start(&config).await;
    let (main, second) = (weft.listener("main"), weft.listener("second"));
    assert_ne!(main.port(), 0);
    assert_ne!(second.port(), 0);
    assert_ne!(main, second, "each port-0 listener has its own port");
    assert_eq!(main, weft.addr);
    // Each address is this proxy's: both listeners serve, and the admin API answers.
    for addr in [main, second] {
        let reply = get(&format!("http://{addr}/x")).await;
        assert_eq!(reply.status, 200, "{addr}");
        assert_eq!(reply.json()["upstream"], "a");
    }
    assert_eq!(weft.admin("GET", "/ready").await.0, 200);
    // The log names the bound addresses, not the configured port 0.
    let log = weft.log();
    assert!(log.contains(&second.to_string()), "{log}");

    let ready = weft.dir.path().join("ready.json");
    assert!(ready.exists());
    weft.terminate();
    assert!(weft.wait_exit(std::time::Duration::from_secs(20)).await);
    assert!(!ready.exists(), "removed at exit");
}

#[tokio::test]
async fn systemd_is_told_when_weft_is_ready_and_when_it_stops() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().expect("tempdir");
    let socket_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).expect("bind");
    notify
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .expect("timeout");
    let config_path = dir.path().join("weft.toml");
    std::fs::write(
        &config_path,
        fill(
            &Config::new()
                .proxy_to(&["127.0.0.1:9".parse().expect("addr")])
                .to_string(),
        ),
    )
    .expect("write");
    let mut child = Command::new(weft_bin())
        .args(["run", "--config"])
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start weft");
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("READY=1 within 60 s");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.contains("READY=1\n"), "{ready}");
    assert!(ready.contains(&format!("MAINPID={}\n", child.id())), "{ready}");

    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1\n"));
    assert!(child.wait().expect("exit").success());
}

/// Colour codes only reach a terminal: a log written to a file or a pipe is plain text, and
/// `NO_COLOR` (any non-empty value, no-color.org) turns colour off on a terminal too.
#[tokio::test]
async fn logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    const ESC: char = '\u{1b}';
    // A file: the harness writes the log to one.
    let up = Upstream::echo("a").await;
    let config = Config::new().proxy_to(&[up.addr]).to_string();
    let weft = Weft::start(&config).await;
    let log = weft.log();
    assert!(log.contains("listening"), "{log}");
    assert!(!log.contains(ESC), "colour codes in a log file:\n{log:?}");

    // A pipe, and a terminal (a pseudo-terminal from util-linux's `script`): `weft check`
    // logs the filter it loads.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("weft.toml");
    std::fs::write(
        &path,
        format!(
            "{GOOD}\n[[filters]]\nname = \"hello\"\nwasm = \"{}\"\n",
            plugins::HELLO_FILTER
        ),
    )
    .expect("write");
    let out = Command::new(weft_bin())
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .expect("run weft check");
    let piped = String::from_utf8_lossy(&out.stderr);
    assert!(piped.contains("loaded wasm filter"), "{piped}");
    assert!(!piped.contains(ESC), "colour codes in a pipe:\n{piped:?}");

    let on_terminal = |no_color: Option<&str>| {
        // `script` runs its command through the shell: quoted (the paths hold no `'`).
        let command = format!("'{}' check --config '{}'", weft_bin().display(), path.display());
        let mut script = Command::new("script");
        script.args(["-qec", &command, "/dev/null"]).env_remove("NO_COLOR");
        if let Some(value) = no_color {
            script.env("NO_COLOR", value);
        }
        let out = script.output().expect("script (util-linux)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("loaded wasm filter"), "{text}");
        text
    };
    assert!(on_terminal(None).contains(ESC), "a terminal gets colour");
    assert!(!on_terminal(Some("1")).contains(ESC), "NO_COLOR=1 on a terminal");
    // An empty NO_COLOR does not count (no-color.org).
    assert!(on_terminal(Some("")).contains(ESC), "NO_COLOR= (empty) on a terminal");
}
