//! Criticality classes and the priority shedder.

use crate::clock::{Clock, CoarseClock};
use crate::limit::{ConcurrencyLimiter, OwnedPermit, Permit, Rejected};
use std::fmt;
use std::str::FromStr;

/// How much a request matters, in the four levels of Google's criticality propagation.
///
/// Parsed case-insensitively from `critical_plus`, `critical`, `sheddable_plus`, `sheddable`
/// (also with `-`), as a header value would carry it.
///
/// ```
/// use spillway::shed::Criticality;
///
/// assert_eq!("CRITICAL_PLUS".parse(), Ok(Criticality::CriticalPlus));
/// assert_eq!("sheddable-plus".parse(), Ok(Criticality::SheddablePlus));
/// assert!("urgent".parse::<Criticality>().is_err());
/// assert!(Criticality::Critical > Criticality::SheddablePlus);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Criticality {
    /// Batch and background work: shed first.
    Sheddable,
    /// Work that can be retried later without harm.
    SheddablePlus,
    /// The default for user-facing requests.
    #[default]
    Critical,
    /// The most important requests: shed last.
    CriticalPlus,
}

impl Criticality {
    /// All four, most important last.
    pub const ALL: [Criticality; 4] =
        [Self::Sheddable, Self::SheddablePlus, Self::Critical, Self::CriticalPlus];

    /// The canonical name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sheddable => "sheddable",
            Self::SheddablePlus => "sheddable_plus",
            Self::Critical => "critical",
            Self::CriticalPlus => "critical_plus",
        }
    }
}

impl fmt::Display for Criticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown criticality name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unknown criticality (expected critical_plus, critical, sheddable_plus or sheddable)")]
pub struct UnknownCriticality;

impl FromStr for Criticality {
    type Err = UnknownCriticality;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|c| {
                c.as_str().len() == s.len()
                    && c.as_str()
                        .bytes()
                        .zip(s.bytes())
                        .all(|(a, b)| a == b.to_ascii_lowercase() || (a == b'_' && b == b'-'))
            })
            .ok_or(UnknownCriticality)
    }
}

/// The share of the limit each class may fill by default, indexed by class.
const DEFAULT_SHARES: [f64; 4] = [0.5, 0.75, 0.9, 1.0];

impl Criticality {
    /// The share of a limit this class may fill by default: sheddable 50 %, sheddable_plus
    /// 75 %, critical 90 %, critical_plus all of it.
    ///
    /// ```
    /// use spillway::shed::Criticality;
    ///
    /// assert_eq!(Criticality::Sheddable.default_share(), 0.5);
    /// assert_eq!(Criticality::CriticalPlus.default_share(), 1.0);
    /// ```
    pub fn default_share(self) -> f64 {
        DEFAULT_SHARES[self as usize]
    }
}

/// How many may be in flight when a request of `class` is admitted under `limit`, the class
/// filling at most `share` of it; `critical_plus` always gets at least one slot. This is the
/// rule [`PriorityShedder`] applies, for callers that hold their limiter elsewhere.
///
/// ```
/// use spillway::shed::{Criticality, ceiling};
///
/// let class = Criticality::Sheddable;
/// assert_eq!(ceiling(10, class.default_share(), class), 5);
/// assert_eq!(ceiling(0, 1.0, Criticality::CriticalPlus), 1);
/// ```
#[inline]
pub fn ceiling(limit: usize, share: f64, class: Criticality) -> usize {
    let ceiling = (limit as f64 * share).ceil() as usize;
    ceiling.max(usize::from(class == Criticality::CriticalPlus))
}

/// One concurrency limit shared by every class, with a ceiling per class: a class is admitted
/// only while in flight is below `limit × share(class)`. Defaults: sheddable 50 %, sheddable-plus
/// 75 %, critical 90 %, critical-plus 100 %; so as load rises, sheddable work is refused first and
/// the last tenth of the limit is kept for critical-plus.
///
/// It works with an adaptive limit too: the shares apply to whatever the limit is now.
///
/// ```
/// use spillway::limit::ConcurrencyLimiter;
/// use spillway::shed::{Criticality, PriorityShedder};
///
/// let shedder = PriorityShedder::new(ConcurrencyLimiter::new(10));
/// let batch: Vec<_> = (0..5).map(|_| shedder.try_acquire(Criticality::Sheddable).unwrap()).collect();
/// assert!(shedder.try_acquire(Criticality::Sheddable).is_err()); // its 50 % is used
/// let user = shedder.try_acquire(Criticality::Critical).unwrap(); // the rest is not
/// # drop((batch, user));
/// ```
pub struct PriorityShedder<C = CoarseClock> {
    limiter: ConcurrencyLimiter<C>,
    shares: [f64; 4],
}

impl<C: Clock> PriorityShedder<C> {
    /// Sheds over `limiter` with the default shares ([`Criticality::default_share`]).
    pub fn new(limiter: ConcurrencyLimiter<C>) -> Self {
        Self { limiter, shares: DEFAULT_SHARES }
    }

    /// Sets the share of the limit a class may fill (0..=1).
    pub fn with_share(mut self, class: Criticality, share: f64) -> Self {
        self.shares[class as usize] = share.clamp(0.0, 1.0);
        self
    }

    /// Admits a request of `class`, or refuses it.
    #[inline]
    pub fn try_acquire(&self, class: Criticality) -> Result<Permit<'_, C>, Rejected> {
        self.limiter.try_acquire_within(self.ceiling(class))
    }

    /// [`try_acquire`](Self::try_acquire) with an owned permit (for moving into a future).
    #[inline]
    pub fn try_acquire_owned(&self, class: Criticality) -> Result<OwnedPermit<C>, Rejected> {
        self.limiter.try_acquire_within_owned(self.ceiling(class))
    }

    /// How many may be in flight when a request of `class` is admitted.
    #[inline]
    fn ceiling(&self, class: Criticality) -> usize {
        ceiling(self.limiter.limit(), self.shares[class as usize], class)
    }

    /// The shared limiter (to change its limit, or read its stats).
    pub fn limiter(&self) -> &ConcurrencyLimiter<C> {
        &self.limiter
    }
}

impl<C: Clock> fmt::Debug for PriorityShedder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PriorityShedder")
            .field("shares", &self.shares)
            .field("limiter", &self.limiter)
            .finish()
    }
}
