//! The filter author's tools through the real binary: `weft plugin test` runs first-party
//! filters against the cases in `tests/conformance/plugin_kit/` and catches a wrong decision and a
//! wrong header change with a diff; `weft plugin new` writes a Rust project that builds
//! against this checkout's SDK, passes its own cases, and is hot-loaded into a running
//! proxy — the README's three commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use weft_conformance::*;

fn cases(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/conformance/plugin_kit")
        .join(name)
}

/// `weft plugin test WASM CASES`: whether it passed, and stdout + stderr.
fn plugin_test(wasm: &str, cases: &Path) -> (bool, String) {
    let out = Command::new(weft_bin())
        .args(["plugin", "test", wasm])
        .arg(cases)
        .output()
        .expect("run weft plugin test");
    (out.status.success(), text(&out))
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// A cases file written for one test.
fn cases_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("CASES.toml");
    std::fs::write(&path, text).expect("write cases");
    (dir, path)
}

#[test]
fn first_party_filters_pass_their_cases() {
    for (wasm, file, count) in [
        (plugins::HELLO_FILTER, "hello.toml", 3),
        (plugins::API_KEY, "api_key.toml", 4),
        (plugins::EXT_AUTHZ, "ext_authz.toml", 3),
        (plugins::CAPABILITIES, "capabilities.toml", 7),
    ] {
        let (ok, out) = plugin_test(wasm, &cases(file));
        assert!(ok, "{file}:\n{out}");
        assert!(
            out.contains(&format!("{count} cases: {count} passed, 0 failed")),
            "{file}:\n{out}"
        );
    }
}

#[test]
fn a_wrong_decision_fails_with_a_diff_naming_it() {
    let (_dir, path) = cases_file(
        r#"[filter]
config = { deny_prefix = "/private" }

[[case]]
name = "lets /private through"
request = { path = "/private/x" }
expect = { decision = "continue" }

[[case]]
name = "still answers /public"
request = { path = "/public" }
expect = { decision = "continue" }
"#,
    );
    let (ok, out) = plugin_test(plugins::HELLO_FILTER, &path);
    assert!(!ok, "a wrong decision must fail:\n{out}");
    assert!(out.contains("FAIL  lets /private through"), "{out}");
    assert!(out.contains("CASES.toml:4)"), "the case's line:\n{out}");
    assert!(
        out.contains("request: decision\n        - expected: continue\n        + actual:   respond 403 with body \"forbidden\\n\""),
        "{out}"
    );
    assert!(out.contains("ok    still answers /public"), "{out}");
    assert!(out.contains("2 cases: 1 passed, 1 failed"), "{out}");
}

