//! Every config the documentation shows is checked by the real binary: each fenced
//! ```toml block of `README.md` and `docs/*.md` goes through `weft check --config`, so a
//! renamed key or a changed default cannot leave the docs silently wrong.
//!
//! How a block is checked is said by the words after `toml` in its info string:
//!
//! - ` ```toml ` — a whole config: `weft check` must accept it as it is.
//! - ` ```toml fragment ` — part of a config: the test appends one cleartext
//!   `[[listeners]]` when the block has none (a line reading `[[listeners]]`), then
//!   `weft check` must accept it. Everything else the block uses (clusters, filters) must
//!   be in the block. Appending keeps `weft check`'s line numbers those of the block.
//! - ` ```toml invalid ` (or ` ```toml fragment invalid `) — a config shown for its
//!   error: `weft check` must refuse it. When the next fenced block starts with
//!   `error: weft.toml:`, that first line is what `weft check` must say.
//! - ` ```toml cases ` — not a config but a test kit `CASES.toml` (docs/plugin-kit.md)
//!   for `examples/hello-filter`: `weft plugin test hello_filter.wasm` must pass it.
//!
//! Any other word after `toml` fails the test, and so does a fence with no info string
//! whose text looks like a config (a line starting `[name]` or `[[name]]`): every config
//! in the docs is checked or the test says which one is not.
//!
//! Files a block names:
//! - `wasm = "<dir>/NAME.wasm"` loads `NAME.wasm` as `cargo plugins` built it
//!   (`target/wasm/wasm32-wasip2/release/`). `my_filter.wasm`, the filter a newcomer makes
//!   by copying `examples/hello-filter`, is checked with `hello_filter.wasm`.
//!   `hello_filter_py.wasm` and `hello_filter_js.wasm` are the Python and JavaScript
//!   examples, built by their SDKs' build scripts (`weft_conformance::polyglot`).
//! - `certs/NAME.pem` is made by `weft cert`: `*-key.pem` is the server key, a name ending
//!   in `ca.pem` the CA, any other `.pem` the server certificate.
//!
//! A failure names the file and the line where the block starts.

use std::path::{Path, PathBuf};
use std::process::Command;

use weft_conformance::polyglot::Lang;
use weft_conformance::{plugins, weft_bin};

/// A fenced block of a Markdown file.
struct Block {
    /// `README.md:42`: where the opening fence is.
    at: String,
    /// The info string after the opening fence.
    info: String,
    text: String,
}

/// The fenced blocks of a Markdown file, with the line of each opening fence.
fn fenced_blocks(file: &str, markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String, String, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            None => {
                if let Some(rest) = trimmed.strip_prefix("```") {
                    let fence = "`".repeat(3 + rest.chars().take_while(|c| *c == '`').count());
                    let info = rest.trim_start_matches('`').trim().to_owned();
                    open = Some((i + 1, fence, info, String::new()));
                }
            }
            Some((start, fence, info, text)) => {
                if trimmed.starts_with(fence.as_str()) && trimmed.trim_start_matches('`').trim().is_empty() {
                    blocks.push(Block {
                        at: format!("{file}:{start}"),
                        info: std::mem::take(info),
                        text: std::mem::take(text),
                    });
                    open = None;
                } else {
                    text.push_str(line);
                    text.push('\n');
                }
            }
        }
    }
    if let Some((start, ..)) = open {
        blocks.push(Block {
            at: format!("{file}:{start}"),
            info: "(unclosed fence)".to_owned(),
            text: String::new(),
        });
    }
    blocks
}

/// What the test does with a ```toml block.
#[derive(Debug, Clone, Copy)]
struct Kind {
    fragment: bool,
    invalid: bool,
    cases: bool,
}

