//! The cost of the local KV store's quota: a write of a new key below the quota, the same
//! at the quota (each write evicts one entry: 16 shard peeks, no scan), and `incr` on a
//! live counter (the rate limiter's hot path). `cargo bench -p weft-conformance --bench kv`;
//! numbers go in `proxy/src/wasm/DESIGN.md`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use prometheus_client::metrics::counter::Counter;
use weft::kv::{KvQuota, KvSpace, KvStore, LocalKv};

const KEYS: usize = 100_000;

fn space(keys: usize) -> std::sync::Arc<dyn KvSpace> {
    let quota = KvQuota { keys, bytes: 1 << 30 };
    LocalKv::new().space("bench", quota, Counter::default())
}

fn run<T>(f: weft::kv::KvFuture<'_, T>) -> T {
    match f.now_or_never() {
        Some(Ok(v)) => v,
        Some(Err(e)) => panic!("kv: {e}"),
        None => panic!("the local store never waits"),
    }
}

fn kv(c: &mut Criterion) {
    let mut group = c.benchmark_group("kv");
    let ttl = Some(Duration::from_secs(600));
    for (name, quota) in [("set_new/below_quota", usize::MAX), ("set_new/at_quota", KEYS)] {
        let s = space(quota);
        for i in 0..KEYS {
            run(s.set(&format!("seed{i}"), vec![b'v'; 32], ttl));
        }
        let mut i = 0u64;
        let mut key = String::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                key.clear();
                key.push('k');
                key.push_str(&i.to_string());
                run(s.set(&key, vec![b'v'; 32], ttl));
            })
        });
    }
    let s = space(KEYS);
    group.bench_function("incr/live", |b| b.iter(|| run(s.incr("counter", 1, ttl))));
    group.finish();
}

criterion_group!(benches, kv);
criterion_main!(benches);
