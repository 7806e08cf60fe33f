//! The emulator's jobs and how time moves them forward.
//!
//! A job's state is a function of the time since it was created: queued for the first tenth of
//! the generation duration, then in progress with a progress proportional to the time, then
//! completed (or failed halfway, or stalled forever, as its faults say). [`Store::advance`] applies
//! that function; it runs before every read and on every tick, and when a job reaches a terminal
//! state it hands a [`Notice`] to the webhook dispatcher exactly once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::Faults;
use crate::faults::JobFaults;

/// The status of a video, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    Queued,
    InProgress,
    Completed,
    Failed,
}

impl Status {
    fn is_terminal(self) -> bool {
        match self {
            Self::Completed | Self::Failed => true,
            Self::Queued | Self::InProgress => false,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }
}

/// The `error` of a failed video.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct VideoError {
    pub code: String,
    pub message: String,
}

/// The video object of the wire protocol.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct VideoObject {
    pub id: String,
    pub object: &'static str,
    pub model: String,
    pub status: Status,
    pub progress: u8,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub prompt: String,
    pub size: String,
    pub seconds: String,
    pub remixed_from_video_id: Option<String>,
    pub error: Option<VideoError>,
}

/// Which webhook event a job's end produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    Completed,
    Failed,
}

impl EventKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "video.completed",
            Self::Failed => "video.failed",
        }
    }

    pub(crate) fn opposite(self) -> Self {
        match self {
            Self::Completed => Self::Failed,
            Self::Failed => Self::Completed,
        }
    }
}

/// A job reached a terminal state: what the webhook dispatcher needs to know.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub video_id: String,
    pub kind: EventKind,
    /// Not sent at all (the `[drop-webhook]` marker or the global drop share).
    pub drop: bool,
    pub copies: u32,
    pub delay: Duration,
    pub out_of_order: bool,
}

/// What a create (or remix) asks for, already validated.
#[derive(Debug, Clone)]
pub(crate) struct NewVideo {
    pub model: String,
    pub prompt: String,
    pub size: String,
    pub seconds: String,
    pub remixed_from: Option<String>,
    pub faults: JobFaults,
}

#[derive(Debug)]
struct Job {
    video: VideoObject,
    started: Instant,
    /// Unix time of creation in milliseconds, to compute `completed_at` precisely.
    created_ms: i64,
    expires: Option<Instant>,
    faults: JobFaults,
    /// Whether its webhook notice was handed to the dispatcher (once per job).
    notified: bool,
}

/// Why a file cannot be downloaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContentError {
    NotFound,
    NotReady(Status),
    Failed,
    Expired,
}

/// An injected error answer to a create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CreateFault {
    RateLimited,
    Quota,
    ServerError(u16),
}

/// Every job, in creation order, plus the fault counters.
#[derive(Debug)]
pub(crate) struct Store {
    jobs: Vec<Job>,
    index: HashMap<String, usize>,
    duration: Duration,
    ttl: Duration,
    faults: Faults,
    /// How many creates each (marker, prompt) pair has already failed.
    marker_counts: HashMap<String, u32>,
    global_rate_limited: u32,
    global_server_errors: u32,
    notices: UnboundedSender<Notice>,
}

pub(crate) fn unix_ms_now() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A fresh id with the given prefix and 32 random hex digits (`video_...`, `evt_...`).
pub(crate) fn new_id(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::rng().random();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}_{hex}")
}

impl Store {
    pub(crate) fn new(
        duration: Duration,
        ttl: Duration,
        faults: Faults,
        notices: UnboundedSender<Notice>,
    ) -> Self {
        Self {
            jobs: Vec::new(),
            index: HashMap::new(),
            duration,
            ttl,
            faults,
            marker_counts: HashMap::new(),
            global_rate_limited: 0,
            global_server_errors: 0,
            notices,
        }
    }

    pub(crate) fn faults(&self) -> &Faults {
        &self.faults
    }

    pub(crate) fn set_faults(&mut self, faults: Faults) {
        self.faults = faults;
        self.global_rate_limited = 0;
        self.global_server_errors = 0;
    }

