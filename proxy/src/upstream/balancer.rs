//! Choosing an endpoint for a request, without locks: every balancer is built once per
//! endpoint set (a schedule, cumulative weights, a ring or a Maglev table) and read with
//! at most one atomic add per pick.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::config::LbPolicy;

/// Size of a Maglev lookup table: a prime, so every skip visits every slot, and large
/// enough that endpoints' shares differ from their weights by well under 1%.
const MAGLEV_SIZE: usize = 65_537;
/// Points per unit of weight on a hash ring…
const RING_POINTS: u32 = 160;
/// …fewer when the ring would have more than this many points (many endpoints).
const RING_MAX_POINTS: u32 = 1 << 17;

/// What a balancer knows of each endpoint: its weight and the stable key it hashes by
/// (its address), so a ring or table built again after a change moves only the keys of
/// the endpoints that changed.
pub struct Member {
    pub weight: u32,
    pub key: u64,
}

pub enum Balancer {
    RoundRobin {
        next: AtomicUsize,
    },
    /// Weighted round robin, unrolled into an interleaved schedule at build.
    Weighted {
        schedule: Box<[u32]>,
        next: AtomicUsize,
    },
    Random {
        cumulative: Box<[u64]>,
    },
    /// Two weighted random picks; the one with fewer requests in flight wins.
    LeastRequest {
        cumulative: Box<[u64]>,
    },
    /// Points sorted by hash; a key goes to the first point at or after its hash.
    Ring {
        points: Box<[(u64, u32)]>,
    },
    Maglev {
        table: Box<[u32]>,
    },
}

impl Balancer {
    pub fn build(policy: LbPolicy, members: &[Member]) -> Balancer {
        let cumulative = || {
            members
                .iter()
                .scan(0u64, |sum, m| {
                    *sum += u64::from(m.weight);
                    Some(*sum)
                })
                .collect()
        };
        match policy {
            LbPolicy::RoundRobin => Balancer::RoundRobin {
                next: AtomicUsize::new(0),
            },
            LbPolicy::WeightedRoundRobin => Balancer::Weighted {
                schedule: interleaved_schedule(members),
                next: AtomicUsize::new(0),
            },
            LbPolicy::Random => Balancer::Random {
                cumulative: cumulative(),
            },
            LbPolicy::LeastRequest => Balancer::LeastRequest {
                cumulative: cumulative(),
            },
            LbPolicy::RingHash => Balancer::Ring { points: ring(members) },
            LbPolicy::Maglev => Balancer::Maglev { table: maglev(members) },
        }
    }

    /// The index of the endpoint for a request. `key` is the request's hash for hashing
    /// balancers; `load` reads an endpoint's load for least request (requests in flight,
    /// or weighted by its latency).
    pub fn pick(&self, n: usize, key: u64, load: impl Fn(usize) -> u64) -> usize {
        match self {
            Balancer::RoundRobin { next } => next.fetch_add(1, Ordering::Relaxed) % n,
            Balancer::Weighted { schedule, next } => {
                schedule[next.fetch_add(1, Ordering::Relaxed) % schedule.len()] as usize
            }
            Balancer::Random { cumulative } => weighted_random(cumulative),
            Balancer::LeastRequest { cumulative } => {
                // Both candidates are drawn by weight, so weight is already in the choice;
                // between them the one with fewer in flight wins, the first on a tie (so
                // idle endpoints share requests as their weights say).
                let a = weighted_random(cumulative);
                let mut b = weighted_random(cumulative);
                if n > 1 && b == a {
                    // Two candidates, always: another endpoint at random.
                    b = (a + 1 + fastrand::usize(..n - 1)) % n;
                }
                if load(b) < load(a) { b } else { a }
            }
            Balancer::Ring { points } => points[ring_position(points, key)].1 as usize,
            Balancer::Maglev { table } => table[(key % table.len() as u64) as usize] as usize,
        }
    }