#[test]
fn a_wrong_header_change_fails_with_a_diff_naming_the_header() {
    let (_dir, path) = cases_file(
        r#"[filter]
config = { header_name = "x-hello", header_value = "from weft" }

[[case]]
name = "tags the response"
response = { status = 200 }
expect_response = { decision = "continue", headers = { x-hello = "from somewhere else" }, removed_headers = ["x-hello"] }
"#,
    );
    let (ok, out) = plugin_test(plugins::HELLO_FILTER, &path);
    assert!(!ok, "{out}");
    assert!(
        out.contains(
            "response: header x-hello\n        - expected: \"from somewhere else\"\n        + actual:   \"from weft\""
        ),
        "{out}"
    );
    assert!(
        out.contains("response: header x-hello\n        - expected: (absent)\n        + actual:   \"from weft\""),
        "{out}"
    );

    // And on the request side: api-key removes the key and sets the identity.
    let (_dir, path) = cases_file(
        r#"[filter]
config = { keys = [{ id = "team-a", sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" }], remove_key = false }

[[case]]
name = "the key is removed"
request = { headers = { x-api-key = "test" } }
expect = { decision = "continue", headers = { x-api-key-id = "team-b" }, removed_headers = ["x-api-key"] }
"#,
    );
    let (ok, out) = plugin_test(plugins::API_KEY, &path);
    assert!(!ok, "{out}");
    assert!(
        out.contains("request: header x-api-key-id\n        - expected: \"team-b\"\n        + actual:   \"team-a\""),
        "{out}"
    );
    assert!(
        out.contains("request: header x-api-key\n        - expected: (absent)\n        + actual:   \"test\""),
        "{out}"
    );
}

#[test]
fn a_bad_cases_file_is_refused_with_its_line() {
    let (_dir, path) = cases_file(
        r#"[[case]]
name = "typo"
request = { path = "/" }
expect = { decision = "continue", header = { a = "b" } }
"#,
    );
    let (ok, out) = plugin_test(plugins::HELLO_FILTER, &path);
    assert!(!ok, "{out}");
    let shown = out.replace(&path.display().to_string(), "CASES.toml");
    assert!(shown.contains("error: CASES.toml:4:"), "{shown}");
    assert!(shown.contains("unknown field `header`"), "{shown}");

    let (_dir, path) = cases_file("[[case]]\nname = \"no expectation\"\nrequest = { path = \"/\" }\n");
    let (ok, out) = plugin_test(plugins::HELLO_FILTER, &path);
    assert!(
        !ok && out.contains(":1:1: case \"no expectation\": expects nothing"),
        "{out}"
    );

    let (ok, out) = plugin_test("/nonexistent/filter.wasm", &cases("hello.toml"));
    assert!(
        !ok && out.contains("cannot read plugin /nonexistent/filter.wasm"),
        "{out}"
    );
}

/// A case checks the metrics and log lines its filter emitted, through the host code the
/// proxy runs: counters (what the case added, each case starting from none), gauges,
/// histograms, labelled series in any label order, and every log line in order, level
/// and text. A wrong value, a missing series, a missing or extra line fail with a diff.
#[test]
fn a_case_checks_the_metrics_and_log_lines_its_filter_emitted() {
    let passing = r#"[[case]]
name = "emits"
request = { headers = { x-cap-metric = "hits", x-cap-metric-labelled = "ops;op=GetUser;kind=query", x-cap-log = "hello\\nforged line" } }
expect_metrics = [
  { counter = "hits", value = 1 },
  { gauge = "hits", value = 7 },
  { histogram = "hits", count = 1, sum = 0.5 },
  { counter = "ops", labels = { kind = "query", op = "GetUser" }, value = 1 },
  { counter = "never", value = 0 },
]
expect_logs = [{ level = "info", message = "hello\\nforged line" }]

[[case]]
name = "the next case starts from no metrics and no lines"
request = { headers = { x-cap-log-lines = "2" } }
expect_metrics = [{ counter = "hits", value = 0 }]
expect_logs = [{ level = "info", contains = "line 0" }, { message = "line 1 of 2" }]

[[case]]
name = "silence is checked too"
expect_logs = []
"#;
    let (_dir, path) = cases_file(passing);
    let (ok, out) = plugin_test(plugins::CAPABILITIES, &path);
    assert!(ok, "{out}");
    assert!(out.contains("3 cases: 3 passed, 0 failed"), "{out}");

    let failing = r#"[[case]]
name = "wrong"
request = { headers = { x-cap-metric = "hits", x-cap-metric-labelled = "ops;op=GetUser", x-cap-log-lines = "2" } }
expect_metrics = [
  { counter = "hits", value = 2 },
  { gauge = "hits", value = 7 },
  { histogram = "hits", sum = 1.5 },
  { counter = "ops", labels = { op = "Other" }, value = 1 },
]
expect_logs = [{ level = "warn", contains = "line 0" }]
"#;
    let (_dir, path) = cases_file(failing);
    let (ok, out) = plugin_test(plugins::CAPABILITIES, &path);
    assert!(!ok, "{out}");
    assert!(out.contains("1 case: 0 passed, 1 failed"), "{out}");
    for diff in [
        "metric: counter hits\n        - expected: 2\n        + actual:   1",
        "metric: histogram hits\n        - expected: sum 1.5\n        + actual:   count 1, sum 0.5",
        "metric: counter ops{op=\"Other\"}\n        - expected: 1\n        + actual:   (never emitted)",
        "log line 1\n        - expected: warn containing \"line 0\"\n        + actual:   info \"line 0 of 2\"",
        "log line 2\n        - expected: (no such line)\n        + actual:   info \"line 1 of 2\"",
    ] {
        assert!(out.contains(diff), "{diff}\nin:\n{out}");
    }
    assert!(
        !out.contains("metric: gauge"),
        "the right gauge is not reported:\n{out}"
    );

    // An expectation that cannot be compared is refused with its line.
    for (bad, says) in [
        (
            "expect_metrics = [{ counter = \"a\", gauge = \"a\", value = 1 }]",
            "exactly one of",
        ),
        ("expect_metrics = [{ counter = \"a\" }]", "give the counter's `value`"),
        ("expect_metrics = [{ histogram = \"a\", value = 1 }]", "not `value`"),
        (
            "expect_logs = [{ level = \"loud\", contains = \"x\" }]",
            "level \"loud\"",
        ),
        (
            "expect_logs = [{ level = \"info\" }]",
            "`message` (all of it) or `contains`",
        ),
    ] {
        let (_dir, path) = cases_file(&format!("[[case]]\nname = \"bad\"\n{bad}\n"));
        let (ok, out) = plugin_test(plugins::CAPABILITIES, &path);
        assert!(!ok, "{bad}: {out}");
        assert!(out.contains(says) && out.contains("CASES.toml:"), "{bad}: {out}");
    }
}

/// A filter that misbehaves is contained by the same limits as in the proxy: the run
/// ends, the case says what happened, and the next case gets a healthy instance.
#[test]
fn a_misbehaving_filter_is_contained_case_by_case() {
    let (_dir, path) = cases_file(
        r#"[filter]
limits = { cpu = "50ms" }

[[case]]
name = "spins"
request = { path = "/loop" }
expect = { decision = "error", error = "cpu" }

[[case]]
name = "the next case runs"
request = { path = "/fine" }
expect = { decision = "continue" }
"#,
    );
    let started = Instant::now();
    let (ok, out) = plugin_test(plugins::INFINITE_LOOP, &path);
    assert!(ok, "{out}");
    assert!(started.elapsed() < Duration::from_secs(60), "the loop was stopped");

    let (_dir, path) = cases_file(
        r#"[[case]]
name = "traps"
request = { path = "/trap" }
expect = { decision = "continue" }
"#,
    );
    let (ok, out) = plugin_test(plugins::TRAP, &path);
    assert!(!ok, "{out}");
    assert!(out.contains("+ actual:   error (trap)"), "{out}");

    // A canned answer over the filter's body limit is refused as a real one is.
    let (_dir, path) = cases_file(&format!(
        r#"[filter]
limits = {{ body = 1024 }}

[[case]]
name = "too large"
request = {{ headers = {{ x-cap-callout = "big" }} }}
callouts = {{ big = {{ status = 200, body = "{}" }} }}
expect = {{ decision = "respond", status = 502, body = "CalloutError::TooLarge" }}
"#,
        "x".repeat(2048)
    ));
    let (ok, out) = plugin_test(plugins::CAPABILITIES, &path);
    assert!(ok, "{out}");
}

/// A generated project's `weft.toml` keeps compiled plugins on disk (`[wasm] cache_dir`,
/// relative to the file and ignored by git), so a restart does not spend seconds compiling an
/// interpreter again before the listener opens: `weft check` on it fills the cache.
#[test]
fn plugin_new_configs_keep_compiled_plugins_across_restarts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let work = tempfile::tempdir().expect("tempdir");
    for (lang, toolchain) in [
        ("rust", None),
        ("python", Some("sdk-python/build.sh")),
        ("js", Some("sdk-js/build.sh")),
    ] {
        if toolchain.is_some_and(|t| !root.join(t).is_file()) {
            continue;
        }
        let name = format!("cached-{lang}");
        let out = Command::new(weft_bin())
            .args(["plugin", "new", &name, "--lang", lang, "--sdk-path"])
            .arg(root)
            .current_dir(work.path())
            .output()
            .expect("run weft plugin new");
        assert!(out.status.success(), "{}", text(&out));
        let project = work.path().join(&name);
        let config = std::fs::read_to_string(project.join("weft.toml")).expect("weft.toml");
        let cache_dir = config
            .lines()
            .skip_while(|l| l.trim() != "[wasm]")
            .find_map(|l| l.trim().strip_prefix("cache_dir = \""))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("{lang}: no [wasm] cache_dir in:\n{config}"));
        let ignored = std::fs::read_to_string(project.join(".gitignore")).expect(".gitignore");
        assert!(
            ignored
                .lines()
                .any(|l| l.trim_matches('/') == cache_dir.trim_matches('/')),
            "{lang}: {cache_dir} not in .gitignore:\n{ignored}"
        );
        // Any component stands in for the project's own build.
        let wasm = format!("{}.wasm", name.replace('-', "_"));
        std::fs::copy(plugins::HELLO_FILTER, project.join(&wasm)).expect("copy the hello filter");
        // As the project's README says: from its folder, `--config weft.toml`.
        let out = Command::new(weft_bin())
            .args(["check", "--config", "weft.toml"])
            .current_dir(&project)
            .output()
            .expect("run weft check");
        assert!(out.status.success(), "{lang}: {}", text(&out));
        let cached = walk(&project.join(cache_dir));
        assert!(cached > 0, "{lang}: nothing compiled into {cache_dir}");
    }
}

/// The number of files under `dir`, at any depth (0 if it does not exist).
fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .map(|e| if e.path().is_dir() { walk(&e.path()) } else { 1 })
            .sum()
    })
}

