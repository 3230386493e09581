//! The demo's physics, measured: without backpressure the queue and the wait grow; with it they
//! stay bounded; a producer that follows `retry_after` is never refused.

use spillway_lab::demo::{DemoOptions, Scenario, run_one};

const O: DemoOptions = DemoOptions { seconds: 2, produce_rate: 400, consume_rate: 200, queue: 20 };

#[test]
fn backpressure_bounds_the_queue_and_the_wait() {
    let free = run_one(Scenario::Unprotected, O, &mut |_, _| {}).unwrap();
    let last = free.seconds.last().copied().unwrap();
    // 200 more arrive than leave each second: ~400 queued after 2 s (allow a slow machine half).
    assert!(free.left_in_queue >= 200, "{free:?}");
    assert_eq!(last.refused, 0);
    assert!(last.wait_p99_ms > 500.0, "the wait grows with the queue: {last:?}");

    let bounded = run_one(Scenario::Reject, O, &mut |_, _| {}).unwrap();
    for s in &bounded.seconds {
        assert!(s.depth <= 20, "{s:?}");
        // A full queue of 20 drains in 100 ms at 200/s; allow for a busy machine.
        assert!(s.wait_p99_ms < 400.0, "{s:?}");
    }
    // ~400 of 800 are refused; a slowed producer on a busy machine still offers well over 500.
    assert!(bounded.seconds.iter().map(|s| s.refused).sum::<u64>() > 100, "{bounded:?}");

    let throttled = run_one(Scenario::Throttled, O, &mut |_, _| {}).unwrap();
    let offered: u64 = throttled.seconds.iter().map(|s| s.offered).sum();
    // Nothing is refused while the consumer keeps its pace (a consumer slowed by a busy machine
    // can fall a few items behind and fill the 20 slots; never by much).
    let refused: u64 = throttled.seconds.iter().map(|s| s.refused).sum();
    assert!(refused * 20 <= offered, "{throttled:?}");
    assert!(offered <= 2 * 200 + 10, "the producer slowed to the consumer's rate: {offered}");
}
