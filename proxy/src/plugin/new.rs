//! `weft plugin new NAME --lang LANG`: writes a filter project that builds with one
//! command (`./build`) and checks itself against its `CASES.toml`. The templates are the
//! files under `proxy/templates/<lang>/` and `proxy/templates/common/` (the test cases
//! and the proxy config every language shares), embedded in the binary; a language is
//! one more directory and one more entry in [`templates`]. In them `{{name}}`,
//! `{{crate}}`, `{{sdk}}` (the Rust SDK dependency), `{{checkout}}` (the Weft checkout,
//! whose `sdk-python/` and `sdk-js/` build the other languages) and `{{weft}}` (this
//! binary, for scripts when `weft` is not on the PATH) are filled in.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The languages a filter can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

impl Lang {
    fn as_str(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    /// The folder of a Weft checkout that builds this language's components.
    fn toolchain(self) -> Option<&'static str> {
        match self {
            Lang::Rust => None,
            Lang::Python => Some("sdk-python/build.sh"),
            Lang::Js => Some("sdk-js/build.sh"),
        }
    }
}

/// One file of a template: its path in the project, its text, whether it is executable.
struct TemplateFile {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

macro_rules! template {
    ($($dir:literal: $($path:literal $(as $exec:ident)?),*);* $(;)?) => {
        &[$($(TemplateFile {
            path: $path,
            text: include_str!(concat!("../../templates/", $dir, "/", $path)),
            executable: template!(@exec $($exec)?),
        }),*),*]
    };
    (@exec executable) => { true };
    (@exec) => { false };
}

/// The files of `lang`'s template.
fn templates(lang: Lang) -> &'static [TemplateFile] {
    match lang {
        Lang::Rust => template!(
            "rust": "Cargo.toml", "src/lib.rs", "build" as executable, "README.md";
            "common": "weft.toml", "CASES.toml", "gitignore";
        ),
        Lang::Python => template!(
            "python": "app.py", "build" as executable, "README.md";
            "common": "weft.toml", "CASES.toml", "gitignore";
        ),
        Lang::Js => template!(
            "js": "filter.js", "build" as executable, "README.md";
            "common": "weft.toml", "CASES.toml", "gitignore";
        ),
    }
}

/// Where the generated project gets the SDK. `weft-sdk` is not on crates.io, and the
/// Python and JavaScript layers are folders of the checkout too.
#[derive(Debug, Clone)]
pub enum Sdk {
    /// A Weft checkout (its root; the Rust SDK is its `sdk/`).
    Checkout(PathBuf),
    /// A git repository holding Weft: Rust only (the SDK reads `wit/` beside it).
    Git(String),
}

impl Sdk {
    /// The checkout this binary was built from, when it is still there.
    pub fn from_build_checkout() -> Option<Sdk> {
        let root = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).ok()?;
        root.join("sdk/Cargo.toml").is_file().then_some(Sdk::Checkout(root))
    }

    /// `--sdk-path`: a checkout's `sdk/` folder, or the checkout itself.
    pub fn from_path(path: &Path) -> anyhow::Result<Sdk> {
        let path = std::path::absolute(path)?;
        if path.join("sdk/Cargo.toml").is_file() {
            return Ok(Sdk::Checkout(path));
        }
        match path.parent() {
            Some(root) if path.join("Cargo.toml").is_file() && root.join("wit").is_dir() => {
                Ok(Sdk::Checkout(root.to_path_buf()))
            }
            _ => bail!(
                "--sdk-path {}: neither a Weft checkout nor its sdk/ folder",
                path.display()
            ),
        }
    }

    /// The dependency's value in `Cargo.toml`.
    fn dependency(&self) -> String {
        let quote = |s: &str| toml::Value::String(s.to_owned()).to_string();
        match self {
            Sdk::Checkout(root) => format!("{{ path = {} }}", quote(&root.join("sdk").display().to_string())),
            Sdk::Git(url) => format!("{{ git = {} }}", quote(url)),
        }
    }

    /// The checkout whose `sdk-python/` or `sdk-js/` builds `lang`, checked to have it.
    fn checkout_for(&self, lang: Lang) -> anyhow::Result<String> {
        let Some(toolchain) = lang.toolchain() else {
            return Ok(String::new());
        };
        let Sdk::Checkout(root) = self else {
            bail!(
                "--lang {} builds with a Weft checkout's {toolchain}: pass --sdk-path <checkout> instead of --sdk-git",
                lang.as_str()
            );
        };
        if !root.join(toolchain).is_file() {
            bail!(
                "--lang {}: not yet in {}: it has no {toolchain} (the {} filter layer, issue 13); \
                 Rust filters work (--lang rust)",
                lang.as_str(),
                root.display(),
                if lang == Lang::Python { "Python" } else { "JavaScript" }
            );
        }
        Ok(shell_quote(&root.display().to_string()))
    }
}

