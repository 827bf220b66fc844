//! Keeping secrets out of config errors. An error is shown by `weft check`, logged on a
//! failed reload and returned by the admin API, so neither its message nor the line it
//! quotes may carry a password from a URL (`[kv] url = "redis://user:PASSWORD@host"`) or
//! the value of a key named like a secret (a filter's `hmac_secret`, `api_key`, the
//! admin `token`).
//!
//! Values are masked character for character, so the caret under a quoted line still
//! points where it did. A secret in a multi-line array or string is only masked on the
//! line that names its key.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// `scheme://userinfo@`: the userinfo (user and password) is masked.
static USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)] // A constant pattern, covered by the tests below.
    Regex::new(r#"(?i)([a-z][a-z0-9+.-]*://)([^@/\s"'?#]+)@"#).unwrap()
});

/// `key = value` where the key (bare or quoted) contains a secret-like word; the value
/// is a string (possibly unterminated on this line), a one-line array, or a bare word.
static SECRET_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    const WORD: &str = "(?:password|passwd|passphrase|secret|token|key|credential)";
    let key = format!(r#"(?:[A-Za-z0-9_-]*{WORD}[A-Za-z0-9_-]*|"[^"\n]*{WORD}[^"\n]*"|'[^'\n]*{WORD}[^'\n]*')"#);
    let value = r#"(?:"(?:[^"\\\n]|\\.)*"?|'[^'\n]*'?|\[[^\]\n]*\]?|[^\s,}\]]+)"#;
    #[allow(clippy::unwrap_used)] // A constant pattern, covered by the tests below.
    Regex::new(&format!(r"(?i)({key})(\s*=\s*)({value})")).unwrap()
});

/// Every character becomes `*` but a string's quotes and an array's punctuation, so the
/// line still reads as TOML.
fn mask(value: &str) -> String {
    let array = value.starts_with('[');
    let last = value.chars().count().saturating_sub(1);
    value
        .chars()
        .enumerate()
        .map(|(i, c)| match c {
            '"' | '\'' if array || i == 0 || i == last => c,
            '[' | ']' | ',' | ' ' if array => c,
            _ => '*',
        })
        .collect()
}

/// `text` with the userinfo of any URL in it masked. For messages.
pub fn urls(text: &str) -> Cow<'_, str> {
    USERINFO.replace_all(text, |c: &Captures<'_>| format!("{}{}@", &c[1], mask(&c[2])))
}

/// A quoted line of config: URL userinfo and the values of secret-named keys masked.
/// Keys naming a file or path (`token_file`, `key_path`) keep their value: it is where
/// the secret is, not the secret, and an error about it needs to show it.
pub fn line(text: &str) -> Cow<'_, str> {
    let text = urls(text);
    let masked = SECRET_VALUE.replace_all(&text, |c: &Captures<'_>| {
        let key = c[1].trim_matches(['"', '\'']).to_ascii_lowercase();
        let value = if key.ends_with("file") || key.ends_with("path") {
            c[3].to_owned()
        } else {
            mask(&c[3])
        };
        format!("{}{}{value}", &c[1], &c[2])
    });
    match masked {
        Cow::Borrowed(_) => text,
        Cow::Owned(owned) => Cow::Owned(owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_userinfo_is_masked_in_place() {
        assert_eq!(
            urls(r#"kv.url "redis://weft:hunter2@cache:6379/0" is bad"#),
            r#"kv.url "redis://************@cache:6379/0" is bad"#
        );
        assert_eq!(urls("redis://:pw@host"), "redis://***@host");
        assert!(matches!(urls("redis://host:6379 and http://a/b@c"), Cow::Borrowed(_)));
    }

    #[test]
    fn values_of_secret_named_keys_are_masked() {
        let cases = [
            (r#"token = "0123456789abcdef""#, r#"token = "****************""#),
            (
                r#"config = { hmac_secret = "s3cr3t", issuer = "me", "API-Key" = 'k', keys = ["a", "b"] }"#,
                r#"config = { hmac_secret = "******", issuer = "me", "API-Key" = '*', keys = ["*", "*"] }"#,
            ),
            (r#"password = "unterminated"#, r#"password = "************"#),
            ("db_password=12345", "db_password=*****"),
            (r#"token_file = "admin.token""#, r#"token_file = "admin.token""#),
            (r#"name = "keystone""#, r#"name = "keystone""#),
        ];
        for (input, expected) in cases {
            assert_eq!(line(input), expected, "{input}");
        }
    }

    #[test]
    fn a_url_in_a_quoted_line_loses_its_password() {
        assert_eq!(
            line(r#"url = "redis://u:pw@h:1" oops"#),
            r#"url = "redis://****@h:1" oops"#
        );
    }
}
