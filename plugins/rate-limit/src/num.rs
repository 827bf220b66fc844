//! Decimal text of a `u64` on the stack: the response headers and the request's context
//! value are written per request, and `to_string` goes through `core::fmt` and the
//! allocator (in Wasm, a few hundred instructions a number). `itoa` writes the digits.

/// `u64::MAX` has 20 digits.
const DIGITS: usize = 20;

/// A number's decimal digits, without allocating.
#[derive(Clone, Copy)]
pub struct Decimal {
    buf: [u8; DIGITS],
    len: usize,
}

impl Decimal {
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever written; the fallback cannot happen.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("0")
    }
}

/// The decimal digits of `n`, as `n.to_string()` writes them.
pub fn decimal(n: u64) -> Decimal {
    let mut itoa = itoa::Buffer::new();
    let digits = itoa.format(n).as_bytes();
    let mut buf = [0u8; DIGITS];
    buf[..digits.len()].copy_from_slice(digits);
    Decimal { buf, len: digits.len() }
}

/// Appends the decimal digits of `n` to `out`.
pub fn push_decimal(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

/// A short line of text on the stack: three numbers and their separators.
pub struct Line {
    buf: [u8; 3 * DIGITS + 2],
    len: usize,
}

#[allow(clippy::new_without_default)] // a buffer, not a value with a meaningful default
impl Line {
    pub fn new() -> Line {
        Line {
            buf: [0; 3 * DIGITS + 2],
            len: 0,
        }
    }

    /// Appends `text`, or as much of it as fits (three `u64`s and two spaces always do).
    pub fn push(&mut self, text: &str) {
        let n = text.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&text.as_bytes()[..n]);
        self.len += n;
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_what_to_string_writes() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, 1_000_000_000, u64::MAX - 1, u64::MAX] {
            assert_eq!(decimal(n).as_str(), n.to_string());
        }
        let mut s = String::from("a:");
        push_decimal(&mut s, 42);
        assert_eq!(s, "a:42");
    }

    #[test]
    fn a_line_holds_three_of_the_widest_numbers() {
        let mut line = Line::new();
        let max = decimal(u64::MAX);
        for part in [max.as_str(), " ", max.as_str(), " ", max.as_str()] {
            line.push(part);
        }
        assert_eq!(line.as_str(), format!("{0} {0} {0}", u64::MAX));
    }
}