impl std::fmt::Display for Sdk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sdk::Checkout(root) => write!(f, "the Weft checkout {}", root.display()),
            Sdk::Git(url) => write!(f, "git {url}"),
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
    let files = templates(lang);
    let checkout = sdk.checkout_for(lang)?;
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
            .replace("{{checkout}}", &checkout)
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
        let sdk = Sdk::Checkout(PathBuf::from("/opt/weft"));
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
    fn python_and_js_need_a_checkout_with_their_layer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let git = Sdk::Git("https://example.invalid/weft".to_owned());
        let bare = Sdk::Checkout(dir.path().join("checkout"));
        for lang in [Lang::Python, Lang::Js] {
            let e = write("f", lang, &dir.path().join("f"), &git).expect_err("needs a checkout");
            assert!(e.to_string().contains("--sdk-path"), "{e}");
            let e = write("f", lang, &dir.path().join("f"), &bare).expect_err("no layer");
            assert!(e.to_string().contains("not yet"), "{e}");
        }
        assert!(!dir.path().join("f").exists(), "nothing is written");

        let checkout = dir.path().join("weft");
        for toolchain in ["sdk-python/build.sh", "sdk-js/build.sh"] {
            let file = checkout.join(toolchain);
            std::fs::create_dir_all(file.parent().expect("dir")).expect("mkdir");
            std::fs::write(&file, "#!/bin/sh\n").expect("write");
        }
        let sdk = Sdk::Checkout(checkout.clone());
        for (lang, source) in [(Lang::Python, "app.py"), (Lang::Js, "filter.js")] {
            let project = dir.path().join(lang.as_str());
            write("my-filter", lang, &project, &sdk).expect("written");
            let build = std::fs::read_to_string(project.join("build")).expect("build");
            let toolchain = checkout.join(lang.toolchain().expect("a toolchain"));
            assert!(
                build.contains(&format!(
                    "'{}",
                    toolchain.parent().and_then(Path::parent).expect("root").display()
                )),
                "{build}"
            );
            assert!(build.contains("my_filter.wasm"), "{build}");
            let text = std::fs::read_to_string(project.join(source)).expect("source");
            assert!(
                text.contains("x-filtered-by") && text.contains("\"my-filter\""),
                "{text}"
            );
            assert!(project.join("CASES.toml").is_file() && project.join("weft.toml").is_file());
        }
    }

    #[test]
    fn sdk_path_takes_a_checkout_or_its_sdk_folder() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let root = std::fs::canonicalize(root).expect("checkout");
        for given in [root.clone(), root.join("sdk")] {
            match Sdk::from_path(&given).expect("a checkout") {
                Sdk::Checkout(found) => assert_eq!(std::fs::canonicalize(found).expect("path"), root),
                Sdk::Git(_) => panic!("a path"),
            }
        }
        assert!(Sdk::from_path(&root.join("docs")).is_err());
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