fn classify(info: &str) -> Result<Option<Kind>, String> {
    let mut words = info.split_whitespace();
    match words.next() {
        Some(first) if first.eq_ignore_ascii_case("toml") => {}
        _ => return Ok(None),
    }
    let mut kind = Kind {
        fragment: false,
        invalid: false,
        cases: false,
    };
    for word in words {
        match word {
            "fragment" if !kind.fragment => kind.fragment = true,
            "invalid" if !kind.invalid => kind.invalid = true,
            "cases" if !kind.cases => kind.cases = true,
            other => {
                return Err(format!(
                    "unknown word {other:?} in ```{info}: a toml block is ```toml, ```toml fragment, \
                     ```toml invalid, ```toml fragment invalid or ```toml cases (see conformance/tests/conformance/docs.rs)"
                ));
            }
        }
    }
    Ok(Some(kind))
}

/// An unlabelled block that holds a config (a table header line) would escape the check.
fn looks_like_config(text: &str) -> bool {
    text.lines().any(|line| {
        let line = line.trim();
        let name = line.trim_start_matches('[').trim_end_matches(']');
        line.starts_with('[')
            && line.ends_with(']')
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    })
}

/// Rewrites `wasm = "…/NAME.wasm"` to the built plugin, and makes the `certs/*.pem` the
/// block names. Returns the config text to check.
fn materialise(text: &str, dir: &Path, certs: &Path, wasm_dir: &Path) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim_start();
        if let Some(value) = trimmed.strip_prefix("wasm").map(str::trim_start)
            && let Some(value) = value.strip_prefix('=').map(str::trim_start)
            && let Some(value) = value.strip_prefix('"')
            && let Some(end) = value.find('"')
        {
            let path = &value[..end];
            let name = Path::new(path)
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| format!("wasm = {path:?} names no file"))?;
            let name = if name == "my_filter.wasm" {
                "hello_filter.wasm"
            } else {
                name
            };
            let built = match name {
                "hello_filter_py.wasm" => Lang::Python.hello(),
                "hello_filter_js.wasm" => Lang::Js.hello(),
                name => wasm_dir.join(name),
            };
            if !built.exists() {
                return Err(format!(
                    "wasm = {path:?}: no plugin {name} in {} (`cargo plugins` builds them)",
                    wasm_dir.display()
                ));
            }
            let indent = &line[..line.len() - trimmed.len()];
            let rest = &value[end + 1..];
            out.push_str(&format!("{indent}wasm = {:?}{rest}\n", built.display().to_string()));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    // Certificates: every `certs/NAME.pem` mentioned.
    let mut rest = text;
    while let Some(at) = rest.find("certs/") {
        let after = &rest[at + "certs/".len()..];
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            .unwrap_or(after.len());
        let name = &after[..len];
        rest = &after[len..];
        if !name.ends_with(".pem") {
            continue;
        }
        let source = if name.ends_with("-key.pem") {
            "server-key.pem"
        } else if name.trim_end_matches(".pem").ends_with("ca") {
            "ca.pem"
        } else {
            "server.pem"
        };
        std::fs::create_dir_all(dir.join("certs")).map_err(|e| e.to_string())?;
        std::fs::copy(certs.join(source), dir.join("certs").join(name)).map_err(|e| format!("certs/{name}: {e}"))?;
    }
    Ok(out)
}

/// The first line of the fenced block after `index`, when it is `weft check`'s error.
fn expected_error(blocks: &[Block], index: usize) -> Option<String> {
    let next = blocks.get(index + 1)?;
    let first = next.text.lines().next()?;
    first
        .strip_prefix("error: weft.toml:")
        .map(|message| format!("weft.toml:{message}"))
}

