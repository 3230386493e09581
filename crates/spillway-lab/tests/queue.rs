//! The lab's message-queue scenario against a real `nats-server`: without flow control the
//! consumer's memory grows with the run; with it, it stays under the threshold plus a batch.

use spillway_lab::lab::queue::{QueueOptions, run};

#[test]
fn queue_lab_shows_unbounded_lag_without_and_bounded_lag_with_flow_control() {
    let results = run(&QueueOptions::new(3)).expect("queue scenario").expect(
        "nats-server is not installed: install the Debian package nats-server (scripts/test.sh does)",
    );
    let by = |name: &str| results.runs.iter().find(|r| r.contestant == name).expect(name);
    let (unbounded, bounded) = (by("unbounded"), by("flow control"));
    eprintln!(
        "unbounded: peak lag {} ({} bytes), {:.0}/s; flow control: peak lag {} ({} bytes), {:.0}/s, {} pauses",
        unbounded.peak_lag,
        unbounded.peak_lag_bytes,
        unbounded.throughput_per_s,
        bounded.peak_lag,
        bounded.peak_lag_bytes,
        bounded.throughput_per_s,
        bounded.pauses
    );
    // 4000/s offered, about 1500/s handled, for 3 s: thousands fetched and unfinished without
    // control (at least 2000 even on a loaded machine).
    assert!(unbounded.peak_lag > 2000, "{unbounded:?}");
    // Threshold 64 + one batch of 32 (+ the messages between the buffer and the handlers).
    assert!(bounded.peak_lag <= 64 + 32 + 2, "{:?}", bounded.peak_lag);
    assert!(bounded.pauses >= 1);
    // Flow control costs no throughput: the handlers stay busy either way (compared with each
    // other, not with the nominal capacity: a loaded 2-core machine runs both slower).
    assert!(unbounded.throughput_per_s > 0.3 * results.capacity_per_s, "{}", unbounded.throughput_per_s);
    assert!(
        bounded.throughput_per_s > 0.8 * unbounded.throughput_per_s,
        "{} vs {}",
        bounded.throughput_per_s,
        unbounded.throughput_per_s
    );
}
