//! Per-request values (WIT `weft:filter/context`): what a filter leaves for its own
//! response phase and for later filters of the chain. Each value is filed under the name
//! of the filter that wrote it, so a filter can only ever write its own.
//!
//! Bounded per request, so a filter cannot grow a request's memory without limit: a
//! request with no values allocates nothing, and lookups scan a short vector (at most
//! [`MAX_VALUES`]), cheaper than hashing at these sizes.

use std::sync::Arc;

/// The writer name under which filters read the host's request values
/// (`context::get-from("weft", "trace-id")`).
pub const HOST_WRITER: &str = "weft";

/// Most values one request holds, across its filters.
pub const MAX_VALUES: usize = 64;
/// Most bytes of keys and values one request holds, across its filters.
pub const MAX_BYTES: usize = 16 * 1024;

/// A write that would pass [`MAX_VALUES`] or [`MAX_BYTES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextFull;

struct Entry {
    filter: Arc<str>,
    key: Box<str>,
    value: Box<str>,
}

/// The values of one request.
#[derive(Default)]
pub struct Context {
    entries: Vec<Entry>,
    bytes: usize,
}

impl Context {
    /// The value `filter` wrote at `key`.
    pub fn get(&self, filter: &str, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| &*e.filter == filter && &*e.key == key)
            .map(|e| &*e.value)
    }

    /// Stores `value` at `key` under `filter`, replacing that filter's earlier value.
    pub fn set(&mut self, filter: &Arc<str>, key: &str, value: &str) -> Result<(), ContextFull> {
        let found = self
            .entries
            .iter()
            .position(|e| &*e.key == key && (Arc::ptr_eq(&e.filter, filter) || e.filter == *filter));
        let old = found.map_or(0, |i| self.entries[i].key.len() + self.entries[i].value.len());
        let bytes = self.bytes - old + key.len() + value.len();
        if bytes > MAX_BYTES || (found.is_none() && self.entries.len() >= MAX_VALUES) {
            return Err(ContextFull);
        }
        self.bytes = bytes;
        match found {
            Some(i) => self.entries[i].value = value.into(),
            None => self.entries.push(Entry {
                filter: filter.clone(),
                key: key.into(),
                value: value.into(),
            }),
        }
        Ok(())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn values_are_filed_under_their_writer() {
        let (auth, other) = (name("auth"), name("other"));
        let mut ctx = Context::default();
        ctx.set(&auth, "user", "alice").expect("room");
        ctx.set(&other, "user", "mallory").expect("room");
        assert_eq!(
            ctx.get("auth", "user"),
            Some("alice"),
            "another filter cannot overwrite it"
        );
        assert_eq!(ctx.get("other", "user"), Some("mallory"));
        ctx.set(&auth, "user", "bob").expect("a replacement");
        assert_eq!(ctx.get("auth", "user"), Some("bob"));
        assert_eq!(ctx.len(), 2);
        assert_eq!(ctx.get("auth", "nothing"), None);
    }

    #[test]
    fn a_request_holds_a_bounded_number_of_values_and_bytes() {
        let f = name("f");
        let mut ctx = Context::default();
        for i in 0..MAX_VALUES {
            ctx.set(&f, &i.to_string(), "v").expect("within the count");
        }
        assert_eq!(ctx.set(&f, "one-more", "v"), Err(ContextFull));
        // Replacing an existing key needs no new slot.
        ctx.set(&f, "0", "w").expect("a replacement fits");

        let mut ctx = Context::default();
        let big = "x".repeat(MAX_BYTES - 2);
        ctx.set(&f, "k", &big).expect("exactly at the limit less one");
        assert_eq!(ctx.set(&f, "k2", "yy"), Err(ContextFull));
        // Shrinking a value frees its bytes.
        ctx.set(&f, "k", "small").expect("smaller");
        ctx.set(&f, "k2", &"y".repeat(MAX_BYTES - 10)).expect("room again");
    }
}
