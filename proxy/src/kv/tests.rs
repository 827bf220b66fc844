use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::{KvError, KvQuota, LocalKv, LocalSpace};

fn space(kv: &LocalKv, filter: &str, keys: usize, bytes: usize) -> (LocalSpace, Counter) {
    let evictions = Counter::default();
    let space = kv.local_space(filter, KvQuota { keys, bytes }, evictions.clone());
    (space, evictions)
}

fn big(kv: &LocalKv, filter: &str, keys: usize) -> LocalSpace {
    space(kv, filter, keys, 1 << 30).0
}

const MIN: Option<Duration> = Some(Duration::from_secs(60));

/// The totals the store keeps equal what walking it finds.
fn assert_exact(s: &LocalSpace) {
    assert_eq!(s.usage(), s.inner().scan(), "usage totals out of step with the entries");
}

fn get(s: &LocalSpace, key: &str) -> Option<Vec<u8>> {
    s.inner().get(key, Instant::now())
}

#[test]
fn incr_counts_and_expires() {
    let kv = LocalKv::new();
    let s = big(&kv, "f", 10);
    let q = KvQuota {
        keys: 10,
        bytes: 1 << 30,
    };
    assert_eq!(s.inner().incr(q, "k", 2, Some(Duration::from_millis(30))), Ok(2));
    assert_eq!(s.inner().incr(q, "k", 3, MIN), Ok(5));
    assert_eq!(get(&s, "k").as_deref(), Some(&b"5"[..]));
    std::thread::sleep(Duration::from_millis(40));
    // The window expired: the count restarts (with the new call's TTL).
    assert_eq!(s.inner().incr(q, "k", 1, None), Ok(1));
    assert_exact(&s);
}

#[test]
fn incr_on_the_spot_is_incr() {
    use super::KvSpace;
    let kv = LocalKv::new();
    let s = big(&kv, "f", 10);
    assert_eq!(s.incr_now("k", 2, MIN), Some(Ok(2)));
    assert_eq!(s.incr_now("k", -5, MIN), Some(Ok(-3)));
    assert_eq!(get(&s, "k").as_deref(), Some(&b"-3"[..]));
    let q = KvQuota {
        keys: 10,
        bytes: 1 << 30,
    };
    s.inner().set(q, "s", b"abc".to_vec(), None).ok();
    assert_eq!(s.incr_now("s", 1, None), Some(Err(KvError::NotAnInteger)));
    assert_exact(&s);
}

#[test]
fn incr_refuses_non_integers_and_overflow() {
    let kv = LocalKv::new();
    let s = big(&kv, "f", 10);
    let q = KvQuota {
        keys: 10,
        bytes: 1 << 30,
    };
    s.inner().set(q, "s", b"abc".to_vec(), None).ok();
    assert_eq!(s.inner().incr(q, "s", 1, None), Err(KvError::NotAnInteger));
    s.inner().set(q, "m", i64::MAX.to_string().into_bytes(), None).ok();
    assert_eq!(s.inner().incr(q, "m", 1, None), Err(KvError::Overflow));
    assert_exact(&s);
}

#[test]
fn set_get_delete() {
    let kv = LocalKv::new();
    let s = big(&kv, "f", 10);
    let q = KvQuota {
        keys: 10,
        bytes: 1 << 30,
    };
    assert_eq!(s.inner().set(q, "a", b"1".to_vec(), None), Ok(()));
    assert_eq!(s.inner().set(q, "b", b"2".to_vec(), Some(Duration::ZERO)), Ok(()));
    assert_eq!(get(&s, "b"), None, "a zero TTL is expired at once");
    assert!(s.inner().delete("a"));
    assert!(!s.inner().delete("a"));
    assert!(!s.inner().delete("b"), "expired: not reported as present");
    assert_eq!(s.usage(), (0, 0));
}

#[test]
fn a_full_space_evicts_expired_then_nearest_expiry_then_oldest_without_ttl() {
    let kv = LocalKv::new();
    let (s, evictions) = space(&kv, "f", 4, 1 << 20);
    let q = KvQuota {
        keys: 4,
        bytes: 1 << 20,
    };
    let ttl = |secs| Some(Duration::from_secs(secs));
    s.inner().set(q, "forever-old", b"1".to_vec(), None).ok();
    s.inner().set(q, "long", b"1".to_vec(), ttl(300)).ok();
    s.inner().set(q, "gone", b"1".to_vec(), Some(Duration::ZERO)).ok();
    s.inner().set(q, "short", b"1".to_vec(), ttl(10)).ok();
    assert_eq!(s.usage().0, 4);

    let mut order = Vec::new();
    for (i, key) in ["new1", "new2", "new3", "new4"].iter().enumerate() {
        assert_eq!(
            s.inner().set(q, key, b"1".to_vec(), None),
            Ok(()),
            "writes never fail for room"
        );
        let left: Vec<&str> = ["forever-old", "long", "gone", "short"]
            .into_iter()
            .filter(|k| s.inner().scan_has(k))
            .collect();
        order.push(left);
        assert_eq!(s.usage().0, 4, "at the quota after write {i}");
        assert_exact(&s);
    }
    assert_eq!(
        order,
        [
            vec!["forever-old", "long", "short"],
            vec!["forever-old", "long"],
            vec!["forever-old"],
            vec![],
        ]
    );
    // "gone" had expired: evicting it lost nothing and is not counted.
    assert_eq!(evictions.get(), 3);
}

