use super::*;

#[test]
fn fixed_window_boundary_is_exact() {
    // 5 per 1 s, 300 ms into the window.
    let now = 10_300;
    for count in 1..=5 {
        let v = fixed_window(count, 5, 1000, now);
        assert!(v.allowed, "request {count}");
        assert_eq!(v.remaining, 5 - count as u64);
        assert_eq!(v.reset_ms, 700);
    }
    let sixth = fixed_window(6, 5, 1000, now);
    assert!(!sixth.allowed);
    assert_eq!((sixth.remaining, sixth.retry_after_ms), (0, 700));
    assert_eq!(
        window(10_999, 1000).0 + 1,
        window(11_000, 1000).0,
        "a new window each second"
    );
}

#[test]
fn sliding_window_weighs_the_previous_window() {
    // limit 10 per 1000 ms; previous window had 10; 250 ms into this one: it weighs 7.5.
    let v = sliding_window(10, 2, 10, 1000, 5_250);
    assert!(v.allowed, "7.5 + 2 = 9.5 <= 10");
    assert_eq!(v.remaining, 0, "floor(10 - 9.5)");
    let v = sliding_window(10, 3, 10, 1000, 5_250);
    assert!(!v.allowed, "7.5 + 3 = 10.5 > 10");
    // With 2 admitted, one more fits once the previous weighs <= 7: 10 * (750 - t) / 1000 <= 7.
    assert_eq!(v.retry_after_ms, 50);
    // Half way, the previous weighs 5.
    assert!(sliding_window(10, 5, 10, 1000, 5_500).allowed);
    assert!(!sliding_window(10, 6, 10, 1000, 5_500).allowed);
}

#[test]
fn sliding_window_retry_in_the_next_window() {
    // No previous window, this one full (5 of 5) at 200 ms: the next window starts with
    // previous = 5 weighing 5 * (1000 - t') / 1000, which admits one at t' = 200.
    let v = sliding_window(0, 6, 5, 1000, 7_200);
    assert!(!v.allowed);
    assert_eq!(v.retry_after_ms, 800 + 200);
    assert_eq!(v.reset_ms, 800 + 1000);
    // A limit of 1: the next window needs the previous weight at 0, a whole window more.
    let v = sliding_window(0, 2, 1, 1000, 7_000);
    assert_eq!(v.retry_after_ms, 1000 + 1000);
}

#[test]
fn bucket_bursts_then_refills_at_the_rate() {
    // 10 per second (100 ms a token), burst 3.
    let bucket = Bucket {
        interval_us: 100_000,
        burst: 3,
    };
    let t0 = 1_000_000_000;
    let mut tat = None;
    for left in [2, 1, 0] {
        let (v, next) = bucket.take(tat, t0);
        assert!(v.allowed);
        assert_eq!(v.remaining, left);
        tat = Some(next);
    }
    let (v, _) = bucket.take(tat, t0);
    assert!(!v.allowed, "the burst is spent");
    assert_eq!(v.retry_after_ms, 100, "one token comes back after one interval");
    assert_eq!(v.reset_ms, 300, "full again after three");
    // 100 ms later exactly one token is back.
    let (v, next) = bucket.take(tat, t0 + 100_000);
    assert!(v.allowed);
    assert_eq!(v.remaining, 0);
    assert!(!bucket.take(Some(next), t0 + 100_000).0.allowed);
    // A long idle time refills to the burst, never beyond.
    let (v, _) = bucket.take(Some(next), t0 + 60_000_000);
    assert_eq!(v.remaining, 2);
}

#[test]
fn bucket_judge_rejects_a_concurrent_overdraw() {
    let bucket = Bucket {
        interval_us: 1000,
        burst: 2,
    };
    // Two racing takes both saw a full bucket; the second increment lands 3 ahead.
    let (v, _) = bucket.judge(1_000 + 3 * 1000, 1_000);
    assert!(!v.allowed);
    assert_eq!(v.retry_after_ms, 1);
}

#[test]
fn strictest_prefers_the_longest_denial_then_the_fewest_left() {
    let ok = |remaining, reset_ms| Verdict {
        allowed: true,
        limit: 10,
        remaining,
        reset_ms,
        retry_after_ms: 0,
    };
    let no = |retry_after_ms| Verdict {
        allowed: false,
        limit: 3,
        remaining: 0,
        reset_ms: retry_after_ms,
        retry_after_ms,
    };
    assert_eq!(strictest(&[ok(4, 100), ok(2, 50), ok(2, 900)]), Some(ok(2, 900)));
    assert_eq!(strictest(&[ok(0, 100), no(300), no(700)]), Some(no(700)));
    assert_eq!(strictest(&[]), None);
    assert_eq!((secs(1), secs(1000), secs(1001)), (1, 1, 2));
}

#[test]
fn strictest_as_they_come_chooses_as_strictest_does() {
    // Small values, so ties in every field are common.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = |m: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % m
    };
    for _ in 0..20_000 {
        let n = next(5) as usize;
        let verdicts: Vec<Verdict> = (0..n)
            .map(|i| Verdict {
                allowed: next(3) != 0,
                limit: i as u64,
                remaining: next(3),
                reset_ms: next(3),
                retry_after_ms: next(3),
            })
            .collect();
        let mut s = Strictest::default();
        for v in &verdicts {
            s.add(*v);
        }
        assert_eq!(s.verdict(), strictest(&verdicts), "{verdicts:?}");
        assert_eq!(s.denied(), verdicts.iter().any(|v| !v.allowed));
    }
}