/// Python and JavaScript projects build with the checkout's `sdk-python/` and `sdk-js/`
/// (their first use installs componentize-py / componentize-js) and pass the same cases as
/// the Rust one; in a checkout without those layers, `--lang` says "not yet".
#[test]
fn plugin_new_python_and_js_projects_pass_their_cases_or_say_not_yet() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let work = tempfile::tempdir().expect("tempdir");
    for (lang, toolchain) in [("python", "sdk-python/build.sh"), ("js", "sdk-js/build.sh")] {
        let name = format!("my-{lang}-filter");
        let out = Command::new(weft_bin())
            .args(["plugin", "new", &name, "--lang", lang, "--sdk-path"])
            .arg(root)
            .current_dir(work.path())
            .output()
            .expect("run weft plugin new");
        let project = work.path().join(&name);
        if !root.join(toolchain).is_file() {
            assert!(!out.status.success(), "{}", text(&out));
            assert!(text(&out).contains("not yet"), "{}", text(&out));
            assert!(!project.exists());
            continue;
        }
        assert!(out.status.success(), "{}", text(&out));
        let bin_dir = weft_bin().parent().expect("bin dir").to_path_buf();
        let path = std::env::join_paths(
            std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
        )
        .expect("PATH");
        let out = Command::new(project.join("build"))
            .current_dir(&project)
            .env("PATH", &path)
            .output()
            .expect("run ./build");
        assert!(out.status.success(), "{lang}: ./build failed:\n{}", text(&out));
        assert!(
            text(&out).contains("3 cases: 3 passed, 0 failed"),
            "{lang}:\n{}",
            text(&out)
        );
    }
}

