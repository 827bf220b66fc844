//! `application/x-www-form-urlencoded` decoding, as query strings and form bodies use it:
//! `+` is a space, `%XX` a byte, and the result must be UTF-8. One decoder for every
//! plugin, so a token in `?access_token=` and a GraphQL `?query=` are read alike.

/// `text` decoded; `None` on an invalid or truncated escape or on invalid UTF-8 (a caller
/// refuses such input rather than guessing).
pub fn decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                // `from_str_radix` takes a sign: "+f" is no escape.
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plus_escapes_and_utf8() {
        assert_eq!(decode("a+b%20c").as_deref(), Some("a b c"));
        assert_eq!(decode("%7B%22q%22%7D").as_deref(), Some("{\"q\"}"));
        assert_eq!(decode("caf%C3%A9").as_deref(), Some("café"));
        assert_eq!(decode("%2B").as_deref(), Some("+"));
        assert_eq!(decode("").as_deref(), Some(""));
    }

    #[test]
    fn bad_escapes_and_bytes_are_refused() {
        for bad in ["%", "%2", "%zz", "%+f", "%-1", "%C3", "%FF", "a%2"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
