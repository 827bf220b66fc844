//! Checks on the header names and challenge parameters an auth plugin's config gives.

/// `name` lowercased, if it is a header name the filter may set or read (letters, digits,
/// `-` and `_`); the error names `field`.
pub fn name(field: &str, name: &str) -> Result<String, String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("{field}: {name:?} is not a header name"));
    }
    Ok(name.to_ascii_lowercase())
}

/// Checks that `value` can go between the quotes of a challenge parameter
/// (`WWW-Authenticate: Basic realm="…"`) as it is, without escaping.
pub fn quotable(field: &str, value: &str) -> Result<(), String> {
    if value.contains(['"', '\\']) {
        return Err(format!("{field} must not contain quotes or backslashes"));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_lowercased() {
        assert_eq!(name("f", "X-User_Id"), Ok("x-user_id".into()));
        for bad in ["", "x y", "x:y", "é"] {
            assert_eq!(
                name("identity_header", bad),
                Err(format!("identity_header: {bad:?} is not a header name"))
            );
        }
    }

    #[test]
    fn realms_stay_inside_their_quotes() {
        assert!(quotable("realm", "weft api").is_ok());
        assert_eq!(
            quotable("realm", "a\"b"),
            Err("realm must not contain quotes or backslashes".into())
        );
        assert!(quotable("realm", "a\\b").is_err());
    }
}
