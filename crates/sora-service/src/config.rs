//! The service's tunables.

use std::time::Duration;

use sora_core::Catalogue;
use sora_openai::Backoff;

/// How the service behaves: what it offers, how often it polls, how long it waits.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// The models, sizes, durations and presets on offer.
    pub catalogue: Catalogue,
    /// Identifies this process's workers in leases (unique per process).
    pub worker_id: String,
    /// The poller's schedule.
    pub poll: PollSchedule,
    /// Backoff between retries of provider calls that failed in a retryable way.
    pub backoff: Backoff,
    /// The most jobs this deployment keeps active at the provider at once (`queued` and
    /// `in_progress`); the submitter waits while the cap is reached.
    pub max_active_jobs: u64,
    /// How many jobs a worker claims in one step.
    pub batch_size: u32,
    /// How long a claimed job stays leased to its worker; longer than any single provider call.
    pub lease_for: Duration,
    /// How often an idle worker looks for work when nothing wakes it.
    pub idle_tick: Duration,
    /// A job still active this long after its creation fails with `timeout`.
    pub job_deadline: Duration,
    /// Finished files are deleted this long after completion; `None` keeps them.
    pub retention: Option<Duration>,
    /// How long an `Idempotency-Key` is remembered (at least 24 hours).
    pub idempotency_ttl: Duration,
    /// How long a webhook's id is remembered for deduplication (longer than the provider
    /// retries: OpenAI retries for 72 hours).
    pub webhook_ttl: Duration,
    /// Largest accepted input-reference image, in bytes.
    pub max_input_image_bytes: usize,
    /// How many times the archiver retries a download the provider says is not ready yet
    /// before it calls the content expired.
    pub archive_not_ready_retries: u32,
}

impl ServiceConfig {
    /// Defaults suitable for production with OpenAI.
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self {
            catalogue: Catalogue::default(),
            worker_id: worker_id.into(),
            poll: PollSchedule::default(),
            backoff: Backoff::default(),
            max_active_jobs: 16,
            batch_size: 8,
            lease_for: Duration::from_secs(120),
            idle_tick: Duration::from_secs(1),
            job_deadline: Duration::from_secs(2 * 60 * 60),
            retention: Some(Duration::from_secs(7 * 24 * 60 * 60)),
            idempotency_ttl: Duration::from_secs(24 * 60 * 60),
            webhook_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            max_input_image_bytes: 10 * 1024 * 1024,
            archive_not_ready_retries: 5,
        }
    }
}

/// The poller's adaptive schedule: frequent at first, when progress moves fast and a short clip
/// may already be done, then backing off geometrically to a ceiling. A webhook makes a job due
/// at once whatever its schedule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PollSchedule {
    /// The interval of the first polls.
    pub base: Duration,
    /// How many polls keep the base interval.
    pub fast_polls: u32,
    /// The factor by which the interval grows after that, per poll.
    pub growth: f64,
    /// The longest interval.
    pub max: Duration,
}

impl Default for PollSchedule {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            fast_polls: 12,
            growth: 1.25,
            max: Duration::from_secs(60),
        }
    }
}

impl PollSchedule {
    /// The same shape with another base interval (the maximum scales with it, at least 1 s).
    pub fn with_base(base: Duration) -> Self {
        let d = Self::default();
        Self {
            base,
            max: (base * 12).max(Duration::from_secs(1)).max(base),
            ..d
        }
    }

    /// The wait before the next poll, given how many polls the job has had.
    pub fn interval(&self, polls: u32) -> Duration {
        if polls < self.fast_polls {
            return self.base;
        }
        let steps = (polls - self.fast_polls + 1).min(64) as i32;
        let secs = self.base.as_secs_f64() * self.growth.powi(steps);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_interval_starts_at_base_then_grows_to_the_ceiling() {
        let s = PollSchedule::default();
        assert_eq!(s.interval(0), Duration::from_secs(5));
        assert_eq!(s.interval(11), Duration::from_secs(5));
        assert!(s.interval(12) > Duration::from_secs(5));
        assert!(s.interval(13) > s.interval(12));
        assert_eq!(s.interval(1000), Duration::from_secs(60));
        assert_eq!(s.interval(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn a_custom_base_scales_the_ceiling() {
        let s = PollSchedule::with_base(Duration::from_millis(100));
        assert_eq!(s.interval(0), Duration::from_millis(100));
        assert_eq!(s.interval(10_000), Duration::from_millis(1200));
    }
}
