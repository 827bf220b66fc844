//! Keeping secrets out of config errors and the admin API's config dump. An error is
//! shown by `weft check`, logged on a failed reload and returned by the admin API, so
//! neither its message nor the line it quotes may carry a password from a URL (`[kv] url
//! = "redis://user:PASSWORD@host"`), the value of a key named like a secret (a filter's
//! `hmac_secret`, `api_key`, the admin `token`), or a credential a request carries in a
//! header (`authorization`, `proxy-authorization`, `cookie`, `set-cookie`): as a header
//! edit's value (`set = { authorization = "Bearer …" }`), or as the value a condition on
//! such a header compares (`{ name = "authorization", exact = "Bearer …" }`, in one line or
//! in a `[[…headers]]` table of its own).
//!
//! Values are masked character for character, so the caret under a quoted line still
//! points where it did. [`text`] reads the config's structure (as much of it as parses:
//! a syntax error leaves the rest), so a secret is masked whatever its layout; [`line`]
//! sees one line only, and masks a secret in a multi-line array or string only on the
//! line that names its key.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::LazyLock;

use regex::{Captures, Regex};
use toml::de::{DeTable, DeValue};

/// `scheme://userinfo@`: the userinfo (user and password) is masked.
static USERINFO: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)] // A constant pattern, covered by the tests below.
    Regex::new(r#"(?i)([a-z][a-z0-9+.-]*://)([^@/\s"'?#]+)@"#).unwrap()
});

/// `key = value` where the key (bare or quoted) contains a secret-like word; the value
/// is a string (possibly unterminated on this line), a one-line array, or a bare word.
static SECRET_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    const WORD: &str = "(?:password|passwd|passphrase|secret|token|key|credential|authorization|cookie)";
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

/// Words that make a key's value a secret, as [`SECRET_VALUE`] has them: the names of
/// credentials, and of the request headers that carry them.
const WORDS: [&str; 9] = [
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "key",
    "credential",
    "authorization",
    "cookie",
];

/// Whether a key (or a header name) holds a secret: it has one of [`WORDS`] in it, and
/// does not name a file or path (where the secret is, which an error needs to show).
pub fn secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    !(name.ends_with("file") || name.ends_with("path")) && WORDS.iter().any(|w| name.contains(w))
}

/// The keys that make a table a condition on a header, query parameter or cookie (a
/// match, a pin): when it is on a credential, its other string values are masked.
const CONDITION: [&str; 4] = ["exact", "regex", "value", "present"];

/// Values shorter than this are masked where they stand, but not searched for in error
/// messages: a one-letter secret would star every such letter of the message.
const MIN_QUOTED: usize = 4;

/// The whole config text with secrets masked: by structure, then line by line (for what
/// a syntax error left unparsed). The same lines as `text`, each as long in characters.
pub fn text(text: &str) -> String {
    let (spans, _) = secrets(text);
    let mut masked = String::with_capacity(text.len());
    let mut spans = spans.iter().peekable();
    for (i, c) in text.char_indices() {
        while spans.next_if(|s| s.end <= i).is_some() {}
        let inside = spans.peek().is_some_and(|s| s.start <= i);
        // Quotes and line breaks stay: the text still reads as TOML, line for line.
        masked.push(if inside && !matches!(c, '"' | '\'' | '\n' | '\r') {
            '*'
        } else {
            c
        });
    }
    let mut out = String::with_capacity(masked.len());
    for (i, l) in masked.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&line(l));
    }
    out
}

/// `message` with every secret of the config `text` masked, also as `{:?}` would have
/// quoted it: an error about a value (a type mismatch, a header value refused) may
/// repeat the value itself.
pub fn message<'a>(text: &str, message: &'a str) -> Cow<'a, str> {
    let (_, values) = secrets(text);
    let mut out = urls(message);
    for value in values.iter().filter(|v| v.chars().count() >= MIN_QUOTED) {
        for form in [
            value.clone(),
            value.escape_debug().to_string(),
            value.escape_default().to_string(),
        ] {
            if out.contains(form.as_str()) {
                let stars = "*".repeat(form.chars().count());
                out = Cow::Owned(out.replace(form.as_str(), &stars));
            }
        }
    }
    out
}

/// The byte ranges of the secret values in `text` (sorted, not overlapping), and the
/// values themselves.
fn secrets(text: &str) -> (Vec<Range<usize>>, Vec<String>) {
    let (root, _errors) = DeTable::parse_recoverable(text);
    let mut found = Found::default();
    found.table(root.get_ref());
    found.spans.sort_by_key(|s| (s.start, s.end));
    (found.spans, found.values)
}

#[derive(Default)]
struct Found {
    spans: Vec<Range<usize>>,
    values: Vec<String>,
}

