//! The sandbox: CPU budget, memory limit, traps and panics fail one call, are counted,
//! and leave the filter serving.

use std::time::{Duration, Instant};

use weft::filter::{FilterError, Limit};
use weft_conformance::plugins;

use super::support::*;

#[tokio::test]
async fn an_infinite_loop_is_stopped_at_the_cpu_budget_and_the_filter_recovers() {
    let budget = Duration::from_millis(50);
    let filter = load_with(
        "spin",
        plugins::INFINITE_LOOP,
        "{}",
        &limits(16 << 20, budget, 1024),
        clusters(&[]),
    )
    .await
    .expect("load");
    let started = Instant::now();
    let (decision, _) = run(&*filter, "/loop", &[]).await;
    let took = started.elapsed();
    eprintln!("infinite loop stopped after {took:?} (budget {budget:?})");
    assert!(
        matches!(decision, Err(FilterError::LimitExceeded(Limit::Cpu))),
        "{:?}",
        decision.err()
    );
    assert!(
        took >= budget && took < budget * 4,
        "stopped after {took:?} for a {budget:?} budget"
    );
    // The looping instance was discarded; the next request gets a healthy one.
    assert!(is_continue(&run(&*filter, "/fine", &[]).await.0));
}

#[tokio::test]
async fn unbounded_allocation_is_stopped_at_the_memory_limit() {
    let filter = load_with(
        "hog",
        plugins::ALLOC_FOREVER,
        "{}",
        &limits(32 << 20, Duration::from_secs(2), 1024),
        clusters(&[]),
    )
    .await
    .expect("load");
    let (decision, _) = run(&*filter, "/alloc", &[]).await;
    assert!(
        matches!(decision, Err(FilterError::LimitExceeded(Limit::Memory))),
        "{:?}",
        decision.err()
    );
    assert!(is_continue(&run(&*filter, "/fine", &[]).await.0));
}

#[tokio::test]
async fn a_memory_limit_below_what_the_guest_needs_to_start_fails_the_load() {
    let limits = limits(64 << 10, Duration::from_millis(50), 1024);
    let Err(e) = load_with("tiny", plugins::NOOP, "{}", &limits, clusters(&[])).await else {
        panic!("a 64 KiB memory limit cannot fit a Rust guest");
    };
    let text = format!("{e:#}");
    assert!(text.contains("failed to start") && text.contains("memory"), "{text}");
}

#[tokio::test]
async fn a_trap_fails_the_call_only() {
    let filter = load("trapper", plugins::TRAP, "{}").await.expect("load");
    let (decision, _) = run(&*filter, "/trap", &[]).await;
    match decision {
        Err(FilterError::Trap(message)) => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {:?}", other.err()),
    }
    assert!(is_continue(&run(&*filter, "/fine", &[]).await.0));
}

#[tokio::test]
async fn a_guest_panic_is_a_trap_that_carries_the_panic_message() {
    let filter = load("panicker", plugins::PANIC, "{}").await.expect("load");
    let (decision, _) = run(&*filter, "/panic", &[]).await;
    match decision {
        Err(FilterError::Trap(message)) => {
            assert!(message.contains("the panic plugin was asked to panic"), "{message}")
        }
        other => panic!("expected a trap, got {:?}", other.err()),
    }
    assert!(is_continue(&run(&*filter, "/fine", &[]).await.0));
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_body_limit_error() {
    let config = r#"{"request_body": true}"#;
    let filter = load_with(
        "big-body",
        plugins::CAPABILITIES,
        config,
        &limits(16 << 20, Duration::from_millis(50), 8),
        clusters(&[]),
    )
    .await
    .expect("load");
    assert_eq!(
        filter.request_body_limit(),
        Some(8),
        "the guest asked for bodies: the limit is limits.body"
    );
    let mut req = request("/", &[("x-cap-set-body", "more than eight bytes")]);
    req.body = Some("short".into());
    let decision = on_request(&*filter, &mut req).await;
    assert!(
        matches!(decision, Err(FilterError::LimitExceeded(Limit::Body))),
        "{:?}",
        decision.err()
    );
    // A reply body over the limit too.
    let (decision, _) = run(&*filter, "/", &[("x-cap-respond", "200")]).await;
    assert!(
        matches!(decision, Err(FilterError::LimitExceeded(Limit::Body))),
        "{:?}",
        decision.err()
    );
}
