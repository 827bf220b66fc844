//! The arithmetic of the three algorithms, free of I/O so it is tested natively. The
//! filter (`lib.rs`) reads and updates the KV store and hands the numbers here.
//!
//! Times are integers since the Unix epoch: milliseconds for windows, microseconds for
//! the token bucket (its emission interval can be well under a millisecond). Windows are
//! aligned to the epoch, so every proxy sharing a store agrees on them without talking.

/// What one limit says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The quota, for `RateLimit-Limit`.
    pub limit: u64,
    /// Requests still allowed right now after this one, for `RateLimit-Remaining`.
    pub remaining: u64,
    /// Until the quota is fully restored (ms), for `RateLimit-Reset`.
    pub reset_ms: u64,
    /// When denied: until a request would be allowed (ms), for `Retry-After`.
    pub retry_after_ms: u64,
}

/// The window `now_ms` falls in, and how far into it.
pub fn window(now_ms: u64, per_ms: u64) -> (u64, u64) {
    (now_ms / per_ms, now_ms % per_ms)
}

/// Fixed window: `count` is the window's counter after this request's increment.
pub fn fixed_window(count: i64, limit: u64, per_ms: u64, now_ms: u64) -> Verdict {
    let (_, elapsed) = window(now_ms, per_ms);
    let count = u64::try_from(count).unwrap_or(0);
    let until_next = per_ms - elapsed;
    let allowed = count <= limit;
    Verdict {
        allowed,
        limit,
        remaining: limit.saturating_sub(count),
        reset_ms: until_next,
        retry_after_ms: if allowed { 0 } else { until_next },
    }
}

/// Sliding window, two-window weighted approximation (as Cloudflare and Kong do): the
/// previous window's count weighs by the share of it still inside the sliding window,
///
/// `estimate = prev * (per - elapsed) / per + cur`, allowed when `estimate <= limit`,
///
/// where `cur` includes this request. Integer arithmetic multiplied through by `per`.
pub fn sliding_window(prev: i64, cur: i64, limit: u64, per_ms: u64, now_ms: u64) -> Verdict {
    let (_, elapsed) = window(now_ms, per_ms);
    let prev = u128::from(u64::try_from(prev).unwrap_or(0));
    let cur = u128::from(u64::try_from(cur).unwrap_or(0));
    let per = u128::from(per_ms);
    let left = per - u128::from(elapsed);
    let used = prev * left + cur * per;
    let quota = u128::from(limit) * per;
    let allowed = used <= quota;
    // Fully restored when neither window weighs any more: the previous one leaves at
    // the end of this window, the current one a window later.
    let reset = match (prev, cur) {
        (_, c) if c > 0 => left + per,
        (p, _) if p > 0 => left,
        _ => 0,
    };
    let retry = if allowed {
        0
    } else {
        // This request is not admitted (its increment is refunded): cur - 1 stay.
        sliding_retry(prev, cur.saturating_sub(1), quota, per, left)
    };
    Verdict {
        allowed,
        limit,
        remaining: u64::try_from(quota.saturating_sub(used) / per).unwrap_or(u64::MAX),
        reset_ms: clamp_ms(reset),
        retry_after_ms: clamp_ms(retry),
    }
}

/// The earliest wait `t` after which one more request fits, with `cur` admitted ones
/// in this window and `left` ms of it remaining.
fn sliding_retry(prev: u128, cur: u128, quota: u128, per: u128, left: u128) -> u128 {
    // Still in this window: prev * (left - t) + (cur + 1) * per <= quota.
    let fixed = (cur + 1) * per;
    if prev > 0 && fixed <= quota {
        let over = prev * left + fixed - quota;
        let t = over.div_ceil(prev);
        if t < left {
            return t;
        }
    }
    // In the next window, `cur` becomes the previous count: after t' into it,
    // cur * (per - t') + per <= quota; at worst the window after that (t' = per).
    let over = (cur * per + per).saturating_sub(quota);
    let t_next = if over == 0 {
        0
    } else {
        over.div_ceil(cur.max(1)).min(per)
    };
    left + t_next
}

