//! Durations in the config syntax of the docs: `"250ms"`, `"15s"`, `"2m"`, `"1h"`.

use std::time::Duration;

pub fn parse(field: &str, text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{field}: {text:?} is not a duration like \"250ms\", \"30s\", \"5m\""))?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{field}: {text:?} is too long"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        _ => Err(format!("{field}: {text:?} needs a unit: ms, s, m or h")),
    }
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
        assert!(parse("f", "5").is_err());
        assert!(parse("f", "s").is_err());
        assert!(parse("f", "5d").is_err());
        assert!(parse("leeway", "x").unwrap_err().contains("leeway"));
    }
}