    /// Decides whether this create answers with an injected error. Global faults first (the
    /// first N creates), then the prompt's markers (N times per prompt text).
    pub(crate) fn create_fault(
        &mut self,
        prompt: &str,
        markers: &crate::faults::PromptFaults,
    ) -> Option<CreateFault> {
        if self.global_rate_limited < self.faults.rate_limit_creates {
            self.global_rate_limited += 1;
            return Some(CreateFault::RateLimited);
        }
        if self.global_server_errors < self.faults.server_error_creates {
            self.global_server_errors += 1;
            return Some(CreateFault::ServerError(self.faults.server_error_status));
        }
        if markers.quota {
            return Some(CreateFault::Quota);
        }
        let mut counted = |kind: String, times: u32| {
            let seen = self
                .marker_counts
                .entry(format!("{kind}\n{prompt}"))
                .or_default();
            if *seen < times {
                *seen += 1;
                true
            } else {
                false
            }
        };
        if markers.rate_limit > 0 && counted("429".into(), markers.rate_limit) {
            return Some(CreateFault::RateLimited);
        }
        if let Some((status, times)) = markers.server_error
            && counted(status.to_string(), times)
        {
            return Some(CreateFault::ServerError(status));
        }
        None
    }

    /// Adds a job, `queued` with progress 0.
    pub(crate) fn insert(&mut self, new: NewVideo) -> VideoObject {
        let created_ms = unix_ms_now();
        let video = VideoObject {
            id: new_id("video"),
            object: "video",
            model: new.model,
            status: Status::Queued,
            progress: 0,
            created_at: created_ms.div_euclid(1000),
            completed_at: None,
            expires_at: None,
            prompt: new.prompt,
            size: new.size,
            seconds: new.seconds,
            remixed_from_video_id: new.remixed_from,
            error: None,
        };
        self.index.insert(video.id.clone(), self.jobs.len());
        self.jobs.push(Job {
            video: video.clone(),
            started: Instant::now(),
            created_ms,
            expires: None,
            faults: new.faults,
            notified: false,
        });
        video
    }

    /// The job's current state, moved forward to `now` first.
    pub(crate) fn get(&mut self, id: &str, now: Instant) -> Option<VideoObject> {
        let i = *self.index.get(id)?;
        self.advance_at(i, now);
        Some(self.jobs[i].video.clone())
    }

    /// The response delay a job's `[delay:MS]` marker asks for.
    pub(crate) fn delay_of(&self, id: &str) -> Duration {
        self.index
            .get(id)
            .map(|&i| self.jobs[i].faults.delay)
            .unwrap_or_default()
    }

    /// Removes a job; `false` if there was none.
    pub(crate) fn delete(&mut self, id: &str) -> bool {
        let Some(i) = self.index.remove(id) else {
            return false;
        };
        self.jobs.remove(i);
        for (pos, job) in self.jobs.iter().enumerate().skip(i) {
            self.index.insert(job.video.id.clone(), pos);
        }
        true
    }

    /// Every job moved forward to `now`, oldest first.
    pub(crate) fn all(&mut self, now: Instant) -> Vec<VideoObject> {
        self.advance_all(now);
        self.jobs.iter().map(|j| j.video.clone()).collect()
    }

    /// Whether a completed job's files can be downloaded now.
    pub(crate) fn content(&mut self, id: &str, now: Instant) -> Result<(), ContentError> {
        let i = *self.index.get(id).ok_or(ContentError::NotFound)?;
        self.advance_at(i, now);
        let job = &self.jobs[i];
        match job.video.status {
            Status::Queued | Status::InProgress => Err(ContentError::NotReady(job.video.status)),
            Status::Failed => Err(ContentError::Failed),
            Status::Completed => match job.expires {
                Some(expires) if now >= expires => Err(ContentError::Expired),
                _ => Ok(()),
            },
        }
    }

    /// Moves every job forward to `now` (the ticker calls this).
    pub(crate) fn advance_all(&mut self, now: Instant) {
        for i in 0..self.jobs.len() {
            self.advance_at(i, now);
        }
    }