/// The token bucket as GCRA (the generic cell rate algorithm): the state is one number,
/// the theoretical arrival time `tat` of the next request at the sustained rate. A
/// bucket of `burst` tokens refilled one per `interval_us` admits a request when
///
/// `max(tat, now) + interval - now <= burst * interval`,
///
/// and the request moves `tat` to `max(tat, now) + interval`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Microseconds per token (`per / rate`).
    pub interval_us: u64,
    /// Capacity in tokens.
    pub burst: u64,
}

impl Bucket {
    /// How far ahead of now `tat` may be after an admitted request.
    fn capacity_us(&self) -> u64 {
        self.interval_us.saturating_mul(self.burst)
    }

    /// The verdict for a request at `now_us` given the stored `tat` (missing or in the
    /// past: a full bucket), and the `tat` to store when admitted.
    pub fn take(&self, tat: Option<u64>, now_us: u64) -> (Verdict, u64) {
        let base = tat.unwrap_or(now_us).max(now_us);
        let next = base.saturating_add(self.interval_us);
        self.judge(next, now_us)
    }

    /// The verdict when an admitted request left `tat_after` (used again after a
    /// concurrent update, to check that the increment really fit).
    pub fn judge(&self, tat_after: u64, now_us: u64) -> (Verdict, u64) {
        let ahead = tat_after.saturating_sub(now_us);
        let capacity = self.capacity_us();
        let allowed = ahead <= capacity;
        let verdict = if allowed {
            Verdict {
                allowed,
                limit: self.burst,
                remaining: (capacity - ahead) / self.interval_us,
                reset_ms: ahead.div_ceil(1000),
                retry_after_ms: 0,
            }
        } else {
            Verdict {
                allowed,
                limit: self.burst,
                remaining: 0,
                // Without this request the bucket fills when tat (= tat_after - one
                // interval) is reached.
                reset_ms: ahead.saturating_sub(self.interval_us).div_ceil(1000),
                retry_after_ms: (ahead - capacity).div_ceil(1000),
            }
        };
        (verdict, tat_after)
    }
}

fn clamp_ms(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// The verdict that decides the headers: among denials the one to wait longest for
/// (every limit must pass), otherwise the one with the fewest requests left.
pub fn strictest(verdicts: &[Verdict]) -> Option<Verdict> {
    let denied = verdicts.iter().filter(|v| !v.allowed).max_by_key(|v| v.retry_after_ms);
    denied
        .or_else(|| {
            verdicts
                .iter()
                .min_by_key(|v| (v.remaining, std::cmp::Reverse(v.reset_ms)))
        })
        .copied()
}

/// [`strictest`] worked out as the verdicts come, without keeping them: the same choice,
/// ties included (the last of the longest denials, the first of the fewest left).
#[derive(Debug, Default, Clone, Copy)]
pub struct Strictest {
    denied: Option<Verdict>,
    fewest: Option<Verdict>,
}

impl Strictest {
    pub fn add(&mut self, v: Verdict) {
        if !v.allowed && self.denied.is_none_or(|d| v.retry_after_ms >= d.retry_after_ms) {
            self.denied = Some(v);
        }
        let rank = |v: &Verdict| (v.remaining, std::cmp::Reverse(v.reset_ms));
        if self.fewest.is_none_or(|f| rank(&v) < rank(&f)) {
            self.fewest = Some(v);
        }
    }

    /// Whether a verdict so far denied the request.
    pub fn denied(&self) -> bool {
        self.denied.is_some()
    }

    pub fn verdict(&self) -> Option<Verdict> {
        self.denied.or(self.fewest)
    }
}

/// Whole seconds for headers, rounded up (a client waiting the floor would be early).
pub fn secs(ms: u64) -> u64 {
    ms.div_ceil(1000)
}

#[cfg(test)]
mod tests;
