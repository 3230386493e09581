//! Rate profiles: the offered rate as a function of time, and the intended send time of every
//! request under it.
//!
//! `rate` is always the **peak** rate `R`; over a run of `D` seconds:
//!
//! | profile | shape |
//! | --- | --- |
//! | `constant` | `R` throughout |
//! | `step` | four equal phases at `R/4`, `R/2`, `3R/4`, `R` |
//! | `ramp` | linear from 0 at the start to `R` at the end |
//! | `spike` | `R/4` in the first and last thirds, `R` in the middle third |
//!
//! Request `i` (from 0) is sent at the time `t` where the integral of the rate from 0 to `t`
//! reaches `i` — so request times follow the shape exactly, with no randomness, and the number
//! of requests offered is the integral over the whole run, rounded down.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The shape of the offered load.
///
/// ```
/// use spillway_lab::load::Profile;
///
/// assert_eq!("spike".parse::<Profile>().unwrap(), Profile::Spike);
/// assert_eq!(Profile::Step.offered(100.0, 4.0), 250); // 25 + 50 + 75 + 100
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// The peak rate throughout.
    #[default]
    Constant,
    /// Four equal phases at 1/4, 2/4, 3/4 and 4/4 of the peak rate.
    Step,
    /// Linear from zero to the peak rate.
    Ramp,
    /// A quarter of the peak rate, with the peak rate through the middle third.
    Spike,
}

impl Profile {
    /// Every profile, in the order of the table above.
    pub const ALL: [Profile; 4] = [Self::Constant, Self::Step, Self::Ramp, Self::Spike];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Constant => "constant",
            Self::Step => "step",
            Self::Ramp => "ramp",
            Self::Spike => "spike",
        }
    }

    /// Requests offered over `seconds` at peak `rate`.
    pub fn offered(self, rate: f64, seconds: f64) -> u64 {
        Schedule::new(self, rate, seconds).total
    }

    /// The offered rate at `t` seconds into a run of `seconds` at peak `rate`.
    ///
    /// ```
    /// use spillway_lab::load::Profile;
    ///
    /// assert_eq!(Profile::Ramp.rate_at(100.0, 10.0, 5.0), 50.0);
    /// assert_eq!(Profile::Spike.rate_at(100.0, 9.0, 1.0), 25.0);
    /// assert_eq!(Profile::Spike.rate_at(100.0, 9.0, 4.0), 100.0);
    /// ```
    pub fn rate_at(self, rate: f64, seconds: f64, t: f64) -> f64 {
        let s = Schedule::new(self, rate, seconds);
        s.segments
            .iter()
            .find(|g| t >= g.start && t < g.start + g.len)
            .map_or(0.0, |g| g.from + (g.to - g.from) * (t - g.start) / g.len)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| format!("unknown profile {s:?}: expected constant, step, ramp or spike"))
    }
}

/// A piece of the profile where the rate goes linearly from `from` to `to` (per second).
#[derive(Debug, Clone, Copy)]
struct Segment {
    start: f64,
    len: f64,
    from: f64,
    to: f64,
    /// Requests offered before this segment.
    before: f64,
}

impl Segment {
    fn count(&self) -> f64 {
        (self.from + self.to) / 2.0 * self.len
    }

    /// Seconds into the segment at which `n` of its requests have been offered.
    fn time_of(&self, n: f64) -> f64 {
        let slope = (self.to - self.from) / self.len;
        if slope.abs() < 1e-12 {
            return n / self.from;
        }
        // from·τ + slope·τ²/2 = n
        (-self.from + (self.from * self.from + 2.0 * slope * n).max(0.0).sqrt()) / slope
    }
}

/// The intended send times of a run, in nanoseconds from its start, in order.
#[derive(Debug, Clone)]
pub(crate) struct Schedule {
    segments: Vec<Segment>,
    /// Requests in the whole run.
    pub(crate) total: u64,
    seg: usize,
}

impl Schedule {
    pub(crate) fn new(profile: Profile, rate: f64, seconds: f64) -> Self {
        let rate = rate.max(0.0);
        let seconds = seconds.max(0.0);
        let pieces: Vec<(f64, f64, f64)> = match profile {
            Profile::Constant => vec![(1.0, rate, rate)],
            Profile::Step => {
                (1..=4).map(|k| (0.25, rate * f64::from(k) / 4.0, rate * f64::from(k) / 4.0)).collect()
            }
            Profile::Ramp => vec![(1.0, 0.0, rate)],
            Profile::Spike => vec![
                (1.0 / 3.0, rate / 4.0, rate / 4.0),
                (1.0 / 3.0, rate, rate),
                (1.0 / 3.0, rate / 4.0, rate / 4.0),
            ],
        };
        let mut segments = Vec::with_capacity(pieces.len());
        let (mut start, mut before) = (0.0, 0.0);
        for (frac, from, to) in pieces {
            let g = Segment { start, len: frac * seconds, from, to, before };
            if g.len > 0.0 {
                before += g.count();
                start += g.len;
                segments.push(g);
            }
        }
        // A hair of tolerance so that 100/s for 1 s offers 100, not 99.
        let total = (before + 1e-6).floor().max(0.0) as u64;
        Self { segments, total, seg: 0 }
    }

    /// When request `i` is due, in nanoseconds from the start (`i` must be below `total` and
    /// must not decrease between calls).
    pub(crate) fn at(&mut self, i: u64) -> u64 {
        let n = i as f64;
        while self.seg + 1 < self.segments.len() && n >= self.segments[self.seg + 1].before {
            self.seg += 1;
        }
        let g = self.segments[self.seg];
        let t = g.start + g.time_of(n - g.before).clamp(0.0, g.len);
        (t * 1e9) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_second(p: Profile, rate: f64, seconds: u64) -> Vec<u64> {
        let mut s = Schedule::new(p, rate, seconds as f64);
        let mut out = vec![0; seconds as usize];
        let mut last = 0;
        for i in 0..s.total {
            let t = s.at(i);
            assert!(t >= last, "times never go back");
            last = t;
            out[(t / 1_000_000_000) as usize] += 1;
        }
        out
    }

    #[test]
    fn constant_is_evenly_spaced() {
        let mut s = Schedule::new(Profile::Constant, 1000.0, 2.0);
        assert_eq!(s.total, 2000);
        assert_eq!(s.at(0), 0);
        assert_eq!(s.at(1), 1_000_000);
        assert_eq!(s.at(1999), 1_999_000_000);
    }

    #[test]
    fn step_has_four_phases() {
        assert_eq!(per_second(Profile::Step, 400.0, 4), vec![100, 200, 300, 400]);
    }

    #[test]
    fn ramp_grows_linearly() {
        let s = per_second(Profile::Ramp, 1000.0, 10);
        assert_eq!(s.iter().sum::<u64>(), 5000);
        for (k, n) in s.iter().enumerate() {
            let want = 100.0 * k as f64 + 50.0; // the mean rate over second k
            assert!((*n as f64 - want).abs() <= 1.0, "second {k}: {n}");
        }
    }

    #[test]
    fn spike_is_a_quarter_then_full_then_a_quarter() {
        assert_eq!(per_second(Profile::Spike, 400.0, 3), vec![100, 400, 100]);
    }

    #[test]
    fn names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.name().parse::<Profile>(), Ok(p));
        }
        assert!("burst".parse::<Profile>().is_err());
    }
}