    /// The `attempt`-th candidate after the first pick was unavailable, in the order this
    /// balancer prefers them: along the ring, through the table with the key rehashed, or
    /// a fresh pick.
    pub fn fallback(&self, n: usize, key: u64, attempt: u32) -> usize {
        match self {
            Balancer::Ring { points } => {
                // The attempt-th distinct endpoint along the ring after the key's point.
                let start = ring_position(points, key);
                let first = points[start].1;
                let mut seen = 0;
                let mut last = first;
                for step in 1..points.len() {
                    let owner = points[(start + step) % points.len()].1;
                    if owner != first && owner != last {
                        seen += 1;
                        last = owner;
                        if seen == attempt {
                            return owner as usize;
                        }
                    }
                }
                (first as usize + attempt as usize) % n
            }
            Balancer::Maglev { table } => {
                let rehashed = mix(key ^ u64::from(attempt).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                table[(rehashed % table.len() as u64) as usize] as usize
            }
            _ => self.pick(n, key, |_| 0),
        }
    }
}

fn weighted_random(cumulative: &[u64]) -> usize {
    let total = cumulative.last().copied().unwrap_or(1);
    let r = fastrand::u64(..total);
    cumulative.partition_point(|&c| c <= r)
}

fn ring_position(points: &[(u64, u32)], key: u64) -> usize {
    let i = points.partition_point(|p| p.0 < key);
    if i == points.len() { 0 } else { i }
}

/// A well-mixed 64-bit hash of anything, the same in every process of this build.
pub fn hash(value: impl Hash) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// A 64-bit finaliser (splitmix64), for deriving more hashes from one.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Weighted round robin, unrolled into one cycle where each endpoint's turns are spread
/// evenly: turn k of an endpoint of weight w sits at (k + ½)/w of the cycle. Weights 5, 1, 1
/// give a a a b c a a. The cycle is the sum of the weights long, built in O(T log T).
fn interleaved_schedule(members: &[Member]) -> Box<[u32]> {
    let mut turns: Vec<(f64, u32)> = members
        .iter()
        .enumerate()
        .flat_map(|(i, m)| (0..m.weight).map(move |k| ((f64::from(k) + 0.5) / f64::from(m.weight), i as u32)))
        .collect();
    turns.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    turns.into_iter().map(|(_, i)| i).collect()
}

fn ring(members: &[Member]) -> Box<[(u64, u32)]> {
    let total: u32 = members.iter().map(|m| m.weight).sum::<u32>().max(1);
    let per_unit = (RING_MAX_POINTS / total).clamp(1, RING_POINTS);
    let mut points = Vec::with_capacity((total * per_unit) as usize);
    for (i, m) in members.iter().enumerate() {
        for replica in 0..m.weight * per_unit {
            points.push((hash((m.key, replica)), i as u32));
        }
    }
    points.sort_unstable();
    points.into_boxed_slice()
}

/// The Maglev table (Eisenbud et al., NSDI 2016), with weights as Envoy applies them: in
/// each round an endpoint claims slots until its share reaches its weight's.
fn maglev(members: &[Member]) -> Box<[u32]> {
    const EMPTY: u32 = u32::MAX;
    let m = MAGLEV_SIZE as u64;
    let prefs: Vec<(u64, u64)> = members
        .iter()
        .map(|member| (mix(member.key) % m, mix(member.key ^ 0x5bd1_e995) % (m - 1) + 1))
        .collect();
    let max_weight = members.iter().map(|m| m.weight).max().unwrap_or(1);
    let mut next = vec![0u64; members.len()];
    let mut claimed = vec![0u64; members.len()];
    let mut table = vec![EMPTY; MAGLEV_SIZE];
    let mut filled = 0;
    let mut round = 0u64;
    while filled < MAGLEV_SIZE {
        round += 1;
        for (i, member) in members.iter().enumerate() {
            if claimed[i] * u64::from(max_weight) >= round * u64::from(member.weight) {
                continue;
            }
            let (offset, skip) = prefs[i];
            loop {
                let slot = ((offset + next[i] * skip) % m) as usize;
                next[i] += 1;
                if table[slot] == EMPTY {
                    table[slot] = i as u32;
                    claimed[i] += 1;
                    filled += 1;
                    break;
                }
            }
            if filled == MAGLEV_SIZE {
                break;
            }
        }
    }
    table.into_boxed_slice()
}

/// An endpoint's response time, as an exponentially weighted moving average that jumps to
/// any slower sample at once and decays over `decay` (linkerd2-proxy's peak EWMA), so a
/// slowing endpoint is avoided quickly and recovers gradually. Updated without a lock:
/// two samples at once may lose one, which an average shrugs off.
#[derive(Default)]
pub struct Latency {
    /// Nanoseconds, as `f64` bits; 0 until the first sample (so a new endpoint is tried).
    ewma: AtomicU64,
    /// When it was last updated, in nanoseconds since `EPOCH`.
    at: AtomicU64,
}

impl Latency {
    pub fn nanos(&self) -> u64 {
        f64::from_bits(self.ewma.load(Ordering::Relaxed)) as u64
    }

    pub fn observe(&self, sample: Duration, now: Duration, decay: Duration) {
        let now = now.as_nanos() as u64;
        let last = self.at.swap(now, Ordering::Relaxed);
        let old = f64::from_bits(self.ewma.load(Ordering::Relaxed));
        let sample = sample.as_nanos() as f64;
        let new = if sample > old {
            sample
        } else {
            let elapsed = now.saturating_sub(last) as f64;
            let w = (-elapsed / decay.as_nanos().max(1) as f64).exp();
            old * w + sample * (1.0 - w)
        };
        self.ewma.store(new.to_bits(), Ordering::Relaxed);
    }
}

/// Requests in flight at one endpoint, for least request.
#[derive(Default)]
pub struct InFlight(AtomicU32);

impl InFlight {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn enter(&self) -> Leave<'_> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Leave(self)
    }
}

