//! The retry delay policy: exponential, capped, with jitter, honouring the provider's delay.

use std::time::Duration;

/// When to try again after a retryable failure.
///
/// The delay before retry number `attempt` (0 for the first retry) is `base * 2^attempt`, capped
/// at `cap`, then shortened by a random fraction of at most `jitter` (so that many workers that
/// failed together do not retry together). A delay the provider asked for (`Retry-After`,
/// `retry-after-ms`) wins over the computed one; it is honoured up to `max_hint` (10 minutes by
/// default) so that a bogus header cannot park a worker for days.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: f64,
    max_hint: Duration,
}

impl Default for Backoff {
    /// 500 ms doubling, capped at 60 s, up to 25 % jitter, provider hints honoured up to 10 min.
    fn default() -> Self {
        Self::new(Duration::from_millis(500), Duration::from_secs(60)).with_jitter(0.25)
    }
}

impl Backoff {
    /// The longest provider-requested delay honoured by default.
    pub const DEFAULT_MAX_HINT: Duration = Duration::from_secs(600);

    /// A policy with the given first delay and cap, no jitter, and hints honoured up to 10 min.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            jitter: 0.0,
            max_hint: Self::DEFAULT_MAX_HINT,
        }
    }

    /// Sets the largest fraction (clamped to `0.0..=1.0`) by which a computed delay is randomly
    /// shortened.
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// Sets the longest provider-requested delay honoured.
    pub fn with_max_hint(mut self, max_hint: Duration) -> Self {
        self.max_hint = max_hint;
        self
    }

    /// The first delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest computed delay.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The delay before retry number `attempt` (0 for the first retry). `hint` is the delay the
    /// provider asked for, if any: it wins, up to the longest hint honoured. Never panics, even
    /// for huge attempt numbers.
    pub fn delay(&self, attempt: u32, hint: Option<Duration>) -> Duration {
        if let Some(hint) = hint {
            return hint.min(self.max_hint);
        }
        let factor = 2u32.checked_pow(attempt).unwrap_or(u32::MAX);
        let exp = self.base.checked_mul(factor).unwrap_or(self.cap);
        let capped = exp.min(self.cap);
        if self.jitter > 0.0 {
            let cut = rand::random::<f64>() * self.jitter;
            capped.mul_f64(1.0 - cut)
        } else {
            capped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        assert_eq!(b.delay(0, None), Duration::from_millis(500));
        assert_eq!(b.delay(1, None), Duration::from_secs(1));
        assert_eq!(b.delay(3, None), Duration::from_secs(4));
        assert_eq!(b.delay(7, None), Duration::from_secs(60));
        assert_eq!(b.delay(u32::MAX, None), Duration::from_secs(60));
    }

    #[test]
    fn jitter_only_shortens_and_by_at_most_its_fraction() {
        let b = Backoff::default();
        for attempt in 0..40 {
            let plain = Backoff::new(b.base(), b.cap()).delay(attempt, None);
            let d = b.delay(attempt, None);
            assert!(d <= plain, "{d:?} > {plain:?}");
            assert!(d >= plain.mul_f64(0.75), "{d:?} too short for {plain:?}");
        }
    }

    #[test]
    fn a_provider_hint_wins_but_is_bounded() {
        let b = Backoff::default();
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(90))),
            Duration::from_secs(90)
        );
        assert_eq!(
            b.delay(5, Some(Duration::from_secs(86_400))),
            Backoff::DEFAULT_MAX_HINT
        );
        let b = b.with_max_hint(Duration::from_millis(10));
        assert_eq!(
            b.delay(0, Some(Duration::from_secs(3))),
            Duration::from_millis(10)
        );
    }
}
