use std::cell::{Cell, RefCell};

use super::*;

/// A fake host: a settable clock, a key server whose document the test changes, and a
/// KV shared between caches.
#[derive(Default)]
struct Fake {
    now: Cell<u64>,
    doc: RefCell<Option<String>>,
    fetches: Cell<u32>,
    shared: RefCell<Option<Vec<u8>>>,
    permit_until: Cell<u64>,
}

impl Env for Fake {
    fn now_ms(&self) -> u64 {
        self.now.get()
    }
    fn fetch(&self) -> Result<Vec<u8>, String> {
        self.fetches.set(self.fetches.get() + 1);
        self.doc
            .borrow()
            .clone()
            .map(String::into_bytes)
            .ok_or_else(|| "connect refused".to_owned())
    }
    fn shared_get(&self) -> Option<Vec<u8>> {
        self.shared.borrow().clone()
    }
    fn shared_put(&self, value: &[u8]) {
        *self.shared.borrow_mut() = Some(value.to_vec());
    }
    fn refetch_permit(&self, window: Duration) -> bool {
        if self.now.get() < self.permit_until.get() {
            return false;
        }
        self.permit_until.set(self.now.get() + ms(window));
        true
    }
    fn log_error(&self, _: &str) {}
}

fn doc(kids: &[&str]) -> String {
    let keys: Vec<String> = kids
        .iter()
        .map(|k| format!(r#"{{"kty":"RSA","kid":"{k}","n":"AQAB","e":"AQAB"}}"#))
        .collect();
    format!(r#"{{"keys":[{}]}}"#, keys.join(","))
}

fn cache() -> Cache {
    Cache::new(Policy {
        refresh: Duration::from_secs(300),
        min_refetch: Duration::from_secs(10),
        allowed: Vec::new(),
    })
}

fn kids(c: &Cache) -> Vec<String> {
    c.keys().iter().filter_map(|k| k.kid.clone()).collect()
}

#[test]
fn fetches_once_then_serves_from_cache_until_refresh() {
    let env = Fake::default();
    *env.doc.borrow_mut() = Some(doc(&["a"]));
    let mut c = cache();
    c.ensure_fresh(&env).unwrap();
    c.ensure_fresh(&env).unwrap();
    assert_eq!((env.fetches.get(), kids(&c)), (1, vec!["a".to_owned()]));
    env.now.set(299_999);
    c.ensure_fresh(&env).unwrap();
    assert_eq!(env.fetches.get(), 1);
    // The shared copy is as old as ours: refresh must really fetch.
    *env.doc.borrow_mut() = Some(doc(&["b"]));
    env.now.set(300_000);
    c.ensure_fresh(&env).unwrap();
    assert_eq!((env.fetches.get(), kids(&c)), (2, vec!["b".to_owned()]));
}

#[test]
fn a_failed_refresh_keeps_old_keys_and_waits_before_retrying() {
    let env = Fake::default();
    *env.doc.borrow_mut() = Some(doc(&["a"]));
    let mut c = cache();
    c.ensure_fresh(&env).unwrap();
    *env.doc.borrow_mut() = None;
    env.now.set(400_000);
    c.ensure_fresh(&env).unwrap();
    assert_eq!(kids(&c), vec!["a".to_owned()]);
    c.ensure_fresh(&env).unwrap();
    assert_eq!(env.fetches.get(), 2, "no retry within min_refetch");
    env.now.set(410_000);
    c.ensure_fresh(&env).unwrap();
    assert_eq!(env.fetches.get(), 3);
}

#[test]
fn no_keys_at_all_is_an_error() {
    let env = Fake::default();
    assert!(cache().ensure_fresh(&env).is_err());
    *env.doc.borrow_mut() = Some(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#.to_owned());
    assert!(
        cache().ensure_fresh(&env).is_err(),
        "symmetric keys in a JWKS are ignored"
    );
}

#[test]
fn unknown_kid_refetches_at_most_once_per_window() {
    let env = Fake::default();
    *env.doc.borrow_mut() = Some(doc(&["a"]));
    let mut c = cache();
    c.ensure_fresh(&env).unwrap();
    *env.doc.borrow_mut() = Some(doc(&["a", "b"]));
    // Within min_refetch of the first fetch: refused.
    env.now.set(5_000);
    assert!(!c.refetch_for_unknown_kid(&env));
    env.now.set(10_000);
    assert!(c.refetch_for_unknown_kid(&env));
    assert_eq!(kids(&c), vec!["a".to_owned(), "b".to_owned()]);
    env.now.set(12_000);
    assert!(!c.refetch_for_unknown_kid(&env));
    assert_eq!(env.fetches.get(), 2);
}

#[test]
fn instances_share_fetched_documents_and_the_refetch_budget() {
    let env = Fake::default();
    *env.doc.borrow_mut() = Some(doc(&["a"]));
    let (mut one, mut two) = (cache(), cache());
    one.ensure_fresh(&env).unwrap();
    two.ensure_fresh(&env).unwrap();
    assert_eq!(env.fetches.get(), 1, "the second instance uses the KV copy");
    assert_eq!(kids(&two), vec!["a".to_owned()]);

    *env.doc.borrow_mut() = Some(doc(&["b"]));
    env.now.set(20_000);
    assert!(one.refetch_for_unknown_kid(&env));
    assert_eq!(env.fetches.get(), 2);
    // The other instance adopts the newer shared copy without fetching.
    assert!(two.refetch_for_unknown_kid(&env));
    assert_eq!((env.fetches.get(), kids(&two)), (2, vec!["b".to_owned()]));
}

#[test]
fn key_ids_survive_a_refetch_and_change_with_the_key() {
    let ids = |doc: &str| -> Vec<crate::keys::KeyId> {
        from_jwks(doc.as_bytes(), &[]).unwrap().iter().map(|k| k.id).collect()
    };
    let first = ids(&doc(&["a", "b"]));
    assert_eq!(first, ids(&doc(&["a", "b"])), "an unchanged document keeps its ids");
    assert_ne!(first[0], first[1]);
    // The same kid with other key material is another key.
    let replaced = ids(r#"{"keys":[{"kty":"RSA","kid":"a","n":"AQAC","e":"AQAB"}]}"#);
    assert_ne!(replaced[0], first[0]);
}
