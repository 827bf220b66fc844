//! `weft plugin new NAME --lang LANG`: writes a filter project that builds with one
//! command (`./build`) and checks itself against its `CASES.toml`. The templates are
//! the files under `proxy/templates/<lang>/`, embedded in the binary; a language is one
//! more directory and one more entry in [`templates`]. `{{name}}`, `{{crate}}`,
//! `{{sdk}}` and `{{weft}}` (this binary, for scripts when `weft` is not on the PATH) in
//! them are filled in.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The languages a filter can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// One file of a template: its path in the project, its text, whether it is executable.
struct TemplateFile {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

macro_rules! template {
    ($lang:literal: $($path:literal $(as $exec:ident)?),* $(,)?) => {
        &[$(TemplateFile {
            path: $path,
            text: include_str!(concat!("../../templates/", $lang, "/", $path)),
            executable: template!(@exec $($exec)?),
        }),*]
    };
    (@exec executable) => { true };
    (@exec) => { false };
}

/// The files of `lang`'s template, or why there is none yet.
fn templates(lang: Lang) -> anyhow::Result<&'static [TemplateFile]> {
    match lang {
        Lang::Rust => Ok(template!("rust":
            "Cargo.toml", "src/lib.rs", "build" as executable, "weft.toml", "CASES.toml", "README.md", "gitignore",
        )),
        Lang::Python | Lang::Js => bail!(
            "--lang {}: not yet. Python and JavaScript filters are being built (issue 13); \
             for now `weft plugin new` writes Rust filters only",
            if lang == Lang::Python { "python" } else { "js" }
        ),
    }
}

/// Where the generated project gets `weft-sdk` (not published on crates.io).
#[derive(Debug, Clone)]
pub enum Sdk {
    /// A Weft checkout's `sdk/` folder.
    Path(PathBuf),
    /// A git repository holding Weft (the SDK reads `wit/` beside it).
    Git(String),
}

impl Sdk {
    /// The SDK of the checkout this binary was built from, when it is still there.
    pub fn from_build_checkout() -> Option<Sdk> {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
        let sdk = std::fs::canonicalize(sdk).ok()?;
        sdk.join("Cargo.toml").is_file().then_some(Sdk::Path(sdk))
    }

    /// The dependency's value in `Cargo.toml`.
    fn dependency(&self) -> String {
        let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
        match self {
            Sdk::Path(path) => format!("{{ path = {} }}", quote(&path.display().to_string())),
            Sdk::Git(url) => format!("{{ git = {} }}", quote(url)),
        }
    }
}

/// Checks that `name` makes a crate (and file) name: lower-case letters, digits, `-`
/// and `_`, starting with a letter.
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64;
    if !ok {
        bail!("{name:?} cannot name a filter: use lower-case letters, digits, '-' and '_', starting with a letter");
    }
    Ok(())
}

/// Writes the project for filter `name` into `dir` (which must not exist yet) and
/// returns the files written.
pub fn write(name: &str, lang: Lang, dir: &Path, sdk: &Sdk) -> anyhow::Result<Vec<PathBuf>> {
    check_name(name)?;
    let files = templates(lang)?;
    if dir.exists() {
        bail!("{} already exists; pick another name or --dir", dir.display());
    }
    let crate_name = name.replace('-', "_");
    let sdk = sdk.dependency();
    let weft = std::env::current_exe().map_or_else(|_| "weft".to_owned(), |p| shell_quote(&p.display().to_string()));
    let mut written = Vec::with_capacity(files.len());
    for file in files {
        let target = dir.join(match file.path {
            // Kept without its dot in the repository so it does not apply there.
            "gitignore" => ".gitignore",
            other => other,
        });
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let text = file
            .text
            .replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", &sdk)
            .replace("{{weft}}", &weft);
        std::fs::write(&target, text).with_context(|| format!("cannot write {}", target.display()))?;
        if file.executable {
            make_executable(&target)?;
        }
        written.push(target);
    }
    Ok(written)
}

/// `text` as one word for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_crates_are_refused() {
        for bad in ["", "My-Filter", "1filter", "my filter", "../x", "a/b", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for good in ["my-filter", "auth_2", "x"] {
            check_name(good).expect(good);
        }
    }

    #[test]
    fn the_rust_template_is_filled_in_and_its_build_script_is_executable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let project = dir.path().join("my-filter");
        let sdk = Sdk::Path(PathBuf::from("/opt/weft/sdk"));
        let files = write("my-filter", Lang::Rust, &project, &sdk).expect("written");
        assert!(files.iter().any(|f| f.ends_with(".gitignore")));
        let manifest = std::fs::read_to_string(project.join("Cargo.toml")).expect("Cargo.toml");
        assert!(manifest.contains("name = \"my-filter\""), "{manifest}");
        assert!(
            manifest.contains("weft-sdk = { path = \"/opt/weft/sdk\" }"),
            "{manifest}"
        );
        for file in &files {
            let text = std::fs::read_to_string(file).expect("text");
            assert!(!text.contains("{{"), "{} keeps a placeholder", file.display());
        }
        let build = std::fs::read_to_string(project.join("build")).expect("build");
        assert!(build.contains("my_filter.wasm"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(project.join("build"))
                .expect("meta")
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0o111);
        }
        let again = write("my-filter", Lang::Rust, &project, &sdk).expect_err("exists");
        assert!(again.to_string().contains("already exists"), "{again}");
    }

    #[test]
    fn languages_without_a_template_say_not_yet() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sdk = Sdk::Git("https://example.invalid/weft".to_owned());
        for lang in [Lang::Python, Lang::Js] {
            let e = write("f", lang, &dir.path().join("f"), &sdk).expect_err("no template");
            assert!(e.to_string().contains("not yet"), "{e}");
        }
        assert!(!dir.path().join("f").exists(), "nothing is written");
    }

    #[test]
    fn a_path_is_one_shell_word() {
        assert_eq!(shell_quote("/a b/it's"), "'/a b/it'\\''s'");
    }

    #[test]
    fn a_git_sdk_is_a_git_dependency() {
        let sdk = Sdk::Git("https://example.invalid/weft.git".to_owned());
        assert_eq!(sdk.dependency(), "{ git = \"https://example.invalid/weft.git\" }");
    }
}