    fn advance_at(&mut self, i: usize, now: Instant) {
        let duration = self.duration;
        let queued_for = duration / 10;
        let drop_share = self.faults.webhook_drop_share;
        let ttl = self.ttl;
        let job = &mut self.jobs[i];
        if job.video.status.is_terminal() {
            return;
        }
        let elapsed = now.saturating_duration_since(job.started);
        let fail_after = job.faults.fail.as_ref().map(|_| duration / 2);
        let percent = |elapsed: Duration| -> u8 {
            let running = elapsed.saturating_sub(queued_for).as_secs_f64();
            let span = duration.saturating_sub(queued_for).as_secs_f64();
            if span <= 0.0 {
                99
            } else {
                // Bounded to 0..=99 before the cast, so the cast cannot truncate.
                ((running / span) * 100.0).clamp(0.0, 99.0) as u8
            }
        };
        let kind = if let Some(fail_after) =
            fail_after.filter(|f| elapsed >= *f && !job.faults.stall)
        {
            let code = job.faults.fail.clone().unwrap_or_default();
            job.video.progress = job.video.progress.max(percent(fail_after));
            job.video.status = Status::Failed;
            job.video.error = Some(VideoError {
                message: format!("The video generation failed ({code}), as the emulator was told."),
                code,
            });
            EventKind::Failed
        } else if elapsed >= duration && !job.faults.stall {
            let completed_ms =
                job.created_ms + i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
            let completed_at = completed_ms.div_euclid(1000);
            let (expires_at, expires) = if job.faults.expire_early {
                (completed_at, job.started + duration)
            } else {
                let ttl_s = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
                (
                    completed_at.saturating_add(ttl_s),
                    job.started + duration + ttl,
                )
            };
            job.video.status = Status::Completed;
            job.video.progress = 100;
            job.video.completed_at = Some(completed_at);
            job.video.expires_at = Some(expires_at);
            job.expires = Some(expires);
            EventKind::Completed
        } else {
            if elapsed >= queued_for {
                job.video.status = Status::InProgress;
                job.video.progress = job.video.progress.max(percent(elapsed));
                if job.faults.early_webhook && !job.faults.stall {
                    // Announce the outcome the job is bound to reach, before it does.
                    let kind = match job.faults.fail {
                        Some(_) => EventKind::Failed,
                        None => EventKind::Completed,
                    };
                    notify(job, kind, drop_share, &self.notices);
                }
            }
            return;
        };
        tracing::info!(video_id = %job.video.id, status = job.video.status.as_str(), "video finished");
        notify(job, kind, drop_share, &self.notices);
    }
}