/// The README's first-filter path: `weft plugin new`, `./build` (which runs the project's
/// own cases), `weft run --config weft.toml`; then a change rebuilt with `./build` is
/// swapped into the running proxy.
#[tokio::test(flavor = "multi_thread")]
async fn plugin_new_makes_a_rust_project_that_builds_tests_itself_and_hot_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let work = tempfile::tempdir().expect("tempdir");
    let out = Command::new(weft_bin())
        .args(["plugin", "new", "my-filter", "--sdk-path"])
        .arg(root.join("sdk"))
        .current_dir(work.path())
        .output()
        .expect("run weft plugin new");
    assert!(out.status.success(), "{}", text(&out));
    let project = work.path().join("my-filter");

    // The versions this checkout already uses (and has downloaded): the test builds
    // offline. A newcomer's first `./build` resolves them from crates.io instead.
    std::fs::copy(root.join("Cargo.lock"), project.join("Cargo.lock")).expect("lock file");
    let bin_dir = weft_bin().parent().expect("bin dir").to_path_buf();
    let path = std::env::join_paths(
        std::iter::once(bin_dir).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .expect("PATH");
    let build = |args: &[&str]| {
        Command::new(project.join("build"))
            .args(args)
            .current_dir(&project)
            .env("PATH", &path)
            // One target dir for every run of this test: only the first build is slow.
            .env("CARGO_TARGET_DIR", root.join("target/plugin-new"))
            .env("CARGO_NET_OFFLINE", "true")
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .output()
            .expect("run ./build")
    };
    let out = build(&[]);
    assert!(out.status.success(), "./build failed:\n{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("3 cases: 3 passed, 0 failed"), "{shown}");
    assert!(project.join("my_filter.wasm").is_file());

    // `weft run --config weft.toml`, on free ports and in front of a test upstream.
    let upstream = Upstream::echo("app").await;
    let config = std::fs::read_to_string(project.join("weft.toml"))
        .expect("weft.toml")
        .replace("127.0.0.1:8080", "{listen}")
        .replace("127.0.0.1:9901", "{admin}")
        .replace("127.0.0.1:3000", &upstream.addr.to_string())
        .replace(
            "\"my_filter.wasm\"",
            &format!("{:?}", project.join("my_filter.wasm").display().to_string()),
        );
    let weft = Weft::start(&config).await;
    let denied = get(&weft.url("/private/x")).await;
    assert_eq!(denied.status, 403, "{}", weft.log());
    assert_eq!(denied.text(), "forbidden\n");
    let passed = get(&weft.url("/hello")).await;
    assert_eq!(passed.status, 200, "{}", weft.log());
    assert_eq!(passed.header("x-filtered-by"), Some("my-filter"));

    // Change the filter and rebuild while the proxy serves: the new version is swapped in.
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).expect("lib.rs");
    std::fs::write(&lib, source.replace(".body(\"forbidden\\n\")", ".body(\"go away\\n\")")).expect("edit lib.rs");
    let out = build(&["--no-test"]);
    assert!(out.status.success(), "rebuild failed:\n{}", text(&out));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = get(&weft.url("/private/x")).await;
        assert_eq!(reply.status, 403, "no request fails during the swap");
        if reply.text() == "go away\n" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rebuilt filter was not swapped in:\n{}",
            weft.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Its own cases now catch the change: `./build` fails with the diff.
    let out = build(&[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("reply: body\n        - expected: \"forbidden\\n\"\n        + actual:   \"go away\\n\""),
        "{}",
        text(&out)
    );
}

/// The same cases from a Rust test, through the library (docs/plugin-kit.md): the report
/// is data a test can assert on.
#[test]
fn the_cases_run_from_a_rust_test_through_the_library() {
    let report = weft::plugin::test_kit::run_cases(plugins::HELLO_FILTER, cases("hello.toml")).expect("cases run");
    assert!(report.passed(), "{report}");
    assert_eq!(report.cases.len(), 3);

    let (_dir, path) = cases_file(
        "[filter]\nconfig = { deny_prefix = \"/private\" }\n\n[[case]]\nname = \"wrong\"\nrequest = { path = \"/private\" }\nexpect = { decision = \"respond\", status = 404 }\n",
    );
    let report = weft::plugin::test_kit::run_cases(plugins::HELLO_FILTER, &path).expect("cases run");
    assert!(!report.passed());
    let mismatch = &report.cases[0].mismatches[0];
    assert_eq!(
        (
            mismatch.field.as_str(),
            mismatch.expected.as_str(),
            mismatch.actual.as_str()
        ),
        ("reply: status", "404", "403")
    );
}