impl Found {
    fn table(&mut self, table: &DeTable<'_>) {
        // A condition on a credential header (`name`/`header`) or on a cookie: the value
        // it compares is the credential. Only a condition: a filter or route merely named
        // `session-cookie` keeps its values.
        let condition = table.iter().any(|(k, _)| CONDITION.contains(&k.get_ref().as_ref()));
        let on_credential = condition
            && table.iter().any(|(k, v)| match k.get_ref().as_ref() {
                "name" | "header" => v.get_ref().as_str().is_some_and(secret_name),
                "cookie" => true,
                _ => false,
            });
        for (key, value) in table.iter() {
            let key = key.get_ref().as_ref();
            // A rate limit's `key = ["client_ip", "header:x-user"]` names what is counted,
            // not a secret: an error about a wrong descriptor must be able to show it.
            let descriptors = key == "key" && matches!(value.get_ref(), DeValue::Array(_));
            if secret_name(key) && !descriptors {
                self.all(value, true);
            } else if on_credential && !matches!(key, "name" | "header" | "cluster") {
                self.all(value, false);
            } else {
                self.value(value.get_ref());
            }
        }
    }

    fn value(&mut self, value: &DeValue<'_>) {
        match value {
            DeValue::Table(t) => self.table(t),
            DeValue::Array(a) => a.iter().for_each(|v| self.value(v.get_ref())),
            _ => {}
        }
    }

    /// Every string in `value`, however deep, and with `scalars` numbers, booleans and
    /// dates too (a secret-named key's value, whatever its type).
    fn all(&mut self, value: &toml::Spanned<DeValue<'_>>, scalars: bool) {
        match value.get_ref() {
            DeValue::Table(t) => t.iter().for_each(|(_, v)| self.all(v, scalars)),
            DeValue::Array(a) => a.iter().for_each(|v| self.all(v, scalars)),
            DeValue::String(s) => {
                self.values.push(s.to_string());
                self.spans.push(value.span());
            }
            _ if scalars => self.spans.push(value.span()),
            _ => {}
        }
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
            (
                r#"set = { authorization = "Bearer x", "Proxy-Authorization" = 'y' }"#,
                r#"set = { authorization = "********", "Proxy-Authorization" = '*' }"#,
            ),
            (
                r#"response_set = { set-cookie = "sid=1", cookie = "a" }"#,
                r#"response_set = { set-cookie = "*****", cookie = "*" }"#,
            ),
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

    #[test]
    fn credential_headers_are_masked_whatever_the_layout() {
        let config = r#"
[[routes]]
name = "session-cookie"
cluster = "web"
match = { headers = [{ name = "Authorization", exact = "Bearer A1" }, { name = "x-canary", exact = "yes" }] }
pins = [{ cookie = "track", value = "C3", cluster = "beta" }]

[[routes]]
name = "tables"

[routes.match]
path_prefix = "/"

[[routes.match.headers]]
exact = "Basic B2"
name = "proxy-authorization"

[[routes.match.headers]]
name = "authorization"
present = "Bearer P5"

[[routes.match.query]]
name = "access_token"
regex = "T4.*"
"#;
        let masked = text(config);
        assert_eq!(masked.lines().count(), config.lines().count());
        for secret in ["A1", "B2", "C3", "T4", "P5"] {
            assert!(!masked.contains(secret), "{secret} in\n{masked}");
        }
        for kept in [
            r#"name = "session-cookie""#,
            r#"{ name = "x-canary", exact = "yes" }"#,
            r#"name = "proxy-authorization""#,
            r#"exact = "********""#,
            r#"cluster = "beta""#,
        ] {
            assert!(masked.contains(kept), "{kept} in\n{masked}");
        }
        // As a type error would quote it, and escaped as `{:?}` shows a control character.
        let quoted = message(config, r#"invalid type: string "Basic B2", expected a boolean"#);
        assert_eq!(quoted, r#"invalid type: string "********", expected a boolean"#);
        let escaped = message("set = { cookie = \"ab\\u0001cd\" }", r#"invalid value "ab\u{1}cd""#);
        assert!(!escaped.contains("ab\\u{1}cd"), "{escaped}");
        // Too short to look for in a message: masked where it stands only.
        assert_eq!(message("cookie = \"a\"", "a value"), "a value");
    }

    #[test]
    fn a_rate_limits_descriptors_are_no_secret() {
        let config =
            "[[filters]]\nname = \"rl\"\nconfig = { limits = [{ key = [\"clientip\"] }], api_key = \"k-12345\" }\n";
        let shown = message(config, r#"unknown descriptor "clientip"; api_key "k-12345""#);
        assert_eq!(shown, r#"unknown descriptor "clientip"; api_key "*******""#);
    }

    #[test]
    fn a_syntax_error_leaves_the_rest_masked() {
        let config = "[[routes]]\nname = \"r\"\n[routes.request_headers.set]\nauthorization = \"Bearer S\" oops\n";
        assert!(!text(config).contains("Bearer S"), "{}", text(config));
    }
}
