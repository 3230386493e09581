//! The adaptive controllers' floors, asserted on fixed seeds in the deterministic simulation.

use spillway_lab::sim::{Controller, Scenario};

const SEEDS: [u64; 3] = [7, 11, 42];

/// At 2x, 5x and 10x offered load the best controllers (Vegas and Gradient2 on 200-request
/// windows) keep goodput at or above 90 % of capacity, with admitted p99 at most twice the
/// unloaded p99.
#[test]
fn best_controller_holds_goodput_and_latency_under_overload() {
    for seed in SEEDS {
        for load in [2.0, 5.0, 10.0] {
            let s = Scenario { load, seed, ..Scenario::default() };
            for c in [Controller::Vegas, Controller::Gradient2] {
                let r = s.run(c);
                assert!(r.goodput >= 0.9, "{}, seed {seed}, {load}x: goodput {:.3}", c.name(), r.goodput);
                assert!(
                    r.p99_ms <= 2.0 * s.unloaded_p99_ms(),
                    "{}, seed {seed}, {load}x: p99 {:.1} ms > 2 x {:.1} ms",
                    c.name(),
                    r.p99_ms,
                    s.unloaded_p99_ms()
                );
            }
        }
    }
}

/// Below capacity nothing is rejected, by any adaptive controller but Vegas, which misses this
/// floor: it holds its limit once the estimated queue is inside its band, so a rare Poisson burst
/// hits it (0.05 % to 0.12 % rejected on these seeds; asserted below 0.5 %).
#[test]
fn nothing_is_rejected_below_capacity() {
    for seed in SEEDS {
        let s = Scenario { load: 0.8, seed, ..Scenario::default() };
        let vegas = s.run(Controller::Vegas).rejected;
        assert!(vegas < 0.005, "seed {seed}: vegas rejected {vegas:.4}");
        for c in [Controller::Aimd, Controller::Gradient2, Controller::Gradient, Controller::Slo] {
            let r = s.run(c);
            assert_eq!(r.rejected, 0.0, "seed {seed}: {} rejected {:.4}", c.name(), r.rejected);
            assert!(r.goodput > 0.75, "seed {seed}: {} goodput {:.3}", c.name(), r.goodput);
        }
    }
}

/// When capacity halves mid-run, goodput of the new capacity is back at 90 % within 20 windows.
#[test]
fn recovers_when_capacity_halves() {
    for seed in SEEDS {
        let s = Scenario { load: 2.0, seed, halve_at: Some(10), ..Scenario::default() };
        for c in [Controller::Vegas, Controller::Gradient2] {
            let r = s.run(c);
            assert!(
                r.settled_after(10) >= 0.9,
                "{}, seed {seed}: settled at {:.3}",
                c.name(),
                r.settled_after(10)
            );
        }
    }
}

/// The simulation discriminates: with no limit, the same overload leaves no goodput at all, and
/// AIMD (blind to latency below its timeout) misses the latency floor.
#[test]
fn the_simulation_tells_good_from_bad() {
    let s = Scenario { load: 2.0, ..Scenario::default() };
    assert!(s.run(Controller::Unprotected).goodput < 0.05);
    let aimd = s.run(Controller::Aimd);
    assert!(aimd.p99_ms > 2.0 * s.unloaded_p99_ms(), "{aimd:?}");
}

/// Same seed, same run; another seed, another run.
#[test]
fn runs_are_deterministic() {
    let s = Scenario { load: 3.0, seconds: 6, ..Scenario::default() };
    assert_eq!(s.run(Controller::Gradient), s.run(Controller::Gradient));
    assert_ne!(
        s.run(Controller::Gradient).windows,
        Scenario { seed: 8, ..s }.run(Controller::Gradient).windows
    );
}

/// At 5x load, with critical work at 20 % of capacity (4 % of the requests) and sheddable work
/// allowed 80 % of the limit, at least 99.9 % of critical requests are answered in time.
/// (With 20 % of all requests critical, critical work alone equals capacity: keeping latency
/// bounded then means refusing some of it, and no controller reaches 99.9 %; `spillway simulate`
/// prints those numbers too.)
#[test]
fn critical_traffic_survives_overload() {
    for seed in SEEDS {
        let s = Scenario { load: 5.0, critical: 0.04, seed, ..Scenario::default() };
        for c in [Controller::Vegas, Controller::Gradient2, Controller::Slo] {
            let r = s.run(c);
            assert!(r.critical_success >= 0.999, "{}, seed {seed}: {:.4}", c.name(), r.critical_success);
            assert!(r.goodput >= 0.9, "{}, seed {seed}: goodput {:.3}", c.name(), r.goodput);
        }
    }
}

/// One controller, Gradient2 on 200-request windows, meets every floor at once on every seed.
#[test]
fn gradient2_meets_every_floor() {
    for seed in SEEDS {
        let base = Scenario { seed, ..Scenario::default() };
        for load in [2.0, 5.0, 10.0] {
            let r = Scenario { load, ..base }.run(Controller::Gradient2);
            assert!(r.goodput >= 0.9 && r.p99_ms <= 2.0 * base.unloaded_p99_ms(), "{load}x: {r:?}");
        }
        assert_eq!(Scenario { load: 0.8, ..base }.run(Controller::Gradient2).rejected, 0.0);
        assert!(
            Scenario { load: 2.0, halve_at: Some(10), ..base }.run(Controller::Gradient2).settled_after(10)
                >= 0.9
        );
        let critical = Scenario { load: 5.0, critical: 0.04, ..base }.run(Controller::Gradient2);
        assert!(critical.critical_success >= 0.999, "{critical:?}");
    }
}
