//! Durations in a plugin's config, in the proxy's syntax (`humantime`): `"250ms"`, `"15s"`,
//! `"2m"`, `"1h 30m"`. The error reads like the proxy's own, with the field in front.

use std::time::Duration;

/// `text` as a duration; the error names `field`.
pub fn parse(field: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{field}: invalid duration {text:?} ({e}); write e.g. \"250ms\" or \"15s\""))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("f", "250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("f", "30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("f", "5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("f", "1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("f", "1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("f", "0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn errors_name_the_field_and_show_the_syntax() {
        for bad in ["5", "s", "5x", "", "-1s", "99999999999999999999h"] {
            let err = parse("jwks.timeout", bad).unwrap_err();
            assert!(
                err.starts_with(&format!("jwks.timeout: invalid duration {bad:?} (")),
                "{err}"
            );
            assert!(err.ends_with("write e.g. \"250ms\" or \"15s\""), "{err}");
        }
    }
}