/// Hands a job's webhook notice to the dispatcher, unless it already was.
fn notify(job: &mut Job, kind: EventKind, drop_share: f64, notices: &UnboundedSender<Notice>) {
    if job.notified {
        return;
    }
    job.notified = true;
    let drop =
        job.faults.drop_webhook || (drop_share > 0.0 && rand::rng().random::<f64>() < drop_share);
    let notice = Notice {
        video_id: job.video.id.clone(),
        kind,
        drop,
        copies: job.faults.webhook_copies,
        delay: job.faults.webhook_delay,
        out_of_order: job.faults.out_of_order,
    };
    // The dispatcher is gone only while the emulator stops; nothing is lost that matters.
    let _ = notices.send(notice);
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;

    fn store(duration_ms: u64) -> (Store, mpsc::UnboundedReceiver<Notice>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let store = Store::new(
            Duration::from_millis(duration_ms),
            Duration::from_secs(60),
            Faults::default(),
            tx,
        );
        (store, rx)
    }

    fn new_video(faults: JobFaults) -> NewVideo {
        NewVideo {
            model: "sora-2".into(),
            prompt: "p".into(),
            size: "720x1280".into(),
            seconds: "4".into(),
            remixed_from: None,
            faults: JobFaults {
                webhook_copies: 1,
                ..faults
            },
        }
    }

    #[test]
    fn a_job_moves_through_its_states_with_time_and_notifies_once() {
        let (mut store, mut rx) = store(1000);
        let v = store.insert(new_video(JobFaults::default()));
        let t0 = store.jobs[0].started;
        assert_eq!(store.get(&v.id, t0).unwrap().status, Status::Queued);
        let mid = store.get(&v.id, t0 + Duration::from_millis(550)).unwrap();
        assert_eq!(mid.status, Status::InProgress);
        assert_eq!(mid.progress, 50);
        // Progress never goes back, even for an older clock reading.
        assert_eq!(
            store
                .get(&v.id, t0 + Duration::from_millis(200))
                .unwrap()
                .progress,
            50
        );
        assert!(rx.try_recv().is_err());
        let done = store.get(&v.id, t0 + Duration::from_millis(1000)).unwrap();
        assert_eq!(done.status, Status::Completed);
        assert_eq!(done.progress, 100);
        assert_eq!(done.expires_at.unwrap() - done.completed_at.unwrap(), 60);
        assert_eq!(rx.try_recv().unwrap().kind, EventKind::Completed);
        store.advance_all(t0 + Duration::from_secs(5));
        assert!(rx.try_recv().is_err());
        assert_eq!(store.content(&v.id, t0 + Duration::from_secs(5)), Ok(()));
        assert_eq!(
            store.content(&v.id, t0 + Duration::from_secs(61)),
            Err(ContentError::Expired)
        );
    }

    #[test]
    fn a_failing_job_fails_halfway_and_a_stalled_one_never_ends() {
        let (mut store, mut rx) = store(1000);
        let failing = store.insert(new_video(JobFaults {
            fail: Some("moderation_blocked".into()),
            ..JobFaults::default()
        }));
        let stalled = store.insert(new_video(JobFaults {
            stall: true,
            ..JobFaults::default()
        }));
        let t0 = store.jobs[1].started;
        store.advance_all(t0 + Duration::from_secs(3600));
        let f = store.get(&failing.id, t0).unwrap();
        assert_eq!(f.status, Status::Failed);
        assert_eq!(f.error.unwrap().code, "moderation_blocked");
        let s = store
            .get(&stalled.id, t0 + Duration::from_secs(3600))
            .unwrap();
        assert_eq!(s.status, Status::InProgress);
        assert_eq!(s.progress, 99);
        assert_eq!(rx.try_recv().unwrap().kind, EventKind::Failed);
        assert!(rx.try_recv().is_err());
        assert_eq!(
            store.content(&stalled.id, t0),
            Err(ContentError::NotReady(Status::InProgress))
        );
    }

    #[test]
    fn an_early_webhook_is_announced_when_the_job_starts_and_only_then() {
        let (mut store, mut rx) = store(1000);
        let v = store.insert(new_video(JobFaults {
            early_webhook: true,
            ..JobFaults::default()
        }));
        let t0 = store.jobs[0].started;
        store.advance_all(t0 + Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "still queued");
        let running = store.get(&v.id, t0 + Duration::from_millis(150)).unwrap();
        assert_eq!(running.status, Status::InProgress);
        assert_eq!(rx.try_recv().unwrap().kind, EventKind::Completed);
        store.advance_all(t0 + Duration::from_millis(500));
        let done = store.get(&v.id, t0 + Duration::from_secs(2)).unwrap();
        assert_eq!(done.status, Status::Completed);
        assert!(rx.try_recv().is_err(), "one notice per job");
    }

    #[test]
    fn deleting_keeps_the_index_consistent() {
        let (mut store, _rx) = store(1000);
        let a = store.insert(new_video(JobFaults::default()));
        let b = store.insert(new_video(JobFaults::default()));
        let c = store.insert(new_video(JobFaults::default()));
        assert!(store.delete(&a.id));
        assert!(!store.delete(&a.id));
        let now = Instant::now();
        assert_eq!(store.get(&b.id, now).unwrap().id, b.id);
        assert_eq!(store.get(&c.id, now).unwrap().id, c.id);
        assert!(store.get(&a.id, now).is_none());
    }
}
