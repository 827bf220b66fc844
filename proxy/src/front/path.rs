//! The request path as routes, filters and the upstream all see it: one normal form, so a
//! route's filters cannot be walked around by spelling the same path another way
//! (`/%61dmin`, `//admin`, `/x/../admin`). In the style of Envoy's `normalize_path` +
//! `merge_slashes` and of nginx: RFC 3986 §6.2.2 normalisation, then dot segments.

use std::borrow::Cow;

use crate::config::PathPolicy;

/// Why a path is refused (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with '/'")]
    NotAbsolute,
    #[error("the path has a malformed percent-encoding")]
    BadEncoding,
    #[error("the path has an encoded '/' or '\\'")]
    EncodedSlash,
    #[error("the path has a backslash")]
    Backslash,
    #[error("the path has an encoded NUL or control character")]
    Control,
}

/// The normal form of `path` (no query), borrowed when it is already normal: the common
/// case costs one scan and no allocation.
pub fn normalize(path: &str, policy: PathPolicy) -> Result<Cow<'_, str>, PathError> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes, policy)? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes, policy)?;
    let merged = if policy.merge_slashes {
        merge_slashes(&decoded)
    } else {
        decoded
    };
    let resolved = remove_dot_segments(&merged);
    // Only ASCII went in (non-ASCII arrives percent-encoded and stays so).
    Ok(Cow::Owned(String::from_utf8_lossy(&resolved).into_owned()))
}

/// Whether the path needs no change; refuses what no rewrite can make acceptable.
fn is_normal(bytes: &[u8], policy: PathPolicy) -> Result<bool, PathError> {
    let mut normal = true;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b if b < 0x20 || b == 0x7f => return Err(PathError::Control),
            b'%' => {
                let byte = hex_pair(bytes, i)?;
                check_encoded(byte, policy)?;
                // Unreserved bytes are decoded and lower-case hex digits upper-cased.
                if is_unreserved(byte) || bytes[i + 1].is_ascii_lowercase() || bytes[i + 2].is_ascii_lowercase() {
                    normal = false;
                }
                i += 3;
                continue;
            }
            b'/' => {
                let next = &bytes[i + 1..];
                if (policy.merge_slashes && next.first() == Some(&b'/')) || is_dot_segment(next) {
                    normal = false;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(normal)
}

/// `.` or `..` as a whole segment at the start of `rest`.
fn is_dot_segment(rest: &[u8]) -> bool {
    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
    matches!(&rest[..end], b"." | b"..")
}

fn check_encoded(byte: u8, policy: PathPolicy) -> Result<(), PathError> {
    if byte < 0x20 || byte == 0x7f {
        return Err(PathError::Control);
    }
    if policy.reject_encoded_slashes && (byte == b'/' || byte == b'\\') {
        return Err(PathError::EncodedSlash);
    }
    Ok(())
}

fn hex_pair(bytes: &[u8], at: usize) -> Result<u8, PathError> {
    let digit = |i: usize| -> Result<u8, PathError> {
        let b = *bytes.get(i).ok_or(PathError::BadEncoding)?;
        (b as char).to_digit(16).map(|d| d as u8).ok_or(PathError::BadEncoding)
    };
    Ok(digit(at + 1)? << 4 | digit(at + 2)?)
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Decodes `%XX` of unreserved characters; other encodings stay, with upper-case hex.
fn decode_unreserved(bytes: &[u8], policy: PathPolicy) -> Result<Vec<u8>, PathError> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let byte = hex_pair(bytes, i)?;
            check_encoded(byte, policy)?;
            if is_unreserved(byte) {
                out.push(byte);
            } else {
                out.push(b'%');
                out.push(bytes[i + 1].to_ascii_uppercase());
                out.push(bytes[i + 2].to_ascii_uppercase());
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn merge_slashes(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path {
        if !(b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
    }
    out
}

/// RFC 3986 §5.2.4 on an absolute path: `.` segments vanish, `..` removes the segment
/// before it and never climbs above the root.
fn remove_dot_segments(path: &[u8]) -> Vec<u8> {
    let mut segments: Vec<&[u8]> = Vec::new();
    // The path starts with '/': split gives an empty first element.
    let mut parts = path.split(|&b| b == b'/').skip(1).peekable();
    let mut trailing_slash = false;
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            b"." => trailing_slash = last,
            b".." => {
                segments.pop();
                trailing_slash = last;
            }
            _ => {
                segments.push(segment);
                trailing_slash = false;
            }
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for segment in &segments {
        out.push(b'/');
        out.extend_from_slice(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests;