#[test]
fn the_byte_quota_counts_keys_and_values_exactly_across_overwrite_delete_and_sweep() {
    let kv = LocalKv::new();
    let q = KvQuota { keys: 100, bytes: 40 };
    let (s, _) = space(&kv, "f", q.keys, q.bytes);
    s.inner().set(q, "aa", vec![0; 8], MIN).ok(); // 10 bytes
    s.inner().set(q, "bb", vec![0; 8], None).ok(); // 10
    assert_eq!(s.usage(), (2, 20));
    s.inner().set(q, "aa", vec![0; 2], MIN).ok(); // overwrite: 10 -> 4
    assert_eq!(s.usage(), (2, 14));
    s.inner().incr(q, "n", 9, Some(Duration::from_millis(1))).ok(); // "n" + "9"
    s.inner().incr(q, "n", 1, None).ok(); // "10": one more byte
    assert_eq!(s.usage(), (3, 17));
    assert_exact(&s);
    // 30 bytes more need 7 freed: the TTL'd entries go first ("n" expires first).
    s.inner().set(q, "cc", vec![0; 28], None).ok();
    assert!(s.usage().1 <= 40, "{:?}", s.usage());
    assert!(s.inner().scan_has("bb") && s.inner().scan_has("cc"));
    assert!(!s.inner().scan_has("n"));
    assert_exact(&s);
    std::thread::sleep(Duration::from_millis(5));
    s.inner().sweep(Instant::now());
    assert_exact(&s);
    assert!(s.inner().delete("cc"));
    assert!(s.inner().delete("bb"));
    s.inner().delete("aa");
    assert_eq!(s.usage(), (0, 0));
}

#[test]
fn a_value_larger_than_the_byte_quota_is_refused_as_over_quota() {
    let kv = LocalKv::new();
    let q = KvQuota { keys: 10, bytes: 16 };
    let (s, _) = space(&kv, "rl", q.keys, q.bytes);
    s.inner().set(q, "keep", b"x".to_vec(), None).ok();
    let err = s.inner().set(q, "k", vec![0; 16], None).expect_err("over the quota");
    assert_eq!(err, KvError::OverQuota { size: 17, quota: 16 });
    assert!(err.to_string().contains("limits.kv_bytes of 16"), "{err}");
    assert_eq!(
        get(&s, "keep").as_deref(),
        Some(&b"x"[..]),
        "a refused write evicts nothing"
    );
}

#[test]
fn a_flood_in_one_filter_leaves_other_filters_untouched() {
    let kv = LocalKv::new();
    let (victim, victim_evictions) = space(&kv, "rate-limit", 1000, 1 << 20);
    let (flood, flood_evictions) = space(&kv, "noisy", 50, 1 << 20);
    let vq = KvQuota {
        keys: 1000,
        bytes: 1 << 20,
    };
    let fq = KvQuota {
        keys: 50,
        bytes: 1 << 20,
    };
    // The victim's counters expire soonest of all: a shared store would evict them first.
    for i in 0..100 {
        victim
            .inner()
            .incr(vq, &format!("rl:{i}"), 1, Some(Duration::from_millis(500)))
            .ok();
    }
    for i in 0..10_000 {
        assert_eq!(flood.inner().set(fq, &format!("junk{i}"), vec![1; 10], MIN), Ok(()));
    }
    assert_eq!(flood.usage().0, 50);
    assert_eq!(flood_evictions.get(), 10_000 - 50);
    assert_eq!(victim.usage().0, 100);
    assert_eq!(victim_evictions.get(), 0);
    for i in 0..100 {
        assert_eq!(victim.inner().incr(vq, &format!("rl:{i}"), 1, None), Ok(2));
    }
    assert_exact(&victim);
    assert_exact(&flood);
}

#[test]
fn spaces_are_shared_by_name_across_reloads_and_keep_their_own_quota() {
    let kv = LocalKv::new();
    let old = big(&kv, "f", 10);
    let q = KvQuota {
        keys: 10,
        bytes: 1 << 30,
    };
    old.inner().set(q, "k", b"v".to_vec(), None).ok();
    // A reload: the new version sees the old one's keys.
    let (new, _) = space(&kv, "f", 1, 1 << 30);
    assert_eq!(get(&new, "k").as_deref(), Some(&b"v"[..]));
    let other = big(&kv, "g", 10);
    assert_eq!(get(&other, "k"), None, "another filter's namespace");
    drop((old, new));
    // No version holds the space any more: it is freed.
    assert_eq!(get(&big(&kv, "f", 10), "k"), None);
}

#[test]
fn concurrent_writers_keep_the_totals_exact_and_within_the_quota() {
    let kv = LocalKv::new();
    let q = KvQuota { keys: 64, bytes: 4096 };
    let (s, _) = space(&kv, "f", q.keys, q.bytes);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let s = &s;
            scope.spawn(move || {
                for i in 0..5_000 {
                    let key = format!("k{}", (i * 7 + t) % 200);
                    match i % 4 {
                        0 => drop(
                            s.inner()
                                .set(q, &key, vec![0; i % 50], Some(Duration::from_millis(i as u64 % 20))),
                        ),
                        1 => drop(s.inner().incr(q, &key, 1, MIN)),
                        2 => drop(s.inner().delete(&key)),
                        _ => drop(s.inner().set(q, &key, vec![1; 3], None)),
                    }
                }
            });
        }
    });
    assert_exact(&s);
    let (keys, bytes) = s.usage();
    assert!(keys <= q.keys && bytes <= q.bytes, "{keys} keys, {bytes} bytes");
}