/// Runs a ```toml cases block through `weft plugin test` against the example filter.
fn check_cases(block: &Block, wasm_dir: &Path) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let cases = dir.path().join("CASES.toml");
    std::fs::write(&cases, &block.text).map_err(|e| e.to_string())?;
    let out = Command::new(weft_bin())
        .args(["plugin", "test"])
        .arg(wasm_dir.join("hello_filter.wasm"))
        .arg(&cases)
        .output()
        .map_err(|e| format!("cannot run weft plugin test: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "weft plugin test hello_filter.wasm failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn check_block(blocks: &[Block], index: usize, kind: Kind, certs: &Path, wasm_dir: &Path) -> Result<(), String> {
    let block = &blocks[index];
    if kind.cases {
        return check_cases(block, wasm_dir);
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut text = materialise(&block.text, dir.path(), certs, wasm_dir)?;
    // Raw text, not the `Config` builder: the block as the docs show it is the subject.
    if kind.fragment && !block.text.lines().any(|l| l.trim() == "[[listeners]]") {
        text.push_str(
            "\n# added by conformance/tests/conformance/docs.rs\n[[listeners]]\nname = \"docs\"\naddress = \"127.0.0.1:8080\"\n",
        );
    }
    let config = dir.path().join("weft.toml");
    std::fs::write(&config, &text).map_err(|e| e.to_string())?;
    let out = Command::new(weft_bin())
        .arg("check")
        .arg("--config")
        .arg(&config)
        .output()
        .map_err(|e| format!("cannot run weft check: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match (kind.invalid, out.status.success()) {
        (false, true) => Ok(()),
        (false, false) => Err(format!(
            "weft check refused it (its line N is line N of the block's text):\n{said}"
        )),
        (true, true) => Err(format!("marked invalid, but weft check accepted it:\n{said}")),
        (true, false) => match expected_error(blocks, index) {
            Some(expected) if !said.contains(&expected) => Err(format!(
                "weft check refused it, but not with the error the docs show next ({expected}):\n{said}"
            )),
            _ => Ok(()),
        },
    }
}

fn doc_files(repo: &Path) -> Vec<PathBuf> {
    let mut files = vec![repo.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo.join("docs"))
        .expect("docs/ exists")
        .map(|e| e.expect("readable docs/").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

#[test]
fn every_config_in_the_docs_is_checked_by_weft_check() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root");
    let wasm_dir = Path::new(plugins::HELLO_FILTER).parent().expect("plugin dir");
    let scratch = tempfile::tempdir().expect("tempdir");
    let certs = scratch.path().join("certs");
    let status = Command::new(weft_bin())
        .args(["cert", "--out"])
        .arg(&certs)
        .status()
        .expect("weft cert");
    assert!(status.success(), "weft cert failed");

    let mut checked = 0;
    let mut failures = Vec::new();
    for file in doc_files(repo) {
        let name = file.strip_prefix(repo).expect("in repo").display().to_string();
        let markdown = std::fs::read_to_string(&file).expect("readable doc");
        let blocks = fenced_blocks(&name, &markdown);
        for (index, block) in blocks.iter().enumerate() {
            match classify(&block.info) {
                Err(problem) => failures.push(format!("{}: {problem}", block.at)),
                Ok(None) if block.info.is_empty() && looks_like_config(&block.text) => failures.push(format!(
                    "{}: a fence without an info string holds what looks like a config; \
                     label it ```toml (or fragment / invalid) so it is checked",
                    block.at
                )),
                Ok(None) => {}
                Ok(Some(kind)) => {
                    checked += 1;
                    if let Err(problem) = check_block(&blocks, index, kind, &certs, wasm_dir) {
                        failures.push(format!("{} (```{}): {problem}", block.at, block.info));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} doc configs failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(checked > 0, "no ```toml block found: is the convention still used?");
}

#[test]
fn the_block_convention_is_what_the_docs_say() {
    let blocks = fenced_blocks(
        "x.md",
        "text\n```toml fragment\n[[routes]]\n```\n\n````md\n```\n````\n```\n[admin]\n```\n",
    );
    assert_eq!(blocks.len(), 3);
    assert_eq!(
        (blocks[0].at.as_str(), blocks[0].info.as_str()),
        ("x.md:2", "toml fragment")
    );
    assert_eq!(blocks[1].text, "```\n");
    assert!(looks_like_config(&blocks[2].text));
    assert!(!looks_like_config("error: weft.toml:3:1: x\n  |\n3 | [x]\n"));
    assert!(matches!(
        classify("toml fragment invalid"),
        Ok(Some(Kind {
            fragment: true,
            invalid: true,
            cases: false,
        }))
    ));
    assert!(classify("toml fragmnet").is_err());
    assert!(matches!(classify("sh"), Ok(None)));
}