/// Leaves the count when dropped.
pub struct Leave<'a>(&'a InFlight);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MAX_WEIGHT;

    fn members(weights: &[u32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Member {
                weight,
                key: hash(format!("10.0.0.{i}:80")),
            })
            .collect()
    }

    fn shares(b: &Balancer, n: usize, picks: usize, key: impl Fn(usize) -> u64) -> Vec<usize> {
        let mut counts = vec![0; n];
        for i in 0..picks {
            counts[b.pick(n, key(i), |_| 0)] += 1;
        }
        counts
    }

    #[test]
    fn weighted_round_robin_interleaves_by_weight() {
        let b = Balancer::build(LbPolicy::WeightedRoundRobin, &members(&[5, 1, 1]));
        let order: Vec<usize> = (0..14).map(|_| b.pick(3, 0, |_| 0)).collect();
        assert_eq!(order, [0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 1, 2, 0, 0]);
        let b = Balancer::build(LbPolicy::WeightedRoundRobin, &members(&[2, 3]));
        let order: Vec<usize> = (0..5).map(|_| b.pick(2, 0, |_| 0)).collect();
        assert_eq!(order, [1, 0, 1, 0, 1]);
    }

    #[test]
    fn many_endpoints_build_in_bounded_size() {
        let weights = vec![MAX_WEIGHT; 2000];
        let ring = Balancer::build(LbPolicy::RingHash, &members(&weights));
        let Balancer::Ring { points } = &ring else {
            unreachable!()
        };
        assert!(points.len() <= 2000 * 100 + (1 << 17), "{}", points.len());
        let wrr = Balancer::build(LbPolicy::WeightedRoundRobin, &members(&weights));
        let Balancer::Weighted { schedule, .. } = &wrr else {
            unreachable!()
        };
        assert_eq!(schedule.len(), 200_000);
    }

    #[test]
    fn random_and_maglev_follow_weights() {
        for policy in [LbPolicy::Random, LbPolicy::Maglev, LbPolicy::RingHash] {
            let b = Balancer::build(policy, &members(&[3, 1]));
            let counts = shares(&b, 2, 40_000, hash);
            let share = counts[0] as f64 / 40_000.0;
            assert!((share - 0.75).abs() < 0.04, "{policy:?}: {counts:?}");
        }
    }

    #[test]
    fn hashing_moves_only_the_keys_of_the_endpoint_that_left() {
        for policy in [LbPolicy::RingHash, LbPolicy::Maglev] {
            let before = Balancer::build(policy, &members(&[1, 1, 1, 1]));
            // The last endpoint leaves; the others keep their keys (indexes unchanged).
            let after = Balancer::build(policy, &members(&[1, 1, 1]));
            let (mut moved, mut kept) = (0, 0);
            for k in 0..10_000u64 {
                let key = hash(k);
                let (a, b) = (before.pick(4, key, |_| 0), after.pick(3, key, |_| 0));
                if a == 3 {
                    continue;
                }
                if a == b { kept += 1 } else { moved += 1 }
            }
            // Ring hash moves none; Maglev a few percent at most.
            assert!(
                moved * 100 <= (moved + kept) * 3,
                "{policy:?}: moved {moved}, kept {kept}"
            );
        }
    }

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let b = Balancer::build(LbPolicy::LeastRequest, &members(&[1, 1]));
        let busy = |i: usize| if i == 0 { 50 } else { 0 };
        let ones = (0..1000).filter(|_| b.pick(2, 0, busy) == 1).count();
        // Whenever the two picks differ (half the time or more) the idle one wins.
        assert!(ones > 700, "{ones}");
    }

    #[test]
    fn peak_latency_jumps_up_and_decays_down() {
        let l = Latency::default();
        let ms = Duration::from_millis;
        l.observe(ms(10), ms(0), ms(100));
        assert_eq!(l.nanos(), 10_000_000);
        l.observe(ms(50), ms(1), ms(100));
        assert_eq!(l.nanos(), 50_000_000, "a slower sample is taken at once");
        l.observe(ms(10), ms(101), ms(100));
        let after = l.nanos() as f64 / 1e6;
        // One decay period later the average is 1/e of the way from 50 toward 10.
        assert!((after - (10.0 + 40.0 / std::f64::consts::E)).abs() < 0.5, "{after}");
    }

    #[test]
    fn ring_fallback_walks_to_other_endpoints() {
        let b = Balancer::build(LbPolicy::RingHash, &members(&[1, 1, 1]));
        let key = hash("user-1");
        let first = b.pick(3, key, |_| 0);
        let second = b.fallback(3, key, 1);
        let third = b.fallback(3, key, 2);
        assert_ne!(first, second);
        assert_ne!(first, third);
        assert_ne!(second, third);
    }
}
